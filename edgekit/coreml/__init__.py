"""Core ML (.mlpackage) execution off macOS.

`executor` walks an ML program's operations in order and computes each with numpy (`ops`),
including the compressed-weight ops (affine dequantize, palette lookup, sparse to dense) and
fp16 rounding, so fp16 and compressed artifacts give the numbers a device would. `model`
wraps it behind the same API as the TFLite runtime. Reading the package needs coremltools
(the protobuf spec and MIL loader); running it needs only numpy.
"""

""".tflite artifacts, mirroring edgekit.coreml: every module reads the flatbuffer through `reader`.

reader      the one flatbuffer walker: schema, root table, opcode/dtype names, item sizes, buffer bytes
integrity   structural checks before the native interpreter sees a file (sparsity: sparse-tensor metadata)
weights     the weights digest and NaN/Inf checks
metadata    the edgekit manifest buffer, standard TFLite Metadata and associated files: read and write
info        what `edgekit inspect` shows
graph       the costing view (MACs, bytes, precision) the emulator uses; arena: activation memory plan
model       TFLiteModel: the LiteRT interpreter behind the Predictor API
"""

"""Device calibration: `edgekit profile run` times generated probe models on the device itself and
writes a measured profile that `edgekit emulate --target mypi.json` costs models with.

    probes     the probe suite, written as .tflite flatbuffers here (no TensorFlow on the device)
    costmodel  per-op-kind linear costs: features, the non-negative fit, the estimate
    run        timing (edgekit.bench's loop) and the profile document
    device     a profile JSON as an emulate target: validated, then costed
"""

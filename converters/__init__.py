"""Desktop-side conversion (installed as `edgekit.converters`).

TensorFlow and coremltools are imported inside functions, through `edgekit._deps.require`,
so importing this package costs nothing and the device side never pulls them in.

Layout: `sources` loads what the user trained (Keras .keras/.h5, SavedModel) into one
interface; `tflite` turns a source into one `.tflite` per recipe; `quant_debug` explains
where integer quantization loses accuracy; `pipeline` is the `edgekit convert` job that
ties them to calibration data, parity checks, manifests and atomic output.
"""

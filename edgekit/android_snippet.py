"""The Kotlin part of a bundle's README: how an Android app feeds each .tflite.

The TFLite Task library (`ImageClassifier`) feeds float32 or uint8 inputs only, so it is shown for
those; an int8-input artifact (edgekit's default `int8` recipe) gets the Interpreter API with the
input quantized by hand from the tensor's own scale and zero point, and the output dequantized.
"""
from __future__ import annotations


def kotlin_section(android: list[dict]) -> list[str]:
    """README lines for the .tflite entries of a bundle (manifest entries as `bundle._add` makes)."""
    task = [e for e in android if _input_dtype(e) != "int8"]
    interp = [e for e in android if _input_dtype(e) == "int8"]
    lines = []
    if task:
        name = _file(task[0])
        lines += ["", "## Android (Kotlin, TFLite Task library: float32 or uint8 input)", "", "```kotlin",
                  "val options = ImageClassifier.ImageClassifierOptions.builder().setMaxResults(5).build()",
                  f"val classifier = ImageClassifier.createFromFileAndOptions(context, \"{name}\", options)",
                  "val results = classifier.classify(TensorImage.fromBitmap(bitmap))",
                  "val best = results.first().categories.maxBy { it.score }", "```", "",
                  f"Put `{name}` in `app/src/main/assets/`. The Task library reads the normalization and labels from "
                  "the TFLite Metadata, and so does Android Studio's ML model binding (File > New > Other > "
                  "TensorFlow Lite Model). Use it for "
                  + ", ".join(f"`{_file(e)}`" for e in task) + "."]
    if interp:
        lines += ["", "## Android (Kotlin, Interpreter API: int8 input)", "",
                  "The Task library cannot feed an int8 input: "
                  + ", ".join(f"`{_file(e)}`" for e in interp)
                  + (" takes" if len(interp) == 1 else " take")
                  + " int8, so quantize the normalized pixels with the input tensor's scale and zero point "
                  "(`org.tensorflow:tensorflow-lite`, and `tensorflow-lite-support` for `FileUtil`). Put the model "
                  "and `labels.txt` in `app/src/main/assets/`; to use the Task library instead, convert with "
                  "`--io uint8`.", "",
                  "```kotlin", *_interpreter_code(interp[0]), "```"]
    return lines


def _file(entry: dict) -> str:
    return entry["path"].split("/")[-1]


def _input_dtype(entry: dict) -> str:
    inputs = entry.get("inputs") or [{}]
    return inputs[0].get("dtype", "float32")


def _floats(values: list[float]) -> str:
    return "floatArrayOf(" + ", ".join(f"{v}f" for v in values) + ")"


def _interpreter_code(entry: dict) -> list[str]:
    pp = entry.get("preprocessing")
    out_dtype = ((entry.get("outputs") or [{}])[0]).get("dtype", "float32")
    code = [f"val interpreter = Interpreter(FileUtil.loadMappedFile(context, \"{_file(entry)}\"))",
            "val input = interpreter.getInputTensor(0)",
            "val q = input.quantizationParams()  // scale and zero point stored in the model",
            "val inBuf = ByteBuffer.allocateDirect(input.numBytes()).order(ByteOrder.nativeOrder())"]
    if pp:
        channels = pp["channels"]
        mean = pp["mean"] * channels if len(pp["mean"]) == 1 else pp["mean"]
        std = pp["std"] * channels if len(pp["std"]) == 1 else pp["std"]
        if channels == 1:  # the same luminance weights as Pillow's "L", which edgekit calibrated with
            pixel = "floatArrayOf(0.299f * Color.red(p) + 0.587f * Color.green(p) + 0.114f * Color.blue(p))"
        elif pp.get("color_order") == "BGR":
            pixel = "floatArrayOf(Color.blue(p).toFloat(), Color.green(p).toFloat(), Color.red(p).toFloat())"
        else:
            pixel = "floatArrayOf(Color.red(p).toFloat(), Color.green(p).toFloat(), Color.blue(p).toFloat())"
        code += [f"val mean = {_floats(mean)}",
                 f"val std = {_floats(std)}",
                 f"val scaled = Bitmap.createScaledBitmap(bitmap, {pp['width']}, {pp['height']}, true)",
                 f"for (y in 0 until {pp['height']}) for (x in 0 until {pp['width']}) {{",
                 "    val p = scaled.getPixel(x, y)",
                 f"    val px = {pixel}",
                 "    for (c in px.indices) {",
                 "        val v = (px[c] - mean[c]) / std[c]  // the float value the model was trained on",
                 "        inBuf.put((Math.round(v / q.scale) + q.zeroPoint).coerceIn(-128, 127).toByte())",
                 "    }", "}"]
    else:
        code += ["for (v in features) {  // your float input, in the tensor's order",
                 "    inBuf.put((Math.round(v / q.scale) + q.zeroPoint).coerceIn(-128, 127).toByte())", "}"]
    code += ["inBuf.rewind()",
             "val output = interpreter.getOutputTensor(0)",
             "val outBuf = ByteBuffer.allocateDirect(output.numBytes()).order(ByteOrder.nativeOrder())",
             "interpreter.run(inBuf, outBuf)",
             "outBuf.rewind()"]
    if out_dtype == "int8":
        code += ["val oq = output.quantizationParams()",
                 "val scores = FloatArray(output.shape().last()) { (outBuf.get().toInt() - oq.zeroPoint) * oq.scale }"]
    elif out_dtype == "uint8":
        code += ["val oq = output.quantizationParams()",
                 "val scores = FloatArray(output.shape().last()) {",
                 "    ((outBuf.get().toInt() and 0xFF) - oq.zeroPoint) * oq.scale  // uint8: read the byte unsigned",
                 "}"]
    else:
        code += ["val scores = FloatArray(output.shape().last()) { outBuf.getFloat() }"]
    if entry.get("labels_count"):
        code += ["val labels = FileUtil.loadLabels(context, \"labels.txt\")  // android/labels.txt, in assets",
                 "val best = scores.indices.maxBy { scores[it] }.let { labels[it] to scores[it] }"]
    return code

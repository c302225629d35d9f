"""Desktop-side conversion (installed as `edgekit.converters`).

Framework packages (TensorFlow, coremltools, torch, litert-torch, onnx, ai-edge-quantizer)
are imported inside functions, through `edgekit._deps.require`, so importing this package
costs nothing and the device side never pulls them in.

Layout — the pipeline orchestrates, sources read, formats write:
  pipeline.py   the `edgekit convert` job: cheap checks first, then one artifact per (format, recipe)
  options.py    what a run is asked (ConvertOptions) and what it reports (ConvertResult), output paths
  data.py       calibration / parity inputs, image preprocessing, labels
  job.py        what all artifacts of a run share: reference outputs, parity, manifest, the gate
  sources/      one module per framework: detect a model by content, load it, run it for reference
  formats/      one module per artifact format, `build(job, recipe, path)`, plus its converters
The capability table (source family x format x recipe, with the reason where a pair cannot)
is `edgekit.recipes`, shared with the device-side CLI.
"""

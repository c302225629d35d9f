"""Source model -> Core ML ML program (.mlpackage) for one recipe, with coremltools.

Recipes (names shared with TFLite, see edgekit.recipes):
  fp32                 compute precision float32
  fp16                 compute precision float16 (coremltools' default for ML programs)
  int8-weights         linear symmetric 8-bit weights, per output channel (on an fp16 program)
  int4-weights         linear symmetric 4-bit weights, blocks of 32 (iOS 18+)
  palettize-{2,4,6,8}  k-means weight palettes with 2^n entries
  prune-{50,75}        magnitude pruning to that sparsity, stored sparse
Compressed recipes start from the fp16 program, which is what ships to devices by default;
coremltools leaves weights under 2048 elements uncompressed (its default threshold).

Image models get an ImageType input built from the preprocessing spec: Core ML applies
`scale * pixel + bias` with one scale for all channels, so (pixel - mean) / std maps exactly
when std is the same for every channel. When it is not, the normalization is folded into the
program (a Keras Normalization layer in front) and the image input takes raw pixels, instead
of silently changing the numbers.
"""
from __future__ import annotations

import warnings

from edgekit._deps import require
from edgekit.errors import ConversionError, InputError, first_line
from edgekit.preprocess import ImageSpec

from ..sources.base import TORCH, SourceModel
from ..sources.keras import serving_signature

IOS_TARGETS = (16, 17, 18)


def convert(source: SourceModel, recipe: str, spec: ImageSpec | None, labels: list[str] | None, ios: int = 16):
    """Return an in-memory coremltools MLModel (not yet saved)."""
    ct = require("coremltools", "Core ML conversion")
    if ios not in IOS_TARGETS:
        raise InputError(f"--ios expects one of {', '.join(map(str, IOS_TARGETS))}, got {ios}")
    if recipe == "int4-weights" and ios < 18:
        raise InputError(f"recipe 'int4-weights' needs Core ML's iOS 18 ops; pass --ios 18 (got --ios {ios})")
    torch_source = source.family == TORCH
    precision = ct.precision.FLOAT32 if recipe == "fp32" else ct.precision.FLOAT16
    classifier = ct.ClassifierConfig(list(labels)) if labels and len(source.output_names) == 1 else None
    # PyTorch outputs are unnamed: name them as the source does so parity and apps match them
    outputs = [ct.TensorType(name=n) for n in source.output_names] if torch_source and classifier is None else None
    candidates = (_torch_candidates(ct, source, spec) if torch_source
                  else [("tensorflow", *_model_and_inputs(ct, source, spec))])
    failures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "TensorFlow 2.21 has not been tested" and friends
        for frontend, model, inputs in candidates:
            try:
                mlmodel = ct.convert(model, source="tensorflow" if frontend == "tensorflow" else "pytorch",
                                     convert_to="mlprogram", inputs=inputs, outputs=outputs,
                                     classifier_config=classifier, compute_precision=precision,
                                     minimum_deployment_target=getattr(ct.target, f"iOS{ios}"))
            except Exception as e:
                failures.append(f"{frontend}: {first_line(str(e), 200) if str(e).strip() else type(e).__name__}")
                continue
            # outside the try: a missing package here (palettize-N needs scikit-learn) is its own error
            return compress(ct, mlmodel, recipe)
    if any("'StatefulPartitionedCall' not implemented" in f for f in failures):
        # Keras 3's ConvNeXt: nested functions survive into the graph; freezing with inlining (tried)
        # keeps them too. Nothing edgekit can rewrite; the user can still ship TFLite.
        raise ConversionError(f"coremltools 9.0 cannot read this Keras graph for recipe {recipe}: it keeps nested "
                              "TensorFlow functions (StatefulPartitionedCall; Keras 3's ConvNeXt does); convert it "
                              "--to tflite, or give the PyTorch/ONNX version of the network for Core ML")
    raise ConversionError(f"coremltools rejected the model for recipe {recipe} ({'; '.join(failures)}); "
                          "set EDGEKIT_DEBUG=1 for the full message")


def _register_missing_tf_ops() -> None:
    """TF ops coremltools 9.0's TensorFlow frontend lacks, written from MIL ops it has. Erfc: Keras 3's
    exact GELU computes 0.5 * x * erfc(-x / sqrt(2))."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.tensorflow.tf_op_registry import _TF_OPS_REGISTRY, register_tf_op

    if "Erfc" not in _TF_OPS_REGISTRY:
        @register_tf_op
        def Erfc(context, node):  # noqa: N802  (named after the TF op it converts)
            x = context[node.inputs[0]]
            context.add(node.name, mb.sub(x=1.0, y=mb.erf(x=x), name=node.name))


def _model_and_inputs(ct, source: SourceModel, spec: ImageSpec | None):
    _register_missing_tf_ops()
    # A SavedModel folder goes as its serving signature alone: coremltools refuses a folder with several
    # concrete functions (`model.export()` writes one: "Only a single concrete function is supported").
    model = source.keras_model if source.keras_model is not None else [serving_signature(source.saved_model)]
    first = source.inputs[0]
    if spec is None:
        return model, [ct.TensorType(name=t.name, shape=(1, *t.shape[1:])) for t in source.inputs]
    layout = ct.colorlayout.GRAYSCALE if spec.channels == 1 else ct.colorlayout.RGB
    stds = set(spec.std)
    if len(stds) == 1:
        std = spec.std[0]
        bias = [-m / std for m in spec.mean] * (spec.channels if len(spec.mean) == 1 else 1)
        image = ct.ImageType(name=first.name, shape=(1, spec.height, spec.width, spec.channels), scale=1.0 / std,
                             bias=bias[0] if spec.channels == 1 else bias, color_layout=layout)
        return model, [image]
    if source.keras_model is None:
        raise ConversionError("per-channel --std differs across channels, which Core ML's single image scale "
                              "cannot express; edgekit folds it into Keras models only: convert from the "
                              ".keras/.h5 file, or use one --std value")
    return _fold_normalization(source, spec), [
        ct.ImageType(name=first.name, shape=(1, spec.height, spec.width, spec.channels), scale=1.0, bias=0.0,
                     color_layout=layout)]


def _torch_candidates(ct, source: SourceModel, spec: ImageSpec | None):
    """coremltools' PyTorch frontend reads TorchScript and exported programs, and neither covers
    every model: LSTM/GRU convert only traced (`Unsupported fx node lstm` when exported), a
    Transformer encoder only exported (tracing fails its checks). Try the trace, then the export."""
    torch = require("torch", "Core ML conversion of PyTorch models")
    from ..sources.torch import example_array

    inputs = _torch_inputs(ct, source, spec)
    examples = tuple(torch.from_numpy(example_array(t)) for t in source.inputs)
    module = source.torch_module
    if isinstance(module, torch.jit.ScriptModule):
        yield "torchscript", module, inputs
        return
    try:
        with torch.no_grad():
            yield "traced", torch.jit.trace(module, examples, check_trace=False), inputs
    except Exception:  # a module that cannot be traced may still export
        pass
    try:
        exported = torch.export.export(module, examples).run_decompositions({})
    except Exception as e:
        raise ConversionError(f"coremltools could not read the model traced, and torch.export cannot capture it "
                              f"({type(e).__name__}: {first_line(str(e), 200)})") from e
    yield "exported", exported, inputs


def _torch_inputs(ct, source: SourceModel, spec: ImageSpec | None):
    """NCHW inputs: an ImageType for image models, tensors otherwise."""
    import numpy as np

    dtypes = {"float32": np.float32, "int32": np.int32, "int64": np.int32}  # Core ML has no int64 inputs
    if spec is None or len(set(spec.std)) != 1:
        if spec is not None:
            raise ConversionError("per-channel --std differs across channels, which Core ML's single image scale "
                                  "cannot express for a PyTorch model; fold the normalization into the module or "
                                  "use one --std value")
        return [ct.TensorType(name=t.name, shape=tuple(d or 1 for d in t.shape), dtype=dtypes[t.dtype])
                for t in source.inputs]
    std = spec.std[0]
    bias = [-m / std for m in spec.mean] * (spec.channels if len(spec.mean) == 1 else 1)
    layout = ct.colorlayout.GRAYSCALE if spec.channels == 1 else ct.colorlayout.RGB
    return [ct.ImageType(name=source.inputs[0].name, shape=(1, spec.channels, spec.height, spec.width),
                         scale=1.0 / std, bias=bias[0] if spec.channels == 1 else bias, color_layout=layout)]


def _fold_normalization(source: SourceModel, spec: ImageSpec):
    """Raw pixels -> (pixels - mean) / std -> the user's model, as one Keras model."""
    keras = require("keras", "Core ML conversion")
    import numpy as np

    inp = keras.Input((spec.height, spec.width, spec.channels), name=source.inputs[0].name)
    mean = np.broadcast_to(np.asarray(spec.mean, np.float32), (spec.channels,))
    std = np.broadcast_to(np.asarray(spec.std, np.float32), (spec.channels,))
    x = keras.layers.Normalization(mean=mean, variance=std ** 2, name="edgekit_normalize")(inp)
    return keras.Model(inp, source.keras_model(x), name=source.keras_model.name)


def compress(ct, mlmodel, recipe: str):
    import coremltools.optimize.coreml as cto

    if recipe in ("fp32", "fp16"):
        return mlmodel
    if recipe == "int8-weights":
        op_config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op_config))
    if recipe == "int4-weights":
        op_config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block",
                                                block_size=32)
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op_config))
    if recipe.startswith("palettize-"):
        op_config = cto.OpPalettizerConfig(mode="kmeans", nbits=int(recipe.split("-")[1]))
        return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op_config))
    if recipe.startswith("prune-"):
        op_config = cto.OpMagnitudePrunerConfig(target_sparsity=int(recipe.split("-")[1]) / 100)
        return cto.prune_weights(mlmodel, cto.OptimizationConfig(global_config=op_config))
    raise InputError(f"recipe {recipe!r} is not a Core ML recipe")

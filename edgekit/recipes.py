"""The capability table: source family x format x recipe, read by the CLI choices, the
converter's validation (before any work starts) and `edgekit recipes`.

A recipe name means the same thing in every format that supports it; a format or a source
that cannot do a recipe says so here, with the reason, instead of silently doing something
close to it. It lives on the device side because it is plain data: `edgekit recipes` works
in the device install.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from .errors import InputError

TFLITE = "tflite"
COREML = "coreml"
FORMATS = (TFLITE, COREML)

# Source families: what the converters read. Keras/SavedModel -> TensorFlow's converters;
# PyTorch (and ONNX, turned into a PyTorch module) -> litert-torch and coremltools' PyTorch
# frontend; an existing float .tflite -> ai-edge-quantizer, which rewrites LiteRT models.
TENSORFLOW, TORCH, TFLITE_FLOAT = "tensorflow", "torch", "tflite"
FAMILIES = (TENSORFLOW, TORCH, TFLITE_FLOAT)


@dataclass(frozen=True)
class Gate:
    """The parity an artifact of a recipe must reach against its source, or it is rejected.

    Defaults are set to catch broken artifacts, not ordinary quantization loss: a saturated int8
    softmax gave cosine 0.000 and 0 % top-1 agreement and used to be written and exit 0, while
    healthy int8 artifacts of the sample and of keras.applications nets measure cosine ≥ 0.99.
    Tighten them per run with --min-cosine / --min-top1; --no-gate turns the gate off.
    """
    min_cosine: float
    min_top1: float  # applies to classifier outputs only


# fp32 differs from the source only in op order; fp16 rounds activations to 11 bits; weight-only
# 8-bit and 6/8-bit palettes are near-lossless; full-integer recipes quantize every activation;
# 2-bit palettes and pruning without fine-tuning are lossy by design (still far from cosine 0).
LOSSLESS, NEAR_LOSSLESS, QUANTIZED, LOSSY = Gate(0.9999, 0.99), Gate(0.999, 0.97), Gate(0.98, 0.90), Gate(0.80, 0.70)


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    # format -> how that format realises the recipe; absent = unsupported
    realisations: dict[str, str]
    needs_calibration: bool = False
    gate: Gate = QUANTIZED

    def supports(self, fmt: str) -> bool:
        return fmt in self.realisations


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe("fp32", "float32 weights and activations (reference)",
               {TFLITE: "no optimization", COREML: "compute precision float32"}, gate=LOSSLESS),
        Recipe("fp16", "float16 weights",
               {TFLITE: "float16 weights, dequantized to float32 at load on CPU",
                COREML: "compute precision float16"}, gate=NEAR_LOSSLESS),
        Recipe("int8-weights", "8-bit weights, float activations (dynamic range)",
               {TFLITE: "dynamic-range quantization", COREML: "linear 8-bit weight quantization"},
               gate=NEAR_LOSSLESS),
        Recipe("int8", "full integer: 8-bit weights and activations, calibrated",
               {TFLITE: "full-integer quantization with a representative dataset"}, needs_calibration=True),
        Recipe("int16x8", "16-bit activations, 8-bit weights, calibrated",
               {TFLITE: "EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8"}, needs_calibration=True),
        Recipe("int4-weights", "4-bit weights, float activations",
               {COREML: "linear 4-bit weight quantization (iOS 18)"}),
        Recipe("palettize-2", "2-bit k-means weight palettes", {COREML: "k-means palettization, 4 entries"},
               gate=LOSSY),
        Recipe("palettize-4", "4-bit k-means weight palettes", {COREML: "k-means palettization, 16 entries"}),
        Recipe("palettize-6", "6-bit k-means weight palettes", {COREML: "k-means palettization, 64 entries"}),
        Recipe("palettize-8", "8-bit k-means weight palettes", {COREML: "k-means palettization, 256 entries"}),
        Recipe("prune-50", "50% magnitude sparsity", {COREML: "magnitude pruning to 50% sparsity"}, gate=LOSSY),
        Recipe("prune-75", "75% magnitude sparsity", {COREML: "magnitude pruning to 75% sparsity"}, gate=LOSSY),
    ]
}


# Where a family cannot do what the format otherwise can: (family, format, recipe or "*") -> why.
_NOT_FROM_FAMILY: dict[tuple[str, str, str], str] = {
    (TFLITE_FLOAT, COREML, "*"): "coremltools reads no .tflite; convert the original Keras, PyTorch or ONNX model",
}

# How each family's TFLite artifacts are made (shown by `edgekit recipes`).
TFLITE_ROUTE = {
    TENSORFLOW: "TFLiteConverter (TensorFlow)",
    TORCH: "litert-torch to a float .tflite, then ai-edge-quantizer for the recipe",
    TFLITE_FLOAT: "ai-edge-quantizer on the given float .tflite",
}


def unsupported(recipe: str, fmt: str, family: str = TENSORFLOW) -> str | None:
    """Why `recipe` cannot be made in `fmt` from a `family` source, or None when it can."""
    if "+" in recipe or COMPRESSION_STEP.match(recipe):
        if family not in (TENSORFLOW, TORCH):
            return ("compression steps (prune-channels, prune-blocks, lowrank, distill) rebuild Keras and "
                    "PyTorch/ONNX models only")
        recipe = base_recipe(recipe)
    if not RECIPES[recipe].supports(fmt):
        return f"{fmt} has no {recipe} recipe"
    return _NOT_FROM_FAMILY.get((family, fmt, recipe)) or _NOT_FROM_FAMILY.get((family, fmt, "*"))


def names_for(fmt: str, family: str = TENSORFLOW) -> list[str]:
    return [name for name in RECIPES if unsupported(name, fmt, family) is None]


def check_capabilities(recipes: list["Recipe"], formats: list[str], family: str, described: str) -> None:
    """Refuse, before any work, a request this source cannot satisfy at all: a format it cannot
    reach, or a recipe none of the requested formats can make from it."""
    for fmt in formats:
        if not names_for(fmt, family):  # fp32 is every format's baseline: its reason is the format's
            raise InputError(f"{described} cannot be converted to {fmt}: {unsupported('fp32', fmt, family)}")
    for recipe in recipes:
        if all(unsupported(recipe.name, fmt, family) for fmt in formats):
            can = "; ".join(f"{fmt}: {', '.join(names_for(fmt, family))}" for fmt in formats)
            reasons = "; ".join(dict.fromkeys(unsupported(recipe.name, fmt, family) for fmt in formats))
            raise InputError(f"recipe {recipe.name!r} cannot be made from {described} ({reasons}); "
                             f"it can make {can}")


COMPRESSION_STEP = re.compile(r"^(prune-channels-\d+(-(l1|l2|act))?(-m\d+)?|prune-blocks-\d+|lowrank-e?\d+"
                              r"|distill(-\d+)?)$")
# prune-channels-N-act[-mM] ranks channels by their activations on the calibration inputs
ACTIVATION_CRITERION = re.compile(r"-act(-m\d+)?$")


def composed(name: str) -> Recipe | None:
    """A recipe with compression steps in front, `prune-channels-30+distill+int8`: the steps transform
    the source model first (edgekit.converters.compress checks their parameters), then the last part
    quantizes. It keeps the base recipe's formats; its gate is the lossy one, because the artifact is
    compared with the *original* source and pruning changes what the network computes."""
    parts = name.split("+")
    base = parts[-1] if parts[-1] in RECIPES else None
    steps = parts[:-1] if base else parts
    if not steps or not all(COMPRESSION_STEP.match(p) for p in steps):
        return None
    recipe = RECIPES[base or "fp32"]
    return Recipe(name, f"{' + '.join(steps)}, then {recipe.name}", recipe.realisations,
                  recipe.needs_calibration
                  or any(p.startswith(("distill", "prune-blocks")) or ACTIVATION_CRITERION.search(p) for p in steps),
                  gate=LOSSY)


def base_recipe(name: str) -> str:
    """The quantization recipe at the end of a (possibly composed) recipe name."""
    last = name.split("+")[-1]
    return last if last in RECIPES else "fp32"


def parse_recipes(text: str, formats: list[str]) -> list[Recipe]:
    """Parse a comma list like "fp32,int8" (or composed ones, "prune-channels-30+distill+int8") and check
    each recipe is available in a requested format."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise InputError(f"--quantize expects a comma-separated list of recipes, got {text!r}; "
                         f"valid: {', '.join(RECIPES)}")
    recipes = []
    for name in names:
        recipe = RECIPES.get(name) or (composed(name) if "+" in name or COMPRESSION_STEP.match(name) else None)
        if recipe is None:
            close = difflib.get_close_matches(name.split("+")[-1], list(RECIPES), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise InputError(f"unknown recipe {name!r}.{hint} Valid recipes: {', '.join(RECIPES)}, optionally after "
                             "compression steps: prune-channels-N[-mM], prune-blocks-N, lowrank-N, distill "
                             "(e.g. prune-channels-30+distill+int8)")
        # With several formats, a recipe runs for those that support it (int8 -> tflite only);
        # one that none of them supports is an error.
        if not any(recipe.supports(fmt) for fmt in formats):
            supported = "; ".join(f"{fmt} supports: {', '.join(names_for(fmt))}" for fmt in formats)
            raise InputError(f"recipe {name!r} is not available for {' or '.join(formats)}; {supported}")
        if name not in [r.name for r in recipes]:
            recipes.append(recipe)
    return recipes


def parse_formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    for fmt in formats:
        if fmt not in FORMATS:
            raise InputError(f"unknown target format {fmt!r}; valid: {', '.join(FORMATS)}")
    if not formats:
        raise InputError(f"--to expects one or more of {', '.join(FORMATS)}, got {text!r}")
    return list(dict.fromkeys(formats))

"""Compression steps as data: `prune-channels-30+distill+int8` -> [Step, Step] and the recipe "int8".

A composed recipe is read left to right: compression steps transform the source model (in that
order), and what is left at the end is the quantization recipe the converter applies afterwards.
Names are parsed here once, so nothing downstream compares strings.

    prune-channels-N[-l1|-l2|-act][-mM]
                                     remove N % of the prunable channels of every group (importance:
                                     L1 norm of the filters by default, L2, or mean |activation|
                                     on the calibration inputs); -mM rounds each group's kept
                                     channels to a multiple of M, the output-channel tile of the
                                     kernel that will run it (XNNPACK int8: 16 on AVX-512 VNNI and
                                     NEON dot-product CPUs, 8-16 on NEON without dot products, 64 on
                                     AMX): a partly filled tile costs as much as a full one
    prune-blocks-N                   remove N % of the residual blocks with an identity shortcut (rounded,
                                     at least one), those that change the output on the calibration
                                     inputs least first: fewer layers, whatever the kernel's tile
    lowrank-N                        factorize Dense / 1x1 Conv2D kernels so each one's MACs fall by N %
    lowrank-eNN                      ... at the smallest rank keeping NN % of the kernel's energy
                                     (sum of squared singular values); skipped where MACs would not fall
    distill[-E]                      fine-tune on the teacher's soft targets for E epochs (default 15)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from edgekit.errors import InputError

PRUNE_CRITERIA = ("l1", "l2", "act")
DEFAULT_DISTILL_EPOCHS = 15
SYNTAX = ("prune-channels-N[-l1|-l2|-act][-mM] (N in 1..95, M a channel multiple in 2..256), prune-blocks-N "
          "(N in 1..100), lowrank-N "
          "(N in 1..95) or lowrank-eNN (energy %), distill or distill-E (epochs)")


@dataclass(frozen=True)
class Step:
    kind: str                        # "prune-channels" | "prune-blocks" | "lowrank" | "distill"
    params: dict = field(default_factory=dict, hash=False, compare=True)

    @property
    def name(self) -> str:
        p = self.params
        if self.kind == "prune-channels":
            return (f"prune-channels-{p['percent']:g}" + ("" if p["criterion"] == "l1" else f"-{p['criterion']}")
                    + (f"-m{p['multiple']}" if p.get("multiple", 1) > 1 else ""))
        if self.kind == "prune-blocks":
            return f"prune-blocks-{p['percent']:g}"
        if self.kind == "lowrank":
            return f"lowrank-e{p['energy'] * 100:g}" if p.get("energy") else f"lowrank-{p['percent']:g}"
        return "distill" if p["epochs"] == DEFAULT_DISTILL_EPOCHS else f"distill-{p['epochs']}"


_PRUNE = re.compile(r"prune-channels-(\d+(?:\.\d+)?)(?:-(l1|l2|act))?(?:-m(\d+))?")
_BLOCKS = re.compile(r"prune-blocks-(\d+(?:\.\d+)?)")
_LOWRANK = re.compile(r"lowrank-(e?)(\d+(?:\.\d+)?)")
_DISTILL = re.compile(r"distill(?:-(\d+))?")


def parse_step(text: str) -> Step | None:
    """One step, or None when `text` is not a compression step (then it may be a quantization recipe)."""
    t = text.strip().lower()
    if m := _PRUNE.fullmatch(t):
        percent = float(m.group(1))
        if not 0 < percent <= 95:
            raise InputError(f"{text!r}: prune-channels-N expects N between 1 and 95 (percent of channels removed), "
                             f"got {percent:g}")
        multiple = int(m.group(3) or 1)
        if m.group(3) and not 2 <= multiple <= 256:
            raise InputError(f"{text!r}: -mM expects M between 2 and 256 (kept channels rounded to a multiple of M, "
                             f"e.g. -m16), got {multiple}")
        params = {"percent": percent, "criterion": m.group(2) or "l1"}
        return Step("prune-channels", params | ({"multiple": multiple} if multiple > 1 else {}))
    if m := _BLOCKS.fullmatch(t):
        percent = float(m.group(1))
        if not 0 < percent <= 100:
            raise InputError(f"{text!r}: prune-blocks-N expects N between 1 and 100 (percent of the removable "
                             f"residual blocks), got {percent:g}")
        return Step("prune-blocks", {"percent": percent})
    if m := _LOWRANK.fullmatch(t):
        value = float(m.group(2))
        if m.group(1):
            if not 0 < value <= 100:
                raise InputError(f"{text!r}: lowrank-eNN expects NN between 1 and 100 (percent of energy kept), "
                                 f"got {value:g}")
            return Step("lowrank", {"energy": value / 100})
        if not 0 < value <= 95:
            raise InputError(f"{text!r}: lowrank-N expects N between 1 and 95 (percent of a layer's MACs removed), "
                             f"got {value:g}")
        return Step("lowrank", {"percent": value})
    if m := _DISTILL.fullmatch(t):
        epochs = int(m.group(1) or DEFAULT_DISTILL_EPOCHS)
        if not 1 <= epochs <= 200:
            raise InputError(f"{text!r}: distill-E expects 1..200 epochs, got {epochs}")
        return Step("distill", {"epochs": epochs})
    if t.startswith(("prune-channels", "prune-blocks", "lowrank", "distill")):
        raise InputError(f"expected a compression step like {SYNTAX}; got {text!r}")
    return None


def parse_steps(text: str) -> list[Step]:
    """Every part of `text` must be a compression step: 'prune-channels-30+distill' -> two steps."""
    steps, rest = split_recipe(text)
    if rest is not None:
        raise InputError(f"{text!r}: {rest!r} is not a compression step; expected {SYNTAX}")
    return steps


def split_recipe(text: str) -> tuple[list[Step], str | None]:
    """'prune-channels-30+distill+int8' -> ([prune, distill], 'int8'). The quantization recipe, if any,
    comes last and alone; the caller checks it against the capability table."""
    parts = [p.strip() for p in str(text).split("+")]
    if not text or any(not p for p in parts):
        raise InputError(f"expected steps joined by '+' like 'prune-channels-30+distill+int8', got {text!r} "
                         "(an empty part)")
    steps, recipe = [], None
    for i, part in enumerate(parts):
        step = parse_step(part)
        if step is None:
            if i != len(parts) - 1:
                raise InputError(f"{text!r}: {part!r} is not a compression step ({SYNTAX}); a quantization "
                                 "recipe may only come last")
            recipe = part
        else:
            steps.append(step)
    if steps and steps[0].kind == "distill":
        raise InputError(f"{text!r}: distill fine-tunes a compressed model against the original; put it after "
                         "prune-channels-N, prune-blocks-N or lowrank-N")
    return steps, recipe

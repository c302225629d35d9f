"""The int8 accuracy-budget loop: keep the layers that lose most to quantization in float until the
task accuracy drop is inside the budget, or give up. Never hands back a variant over the budget.

The layers come ranked by the quantization debugger (worst first, as --keep-float names them).
Tries keep 1, 2, 4, 8... of them: each try is a full conversion and evaluation, and doubling
reaches a fix in a few tries where adding one at a time could take dozens. A variant that is
still over the budget after the last try is reported as such, never as the choice.
"""
from __future__ import annotations

from typing import Callable

MAX_TRIES = 4


def drop_points(baseline_top1: float, top1: float) -> float:
    """Accuracy lost, in percentage points (positive = worse than the source)."""
    return round(100.0 * (baseline_top1 - top1), 4)


def fit_budget(first: dict, evaluate: Callable[[tuple[str, ...]], dict], worst_layers: list[str], max_drop: float,
               max_tries: int = MAX_TRIES) -> tuple[dict | None, list[dict]]:
    """(the first result whose "drop" <= max_drop, every attempt). `first` is the plain int8 result;
    `evaluate(keep_float)` converts and measures one more variant. Results need a "drop" key."""
    attempts = [first]
    if first["drop"] <= max_drop:
        return first, attempts
    layers = list(dict.fromkeys(name for name in worst_layers if name))  # ranked, unique
    count = 1
    while layers and len(attempts) <= max_tries:
        keep = tuple(layers[:count])
        result = evaluate(keep)
        result["keep_float"] = list(keep)
        attempts.append(result)
        if result["drop"] <= max_drop:
            return result, attempts
        if count >= len(layers):
            break
        count = min(count * 2, len(layers))
    return None, attempts

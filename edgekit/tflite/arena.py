"""Plan the activation arena the way TFLite's planner does: tensors live from the op that
writes them to the last op that reads them, and a greedy-by-size placement packs tensors
whose lifetimes do not overlap into the same bytes. The arena is the peak offset reached."""
from __future__ import annotations

from dataclasses import dataclass

from .graph import Graph

ALIGNMENT = 64  # TFLite aligns arena allocations to 64 bytes (kDefaultTensorAlignment)


@dataclass(frozen=True)
class Lifetime:
    tensor: int
    size: int
    first: int  # op index that produces it (-1: a graph input)
    last: int   # op index that last reads it (len(ops): a graph output)


def lifetimes(graph: Graph) -> list[Lifetime]:
    first: dict[int, int] = {i: -1 for i in graph.inputs}
    last: dict[int, int] = {}
    for op in graph.ops:
        for t in op.outputs:
            first.setdefault(t, op.index)
        for t in op.inputs:
            if not graph.tensors[t].constant:
                last[t] = op.index
    end = len(graph.ops)
    for t in graph.outputs:
        last[t] = end
    return [Lifetime(t, _aligned(graph.tensors[t].nbytes), f, last.get(t, f)) for t, f in first.items()
            if not graph.tensors[t].constant]


def _aligned(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def plan_arena(items: list[Lifetime]) -> tuple[int, dict[int, int]]:
    """Greedy by size: biggest first, each at the lowest offset that does not collide with an
    already-placed tensor whose lifetime overlaps. Returns (arena bytes, offsets)."""
    placed: list[tuple[int, int, Lifetime]] = []  # (offset, end, lifetime)
    offsets: dict[int, int] = {}
    for item in sorted(items, key=lambda x: (-x.size, x.first, x.tensor)):
        busy = sorted((o, e) for o, e, other in placed if other.first <= item.last and item.first <= other.last)
        offset = 0
        for start, end in busy:
            if offset + item.size <= start:
                break
            offset = max(offset, end)
        placed.append((offset, offset + item.size, item))
        offsets[item.tensor] = offset
    return max((e for _, e, _ in placed), default=0), offsets

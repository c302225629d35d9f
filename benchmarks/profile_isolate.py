"""Is a network the sum of its ops? Time every costed op of a network alone, against the profile's price.

    python benchmarks/profile_isolate.py NET.tflite --profile host.json [--threads 1] [--ops]

Each costed op is cut out as a model of its own (its non-constant inputs become the model's inputs;
the ops that make its constant inputs - fp16 DEQUANTIZE, DENSIFY - come along, as the runtime runs
them once at load, and so does a RELU that XNNPACK fuses into it, edgekit.profile.costmodel.CLAMPS)
and its interpreter invoke is timed alone, interleaved with the whole network's invoke (1-thread runs pinned and timed by the thread's CPU clock, the lowest of 5 block medians, as
benchmarks/profile_prefix.py times prefixes). Printed per op kind: the ops' isolated time and what the
profile prices them at inside this network; then the whole network's invoke against the sum of its
isolated ops (each of which also pays an empty invoke, ~1 us here).

What it found on this host (profile of timing run 29): at one thread a network is about the sum of its
ops alone - MediaPipe's short-range face detector 1.12 ms whole, 1.05 summed; the portrait selfie
segmenter 3.45 vs 3.34; digits_cnn fp16 0.028 vs 0.027 - so a miss is mostly the price of ops alone, not
their context: that is how the fp32 ADD that clamps (3x a plain one) and the RELUs XNNPACK fuses away
were found, and where the profile still underprices (the selfie segmenter's ops priced 2.46 ms against
3.34 alone: its large fp32 ADDs, whose suite probes are mostly numpy I/O). At two threads it is not
additive (the selfie segmenter 2.57 ms whole, 1.93 summed). A diagnostic for the development networks;
run it under the timing lock.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def isolated(data: bytes, index: int, static: set[int], clamp: int | None = None) -> bytes:
    """Op `index` of the model as a model of its own, with the ops that make its constant inputs;
    clamp: the index of a RELU that XNNPACK fuses into it, which comes along (its output is the model's)."""
    from profile_prefix import packed, unpacked

    model, sg = unpacked(data)
    target = sg.operators[index]
    producer = {int(t): op for op in sg.operators for t in op.outputs}
    kept: list = []

    def bring(tensor: int) -> None:  # a constant made at load: its producing chain comes along
        op = producer.get(tensor)
        if op is None or tensor not in static or any(op is k for k in kept):
            return
        for t in op.inputs:
            if t >= 0:
                bring(int(t))
        kept.append(op)

    for t in target.inputs:
        if t >= 0:
            bring(int(t))
    inputs = sorted({int(t) for t in target.inputs if t >= 0 and int(t) not in static
                     and (int(t) in producer or int(t) in {int(i) for i in sg.inputs})})
    last = sg.operators[clamp] if clamp is not None else target
    sg.operators = kept + [target] + ([last] if clamp is not None else [])
    sg.inputs = np.array(inputs, dtype=np.int32)
    sg.outputs = np.array([int(t) for t in last.outputs], dtype=np.int32)
    return packed(model)


def main() -> None:
    from profile_prefix import Invoke, print_load

    from edgekit.profile import costmodel
    from edgekit.profile.device import estimate_measured, load_profile
    from edgekit.profile.timing import pin_core
    from edgekit.tflite.graph import read_graph

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--profile", type=Path, required=True, help="a profile written by edgekit profile run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=0.15, help="timing per op, all rounds")
    parser.add_argument("--ops", action="store_true", help="also print every op")
    args = parser.parse_args()
    data = args.model.read_bytes()
    graph = read_graph(data)
    estimate = estimate_measured(graph, load_profile(args.profile), args.threads)
    priced = {o.index: o.ms for o in estimate.ops}
    static = {t.index for t in graph.tensors if t.constant}
    costed = [op for op in graph.ops if not costmodel.free(graph, op)]
    rounds, core = 5, pin_core()
    load = os.getloadavg()
    # a clamp fused into the op before it is timed with that op, as XNNPACK runs them
    fused = costmodel.clamp_fusion(graph)[0]
    producer = {t: op.index for op in graph.ops for t in op.outputs}
    clamp_of = {producer[graph.ops[i].inputs[0]]: i for i in fused}
    timers = {op.index: Invoke(isolated(data, op.index, static, clamp_of.get(op.index)), args.threads, core)
              for op in costed}
    whole = Invoke(data, args.threads, core)
    for _ in range(rounds):
        whole.block(4 * args.seconds / rounds)
        for t in timers.values():
            t.block(args.seconds / rounds)
    alone = {i: min(t.medians) for i, t in timers.items()}
    by_kind: dict[str, list[float]] = {}
    for op in costed:
        name = costmodel.kind(graph, op)
        row = by_kind.setdefault(name, [0, 0.0, 0.0])
        row[0], row[1], row[2] = row[0] + 1, row[1] + alone[op.index], row[2] + priced[op.index]
        if args.ops:
            shape = graph.tensors[op.outputs[0]].shape if op.outputs else ()
            print(f"op {op.index:4d} {name:32} -> {str(shape):20} alone {1e3 * alone[op.index]:8.1f} us, "
                  f"priced {1e3 * priced[op.index]:8.1f} us")
    print(f"{args.model.name}, {args.threads} thread(s): {len(costed)} costed ops")
    print(f"{'kind':32} {'ops':>4} {'alone us':>10} {'priced us':>10} {'priced/alone':>12}")
    for name, (n, ms, est) in sorted(by_kind.items(), key=lambda kv: -kv[1][1]):
        print(f"{name:32} {n:4d} {1e3 * ms:10.1f} {1e3 * est:10.1f} {est / ms:12.2f}")
    print(f"whole network invoke {min(whole.medians):.3f} ms; its ops alone summed {sum(alone.values()):.3f} ms; "
          f"priced ops {sum(priced.values()):.3f} ms, whole estimate (I/O included) {estimate.estimate_ms:.3f} ms")
    print_load(load)


if __name__ == "__main__":
    main()

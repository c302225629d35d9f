"""Where inside a network does a measured profile's estimate miss? Time the network's op prefixes.

    python benchmarks/profile_prefix.py NET.tflite --profile host.json [--step 10] [--first 0] [--last N] [--threads 1]

The network is cut after every `step`-th op (a prefix's outputs: each tensor it produces that a later
op or the model's output needs) and every prefix's interpreter invoke is timed alone: no input or
output handling, 1-thread runs pinned to one core and timed by the thread's CPU clock, the lowest of
5 block medians interleaved over all prefixes (as edgekit.profile.timing). Printed per stretch of ops:
the time it added, measured and as the profile costs those ops inside the whole network (whole-model
terms such as partitions and weight streaming are printed apart). This is how NASNetMobile's 7x7
depthwise layers (2.7 ms measured where 56 us was estimated) and DenseNet121 int8's per-channel MULs
(7-27 us, estimated 1-2) were found. A diagnostic for the development networks; run it under the
timing lock.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import flatbuffers
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def unpacked(data: bytes):
    """The model in object form and its subgraph 0 (operators, inputs, outputs), to cut it smaller."""
    from edgekit.tflite.reader import schema

    s = schema()
    model = s.ModelT.InitFromObj(s.Model.GetRootAs(data, 0))
    return model, model.subgraphs[0]


def packed(model) -> bytes:
    """An object-form model (unpacked) as .tflite bytes again."""
    from edgekit.tflite.reader import TFLITE_IDENTIFIER

    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def prefix(data: bytes, k: int, static: set[int]) -> bytes:
    """The model's first k ops as a model of their own. static: tensors the graph reader takes as
    constants - weights dequantized or densified at load (fp16 and sparse models) are never a prefix's
    outputs: XNNPACK takes them as static and refuses to plan a model that exports them."""
    model, sg = unpacked(data)
    kept, rest = sg.operators[:k], sg.operators[k:]
    produced = {int(t) for op in kept for t in op.outputs}
    needed = {int(t) for op in rest for t in op.inputs if t >= 0} | {int(t) for t in sg.outputs}
    sg.operators, sg.outputs = kept, np.array(sorted((produced & needed) - static), dtype=np.int32)
    return packed(model)


def print_load(before: tuple) -> tuple:
    """Print the host's load average before the timing and now - a diagnostic's times are only as good
    as the machine was quiet - and return now's (profile_isolate, profile_context, profile_chains too)."""
    after = os.getloadavg()
    print(f"host load average (1/5/15 min) {[round(v, 1) for v in before]} before, {[round(v, 1) for v in after]} after")
    return after


class Invoke:
    """One prefix loaded once, its invoke timed block by block."""

    def __init__(self, data: bytes, threads: int, core: int | None):
        from ai_edge_litert.interpreter import Interpreter

        from edgekit.native_output import quiet_native

        self.threads, self.core, self.medians = threads, core, []
        with quiet_native():
            self.interpreter = Interpreter(model_content=data, num_threads=threads)
            self.interpreter.allocate_tensors()
        rng = np.random.default_rng(0)
        for d in self.interpreter.get_input_details():
            if np.issubdtype(d["dtype"], np.integer):
                info = np.iinfo(d["dtype"])
                value = rng.integers(info.min, info.max, d["shape"]).astype(d["dtype"])
            else:
                value = rng.standard_normal(d["shape"]).astype(d["dtype"])
            self.interpreter.set_tensor(d["index"], value)
        self.block(0.05)
        self.medians = []

    def block(self, seconds: float) -> None:
        from edgekit.profile.timing import pinned

        clock = time.thread_time if self.threads == 1 else time.perf_counter
        times = []
        with pinned(self.threads, self.core):
            deadline = time.perf_counter() + seconds
            while len(times) < 3 or time.perf_counter() < deadline:
                start = clock()
                self.interpreter.invoke()
                times.append((clock() - start) * 1e3)
        self.medians.append(float(np.median(times)))


def main() -> None:
    from edgekit.profile import costmodel
    from edgekit.profile.device import estimate_measured, load_profile
    from edgekit.profile.timing import pin_core
    from edgekit.tflite.graph import read_graph

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--profile", type=Path, required=True, help="a profile written by edgekit profile run")
    parser.add_argument("--step", type=int, default=10)
    parser.add_argument("--first", type=int, default=0, help="the first cut after this many ops")
    parser.add_argument("--last", type=int, help="the last cut (default: the whole network)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=0.4, help="timing per prefix, all rounds")
    args = parser.parse_args()
    data = args.model.read_bytes()
    graph = read_graph(data)
    last = min(args.last or len(graph.ops), len(graph.ops))
    cuts = sorted({*range(args.first or args.step, last, args.step), last})
    estimate = estimate_measured(graph, load_profile(args.profile), args.threads)
    op_ms = {o.index: o.ms for o in estimate.ops}
    rounds, core = 5, pin_core()
    static = {t.index for t in graph.tensors if t.constant}
    timers = {k: Invoke(prefix(data, k, static), args.threads, core) for k in cuts}
    load = os.getloadavg()
    for _ in range(rounds):
        for t in timers.values():
            t.block(args.seconds / rounds)
    measured = {k: min(t.medians) for k, t in timers.items()}
    print(f"{args.model.name}, {args.threads} thread(s): whole network estimated {estimate.estimate_ms:.3f} ms, "
          f"of which ops {sum(op_ms.values()):.3f} ms; whole-model terms (invoke, I/O, partitions, weight "
          f"streaming) {estimate.estimate_ms - sum(op_ms.values()):.3f} ms")
    previous_k, previous_ms = 0, 0.0
    for k in cuts:
        ops = graph.ops[previous_k:k]
        kinds = sorted({costmodel.kind(graph, op) for op in ops if not costmodel.free(graph, op)})
        added_est = sum(op_ms.get(op.index, 0.0) for op in ops)
        print(f"ops {previous_k:4d}-{k - 1:4d}: measured +{measured[k] - previous_ms:8.3f} ms, estimated "
              f"+{added_est:8.3f} ms  (prefix {measured[k]:.3f} ms)  {', '.join(kinds)[:100]}")
        previous_k, previous_ms = k, measured[k]
    print_load(load)


if __name__ == "__main__":
    main()

"""Where an int8 .tflite model's host time goes: per stage, per kernel family (issue 13).

    python benchmarks/int8_anatomy.py A.tflite [B.tflite ...] [--json out.json]

Every artifact is cut into prefixes that end at stage boundaries (the last op before the feature
map's resolution changes, read from the artifact's graph): prefix k's time minus prefix k-1's is
stage k's time, the invoke overhead falling in the first. Next to them a chain of five int8 3x3
convolutions on a 32x32 map at widths 8..128 (edgekit.profile.probes builds it), which shows the
kernel's channel tile directly. All of it in fresh processes, alternately with XNNPACK's default
kernels on this CPU (AMX where the CPU has AMX-INT8) and with AMX forbidden (benchmarks/x86_amx.py),
where XNNPACK falls back to its AVX-512 VNNI kernels; two rounds, the lowest kept. Timing: raw LiteRT interpreter, 1 thread,
pinned to one core, input set once, models interleaved in blocks; the figure is the lowest block
median (ms). The edgekit runtime's own cost per call (float in/out, quantize/dequantize in numpy)
is measured on the first artifact: Model.run against the bare invoke.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np

HERE = Path(__file__).resolve().parent
CHAIN_WIDTHS = (8, 16, 24, 32, 48, 64, 65, 96, 128)
BLOCKS, PER_BLOCK = 12, 40


def stage_cuts(data: bytes) -> list[tuple[int, str]]:
    """(index of the last op, label) per stage: a stage ends where the next op's output has another
    spatial size (or is no longer a feature map); the last stage ends at the last op."""
    from edgekit.tflite.graph import read_graph

    graph = read_graph(data)
    ops = graph.ops

    def hw(op):
        shape = graph.tensors[op.outputs[0]].shape
        return tuple(shape[1:3]) if len(shape) == 4 else None

    cuts = []
    for i, op in enumerate(ops[:-1]):
        if hw(op) is not None and hw(ops[i + 1]) != hw(op):
            cuts.append((i, "%dx%d" % hw(op)))
    cuts.append((len(ops) - 1, "head"))
    return cuts


def prefix_model(data: bytes, last_op: int) -> bytes:
    """The model cut after op `last_op` (ops are stored in execution order): its output is that op's."""
    import flatbuffers

    from edgekit.tflite.reader import TFLITE_IDENTIFIER, schema

    s = schema()
    model = s.ModelT.InitFromPackedBuf(bytearray(data), 0)
    sg = model.subgraphs[0]
    sg.operators = sg.operators[:last_op + 1]
    sg.outputs = np.asarray([sg.operators[-1].outputs[0]], np.int32)
    model.signatureDefs = None
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _interpreter(content: bytes):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content, num_threads=1)
    it.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in it.get_input_details():
        info = np.iinfo(d["dtype"]) if np.issubdtype(d["dtype"], np.integer) else None
        x = (rng.integers(info.min, info.max, size=d["shape"], dtype=d["dtype"]) if info
             else rng.uniform(0, 1, size=d["shape"]).astype(d["dtype"]))
        it.set_tensor(d["index"], x)
    for _ in range(20):  # XNNPACK packs weights and sets up on the first runs
        it.invoke()
    return it.invoke


def _time(calls: dict) -> dict:
    """name -> lowest block median (ms) of calling it; blocks interleaved across names."""
    medians = {k: [] for k in calls}
    for _ in range(BLOCKS):
        for k, call in calls.items():
            ts = []
            for _ in range(PER_BLOCK):
                t = time.perf_counter()
                call()
                ts.append(time.perf_counter() - t)
            medians[k].append(float(np.median(ts)))
    return {k: round(min(v) * 1e3, 4) for k, v in medians.items()}


def worker(paths: list[Path], forbid_amx: bool) -> dict:
    sys.path.insert(0, str(HERE))
    import x86_amx

    if forbid_amx:
        x86_amx.forbid()
    from edgekit.profile.probes import Probe, build

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    calls, cuts = {}, {}
    for width in CHAIN_WIDTHS:
        probe = Probe("chain", "CONV_2D", "int8", (1, 32, 32, width), cout=width, kernel=3, repeat=5)
        calls[f"chain/{width}"] = _interpreter(build(probe))
    for p in paths:
        data = p.read_bytes()
        cuts[p.name] = stage_cuts(data)
        for last, label in cuts[p.name]:
            calls[f"{p.name}/{last}"] = _interpreter(prefix_model(data, last) if last < cuts[p.name][-1][0] else data)
    runtime = {}
    if paths:  # edgekit's Model.run (float in, quantize, invoke, dequantize) against the bare invoke
        from edgekit.artifact import load
        from edgekit.bench import random_inputs

        model = load(paths[0], threads=1)
        x = random_inputs(model, np.random.default_rng(0))
        runtime = {"edgekit_run": lambda: model.run(x)}
        for _ in range(20):
            model.run(x)
    times = _time(calls | runtime)
    result = {"amx_tiles": x86_amx.tiles_granted(), "forbid_amx": forbid_amx,
              "chain_5x_conv3x3_32x32_ms": {w: times[f"chain/{w}"] for w in CHAIN_WIDTHS}, "models": {}}
    for p in paths:
        prefix = [times[f"{p.name}/{last}"] for last, _ in cuts[p.name]]
        stages = [prefix[0]] + [round(b - a, 4) for a, b in zip(prefix, prefix[1:])]
        result["models"][p.name] = {"total_ms": prefix[-1], "stages": [label for _, label in cuts[p.name]],
                                    "stage_ms": stages}
    if paths:
        result["edgekit_run_ms"] = {paths[0].name: times["edgekit_run"]}
    result["load"] = os.getloadavg()
    return result


def anatomy(paths: list[Path], rounds: int = 2) -> dict:
    """Both kernel families, each in fresh processes, alternated `rounds` times (the two families
    cannot share a process, so drift between processes is met by repetition): per family the round
    with the lowest total of each artifact, the chain's lowest time per width. {"default", "no_amx"}."""
    runs = {"default": [], "no_amx": []}
    for _ in range(rounds):
        for key, flag in (("default", []), ("no_amx", ["--forbid-amx"])):
            proc = subprocess.run([sys.executable, __file__, "--worker", *flag, *(str(p.resolve()) for p in paths)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"anatomy worker ({key}) failed: {proc.stderr[-2000:]}")
            runs[key].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out = {}
    for key, results in runs.items():
        merged = dict(results[-1], rounds=len(results))
        merged["chain_5x_conv3x3_32x32_ms"] = {w: min(r["chain_5x_conv3x3_32x32_ms"][w] for r in results)
                                              for w in results[0]["chain_5x_conv3x3_32x32_ms"]}
        merged["models"] = {name: min((r["models"][name] for r in results), key=lambda m: m["total_ms"])
                            for name in results[0]["models"]}
        if "edgekit_run_ms" in results[0]:
            merged["edgekit_run_ms"] = {n: min(r["edgekit_run_ms"][n] for r in results) for n in results[0]["edgekit_run_ms"]}
        merged["load"] = [r["load"] for r in results]
        out[key] = merged
    return out


def print_tables(result: dict, macs: dict | None = None) -> None:
    d, n = result["default"], result["no_amx"]
    print(f"XNNPACK int8 kernels: default processes used AMX tiles: {d['amx_tiles']}; AMX forbidden in the others "
          f"(tiles {n['amx_tiles']}): AVX-512 VNNI kernels; {d['rounds']} alternating rounds, the lowest kept")
    print("five int8 3x3 convolutions, 32x32 map, C -> C channels (ms):")
    print("  C        " + " ".join(f"{w:>7}" for w in d["chain_5x_conv3x3_32x32_ms"]))
    for key, r in (("default", d), ("no AMX", n)):
        print(f"  {key:8s} " + " ".join(f"{v:7.4f}" for v in r["chain_5x_conv3x3_32x32_ms"].values()))
    print("per stage (ms; prefix cut after the stage's last op, minus the previous cut):")
    for name, m in d["models"].items():
        mm = n["models"][name]
        stages = " + ".join(f"{s} {a:.4f}/{b:.4f}" for s, a, b in zip(m["stages"], m["stage_ms"], mm["stage_ms"]))
        extra = f"  {macs[name] / 1e6:.1f} MMACs" if macs and name in macs else ""
        print(f"  {name}: total {m['total_ms']:.4f} default / {mm['total_ms']:.4f} no AMX{extra}\n    {stages}")
    for name, ms in d.get("edgekit_run_ms", {}).items():
        print(f"edgekit Model.run of {name}: {ms:.4f} ms against {d['models'][name]['total_ms']:.4f} ms bare invoke "
              f"(+{ms - d['models'][name]['total_ms']:.4f} ms quantize/dequantize and checks)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--forbid-amx", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.paths, args.forbid_amx)))
        return
    result = anatomy(args.paths)
    print_tables(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

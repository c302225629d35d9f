"""Is an op's two-thread speed-up the one a profile prices? Chains of one block, timed at two lengths.

    python benchmarks/profile_chains.py --profile host.json [--blocks conv1x1,excitation] [--json out.json]

A block - one op, or a few that keep the tensor's shape (a 1x1 convolution then a depthwise one; a
squeeze-and-excitation block, edgekit.profile.probes._excite; a global MEAN that scales its own input,
the excitation's two ends alone) - is chained 4 and 16 times in a model, and the difference of the two
invokes over 12 is the block's time inside a chain of its own kind: free of the invoke and of the input
and output handling that dominate a single-op probe (the suite's io_* probes alone take up to 1.6x
longer at two threads than at one here). Every block at six sizes from 3x3x256 to 96x96x16, fp32 and
int8, at 1 and 2 threads (edgekit.profile.run.interleaved: the lowest of 5 block medians; 1-thread
runs pinned and timed by the thread's CPU clock), against the profile's price of the same difference.
Printed per block and size: measured and priced microseconds at each thread count and the two-thread
time as a share of the one-thread time, measured and priced. Run it on a quiet machine (~4 min).

What it found on this host (Zen 1, 2 KVM vCPUs; profile of timing run 48; session 15, load ~0.5):
- Chains add up at two threads: a 1x1 convolution alternated with a depthwise one costs the two kinds'
  chain times summed within -2..+6 % at two threads (3x3x256 to 96x96x16, fp32 and int8).
- 1x1 convolutions take 0.56-0.67 of their one-thread time at two threads (priced 0.51-0.69); the
  profile prices the small ones' two-thread time a few per cent low (12x12x64 fp32 18.9 us against 20.4).
- Small ops barely split: float ADDs and MULs up to ~20 K values gain nothing from a second thread
  (0.87-1.25), a 3x3x256 depthwise convolution 1.08; the profile prices small depthwise convolutions
  at two threads 1.1-2.6x what they take (a 3x3x256 fp32 one 6.1 us against 2.4: its per-op term), and
  small float ADDs and MULs at 3.2-7.1 us at one thread where they take 0.25-4.8.
- The global MEAN that scales its own input (the two ends of a squeeze-and-excitation block) takes
  1.6-2.8x its one-thread time at two threads up to 9 K fp32 values (int8 1.3-1.4x up to 3.5 K), where
  the profile prices 0.5-1.1x; int8 HARD_SWISH (reference kernels) 0.94-1.01x, priced 0.98x.
Session 16 (profile of timing run 52): a MUL by a constant per-channel vector (`scale`) costs per row of
channels besides per value - 36,864 fp32 values chained take 16.7 us as 48x48x16 and 6.1 as 6x6x1024 at one
thread (`--blocks scale --sizes 48x48x16,24x24x64,12x12x256,6x6x1024`), which the cost model now prices
(edgekit.profile.costmodel.ROW_FEATURES); fed by a depthwise convolution, a MEAN scaling its input adds
2.0-5.9 us at two threads up to 24x24x32, 0.7-7.2 at one (`dw3x3+mean*input` less `dw3x3`).
Put in the suite as probes (chains of 16: 1x1 convolutions at 3-24 px, depthwise ones at 3-12 px, ADDs
at 6 and 24 px; fp32 and int8; timed in run 49), they priced chains closer and the development networks
worse (README, "A network is not a chain of its ops"), so the suite holds none of them: this is evidence
the profile was not fitted on.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = ((1, 3, 3, 256), (1, 6, 6, 96), (1, 12, 12, 64), (1, 24, 24, 32), (1, 48, 48, 16), (1, 96, 96, 16))
LENGTHS = (4, 16)   # the block's time is the difference of the two, over LENGTHS[1] - LENGTHS[0]
SECONDS = 0.5       # timing per chain and thread count, all rounds
ROUNDS = 5


def _one(op: str):
    """A block of one suite op that keeps its input's shape (edgekit.profile.probes._layer)."""
    def block(b, x):
        from edgekit.profile.probes import Probe, _layer
        channels = int(b.tensors[x].shape[-1])
        kernel = 3 if op == "DEPTHWISE_CONV_2D" else 1
        return _layer(b, Probe("", op, "", (), cout=channels, kernel=kernel), x)
    return block


def _conv_then_depthwise(b, x):
    return _one("DEPTHWISE_CONV_2D")(b, _one("CONV_2D")(b, x))


def _excitation(b, x):
    from edgekit.profile.probes import _excite
    return _excite(b, x)


def _mean_scales_input(b, x):
    """The ends of a squeeze-and-excitation block: global MEAN, then its input scaled by it."""
    from edgekit.profile.probes import Probe, _layer
    mean = _layer(b, Probe("", "MEAN", "", ()), x)
    out = b.act(list(b.tensors[x].shape), scale=0.05)
    b.op("MUL", [x, mean], [out], "MulOptions", b.s.MulOptionsT(), 2 if b.int8 else 1)
    return out


def _scale_by_constant(b, x):
    """A MUL of the tensor by a constant per-channel vector (a batch norm's scale left unfolded, as in
    DenseNet's pre-activation blocks): the broadcast MUL of a squeeze-and-excitation block without the
    squeeze that computes its vector."""
    shape = [1, 1, 1, int(b.tensors[x].shape[-1])]
    values = b.rng.uniform(0.5, 1.5, shape).astype(np.float32)
    # int8: one scale for the whole vector, as the converter quantizes a MUL's constant operand
    vector = (b.tensor(shape, "int8", np.round(values / 1.5 * 127).astype(np.int8), 1.5 / 127, 0) if b.int8
              else b.tensor(shape, "float32", values))
    out = b.act(list(b.tensors[x].shape), scale=0.05)
    b.op("MUL", [x, vector], [out], "MulOptions", b.s.MulOptionsT(), 2 if b.int8 else 1)
    return out


def _after_depthwise(block):
    """The block fed by a depthwise convolution, split over the threads as a network's would be: what
    the block adds is this chain's time less the dw3x3 chain's."""
    return lambda b, x: block(b, _one("DEPTHWISE_CONV_2D")(b, x))


BLOCKS = {"conv1x1": _one("CONV_2D"), "dw3x3": _one("DEPTHWISE_CONV_2D"), "conv1x1+dw3x3": _conv_then_depthwise,
          "add": _one("ADD"), "mul": _one("MUL"), "logistic": _one("LOGISTIC"), "hard_swish": _one("HARD_SWISH"),
          "mean*input": _mean_scales_input, "excitation": _excitation,
          "scale": _scale_by_constant, "dw3x3+mean*input": _after_depthwise(_mean_scales_input),
          "dw3x3+scale": _after_depthwise(_scale_by_constant)}


def chain(precision: str, shape: tuple, block, length: int) -> bytes:
    from edgekit.profile.probes import _Builder
    b = _Builder(precision, 0)
    x0 = b.act(list(shape), scale=0.05)
    x = x0
    for _ in range(length):
        x = block(b, x)
    return b.finish([x0], [x])


def main() -> None:
    from edgekit.emulator import estimate
    from edgekit.profile.device import load_profile
    from edgekit.profile.run import interleaved
    from edgekit.tflite.graph import read_graph
    from profile_prefix import print_load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, required=True, help="a profile written by edgekit profile run")
    parser.add_argument("--blocks", default=",".join(BLOCKS), help=f"comma-separated, of: {', '.join(BLOCKS)}")
    parser.add_argument("--threads", type=int, nargs=2, default=[1, 2], metavar=("FEW", "MORE"))
    parser.add_argument("--sizes", help="comma-separated HxWxC shapes instead of the six defaults, e.g. 48x48x16,6x6x1024")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    unknown = sorted(set(args.blocks.split(",")) - set(BLOCKS))
    if unknown:
        parser.error(f"unknown block(s) {', '.join(unknown)}; expected some of {', '.join(BLOCKS)}")
    try:
        sizes = [(1, *map(int, size.split("x"))) for size in args.sizes.split(",")] if args.sizes else list(SIZES)
    except ValueError:
        sizes = []
    if not sizes or any(len(size) != 4 or min(size) < 1 for size in sizes):
        parser.error(f"--sizes: expected HxWxC shapes of positive integers, got {args.sizes!r}")
    device = load_profile(args.profile)
    load = os.getloadavg()
    cases = [(name, precision, shape) for name in args.blocks.split(",") for precision in ("fp32", "int8")
             for shape in sizes]
    with tempfile.TemporaryDirectory(prefix="edgekit-chains-") as tmp:
        items, graphs = [], {}
        for name, precision, shape in cases:
            for length in LENGTHS:
                key = f"{name}_{precision}_{shape[1]}x{shape[3]}_x{length}"
                path = Path(tmp) / f"{key.replace('*', '_').replace('+', '_')}.tflite"
                path.write_bytes(chain(precision, shape, BLOCKS[name], length))
                graphs[key] = read_graph(path.read_bytes())
                items += [(key, path, n, SECONDS) for n in args.threads]
        print(f"timing {len(items)} chains ({len(cases)} blocks x {len(LENGTHS)} lengths x {len(args.threads)} "
              f"thread counts), ~{len(items) * SECONDS / 60:.0f} min", file=sys.stderr)
        stats = interleaved(items, ROUNDS, progress=lambda message: print(message, file=sys.stderr))

    def per_block(key: str, milliseconds) -> float:
        """Microseconds one block adds to a chain."""
        short, long = (milliseconds(f"{key}_x{length}") for length in LENGTHS)
        return (long - short) / (LENGTHS[1] - LENGTHS[0]) * 1e3

    rows = []
    for name, precision, shape in cases:
        key = f"{name}_{precision}_{shape[1]}x{shape[3]}"
        row = {"block": name, "precision": precision, "shape": list(shape), "values": shape[1] * shape[2] * shape[3]}
        for n in args.threads:
            row[f"measured_us_{n}"] = per_block(key, lambda k: stats[(k, n)]["min_median_ms"])
            row[f"priced_us_{n}"] = per_block(key, lambda k: estimate(graphs[k], device, n).estimate_ms)
        few, more = args.threads
        row["speedup_measured"] = row[f"measured_us_{more}"] / row[f"measured_us_{few}"]
        row["speedup_priced"] = row[f"priced_us_{more}"] / row[f"priced_us_{few}"]
        rows.append(row)
    few, more = args.threads
    print(f"{args.profile.name}: one block's time inside a chain of its kind ({LENGTHS[1]} minus {LENGTHS[0]} blocks)")
    print(f"{'block':14} {'prec':4} {'size':>9} {'values':>7} {f'{few} thr us':>9} {'priced':>8} "
          f"{f'{more} thr us':>9} {'priced':>8} {f'{more}/{few} thr':>8} {'priced':>7}")
    for r in rows:
        size = f"{r['shape'][1]}x{r['shape'][2]}x{r['shape'][3]}"
        print(f"{r['block']:14} {r['precision']:4} {size:>9} {r['values']:7d} {r[f'measured_us_{few}']:9.2f} "
              f"{r[f'priced_us_{few}']:8.2f} {r[f'measured_us_{more}']:9.2f} {r[f'priced_us_{more}']:8.2f} "
              f"{r['speedup_measured']:8.2f} {r['speedup_priced']:7.2f}")
    after = print_load(load)
    if args.json:
        args.json.write_text(json.dumps({"profile": str(args.profile), "threads": args.threads, "lengths": LENGTHS,
                                         "load_before": load, "load_after": after, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

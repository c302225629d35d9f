"""Re-fit and score `edgekit profile` offline from one timing run's raw measurements, in seconds.

    python benchmarks/profile_refit.py RAW.json [--set test|dev|all] [--statistic min_median] [--rows]

benchmarks/profile_accuracy.py --raw RAW.json stores what it timed: every probe's and every network's
statistics per thread count (and the networks' paths). Probe graphs are rebuilt from the suite
(edgekit.profile.probes builds them deterministically), so the cost model can be changed and re-scored
against the same measurements without timing anything again. The networks come in two sets: "dev"
(benchmarks/profile_networks.py DEV_NETWORKS and other models, which the cost model may be tuned on)
and "test" (the unseen networks the README reports: never tuned on).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAT_KEYS = ("min_median_ms", "p50_ms", "p10_ms", "block_spread", "seconds")


def save_raw(path: Path, samples: list[dict], refs: dict, nets: dict[str, tuple[Path, str]], host: dict) -> None:
    """samples: edgekit.profile.run.measure's probe entries; refs: (network, threads) -> stats;
    nets: network -> (path, set name); host: load, wall time, anything about the run."""
    from edgekit.profile.probes import SUITE

    specs = {p.name: spec(p) for p in SUITE}
    doc = {"host": host,
           "probes": [{"probe": s["probe"], "threads": s["threads"], "cache_bytes": s["cache_bytes"],
                       "stream_bytes": s["stream_bytes"], "spec": specs.get(s["probe"]),
                       **{k: s[k] for k in STAT_KEYS}} for s in samples],
           "networks": [{"network": name, "threads": n, "set": nets[name][1], "path": str(nets[name][0]),
                         **{k: ref[k] for k in STAT_KEYS}} for (name, n), ref in sorted(refs.items())]}
    path.write_text(json.dumps(doc, indent=1))


def spec(p) -> list:
    """What a probe name stood for when it was timed: re-fitting old measurements against a suite whose
    drawn kernel-grid shapes changed would pair times with the wrong shapes."""
    return [p.op, p.precision, list(p.shape), p.cout, p.kernel, p.stride, p.repeat, p.broadcast]


def load_raw(path: Path) -> tuple[list[dict], list[dict], dict]:
    """(probe samples with their graphs, as measure() returns them; network entries; host info)."""
    from edgekit.profile.probes import SUITE, build
    from edgekit.tflite.graph import read_graph

    doc = json.loads(Path(path).read_text())
    by_name = {p.name: p for p in SUITE}
    # probes the suite has since dropped or redrawn are left out: the fit sees what `profile run` would time
    changed = {s["probe"] for s in doc["probes"] if s.get("spec") and s["probe"] in by_name and s["spec"] != spec(by_name[s["probe"]])}
    if changed:
        print(f"{path}: {len(changed)} probes were timed with other shapes than the suite's now: left out", file=sys.stderr)
    graphs = {name: read_graph(build(by_name[name])) for name in {s["probe"] for s in doc["probes"]}
              if name in by_name and name not in changed}
    samples = [{**s, "graph": graphs[s["probe"]], "grid": by_name[s["probe"]].grid} for s in doc["probes"] if s["probe"] in graphs]
    return samples, doc["networks"], doc.get("host", {})


def evaluate(samples: list[dict], networks: list[dict], statistic: str = "min_median",
             band: bool = False, fit=None) -> list[dict]:
    """Each network entry with the fitted profile's estimate and its error under `statistic`."""
    from edgekit.emulator import estimate
    from edgekit.profile import run
    from edgekit.profile.device import _validated
    from edgekit.tflite.graph import read_graph

    threads = sorted({s["threads"] for s in samples})
    entries = {}
    for n in threads:  # as edgekit.profile.run.build_profile does
        chosen = [s for s in samples if s["threads"] == n]
        entries[str(n)] = fit(chosen, statistic) if fit else run.fit_threads(chosen, statistic, band, entries.get("1"))
    device = _validated({"edgekit_profile": run.PROFILE_FORMAT, "name": "host", "description": "raw refit",
                         "ram_mb": 1024, "cache_bytes": samples[0]["cache_bytes"], "threads": entries}, "refit")
    graphs, out = {}, []
    for net in networks:
        if net["path"] not in graphs:
            graphs[net["path"]] = read_graph(Path(net["path"]).read_bytes())
        est = estimate(graphs[net["path"]], device, net["threads"])
        measured = net[f"{statistic}_ms"]
        out.append({**net, "estimate_ms": est.estimate_ms, "error": est.estimate_ms / measured - 1,
                    "in_band": bool(est.low_ms <= measured <= est.high_ms)})
    return out


def scores(cases: list[dict]) -> dict:
    errors = np.array([abs(c["error"]) for c in cases])
    if not len(errors):
        return {"cases": 0}
    return {"cases": len(cases), "within_10pct": round(float((errors <= 0.10).mean()), 3),
            "median_abs_error_pct": round(float(np.median(errors)) * 100, 1),
            "worst_abs_error_pct": round(float(errors.max()) * 100, 1),
            "band_coverage": round(float(np.mean([c["in_band"] for c in cases])), 3)}


def summary_lines(cases: list[dict], label: str) -> list[str]:
    lines = []
    for n in [None] + sorted({c["threads"] for c in cases}):
        s = scores([c for c in cases if n is None or c["threads"] == n])
        if s["cases"]:
            lines.append(f"{label:>16} {'all' if n is None else f'{n} thr':>5}: {s['cases']} cases, "
                         f"{100 * s['within_10pct']:.0f}% within +-10%, median |error| {s['median_abs_error_pct']}%, "
                         f"worst {s['worst_abs_error_pct']}%")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("--set", default="dev", choices=("test", "dev", "all"))
    parser.add_argument("--statistic", default="min_median", choices=("min_median", "p50", "p10"))
    parser.add_argument("--rows", action="store_true", help="print every network's error")
    args = parser.parse_args()
    samples, networks, _ = load_raw(args.raw)
    chosen = [n for n in networks if args.set == "all" or n["set"] == args.set]
    cases = evaluate(samples, chosen, args.statistic)
    if args.rows:
        for c in sorted(cases, key=lambda c: (c["network"], c["threads"])):
            print(f"{c['set']:>4} {c['network']:<44} {c['threads']} {c[args.statistic + '_ms']:9.3f} "
                  f"{c['estimate_ms']:9.3f} {100 * c['error']:+6.1f}%  spread {100 * c['block_spread']:.0f}%")
    print("\n".join(summary_lines(cases, f"{args.set} {args.statistic}")))


if __name__ == "__main__":
    main()

"""Re-fit and score `edgekit profile` offline from timing runs' raw measurements, in seconds.

    python benchmarks/profile_refit.py RAW.json [--set test|dev|all] [--statistic min_median] [--rows]
    python benchmarks/profile_refit.py RAW.json RAW.json ... --stability [--json OUT.json]

benchmarks/profile_accuracy.py --raw RAW.json stores what it timed: every probe's and every network's
statistics per thread count (and the networks' paths). Probe graphs are rebuilt from the suite
(edgekit.profile.probes builds them deterministically), so the cost model can be changed and re-scored
against the same measurements without timing anything again. The networks come in two sets: "dev"
(benchmarks/profile_networks.py DEV_NETWORKS and other models, which the cost model may be tuned on)
and "test" (the unseen networks the README reports: never tuned on).

--stability re-fits several runs and splits each network's error into its bias (the mean over the runs:
the cost model's own miss, the same every time) and its noise (the run-to-run deviation from that
mean: the host). Within +-10 % is then counted three ways: as measured per run, with each network's
bias removed (what a cost model without misses would score on this host), and with the noise removed
(the bias alone). Stored runs: benchmarks/data/profile_runs/ (their networks are rebuilt by
benchmarks/profile_accuracy.py --dev into benchmarks/.cache/profile).
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAT_KEYS = ("min_median_ms", "p50_ms", "p10_ms", "block_spread", "seconds")


def save_raw(path: Path, samples: list[dict], refs: dict, nets: dict[str, tuple[Path, str]], host: dict,
             retimed: dict | None = None) -> None:
    """samples: edgekit.profile.run.measure's probe entries; refs: (network, threads) -> stats;
    nets: network -> (path, set name); host: load, wall time, anything about the run; retimed:
    (network, threads) -> stats of a second timing in the same run (kept apart: never scored)."""
    from edgekit.profile.probes import SUITE

    specs = {p.name: spec(p) for p in SUITE}
    doc = {"host": host,
           "probes": [{"probe": s["probe"], "threads": s["threads"], "cache_bytes": s["cache_bytes"],
                       "stream_bytes": s["stream_bytes"], "spec": specs.get(s["probe"]),
                       **{k: s[k] for k in STAT_KEYS}} for s in samples],
           "networks": [{"network": name, "threads": n, "set": nets[name][1], "path": str(nets[name][0]),
                         **{k: ref[k] for k in STAT_KEYS}} for (name, n), ref in sorted(refs.items())],
           "retimed": [{"network": name, "threads": n, **{k: ref[k] for k in STAT_KEYS}}
                       for (name, n), ref in sorted((retimed or {}).items())]}
    path.write_text(json.dumps(doc, indent=1))


def _portable(path: Path) -> str:
    """A network path inside this checkout is stored relative to it, so stored runs refit anywhere."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def spec(p) -> list:
    """What a probe name stood for when it was timed: re-fitting old measurements against a suite whose
    drawn kernel-grid shapes changed would pair times with the wrong shapes."""
    return [p.op, p.precision, list(p.shape), p.cout, p.kernel, p.stride, p.repeat, p.broadcast]


def load_raw(path: Path) -> tuple[list[dict], list[dict], dict]:
    """(probe samples with their graphs, as measure() returns them; network entries; host info)."""
    from edgekit.profile.probes import SUITE, build
    from edgekit.tflite.graph import read_graph

    text = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    doc = json.loads(text)
    for net in doc["networks"]:  # stored relative to the checkout (or absolute, from older runs)
        net["path"] = str(ROOT / net["path"])
    # a network another benchmark builds (benchmarks/.cache) may not be built in this checkout yet
    missing = sorted({net["network"] for net in doc["networks"] if not Path(net["path"]).exists()})
    if missing:
        print(f"{path}: {len(missing)} networks not built here, left out: {', '.join(missing)}", file=sys.stderr)
        doc["networks"] = [net for net in doc["networks"] if net["network"] not in missing]
    by_name = {p.name: p for p in SUITE}
    # probes the suite has since dropped or redrawn are left out: the fit sees what `profile run` would time
    changed = {s["probe"] for s in doc["probes"] if s.get("spec") and s["probe"] in by_name and s["spec"] != spec(by_name[s["probe"]])}
    if changed:
        print(f"{path}: {len(changed)} probes were timed with other shapes than the suite's now: left out", file=sys.stderr)
    graphs = {name: read_graph(build(by_name[name])) for name in {s["probe"] for s in doc["probes"]}
              if name in by_name and name not in changed}
    # the kernel grid is timed at one thread only (edgekit.profile.run.measure): a run that timed it at
    # two as an experiment (run 19) is re-fitted as `profile run` would fit it
    samples = [{**s, "graph": graphs[s["probe"]], "grid": by_name[s["probe"]].grid} for s in doc["probes"]
               if s["probe"] in graphs and not (by_name[s["probe"]].grid and s["threads"] != 1)]
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


def refit(raw: Path, set_name: str, statistic: str) -> list[dict]:
    """One stored run re-fitted and scored on its networks of `set_name` ("all": every network)."""
    samples, networks, _ = load_raw(raw)
    return evaluate(samples, [n for n in networks if set_name == "all" or n["set"] == set_name], statistic)


def noise_sources(measured: np.ndarray, estimated: np.ndarray) -> dict:
    """Where the run-to-run noise of the errors comes from. measured, estimated: ms, one row per network,
    one column per run. The host's speed of the day (the median over networks of how much slower than
    its own mean each one ran) is taken out of both, what is left is each side's own noise: the
    networks' (the host's noise within a run) and the estimates' (the fit's instability on that run's
    probes). The share within +-10 % with stable estimates (each network's estimate fixed at its median
    over the runs, moved only by the host's speed of the day) is what a fit that no probe noise reached
    would score, misses and all."""
    log_m, log_e = np.log(measured), np.log(estimated)
    speed = np.median(log_m - log_m.mean(axis=1, keepdims=True), axis=0)
    stable = np.median(log_e - speed, axis=1, keepdims=True) + speed
    return {"median_measured_sd_pct": round(float(np.median((log_m - speed).std(axis=1))) * 100, 1),
            "median_estimate_sd_pct": round(float(np.median((log_e - speed).std(axis=1))) * 100, 1),
            "within_10pct_stable_estimate": [round(float(x), 3) for x in
                                             (np.abs(np.exp(stable - log_m) - 1) <= 0.10).mean(axis=0)]}


def stability(runs: dict[str, list[dict]], statistic: str = "min_median") -> dict:
    """Per set and thread count: each network's error in every run, its bias (mean) and noise (standard
    deviation over the runs), and the share within +-10 % as measured per run, with biases removed and
    with noise removed; and where the noise comes from (noise_sources). runs: run name -> evaluate()'s
    cases (the same networks in each)."""
    times: dict[tuple, dict[str, tuple[float, float]]] = {}  # (set, threads, network) -> run -> (measured, estimate)
    for name, cases in runs.items():
        for c in cases:
            times.setdefault((c["set"], c["threads"], c["network"]), {})[name] = (c[f"{statistic}_ms"], c["estimate_ms"])
    out = {}
    for set_name, threads in sorted({k[:2] for k in times}):
        nets = {k[2]: v for k, v in times.items() if k[:2] == (set_name, threads) and len(v) == len(runs)}
        pairs = np.array([[v[r] for r in runs] for v in nets.values()])
        table = 100 * (pairs[:, :, 1] / pairs[:, :, 0] - 1)  # each case's error, as evaluate() gives it
        bias = table.mean(axis=1, keepdims=True)
        out[f"{set_name}/{threads}"] = {
            "networks": {n: {"errors_pct": [round(float(e), 1) for e in row], "bias_pct": round(float(b), 1),
                             "noise_sd_pct": round(float(sd), 1)}
                         for n, row, b, sd in zip(nets, table, bias[:, 0], table.std(axis=1))},
            "within_10pct_per_run": [round(float(x), 3) for x in (abs(table) <= 10).mean(axis=0)],
            "within_10pct_bias_removed": [round(float(x), 3) for x in (abs(table - bias) <= 10).mean(axis=0)],
            "within_10pct_noise_removed": round(float((abs(bias) <= 10).mean()), 3),
            "median_noise_sd_pct": round(float(np.median(table.std(axis=1))), 1),
            "median_abs_bias_pct": round(float(np.median(abs(bias))), 1),
            **noise_sources(pairs[:, :, 0], pairs[:, :, 1])}
    return out


def stability_lines(result: dict, runs: list[str]) -> list[str]:
    lines = []
    for key, r in result.items():
        lines.append(f"{key}: within +-10 % per run {' '.join(f'{100 * x:.0f}%' for x in r['within_10pct_per_run'])}; "
                     f"bias removed {' '.join(f'{100 * x:.0f}%' for x in r['within_10pct_bias_removed'])}; "
                     f"noise removed {100 * r['within_10pct_noise_removed']:.0f}%; median |bias| "
                     f"{r['median_abs_bias_pct']}%, median noise sd {r['median_noise_sd_pct']}%")
        lines.append(f"  noise, the host's speed of the day taken out: networks sd {r['median_measured_sd_pct']}%, "
                     f"estimates sd {r['median_estimate_sd_pct']}%; within +-10 % with stable estimates "
                     f"{' '.join(f'{100 * x:.0f}%' for x in r['within_10pct_stable_estimate'])}")
        lines.append(f"  {'network':<40} {' '.join(f'{n[:7]:>7}' for n in runs)}    bias  noise")
        for n, v in sorted(r["networks"].items(), key=lambda kv: -abs(kv[1]["bias_pct"])):
            lines.append(f"  {n:<40} {' '.join(f'{e:+7.1f}' for e in v['errors_pct'])} {v['bias_pct']:+7.1f} {v['noise_sd_pct']:6.1f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path, nargs="+")
    parser.add_argument("--set", default="dev", choices=("test", "dev", "all"))
    parser.add_argument("--statistic", default="min_median", choices=("min_median", "p50", "p10"))
    parser.add_argument("--rows", action="store_true", help="print every network's error")
    parser.add_argument("--stability", action="store_true",
                        help="several runs: each network's error split into bias (mean over runs) and noise")
    parser.add_argument("--json", type=Path, help="with --stability: write the table as JSON")
    args = parser.parse_args()
    if args.stability:
        runs = {}
        for i, raw in enumerate(args.raw, 1):
            print(f"[{i}/{len(args.raw)}] re-fitting {raw.name}", file=sys.stderr, flush=True)
            runs[raw.name.split(".")[0]] = refit(raw, args.set, args.statistic)
        result = stability(runs, args.statistic)
        print("\n".join(stability_lines(result, list(runs))))
        if args.json:
            args.json.write_text(json.dumps({"runs": list(runs), "statistic": args.statistic, **result}, indent=1))
        return
    if len(args.raw) != 1:
        parser.error("one RAW file, or several with --stability")
    cases = refit(args.raw[0], args.set, args.statistic)
    if args.rows:
        for c in sorted(cases, key=lambda c: (c["network"], c["threads"])):
            print(f"{c['set']:>4} {c['network']:<44} {c['threads']} {c[args.statistic + '_ms']:9.3f} "
                  f"{c['estimate_ms']:9.3f} {100 * c['error']:+6.1f}%  spread {100 * c['block_spread']:.0f}%")
    print("\n".join(summary_lines(cases, f"{args.set} {args.statistic}")))


if __name__ == "__main__":
    main()

"""What `edgekit sweep` shows: the variant table (frontier and best-per-target marked), sweep.json,
and sweep.html with the frontier chart (top-1 against emulated latency on the first target).
A latency edgekit cannot honestly state (Core ML: no runtime off macOS, no cost model in the
emulator) is "n/a", with the reason under the table; such a variant is left off the chart."""
from __future__ import annotations

import html
import json
from pathlib import Path

from edgekit.fileio import atomic_write_text
from edgekit.table import human_size, render

STATUS_ORDER = {"ok": 0, "over budget": 0, "failed": 2, "not run": 3}  # measured rows by latency, then the rest


NA = "n/a"


def _latency(row: dict, target: str) -> float | None:
    return (row.get("emulated_ms") or {}).get(target)


def _ordered(rows: list[dict], target: str) -> list[dict]:
    def ms(r):
        value = _latency(r, target)
        return float("inf") if value is None else value
    return sorted(rows, key=lambda r: (STATUS_ORDER.get(r.get("status"), 4), ms(r), -r.get("top1", 0)))


def na_reasons(rows: list[dict]) -> list[str]:
    """Why some latencies are n/a, once per distinct reason."""
    reasons = {}
    for r in rows:
        for kind, why in (r.get("latency_na") or {}).items():
            label = "host p50" if kind == "host" else "emulated ms"
            reasons.setdefault(f"{label} n/a for {r.get('format', 'tflite')} variants: {why}", None)
    return list(reasons)


def table(result) -> str:
    targets = result.options["targets"]
    headers = ["variant", "format", "top-1 %", "drop", "agree %", "size", "MMACs", "host p50 ms",
               *[f"{t} ms" for t in targets], "frontier", "status"]
    lines = []
    for r in _ordered(result.rows, targets[0]):
        if r.get("status") in ("ok", "over budget"):
            keep = f" (keep-float {len(r['keep_float'])})" if r.get("keep_float") else ""
            status = "best: " + ",".join(r["best_for"]) if r.get("best_for") else r["status"]
            na = r.get("latency_na") or {}
            host = r.get("host_p50_ms")
            lines.append([r["variant"] + keep, r.get("format", "tflite"), round(100 * r["top1"], 2),
                          round(r["drop"], 2), round(100 * r["agreement"], 1), human_size(r["size_bytes"]),
                          round(r["macs"] / 1e6, 2), NA if host is None and "host" in na else host,
                          *[NA if _latency(r, t) is None else _latency(r, t) for t in targets],
                          "*" if r.get("frontier") else "", status])
        else:
            lines.append([r["variant"], r.get("format", "tflite"), None, None, None, None, None, None,
                          *[None for _ in targets], "", r.get("status", "?")])
    head = (f"source {Path(result.source['model']).name}: top-1 {100 * result.source['top1']:.2f} % on "
            f"{result.source['validation_samples']} labelled inputs; budget: drop <= {result.options['max_drop']} points")
    best = "; ".join(f"{t}: {v or 'none inside the budget'}" for t, v in result.best.items())
    tail = f"best under the budget per target: {best}"
    reasons = na_reasons(result.rows)
    if reasons:
        tail += ("\n" + "\n".join(reasons) + "\na variant without a latency on a target is on no frontier and "
                 "never best for that target: it is ranked by nothing it was not measured on")
    if not result.complete:
        tail += "\nnot every variant ran (--budget-minutes); re-run the same command to continue where it stopped"
    return "\n".join([head, render(headers, lines, "llrrrrrr" + "r" * len(targets) + "ll"), tail])


def frontier_svg(result) -> str:
    from edgekit.charts import (  # one recipe look across edgekit's charts
        RECIPE_STYLES,
        _figure,
        _svg,
    )

    target = result.options["targets"][0]
    fig = _figure("edgekit sweep", figsize=(7.6, 4.6))
    ax = fig.subplots()
    ok = [r for r in result.rows if r.get("status") in ("ok", "over budget") and _latency(r, target) is not None]
    levels = list(dict.fromkeys(r["compression"] for r in ok))
    colours = ["#4c78a8", "#e45756", "#54a24b", "#f58518", "#7b4fa0", "#9d755d", "#72b7b2"]
    for r in ok:
        colour = colours[levels.index(r["compression"]) % len(colours)]
        marker = RECIPE_STYLES.get(r["recipe"], ("", "o"))[1]
        face = colour if r["status"] == "ok" else "none"
        ax.scatter([r["emulated_ms"][target]], [100 * r["top1"]], s=80, marker=marker, facecolors=face,
                   edgecolors=colour, linewidths=1.6, zorder=3, label=r["variant"])
    front = sorted((r for r in ok if r.get("frontier")), key=lambda r: r["emulated_ms"][target])
    if front:
        ax.step([r["emulated_ms"][target] for r in front], [100 * r["top1"] for r in front], where="post",
                color="#333", linewidth=1, alpha=0.7, zorder=2, label="Pareto frontier")
    floor = 100 * result.source["top1"] - result.options["max_drop"]
    ax.axhline(floor, color="#888", linestyle="--", linewidth=1, label=f"budget: source - {result.options['max_drop']}")
    for r in ok:
        if r.get("best_for"):
            ax.annotate("best: " + ",".join(r["best_for"]), (r["emulated_ms"][target], 100 * r["top1"]),
                        textcoords="offset points", xytext=(6, -12), fontsize=8)
    ax.set_xlabel(f"emulated latency on {target} (ms)")
    ax.set_ylabel("task top-1 (%)")
    ax.grid(alpha=0.3)
    ax.set_title(f"{Path(result.source['model']).name}: accuracy against latency")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    return _svg(fig, "sweep-frontier", "top-1 against emulated latency")


def html_page(result) -> str:
    name = html.escape(Path(result.source["model"]).name)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>edgekit sweep: {name}</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}"
            "pre{background:#f6f6f6;padding:1em;overflow-x:auto}</style></head><body>"
            f"<h1>edgekit sweep: {name}</h1>{frontier_svg(result)}"
            f"<h2>Variants</h2><pre>{html.escape(table(result))}</pre>"
            "<p>Filled markers: inside the accuracy budget; hollow: over it (after the keep-float loop for "
            "int8). top-1 is task accuracy on the labelled --validate data; agree is top-1 agreement "
            "with the source model; latencies: host p50 through edgekit's runtime and the emulator's "
            "estimate per target. n/a: a latency edgekit cannot state honestly (reason under the table); "
            "those variants are not on the chart, not on the frontier and never best for that target.</p>"
            "</body></html>\n")


def write_reports(result, out_dir: Path) -> None:
    atomic_write_text(out_dir / "sweep.json", json.dumps(result.to_dict(), indent=2) + "\n")
    atomic_write_text(out_dir / "sweep.html", html_page(result))

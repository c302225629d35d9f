"""Charts for `edgekit bench --plot` (PNG) and `edgekit report` (inline SVG), drawn with matplotlib.

matplotlib is a desktop extra (`edgekit[charts]`): a Pi app never draws charts, so the device install
stays numpy + LiteRT. This module is imported only by the commands that draw, and imports matplotlib
inside its functions through `_deps.require`, so a missing extra is one line naming the pip command.

Figures are built with the object API on an explicit Agg canvas, never through pyplot: no display is
needed, no backend is picked from the environment, and no global figure registry grows in a
long-running process (serve, notebooks) or is shared between threads.
"""
from __future__ import annotations

import html
import io
import math
import re
from pathlib import Path

from ._deps import require
from .fileio import atomic_write_bytes

# One look per recipe in every chart, so a point in the scatter and a bar in the latency chart read
# the same. Distinct shapes as well as colours: variants of nearly equal size and accuracy (int8,
# int8-weights, int16x8 on a small model) land on top of each other, and the shapes stay apart.
RECIPE_STYLES = {
    "fp32": ("#4c78a8", "o"),
    "fp16": ("#f58518", "s"),
    "int8-weights": ("#54a24b", "^"),
    "int8": ("#e45756", "D"),
    "int16x8": ("#7b4fa0", "v"),
    "int4-weights": ("#72b7b2", "P"),
}
_MORE_COLORS = ["#9d755d", "#ff9da6", "#bab0ac", "#1b9e77", "#d95f02", "#e7298a"]
_MORE_MARKERS = ["X", "*", "h", "p", "<", ">"]
PERCENTILE_STYLES = {"p50": ("#d62728", "-"), "p90": ("#ff7f0e", "--"), "p99": ("#6a3d9a", ":")}


def require_matplotlib(purpose: str):
    """Fail early (before any benchmark runs) when the [charts] extra is not installed."""
    return require("matplotlib", purpose)


def _figure(purpose: str, **kwargs):
    require_matplotlib(purpose)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _ms(v: float) -> str:
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _wrap(title: str, width: int = 60) -> str:
    """Lines of at most `width` characters, broken after spaces, underscores or hyphens (model names
    are often one long snake_case word), and only mid-word for a part longer than a line."""
    lines, line = [], ""
    for part in re.split(r"(?<=[\s_\-])", title):
        while len(part) > width:
            if line:
                lines.append(line.rstrip())
                line = ""
            lines.append(part[:width])
            part = part[width:]
        if line and len(line) + len(part.rstrip()) > width:
            lines.append(line.rstrip())
            line = ""
        line += part
    return "\n".join(lines + [line.rstrip()] if line else lines)


def latency_png(samples_ms: list[float], percentiles: dict, title: str, path: Path):
    """Latency histogram with p50/p90/p99 lines (left) and the run-order trace (right), written to
    `path` as a PNG. Returns the figure so callers and tests can read its axes."""
    import numpy as np

    fig = _figure("edgekit bench --plot", figsize=(11, 4.2), dpi=100)
    from matplotlib.ticker import MaxNLocator

    lat = np.asarray(samples_ms, dtype=float)
    hist, trace = fig.subplots(1, 2)
    # A few scheduler spikes (4 ms against a 0.06 ms median) would squash every bar into the first
    # bin: the histogram spans the body of the distribution and the legend counts the runs beyond it;
    # the trace on the right still shows every run.
    lo, top = float(lat.min()), float(lat.max())
    hi = min(top, max(percentiles.get("p99", top) * 1.25, percentiles.get("p50", top) * 1.5))
    if hi <= lo:
        hi = lo + max(abs(lo) * 1e-3, 1e-6)
    hist.hist(lat, bins=int(np.clip(len(lat) // 5, 10, 40)), range=(lo, hi), color="#4c78a8", edgecolor="white",
              linewidth=0.5)
    for name, (color, style) in PERCENTILE_STYLES.items():
        if name in percentiles:
            hist.axvline(percentiles[name], color=color, linestyle=style, linewidth=1.8,
                         label=f"{name} {_ms(percentiles[name])} ms")
    beyond = int((lat > hi).sum())
    if beyond:
        hist.plot([], [], " ", label=f"{beyond} run{'s' * (beyond != 1)} > {_ms(hi)} ms off chart (max {_ms(top)} ms)")
    hist.set_xlabel("latency (ms)")
    hist.set_ylabel("runs (count)")
    hist.yaxis.set_major_locator(MaxNLocator(integer=True))
    hist.set_title("latency histogram")
    hist.legend(loc="upper right", fontsize=9)

    runs = np.arange(1, len(lat) + 1)
    trace.plot(runs, lat, color="#54a24b", linewidth=0.8, marker=".", markersize=3)
    if "p50" in percentiles:
        color, style = PERCENTILE_STYLES["p50"]
        trace.axhline(percentiles["p50"], color=color, linestyle=style, linewidth=1,
                      label=f"p50 {_ms(percentiles['p50'])} ms")
        trace.legend(loc="upper right", fontsize=9)
    trace.set_xlabel("run (in order)")
    trace.set_ylabel("latency (ms)")
    trace.xaxis.set_major_locator(MaxNLocator(integer=True))
    trace.set_title("latency by run order (drift, warm-up, noise)")
    for ax in (hist, trace):
        ax.grid(alpha=0.3)
    fig.suptitle(_wrap(title, 100))

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(Path(path), buf.getvalue())
    return fig


def _styles(rows: list[dict]) -> dict[str, tuple[str, str]]:
    """recipe -> (colour, marker), stable across both report charts."""
    styles, extra = {}, 0
    for r in rows:
        recipe = r["recipe"]
        if recipe not in styles:
            if recipe in RECIPE_STYLES:
                styles[recipe] = RECIPE_STYLES[recipe]
            else:
                styles[recipe] = (_MORE_COLORS[extra % len(_MORE_COLORS)], _MORE_MARKERS[extra % len(_MORE_MARKERS)])
                extra += 1
    return styles


def _labels(rows: list[dict]) -> list[str]:
    """`int8 (tflite)` per row; the artifact name where two rows would read the same."""
    labels = [f"{r['recipe']} ({r['format']})" for r in rows]
    return [r["name"] if labels.count(label) > 1 else label for r, label in zip(rows, labels)]


def _svg(fig, salt: str, label: str) -> str:
    """The figure as an <svg> element for inlining in HTML: text kept as text (searchable, and the
    report's tests read it), no XML prolog or DOCTYPE, no metadata block (it links to external
    vocabularies). Every id and reference is prefixed per chart: matplotlib numbers its groups
    `figure_1`, `axes_1`... in each file, and two inline charts would share them on one page (a marker
    or clip path of one chart could then resolve to the other's). The fixed hash salt makes the
    output reproducible."""
    import matplotlib as mpl

    buf = io.BytesIO()
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", bbox_inches="tight",
                    metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = buf.getvalue().decode("utf-8")
    svg = text[text.index("<svg"):]
    svg = re.sub(r'\bid="', f'id="{salt}-', svg).replace('href="#', f'href="#{salt}-').replace("url(#", f"url(#{salt}-")
    return svg.replace("<svg ", f'<svg role="img" aria-label="{html.escape(label)}" '
                                'style="max-width:100%;height:auto" ', 1)


def size_accuracy_svg(rows: list[dict], model: str = "") -> str:
    """Size (KB) against accuracy kept, one colour and marker per recipe, named in a legend.

    Accuracy is top-1 agreement with the source model (%) when every variant has it and it tells them
    apart; when all agree equally (every variant of a small classifier at 100%) the points would sit
    on one line, nearly on top of each other, so cosine similarity, which still separates int8 from
    int8-weights and int16x8, is plotted instead. The axis label says which."""
    fig = _figure("edgekit report", figsize=(7.2, 4.2))
    from matplotlib.ticker import ScalarFormatter

    ax = fig.subplots()
    agreements = [r["parity"].get("top1_agreement") for r in rows]
    top1 = None not in agreements and len(set(agreements)) > 1
    if top1:
        ys = [100 * r["parity"]["top1_agreement"] for r in rows]
        ax.set_ylabel("top-1 agreement with source model (%)")
        min_span = 1.0
    else:
        ys = [r["parity"].get("cosine", float("nan")) for r in rows]
        ax.set_ylabel("cosine similarity to source model")
        min_span = 1e-4
    xs = [r["size_bytes"] / 1024 for r in rows]
    styles = _styles(rows)
    for r, x, y, label in zip(rows, xs, ys, _labels(rows)):
        color, marker = styles[r["recipe"]]
        # Core ML variants hollow, TFLite filled: same recipe colour, format told apart at a glance
        face = "none" if r["format"] == "coreml" else color
        ax.scatter([x], [y], s=90, marker=marker, facecolors=face, edgecolors=color, linewidths=1.8,
                   alpha=0.85, label=label, zorder=3)
    _pad(ax.set_xlim, xs, max(xs) * 0.05 if xs else 1.0, floor=0.0)
    # the ceiling is full agreement: no tick or margin promises more than 100% or a cosine above 1
    _pad(ax.set_ylim, [y for y in ys if not math.isnan(y)], min_span, ceiling=100.0 if top1 else 1.0)
    ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
    ax.set_yticks([t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= (100.0 if top1 else 1.0) + 1e-9])
    ax.set_xlabel("size (KB)")
    ax.grid(alpha=0.3)
    ax.set_title(_wrap(f"{model}: size against accuracy kept" if model else "size against accuracy kept"))
    ax.legend(title="recipe (format)", loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9, title_fontsize=9)
    return _svg(fig, "size-accuracy", "size against accuracy kept")


def _pad(set_lim, values: list[float], min_span: float, floor: float | None = None,
         ceiling: float | None = None) -> None:
    """Limits that frame the data with a margin (a thin one above a ceiling the data can reach), and a
    minimum span so equal values do not collapse the axis."""
    if not values:
        return
    lo, hi = min(values), max(values)
    span = max(hi - lo, min_span)
    lo, hi = lo - 0.2 * span, hi + 0.2 * span
    if floor is not None:
        lo = max(lo, floor)
    if ceiling is not None:
        hi = min(hi, ceiling + 0.06 * span)
    set_lim(lo, hi)


def latency_by_target_svg(rows: list[dict], targets: list[str], model: str = "") -> str:
    """Emulated latency per target as grouped bars (one per .tflite variant), whiskers spanning the
    estimate's low-high band (the emulator's leave-one-device-out error range)."""
    import numpy as np

    fig = _figure("edgekit report", figsize=(7.2, 4.2))
    ax = fig.subplots()
    series = [r for r in rows if r["emulated"]]
    title = "emulated latency per target (whiskers: low–high band)"
    ax.set_title(_wrap(f"{model}: {title}" if model else title))
    if not series or not targets:
        ax.text(0.5, 0.5, "no .tflite variants to emulate", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _svg(fig, "latency-by-target", "latency per target")
    styles = _styles(rows)
    labels = dict(zip((id(r) for r in rows), _labels(rows)))
    x = np.arange(len(targets))
    width = 0.8 / len(series)
    for i, r in enumerate(series):
        est = np.array([r["emulated"][t][0] for t in targets])
        low = np.array([r["emulated"][t][1] for t in targets])
        high = np.array([r["emulated"][t][2] for t in targets])
        color, _ = styles[r["recipe"]]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, est, width * 0.92, color=color, label=labels[id(r)],
               yerr=np.vstack([est - low, high - est]), capsize=3, error_kw={"elinewidth": 1, "ecolor": "#222"},
               zorder=3)
    ax.set_xticks(x, targets)
    ax.set_xlabel("target device")
    ax.set_ylabel("emulated latency (ms)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="recipe (format)", loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9, title_fontsize=9)
    return _svg(fig, "latency-by-target", "latency per target")

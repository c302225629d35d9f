"""Charts: the bench PNG read back through its matplotlib figure, the HTML report checked as a
page and rendered in a real headless browser (Debian's chromium), and the device install without
matplotlib failing with the pip command for edgekit[charts]."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import OUTSIDE, run_cli

TFLITE = ["digits_cnn_fp32.tflite", "digits_cnn_fp16.tflite", "digits_cnn_int8.tflite"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LONG_MODEL = "digits_cnn_depthwise_separable_32x32_grayscale_handwritten_digit_classifier_for_small_boards"


# -- the device install: no matplotlib at import, one clear line when a chart is asked for ----------

@pytest.mark.device
def test_import_edgekit_does_not_import_matplotlib():
    code = ("import sys, edgekit, edgekit.cli, edgekit.bench, edgekit.report, edgekit.bundle\n"
            "assert 'matplotlib' not in sys.modules, sorted(m for m in sys.modules if 'matplotlib' in m)[:5]\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=OUTSIDE, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.device
def test_charts_without_matplotlib_name_the_extra(artifacts, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what the device install looks like
    plot = tmp_path / "bench.png"
    result = run_cli("bench", artifacts / "digits_cnn_int8.tflite", "--runs", "5", "--plot", plot)
    assert result.exit_code == 6, result.output
    assert "edgekit bench --plot needs matplotlib" in result.stderr
    assert "pip install 'edgekit[charts]'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "p50 ms" not in result.stdout and not plot.exists()  # refused before the benchmark ran
    out = tmp_path / "report.html"
    result = run_cli("report", artifacts / "digits_cnn_int8.tflite", "-o", out)
    assert result.exit_code == 6 and "edgekit report needs matplotlib" in result.stderr
    assert "pip install 'edgekit[charts]'" in result.stderr and not out.exists()


# -- bench --plot ---------------------------------------------------------------------------------

@pytest.mark.charts
def test_bench_plot_png_has_axes_units_and_percentile_legend(artifacts, tmp_path):
    from edgekit.bench import plot_png, run_bench

    plot = tmp_path / "bench.png"
    result = run_cli("bench", artifacts / "digits_cnn_int8.tflite", "--threads", "1", "--runs", "30",
                     "--plot", plot)
    assert result.exit_code == 0, result.stderr
    data = plot.read_bytes()
    assert data[:8] == PNG_SIGNATURE and 20_000 < len(data) < 1_000_000
    from PIL import Image

    assert Image.open(plot).size == (1100, 420)

    # deterministic samples (a busy machine's own spikes would make the limits below flaky): a tight
    # body around 0.06 ms and one scheduler spike that must not squash the histogram's bars
    import dataclasses

    import numpy as np

    samples = list(0.06 + 0.004 * np.random.default_rng(0).standard_normal(200))
    samples[7] = 3.0
    stats = {f"p{q}": float(np.percentile(samples, q)) for q in (50, 90, 99)}
    bench = dataclasses.replace(run_bench(artifacts / "digits_cnn_int8.tflite", threads=2, runs=3, warmup=0),
                                runs=200, samples_ms=samples, latency_ms=stats)
    fig = plot_png(bench, tmp_path / "again.png")
    hist, trace = fig.axes
    assert fig.get_suptitle() == f"digits_cnn_int8.tflite — 2 threads, 200 runs ({bench.backend})"
    assert (hist.get_xlabel(), hist.get_ylabel()) == ("latency (ms)", "runs (count)")
    assert (trace.get_xlabel(), trace.get_ylabel()) == ("run (in order)", "latency (ms)")
    legend = [t.get_text() for t in hist.get_legend().get_texts()]
    for name in ("p50", "p90", "p99"):
        assert any(t.startswith(f"{name} ") and t.endswith(" ms") for t in legend), legend
    assert any("1 run >" in t and "off chart" in t for t in legend), legend
    assert hist.get_xlim()[1] < 0.2   # the body of the distribution fills the histogram...
    assert max(trace.lines[0].get_ydata()) == 3.0   # ...and the trace still shows the spike


# -- the report -----------------------------------------------------------------------------------

class Page(HTMLParser):
    """Tags, the <h1> text, and the text inside each <svg> (matplotlib keeps chart text as <text>)."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.h1, self.svg_texts, self._in_h1, self._svg = "", [], False, 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "h1":
            self._in_h1 = True
        elif tag == "svg":
            self._svg += 1
            self.svg_texts.append([])

    def handle_endtag(self, tag):
        if tag == "h1":
            self._in_h1 = False
        elif tag == "svg":
            self._svg -= 1

    def handle_data(self, data):
        if self._in_h1:
            self.h1 += data
        if self._svg and data.strip():
            self.svg_texts[-1].append(data.strip())


def parse(page: str) -> Page:
    p = Page()
    p.feed(page)
    return p


@pytest.mark.charts
def test_report_cli_is_self_contained_with_two_charts(artifacts, tmp_path):
    out = tmp_path / "report.html"
    paths = [artifacts / n for n in TFLITE] + [artifacts / "digits_cnn_fp16.mlpackage"]
    result = run_cli("report", *paths, "-o", out, "--bench-runs", "3", "--targets", "rpi4,rpi5")
    assert result.exit_code == 0, result.stderr
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<?xml" not in page and "<!DOCTYPE svg" not in page
    p = parse(page)
    tags = [t for t, _ in p.tags]
    assert p.h1 == "digits_cnn: edge variants"   # the full model name, not `digits`
    assert [a.get("aria-label") for t, a in p.tags if t == "svg"] == ["size against accuracy kept",
                                                                       "latency per target"]
    assert tags.count("table") == 1 and tags.count("tr") == 1 + len(paths)
    assert not [a for t, a in p.tags if t in ("script", "link", "img", "iframe", "image")]
    refs = [v for _, a in p.tags for k, v in a.items() if k in ("href", "src", "xlink:href")]
    assert refs and all(v.startswith("#") for v in refs), refs   # only marker/clip references inside the page
    ids = [a["id"] for _, a in p.tags if "id" in a]
    assert len(ids) == len(set(ids)), "two inline charts share an element id"
    assert "url(http" not in page and "@import" not in page
    scatter, bars = p.svg_texts
    for label in ("fp32 (tflite)", "fp16 (tflite)", "int8 (tflite)", "fp16 (coreml)", "size (KB)",
                  "cosine similarity to source model"):   # every variant at 100% top-1: cosine tells them apart
        assert label in scatter, (label, scatter)
    for label in ("fp32 (tflite)", "int8 (tflite)", "rpi4", "rpi5", "emulated latency (ms)", "target device"):
        assert label in bars, (label, bars)
    assert "fp16 (coreml)" not in bars        # Core ML variants are not emulated
    result = run_cli("report", *paths, "-o", out)
    assert result.exit_code == 3 and "--force" in result.stderr


@pytest.mark.charts
def test_scatter_axis_is_top1_when_it_tells_variants_apart():
    from edgekit.charts import size_accuracy_svg

    rows = [{"name": f"m_{r}.tflite", "format": "tflite", "recipe": r, "size_bytes": kb * 1024, "emulated": {},
             "parity": {"cosine": cos, "top1_agreement": top1}}
            for r, kb, cos, top1 in (("fp32", 48, 1.0, 1.0), ("int8", 21, 0.998, 0.987),
                                     ("palettize-4", 15, 0.99, 0.95))]
    svg = size_accuracy_svg(rows, "m")
    assert "top-1 agreement with source model (%)" in svg and "cosine" not in svg
    assert "palettize-4 (tflite)" in svg   # a recipe without a fixed style still gets one, and a legend entry
    rows[2]["parity"].pop("top1_agreement")   # one variant without top-1: cosine for all
    assert "cosine similarity to source model" in size_accuracy_svg(rows)


def _five_recipe_rows(artifacts) -> list[dict]:
    """Report rows for all five TFLite recipes: the committed artifacts (fp32, fp16, int8) measured
    by `collect`, plus int8-weights and int16x8 with the size and parity README's convert table
    prints for them (sizes within 2 KB of int8 at 100% top-1: the case whose labels overlapped)."""
    from edgekit.report import collect

    rows = collect([artifacts / n for n in TFLITE], ["rpi3", "rpi4", "rpi5", "pixel6"], 3, None)
    int8 = next(r for r in rows if r["recipe"] == "int8")
    fp32 = next(r for r in rows if r["recipe"] == "fp32")
    rows.append({**fp32, "name": "digits_cnn_int8-weights.tflite", "recipe": "int8-weights",
                 "size_bytes": int(21.6 * 1024), "host_p50_ms": None,
                 "parity": {"cosine": 0.999996, "snr_db": 51.4, "top1_agreement": 1.0}})
    rows.append({**int8, "name": "digits_cnn_int16x8.tflite", "recipe": "int16x8",
                 "size_bytes": int(23.0 * 1024), "host_p50_ms": None,
                 "parity": {"cosine": 0.999353, "snr_db": 28.8, "top1_agreement": 1.0}})
    for r in rows:
        r["model"] = LONG_MODEL   # a long name: the title must keep it whole and wrap
    return rows


def _chromium() -> str:
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    if exe is None:
        message = ("chromium is not installed, so the report was NOT checked in a browser; "
                   "install it: apt-get install -y chromium")
        if os.environ.get("CI"):  # .ci/run installs it: its absence there is a broken CI, not a skip
            pytest.fail(message)
        pytest.skip(message)
    return exe


def _headless(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                           f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=180)


@pytest.mark.charts
def test_report_renders_in_a_headless_browser(artifacts, tmp_path):
    from edgekit.report import render

    exe = _chromium()
    rows = _five_recipe_rows(artifacts)
    report = tmp_path / "report.html"
    report.write_text(render(rows, ["rpi3", "rpi4", "rpi5", "pixel6"]))
    url = report.resolve().as_uri()

    dom = _headless(exe, tmp_path / "profile", "--dump-dom", url)
    assert dom.returncode == 0 and "<svg" in dom.stdout, dom.stderr[-2000:]
    p = parse(dom.stdout)
    assert p.h1 == f"{LONG_MODEL}: edge variants"
    assert [a.get("aria-label") for t, a in p.tags if t == "svg"] == ["size against accuracy kept",
                                                                       "latency per target"]
    scatter, bars = p.svg_texts
    recipes = ["fp32 (tflite)", "fp16 (tflite)", "int8 (tflite)", "int8-weights (tflite)", "int16x8 (tflite)"]
    for chart in (scatter, bars):
        legend = [t for t in chart if t in recipes]
        assert sorted(legend) == sorted(recipes), chart   # one legend entry per recipe, each named once
    assert {"size (KB)", "cosine similarity to source model"} <= set(scatter)
    assert {"emulated latency (ms)", "target device", "rpi3", "pixel6"} <= set(bars)
    # the chart titles carry the whole model name too, wrapped over lines rather than cut
    assert LONG_MODEL in "".join(t for t in scatter if not t[0].isdigit()).replace(" ", "")
    from edgekit.charts import RECIPE_STYLES

    styles = [RECIPE_STYLES[r] for r in ("int8", "int8-weights", "int16x8")]
    assert len({c for c, _ in styles}) == 3 and len({m for _, m in styles}) == 3

    shot = tmp_path / "report.png"
    result = _headless(exe, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000", url)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape == (2000, 1280, 3)
    ink = (img < 200).any(axis=2)                      # anything darker than the light table borders
    assert ink.mean() > 0.01, "the screenshot is (nearly) blank"
    colored = (np.ptp(img.astype(int), axis=2) > 60)   # saturated pixels: chart markers and bars
    assert colored[300:].mean() > 0.002, "no chart colours below the table"
    keep = os.environ.get("EDGEKIT_KEEP_SCREENSHOT")   # to look at it: EDGEKIT_KEEP_SCREENSHOT=/tmp/r.png
    if keep:
        shutil.copy(shot, keep)

"""`edgekit sweep`: the best artifact for a device under an accuracy budget.

A grid of variants, compression levels x quantization recipes x formats (TFLite, Core ML), each
built by the ordinary conversion pipeline from a compressed copy of the source model and measured
the same way: task top-1 on labelled validation data (and the drop from the source model, in
points), agreement with the source, size, MACs from the artifact itself, host p50 through
edgekit's runtime, and emulated latency on every target. A Core ML variant's top-1 and agreement
come from running its saved .mlpackage with edgekit's Core ML executor; its latencies are "n/a"
with the reason (no Core ML runtime off macOS, no Core ML cost model in the emulator), so it is
never "best" for a latency target. int8 variants over the budget go through the accuracy-budget
loop (converters.budget). The Pareto frontier (top-1 against latency on the first target) is
printed; for each target the fastest variant inside the budget is marked "best". Output folder:

    models/      the compressed models (+ provenance JSON), one per compression level: .keras for a
                 Keras source, .pt2 (torch.export) for a PyTorch or ONNX one
    artifacts/   every .tflite / .mlpackage with its manifest
    variants/    one result JSON per variant: a re-run skips variants whose JSON and artifact exist
    sweep.json, sweep.html (table + frontier chart)

Two phases. Building (compress, convert, accuracy; converters.sweep_build) runs per compression
level, in --jobs worker processes when more than one (converters.sweep_jobs). Then every artifact
without a host p50 is timed here, one after another with nothing else running: a p50 measured
beside a conversion would be noise.
"""
from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgekit.errors import InputError
from edgekit.fileio import atomic_write_text
from edgekit.recipes import COREML, FORMATS, TFLITE

from .compress import split_recipe
from .sweep_build import KERAS_SUFFIXES, build_level, finished, not_run, prepare, row_path, variant_name  # noqa: F401

DEFAULT_RECIPES = ("fp32", "fp16", "int8-weights", "int8")
DEFAULT_COMPRESSIONS = ("none", "prune-channels-30+distill", "prune-channels-50+distill")
# Depth pruning, added to the default grid when the model has identity-shortcut blocks: on
# digits_resnet it was the variant meeting #13's speed target (int8: 2.40x host, 1.75x emulated
# rpi4 at -0.28 points); distill-40 because the default 15 epochs left it 2.5 points down.
BLOCKS_COMPRESSION = "prune-blocks-50+distill-40"
# compressed on their torch.export graph (converters.compress.pytorch), converted as `edgekit convert` does
TORCH_SUFFIXES = (".pt2", ".pt", ".pth", ".onnx")
ACCEPTED = "a Keras (.keras, .h5), PyTorch (.pt2, TorchScript .pt) or ONNX (.onnx) model file"


@dataclass(frozen=True)
class SweepOptions:
    model: Path
    out_dir: Path
    calibration: Path
    validate: Path
    targets: tuple[str, ...] = ("rpi4",)
    max_drop: float = 1.0                    # top-1 points
    budget_minutes: float | None = None
    recipes: tuple[str, ...] = DEFAULT_RECIPES
    compressions: tuple[str, ...] | None = None  # None: DEFAULT_COMPRESSIONS (+ BLOCKS_COMPRESSION if it applies)
    labels: Path | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    calibration_samples: int = 500
    seed: int = 0
    bench_runs: int = 100
    threads: int | None = None
    formats: tuple[str, ...] | None = None   # None: tflite, plus coreml when a target is an Apple device
    jobs: int | None = None                  # None: sweep_jobs.default_jobs()
    input_shapes: tuple | None = None        # as ConvertOptions.input_shapes: a TorchScript file does not say it


@dataclass
class SweepResult:
    source: dict
    rows: list[dict]
    frontier: list[str]                       # variant names on the Pareto frontier
    best: dict[str, str | None]               # target -> best variant inside the budget
    seconds: float
    complete: bool                            # False: --budget-minutes ran out first
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"source": self.source, "options": self.options, "seconds": round(self.seconds, 1),
                "complete": self.complete, "frontier": self.frontier, "best": self.best, "variants": self.rows}


def is_apple(device) -> bool:
    return getattr(device, "description", "").lower().startswith("apple") or any(
        getattr(c.core, "name", "").startswith("apple") for c in getattr(device, "clusters", ()))


def sweep_formats(opts: SweepOptions, devices: list) -> tuple[str, ...]:
    """Formats the targets can run: Core ML runs on Apple devices only, so by default a grid for a
    Raspberry Pi or an Android phone has no Core ML variants (they would cost minutes each and could
    be deployed to none of its targets); --formats overrides."""
    if opts.formats is not None:
        return tuple(opts.formats)
    return (TFLITE, COREML) if any(is_apple(d) for d in devices) else (TFLITE,)


def check_options(opts: SweepOptions) -> tuple[list, tuple[str, ...]]:
    """Everything a user can get wrong, before any slow work; returns the target devices and formats."""
    from edgekit.emulator import load_device
    from edgekit.recipes import RECIPES

    if not opts.model.exists():
        raise InputError(f"sweep expects {ACCEPTED}, got {str(opts.model)!r}, which does not exist")
    suffix = opts.model.suffix.lower()
    if not opts.model.is_file() or suffix not in KERAS_SUFFIXES + TORCH_SUFFIXES:
        raise InputError(f"sweep expects {ACCEPTED}, got {str(opts.model)!r}; compression rebuilds the Keras model "
                         "or the PyTorch graph, so a SavedModel folder or a .tflite cannot be swept")
    if opts.input_shapes and suffix in KERAS_SUFFIXES:
        raise InputError(f"--input-shape is for PyTorch models that do not say their input shape (TorchScript); "
                         f"{opts.model.name} does: drop --input-shape")
    if not opts.targets:
        raise InputError("--target expects at least one device name (see edgekit targets)")
    devices = [load_device(t) for t in opts.targets]
    formats = sweep_formats(opts, devices)
    for fmt in formats:
        if fmt not in FORMATS:
            raise InputError(f"--formats: {fmt!r} is not a format; expected some of {', '.join(FORMATS)}")
    if not formats:
        raise InputError(f"--formats expects one or more of {', '.join(FORMATS)}")
    for recipe in opts.recipes:
        if recipe not in RECIPES or not any(RECIPES[recipe].supports(f) for f in formats):
            valid = [n for n, r in RECIPES.items() if any(r.supports(f) for f in formats)]
            raise InputError(f"--recipes: {recipe!r} is not a recipe of {' or '.join(formats)}; expected some of "
                             f"{', '.join(valid)}")
    for compression in opts.compressions or ():
        if compression != "none":
            steps, rest = split_recipe(compression)
            if rest is not None:
                raise InputError(f"--compress: {compression!r} ends in {rest!r}, which is not a compression step; "
                                 "give quantization recipes with --recipes")
    if opts.max_drop < 0:
        raise InputError(f"--max-drop expects points of top-1 accuracy >= 0, got {opts.max_drop}")
    if opts.budget_minutes is not None and opts.budget_minutes <= 0:
        raise InputError(f"--budget-minutes expects a positive number, got {opts.budget_minutes}")
    if opts.jobs is not None and opts.jobs < 1:
        raise InputError(f"--jobs expects a positive number of worker processes, got {opts.jobs}")
    from edgekit._deps import require
    from edgekit.charts import require_matplotlib

    require_matplotlib("edgekit sweep's frontier chart")  # before the minutes of work, not after
    if COREML in formats:
        require("coremltools", "edgekit sweep's Core ML variants")
    return devices, formats


def default_compressions(source_model) -> tuple[str, ...]:
    """The default grid, plus depth pruning when the model has blocks it can remove."""
    from edgekit.errors import EdgekitError

    if getattr(source_model, "torch_module", None) is not None:
        return DEFAULT_COMPRESSIONS + ((BLOCKS_COMPRESSION,) if _torch_blocks(source_model) else ())
    from .compress.blocks import removable_blocks
    from .compress.keras_graph import read_graph

    try:
        blocks = removable_blocks(read_graph(source_model))
    except EdgekitError:  # a graph the compressor refuses (subclassed, shared layers): no depth pruning
        blocks = []
    return DEFAULT_COMPRESSIONS + ((BLOCKS_COMPRESSION,) if blocks else ())


def check_torch_graph(source) -> list:
    """The source's torch.export graph, captured once before any level is built, so a model
    compression cannot capture (a TorchScript file torch's converter cannot export) is refused in
    one line now, not after minutes of building; returns its removable blocks."""
    from .compress.pytorch import working_graph
    from .compress.pytorch.blocks import removable_blocks
    from .sources.torch import example_array

    return removable_blocks(working_graph(source.torch_module, [example_array(t) for t in source.inputs]))


def _torch_blocks(source) -> list:
    from edgekit.errors import ConversionError

    try:
        return check_torch_graph(source)
    except ConversionError:  # a graph the block finder does not follow: no depth pruning by default
        return []


def sweep(opts: SweepOptions, progress: Callable[[str], None] = lambda msg: None) -> SweepResult:
    from edgekit._deps import require

    from .sweep_jobs import default_jobs

    from .sweep_build import is_torch_source

    devices, formats = check_options(opts)
    torch_source = is_torch_source(opts)
    if torch_source:
        require("torch", "edgekit sweep of a PyTorch or ONNX model")
    else:
        require("tensorflow", "edgekit sweep")
        require("keras", "edgekit sweep")
    start = time.time()
    deadline = None if opts.budget_minutes is None else start + opts.budget_minutes * 60
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    (opts.out_dir / "variants").mkdir(exist_ok=True)
    remove_leftovers(opts.out_dir)  # temp files of a run killed outright (SIGKILL: no cleanup ran)
    finished_lines = [0]

    def done(line: str) -> None:
        finished_lines[0] += 1
        progress(f"[{finished_lines[0]}] {line}")

    ctx = prepare(opts, formats, devices, deadline, progress, done)
    if torch_source and opts.compressions is not None and any(c != "none" for c in opts.compressions):
        check_torch_graph(ctx.source_model)  # an InputError now rather than inside the first level
    compressions = opts.compressions if opts.compressions is not None else default_compressions(ctx.source_model)
    opts = _replace(opts, compressions=tuple(compressions))
    ctx.opts = opts
    progress(f"source top-1 on {len(ctx.data.labels)} labelled inputs: {100 * ctx.baseline:.2f} %")
    grid = [(c, *v) for c in compressions for v in ctx.variants(c)]
    levels = [c for c in compressions if any(not finished(opts.out_dir, name) for fmt, r, name in ctx.variants(c))]
    progress(f"{len(grid)} variants ({len(compressions)} compression levels x recipes x {', '.join(formats)}); "
             f"{len(grid) - sum(1 for g in grid if not finished(opts.out_dir, g[3]))} already finished")
    jobs = min(opts.jobs or default_jobs(), max(1, len(levels)))
    from edgekit.interrupt import Interrupted, signals_as_interrupts, signals_ignored

    with signals_as_interrupts() as state:  # SIGTERM too: the same clean stop as Ctrl-C
        try:
            if jobs > 1:
                from .sweep_jobs import build_parallel

                build_parallel(levels, opts, formats, deadline, jobs, done, progress)
            else:
                for level in levels:
                    build_level(level, ctx)
            rows = [_row_or_not_run(opts, c, r, fmt, name) for c, fmt, r, name in grid]
            _time_host(rows, opts, progress)
            interrupted = state.signum  # swallowed by a library on the way: still an interrupt
        except KeyboardInterrupt:
            interrupted = state.signum or signal.SIGINT
        if interrupted is not None:
            with signals_ignored():
                remove_leftovers(opts.out_dir)
            raise Interrupted(interrupted, f"interrupted by {signal.Signals(interrupted).name}; the variants "
                                           f"finished so far are kept in {opts.out_dir} and no partial file is "
                                           "left: re-run the same command to continue") from None
    result = _summarise(opts, rows, ctx.baseline, len(ctx.data.labels), time.time() - start, formats, jobs)
    return result


def _replace(opts: SweepOptions, **changes) -> SweepOptions:
    import dataclasses

    return dataclasses.replace(opts, **changes)


def remove_leftovers(out_dir: Path) -> None:
    """Hidden temp files and staging folders (".name.*") a build writes before renaming them into
    place; only this sweep writes in these folders, and none of its builds is running."""
    import shutil

    for folder in (out_dir / "models", out_dir / "artifacts", out_dir / "variants"):
        if not folder.is_dir():
            continue
        for path in folder.rglob(".*"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists() or path.is_symlink():
                path.unlink(missing_ok=True)


def _row_or_not_run(opts: SweepOptions, compression: str, recipe: str, fmt: str, name: str) -> dict:
    path = row_path(opts.out_dir, name)
    if path.is_file():
        return json.loads(path.read_text())
    return not_run(name, compression, recipe, fmt)


def _time_host(rows: list[dict], opts: SweepOptions, progress) -> None:
    """Host p50 of every built artifact that has none yet, one at a time with no build running.
    Core ML packages only on macOS (Core ML itself); elsewhere the row says why not. Not bounded by
    --budget-minutes, which stops *starting* variants: a built one is timed (100 runs: about a second)."""
    from edgekit.bench import run_bench
    from edgekit.coreml.executor import on_macos_with_coreml

    from .sweep_build import COREML_HOST_NA

    todo = []
    for r in rows:
        if r.get("status") not in ("ok", "over budget") or r.get("host_p50_ms") is not None:
            continue
        if r.get("format", TFLITE) == COREML and not on_macos_with_coreml():
            if r.get("latency_na", {}).get("host") != COREML_HOST_NA:
                r.setdefault("latency_na", {})["host"] = COREML_HOST_NA
                atomic_write_text(row_path(opts.out_dir, r["variant"]), json.dumps(r, indent=2) + "\n")
            continue
        if opts.bench_runs:
            todo.append(r)
    if not todo:
        return
    progress(f"timing host p50 of {len(todo)} artifacts, one at a time ({opts.bench_runs} runs each)")
    begin = time.perf_counter()
    for r in todo:
        bench = run_bench(Path(r["artifact"]), threads=opts.threads, runs=opts.bench_runs)
        r["host_p50_ms"] = round(bench.latency_ms["p50"], 4)
        atomic_write_text(row_path(opts.out_dir, r["variant"]), json.dumps(r, indent=2) + "\n")
    progress(f"timed in {time.perf_counter() - begin:.1f} s")


def latency(row: dict, target: str) -> float | None:
    return (row.get("emulated_ms") or {}).get(target)


def pareto(rows: list[dict], target: str) -> list[str]:
    """Variants no other variant beats on both top-1 (higher) and emulated latency on `target` (lower).
    A variant without a latency on `target` (Core ML: no cost model) cannot be placed, so is not on it."""
    ok = [r for r in rows if "top1" in r and r.get("status") in ("ok", "over budget") and latency(r, target) is not None]
    front = []
    for r in ok:
        ms, acc = latency(r, target), r["top1"]
        dominated = any(o is not r and latency(o, target) <= ms and o["top1"] >= acc
                        and (latency(o, target) < ms or o["top1"] > acc) for o in ok)
        if not dominated:
            front.append(r["variant"])
    return front


def best_under_budget(rows: list[dict], target: str, max_drop: float) -> str | None:
    """The fastest variant inside the budget on `target`; only variants with a latency there can be it."""
    inside = [r for r in rows if r.get("status") == "ok" and r["drop"] <= max_drop and latency(r, target) is not None]
    if not inside:
        return None
    return min(inside, key=lambda r: (latency(r, target), r["size_bytes"]))["variant"]


def _summarise(opts: SweepOptions, rows, baseline, n_labels, seconds, formats, jobs) -> SweepResult:
    complete = True
    for r in rows:
        r.setdefault("format", TFLITE)  # rows of sweeps before formats were TFLite ones
        if r.get("status") == "not run":
            complete = False
        if r.get("status") == "ok" and r["drop"] > opts.max_drop:  # the budget may differ from the last run's
            r["status"] = "over budget"
    frontier = pareto(rows, opts.targets[0])
    best = {t: best_under_budget(rows, t, opts.max_drop) for t in opts.targets}
    for r in rows:
        r["frontier"] = r["variant"] in frontier
        r["best_for"] = [t for t, v in best.items() if v == r["variant"]]
    source = {"model": str(opts.model), "top1": round(baseline, 6), "validation_samples": n_labels}
    options = {"targets": list(opts.targets), "max_drop": opts.max_drop, "recipes": list(opts.recipes),
               "compressions": list(opts.compressions), "formats": list(formats), "jobs": jobs,
               "budget_minutes": opts.budget_minutes, "seed": opts.seed}
    result = SweepResult(source, rows, frontier, best, seconds, complete, options)
    from .sweep_report import write_reports

    write_reports(result, opts.out_dir)
    return result

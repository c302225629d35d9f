"""The `edgekit` command: a thin click layer that parses, calls the library, prints.

Every EdgekitError becomes one line on stderr and its exit code; anything unexpected
becomes one line too, with the traceback only when EDGEKIT_DEBUG=1.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import click

from . import __version__
from ._deps import import_failure
from .errors import ArtifactError, ConversionError, EdgekitError, InputError, MissingDependencyError, first_line
from .fileio import atomic_write_text, check_writable
from .interrupt import Interrupted
from .table import human_size, render

DEBUG = os.environ.get("EDGEKIT_DEBUG") == "1"


class EdgekitGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgekitError as e:
            if DEBUG:
                raise
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BrokenPipeError:
            # `edgekit inspect x.tflite | head`: the reader left; stop quietly like other Unix tools
            # (point stdout at /dev/null so the interpreter's final flush cannot fail again).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(128 + 13)  # 13 = SIGPIPE, the status `head`'s writers conventionally get
        except OSError as e:
            if DEBUG:
                raise
            if not e.filename:  # an OSError about no path is not the user's to fix
                _unexpected(e)
            # a path the user chose (-o /proc/x, a file where a folder goes, a full disk): their
            # environment, not an edgekit bug, so exit 2 like any other bad argument
            click.echo(f"Error: cannot use {e.filename}: {e.strerror or e}; check the path and its permissions or "
                       "choose another location", err=True)
            sys.exit(InputError.exit_code)
        except KeyboardInterrupt as e:
            # commands that write (convert) raise Interrupted after taking back their outputs
            click.echo(f"Error: {e}" if isinstance(e, Interrupted) else "Interrupted; no partial outputs were left behind.",
                       err=True)
            sys.exit(getattr(e, "exit_code", 130))
        except ImportError as e:  # a missing extra, or a broken install: never "your model is corrupt"
            if DEBUG:
                raise
            failure = import_failure(e)
            click.echo(f"Error: {failure}", err=True)
            sys.exit(failure.exit_code)
        except Exception as e:  # a bug or an unforeseen backend failure: still one line
            if DEBUG:
                raise
            _unexpected(e)


def _unexpected(e: Exception) -> None:
    click.echo(f"Error: unexpected {type(e).__name__}: {first_line(str(e))} (set EDGEKIT_DEBUG=1 for the traceback)", err=True)
    sys.exit(70)


@click.group(cls=EdgekitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
@click.option("-v", "--verbose", is_flag=True, help="Show the runtime's and converters' own log lines.")
def main(verbose: bool) -> None:
    """edgekit: convert trained models for phones and small boards, verify and run them."""
    if verbose:
        os.environ["EDGEKIT_VERBOSE"] = "1"


def _progress(message: str) -> None:
    from .interrupt import checkpoint

    checkpoint()  # a signal some library swallowed stops the run here, at the next step
    click.echo(f"  {message}", err=True)


def _taking_back_outputs(command):
    """SIGINT/SIGTERM during the command: remove every output it had written (its artifacts, their
    JSON, the report, folders it created) and exit 130/143 with one line. Why and how: interrupt.py."""
    import functools

    @functools.wraps(command)
    def wrapper(**kwargs):
        from .fileio import recording_writes
        from .interrupt import LateSignals, new_folders, now, outputs_complete, remove_outputs, signals_as_interrupts

        created = new_folders(kwargs["out_dir"])
        if kwargs.get("report") is not None:
            created += new_folders(kwargs["report"].parent)
        since = now()
        late = LateSignals()

        def take_back(signum: int) -> Interrupted:
            removed = remove_outputs(written, created, since)
            return Interrupted(signum, f"interrupted by {signal.Signals(signum).name}; removed the {removed} "
                                       "output(s) this run had written, nothing partial is left")

        with recording_writes() as written, signals_as_interrupts(after=late) as state:
            try:
                result = command(**kwargs)
            except BaseException as e:
                if state.signum is None and not isinstance(e, KeyboardInterrupt):
                    raise
                raise take_back(state.signum or signal.SIGINT) from None
            if state.signum is not None:  # raised inside a library that swallowed it: still an interrupt
                raise take_back(state.signum)
            outputs_complete()  # the command may have said so already, before its "done" line
        return result

    return wrapper


@main.command()
@click.argument("model", type=click.Path(path_type=Path), required=False)
@click.option("--source", "factory", metavar="PACKAGE.MODULE:FUNCTION",
              help="Instead of MODEL: a function returning a PyTorch nn.Module (needs --input-shape).")
@click.option("--input-shape", help="Input shape(s) when the model does not say (TorchScript, --source, dynamic "
                                    "ONNX): 1,3,224,224; several inputs with dtypes: '1,64:int32;1,64:int32'.")
@click.option("--channels-last", is_flag=True,
              help="PyTorch/ONNX image models: TFLite artifacts take NHWC images (Android pipelines) instead of NCHW.")
@click.option("--to", "to", default="tflite", show_default=True,
              help="Target format(s), comma-separated: tflite, coreml.")
@click.option("--quantize", "-q", default="fp32,fp16,int8-weights", show_default=True,
              help="Recipes, comma-separated (see `edgekit recipes`).")
@click.option("--calibration", type=click.Path(path_type=Path), help="Folder of images or .npy/.npz of tensors.")
@click.option("--calibration-samples", default=200, show_default=True, type=int,
              help="How many calibration inputs to use; inputs beyond them serve as parity inputs without --validate.")
@click.option("--validate", type=click.Path(path_type=Path), help="Validation inputs for parity (images or .npz).")
@click.option("--labels", type=click.Path(path_type=Path), help="Text file, one class name per line.")
@click.option("--mean", help="Normalization mean, one value or one per channel: (pixel - mean) / std.")
@click.option("--std", help="Normalization std, one value or one per channel.")
@click.option("--io", default="int8", show_default=True, type=click.Choice(["float", "int8", "uint8"]),
              help="Input/output type of the full-integer int8 recipe.")
@click.option("--io-out", type=click.Choice(["float", "int8", "uint8"]),
              help="Output type of the int8 recipe when it should differ from --io (float keeps small "
                   "probabilities an int8 output step cannot represent).")
@click.option("--ios", default=16, show_default=True, type=click.Choice(["16", "17", "18"]),
              help="Core ML minimum deployment target.")
@click.option("--name", "model_name", help="Model name written into the artifacts (default: file stem).")
@click.option("--description", help="Model description written into the artifacts.")
@click.option("--version", "model_version", default="1", show_default=True, help="Model version written into the artifacts.")
@click.option("--author", default="", help="Author written into the artifacts.")
@click.option("--license", "license_", default="", help="License written into the artifacts.")
@click.option("--keep-float", default="", help="int8: layers (Keras names) or op types to leave in float.")
@click.option("--explain/--no-explain", default=True, show_default=True,
              help="int8: rank layers by quantization error.")
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), default=Path("artifacts"),
              show_default=True, help="Output folder.")
@click.option("--report", type=click.Path(path_type=Path), help="Also write the summary as JSON here.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("--min-cosine", type=click.FloatRange(-1, 1),
              help="Parity gate: reject artifacts whose cosine to the source is below this (default per recipe, "
                   "see `edgekit recipes`).")
@click.option("--min-top1", type=click.FloatRange(0, 1),
              help="Parity gate: reject classifiers whose top-1 agreement with the source is below this fraction.")
@click.option("--gate/--no-gate", default=True, show_default=True,
              help="Reject (rename to *.rejected, exit 5) artifacts that fail their parity gate.")
@_taking_back_outputs
def convert(model, factory, input_shape, channels_last, to, quantize, calibration, calibration_samples, validate,
            labels, mean, std, io, io_out, ios, model_name, description, model_version, author, license_, keep_float,
            explain, out_dir, report, force, min_cosine, min_top1, gate):
    """Convert MODEL into verified edge artifacts.

    MODEL: a Keras .keras/.h5 file or SavedModel folder, a PyTorch .pt2 (torch.export.save) or TorchScript .pt,
    an .onnx file, or a float .tflite (recognised by content). PyTorch code: --source package.module:function."""
    from .preprocess import parse_floats
    from .recipes import parse_formats, parse_recipes

    if (model is None) == (factory is None):
        raise InputError("expected a MODEL file or --source package.module:function (exactly one), got "
                         + ("neither" if model is None else "both") + "; see `edgekit convert --help`")
    formats = parse_formats(to)
    recipes = parse_recipes(quantize, formats)
    if report is not None:
        check_writable([report], force)
    from .converters.options import parse_input_shapes
    from .converters.pipeline import ConvertOptions, convert as run_convert

    if factory is not None:
        model = Path(factory.rpartition(":")[2] or "model")  # names the artifacts: build_net_int8.tflite

    opts = ConvertOptions(
        model=model, formats=tuple(formats), recipes=tuple(recipes), out_dir=out_dir, calibration=calibration,
        validate=validate, calibration_samples=calibration_samples, labels=labels,
        mean=parse_floats(mean, "--mean"), std=parse_floats(std, "--std"), io=io, io_out=io_out, ios=int(ios),
        keep_float=tuple(k.strip() for k in keep_float.split(",") if k.strip()), explain_errors=explain, force=force,
        name=model_name, description=description, model_version=model_version, author=author, license=license_,
        gate=gate, min_cosine=min_cosine, min_top1=min_top1, factory=factory,
        input_shapes=parse_input_shapes(input_shape), channels_last=channels_last)
    start = time.perf_counter()
    result = run_convert(opts, progress=_progress)
    click.echo(format_convert_summary(result))
    if report is not None:
        atomic_write_text(report, json.dumps(result.to_dict(), indent=2) + "\n")
        click.echo(f"report: {report}")
    if result.failed:
        # one line in all: each recipe's first line; the full text is in the --report JSON
        summary = (f"{len(result.failed)} of {len(result.artifacts)} recipes failed: "
                   + "; ".join(f"{a.recipe}: {first_line(a.error, 300)}" for a in result.failed))
        if all(a.error_kind == "dependency" for a in result.failed):
            raise MissingDependencyError(summary)
        raise ConversionError(summary)
    from .interrupt import outputs_complete

    outputs_complete()
    click.echo(f"done in {time.perf_counter() - start:.1f}s. Next: edgekit inspect {result.artifacts[0].path}")


def _top_k_text(top_k_json: str | None) -> str:
    """'[["5", 0.99], ["9", 0.01]]' -> '5 0.990, 9 0.010'."""
    return ", ".join(f"{label} {score:.3f}" for label, score in json.loads(top_k_json)) if top_k_json else "-"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_convert_summary(result) -> str:
    fp32 = {a.format: a.size_bytes for a in result.artifacts if a.recipe == "fp32" and not a.error}
    task = any("task_top1" in a.parity for a in result.artifacts)  # --validate data with true labels
    rows = []
    for a in result.artifacts:
        p = a.parity
        if not p:  # failed before it could be measured
            rows.append([a.format, a.recipe, "FAILED"] + ["-"] * (8 if task else 7))
            continue
        gate = "-" if a.gate is None else ("REJECTED" if a.error_kind == "parity" else "pass")
        rows.append([a.format, a.recipe, human_size(a.size_bytes),
                     f"{a.size_bytes / fp32[a.format]:.2f}x" if a.format in fp32 else "-", f"{p['cosine']:.6f}",
                     f"{p['snr_db']:.1f}", f"{p['max_abs_err']:.3g}", _pct(p["top1_agreement"])]
                    + ([_pct(p.get("task_top1"))] if task else []) + [gate, f"{a.seconds:.1f}"])
    headers = ["format", "recipe", "size", "vs fp32", "cosine", "snr dB", "max abs err", "top-1 agree"]
    headers += (["task top-1"] if task else []) + ["gate", "sec"]
    table = render(headers, rows, align="llrrrrrr" + ("r" if task else "") + "lr")
    lines = [table, "", f"parity inputs: {result.validation['samples']} ({result.validation['note']})"]
    if result.validation.get("source_task_top1") is not None:
        lines.append(f"task top-1 of the source model on them: {_pct(result.validation['source_task_top1'])}")
    if result.skipped_files:
        lines.append(f"skipped {len(result.skipped_files)} unreadable files, e.g. {result.skipped_files[0][0]}: "
                     f"{result.skipped_files[0][1]}")
    for a in result.artifacts:
        worst = [e for e in a.error_layers if e.get("layer")]
        if worst:
            lines.append(f"{a.recipe}: largest quantization error (RMSE in quantization steps; rounding alone "
                         f"≈ 0.29): " + ", ".join(f"{e['layer']} {e['rmse_over_scale']:.2f}" for e in worst[:3]))
            layers = [e["keep_float"] for e in worst if e.get("keep_float")]  # names --keep-float accepts
            if layers:
                lines.append(f"  to keep one in float: --keep-float {layers[0]}")
        elif a.error_layers:
            lines.append(f"{a.recipe}: {a.error_layers[0]['error']}")
    for a in result.artifacts:
        lines.extend(f"{a.recipe}: {d}" for d in a.diagnosis)
    lines.append("artifacts:")
    lines.extend(f"  {a.path}  (+ {a.manifest_path.name})" for a in result.artifacts if not a.error)
    return "\n".join(lines)


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def inspect(artifact, as_json):
    """Show inputs, outputs, quantization, ops and manifest of a .tflite (any, not only edgekit's) or an .mlpackage."""
    from .artifact import inspect as inspect_artifact
    from .tflite.info import RUNTIME_CUSTOM_OPS

    info = inspect_artifact(artifact)
    if info.kind == "coreml":
        return _print_coreml(info, as_json)
    if as_json:
        click.echo(json.dumps({
            "path": str(artifact), "size_bytes": info.size_bytes,
            "inputs": [t.to_dict() for t in info.inputs], "outputs": [t.to_dict() for t in info.outputs],
            "ops": dict(info.op_counts.most_common()), "custom_ops": info.custom_ops,
            "custom_ops_needing_a_kernel": info.unresolved_custom_ops, "flex_ops": info.flex_ops,
            "signatures": info.signatures, "metadata": info.metadata_names, "manifest": info.manifest}, indent=2))
        return
    click.echo(f"{artifact}  {human_size(info.size_bytes)}  schema v{info.schema_version}  "
               f"subgraphs {info.subgraphs}  signatures {', '.join(info.signatures) or '-'}")
    rows = [[kind, t.name, "x".join("?" if d is None else str(d) for d in t.shape), t.dtype,
             t.scale, t.zero_point] for kind, ts in (("input", info.inputs), ("output", info.outputs)) for t in ts]
    click.echo(render(["", "tensor", "shape", "dtype", "scale", "zero point"], rows, align="lllllr"))
    click.echo("")
    click.echo(render(["op", "count"], [[op, n] for op, n in info.op_counts.most_common()], align="lr"))
    provided = [f"{c} ({RUNTIME_CUSTOM_OPS[c]})" for c in info.custom_ops if c in RUNTIME_CUSTOM_OPS]
    if provided:
        click.echo(f"custom ops the LiteRT runtime provides: {', '.join(provided)}")
    if info.unresolved_custom_ops:
        click.echo(f"custom ops (need a registered kernel on the device): {', '.join(info.unresolved_custom_ops)}")
    if info.flex_ops:
        click.echo(f"flex ops (need the TF Select delegate): {', '.join(info.flex_ops)}")
    m = info.manifest
    if m:
        parity = m.get("parity") or {}
        click.echo(f"\nedgekit manifest: recipe {m.get('recipe')}, source {m.get('source', {}).get('file')} "
                   f"(sha256 {str(m.get('source', {}).get('sha256'))[:12]}), edgekit {m.get('versions', {}).get('edgekit')}")
        if m.get("preprocessing"):
            pp = m["preprocessing"]
            click.echo(f"preprocessing: {pp['height']}x{pp['width']}x{pp['channels']} {pp['layout']}, "
                       f"(pixel - {pp['mean']}) / {pp['std']}")
        if m.get("labels"):
            labels = m["labels"]
            click.echo(f"labels: {len(labels)} ({', '.join(labels[:5])}{' ...' if len(labels) > 5 else ''})")
        if parity:
            click.echo(f"parity vs source: cosine {_num(parity.get('cosine'), '.6f')}, "
                       f"SNR {_num(parity.get('snr_db'), '.1f')} dB, "
                       f"top-1 agreement {parity.get('top1_agreement')} on {parity.get('samples')} inputs")
    else:
        other = [n for n in info.metadata_names if n]
        click.echo(f"\nno edgekit manifest{' (metadata: ' + ', '.join(other) + ')' if other else ''}")


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(min=1),
              help="Classes to report per input (table column and store), best first.")
@click.option("--out", metavar="FILE|DIR/|URL",
              help="Store (resumable): .sqlite/.db, .csv, .jsonl, .parquet, a folder/ of Parquet parts, "
                   "or postgresql://user@host:port/db?table=preds.")
@click.option("--threads", type=click.IntRange(min=1), help="Interpreter threads (default: runtime's choice).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary (and rows without --out) as JSON.")
@click.option("--isolate/--no-isolate", default=None,
              help="Load and run once in a sandbox process first (default: for files without an edgekit manifest "
                   "or with sparse tensors).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: Ray Data over a cluster (needs edgekit[ray]); INPUT may also be URLs or one .parquet/.csv "
                   "table with a path or bytes column.")
@click.option("--address", help="--engine ray: the cluster to join (auto, ray://HOST:10001); default a local Ray.")
@click.option("--actors", type=click.IntRange(min=1), help="--engine ray: actors, each loading the model once "
              "(default: cluster CPUs / --threads-per-actor).")
@click.option("--threads-per-actor", type=click.IntRange(min=1), help="--engine ray: interpreter threads (and CPUs "
              "reserved) per actor (default: --threads or 1).")
def predict(artifact, inputs, top_k, out, threads, as_json, isolate, engine, address, actors, threads_per_actor):
    """Run ARTIFACT on INPUTS (image/.npy files, folders, globs). Re-running with the same --out
    skips inputs this model already predicted."""
    from .native_output import quiet_native
    from .predict_job import expand_inputs, run_predictions
    from .artifact import load
    from .stores import open_store, redact

    if engine == "local":
        given = [name for name, v in (("--address", address), ("--actors", actors),
                                      ("--threads-per-actor", threads_per_actor)) if v is not None]
        if given:
            raise InputError(f"{given[0]} expects --engine ray, got --engine local; add --engine ray")
        paths = expand_inputs(list(inputs))
    else:
        from .batch.sources import resolve

        source = resolve(list(inputs))
    _probe_if_needed(artifact, isolate, threads)
    with quiet_native():  # LiteRT's "INFO: Created ... XNNPACK delegate" unless -v
        model = load(artifact, threads=threads)  # on the driver too: a bad artifact fails before any cluster work
    store = open_store(out) if out is not None else None
    bar = _LazyBar(enabled=not as_json)
    try:
        if engine == "local":
            bar.start(len(paths))
            summary = run_predictions(model, artifact, paths, store, top_k=top_k, on_progress=bar.update)
        else:
            from .batch.ray_engine import run_ray_predictions

            summary = run_ray_predictions(artifact, source, store, top_k=top_k, actors=actors,
                                          threads_per_actor=threads_per_actor or threads or 1, address=address,
                                          on_total=bar.start, on_progress=bar.update)
    finally:
        bar.finish()
        if store is not None:
            store.close()
    out = redact(out) if out is not None else None
    unreadable = getattr(store, "unreadable", None)
    if unreadable:
        line, reason = unreadable[0]
        click.echo(f"warning: skipped {len(unreadable)} unreadable line(s) in {out} (first: line {line}, {reason}); "
                   "they were left as they are", err=True)
    data = summary.to_dict()
    if as_json:
        click.echo(json.dumps({**data, "rows": summary.rows} if store is None else data, indent=2))
    else:
        if store is None:
            click.echo(render(["input", "label", "score", f"top {top_k}", "latency ms"],
                              [[Path(r["input"]).name, r["label"], r["score"], _top_k_text(r["top_k"]), r["latency_ms"]]
                               for r in summary.rows], align="llrlr"))
        p50 = f"{data['p50_latency_ms']:.3f} ms" if data["p50_latency_ms"] is not None else "-"
        tput = f"{data['throughput_per_s']:.1f}/s" if data["throughput_per_s"] else "-"
        click.echo(f"predicted {summary.predicted}, already done {summary.skipped_done}, failed {len(summary.failures)}; "
                   f"p50 latency {p50}, throughput {tput}" + (f"; results in {out}" if out else ""))
        for path, reason in summary.failures[:10]:
            click.echo(f"  failed {path}: {reason}", err=True)
    if summary.failures and summary.predicted == 0:
        raise InputError(f"all {len(summary.failures)} inputs failed; first: {summary.failures[0][1]}")


def _num(value, spec: str) -> str:
    """A manifest figure for display; a corrupt manifest may hold anything there."""
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _probe_if_needed(artifact: Path, isolate: bool | None, threads: int | None) -> None:
    """A file edgekit did not make, or one with sparse tensors, is first tried in a sandbox process:
    if it crashes LiteRT the user gets one line instead of a dead shell (issue #15). Edgekit's own
    artifacts skip the ~0.5 s: their weights are checked against the manifest's digest."""
    from .sandbox import needs_isolation, probe

    from .artifact import kind_of

    if kind_of(artifact) == "tflite" and (isolate or (isolate is None and needs_isolation(artifact))):
        probe(artifact, threads=threads)


class _LazyBar:
    """A progress bar on stderr for runs over 20 inputs, created once the count is known (the Ray
    engine learns it only after reading a table)."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar = enabled, None

    def start(self, total: int) -> None:
        if self.enabled and total > 20:
            self.bar = click.progressbar(length=total, label="predicting", file=sys.stderr)
            self.bar.__enter__()

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--threads", type=click.IntRange(min=1), help="Interpreter threads.")
@click.option("--runs", type=click.IntRange(min=1), help="Timed runs (default 100 unless --duration).")
@click.option("--duration", type=float, help="Run for this many seconds instead of a fixed count.")
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(min=0),
              help="Untimed runs before timing (caches, lazy allocation, thread start-up).")
@click.option("--input", "input_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="A real input: image, .npy or .npz (default: random in the model's input range).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON instead of tables.")
@click.option("--plot", type=click.Path(path_type=Path), help="Write a PNG: latency histogram and run-order trace.")
@click.option("--isolate/--no-isolate", default=None,
              help="Load and run once in a sandbox process first (default: for files without an edgekit manifest "
                   "or with sparse tensors).")
def bench(artifact, threads, runs, duration, warmup, input_file, as_json, plot, isolate):
    """Measure ARTIFACT on this machine: init, first inference, latency percentiles, memory."""
    from .bench import run_bench
    from .native_output import quiet_native

    if runs is not None and duration is not None:
        raise InputError("give --runs or --duration, not both")
    if plot:  # before the benchmark: a missing edgekit[charts] should not cost a whole run first
        from .charts import require_matplotlib

        require_matplotlib("edgekit bench --plot")
    _probe_if_needed(artifact, isolate, threads)  # outside the timed load: init_ms stays the runtime's
    with quiet_native():
        result = run_bench(artifact, threads=threads, runs=runs, duration_s=duration, warmup=warmup,
                           input_file=input_file)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        lat = result.latency_ms
        click.echo(f"{artifact}  {human_size(result.size_bytes)}  backend {result.backend}  threads "
                   f"{result.threads or 'default'}  {result.runs} runs  inputs {result.inputs}")
        click.echo(render(["init ms", "first ms", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "min ms",
                           "max ms", "per s", "peak RSS MB", "model RSS MB"],
                          [[round(result.init_ms, 2), round(result.first_inference_ms, 3), lat["p50"], lat["p90"],
                            lat["p99"], lat["mean"], lat["std"], lat["min"], lat["max"],
                            int(round(result.throughput_per_s)), round(result.peak_rss_mb, 1),
                            round(result.model_rss_mb, 1)]]))
    if plot:
        from .bench import plot_png

        plot_png(result, plot)
        click.echo(f"plot: {plot}", err=as_json)  # stdout stays pure JSON with --json


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--target", "targets", required=True, help="Device profile(s), comma-separated (edgekit targets).")
@click.option("--threads", type=click.IntRange(min=1), help="Threads (default: min(4, cores of the target)).")
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=0), help="Slowest ops to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the estimates as JSON instead of tables.")
@click.option("--exec", "exec_", is_flag=True,
              help="Also run ARTIFACT on the device's own runtime build under an emulated Cortex core "
                   "(needs `edgekit device-env build`): loads or not, XNNPACK coverage, parity with the host.")
@click.option("--input", "input_file", type=click.Path(path_type=Path), help="--exec inputs: .npy/.npz or an image.")
@click.option("--samples", default=10, show_default=True, type=click.IntRange(min=1),
              help="--exec without --input: random inputs in the model's range.")
@click.option("--os-arch", default="arm64", show_default=True, type=click.Choice(["arm64", "armhf"]),
              help="--exec: the device OS (armhf is 32-bit Raspberry Pi OS).")
def emulate(artifact, targets, threads, top, as_json, exec_, input_file, samples, os_arch):
    """Estimate ARTIFACT's latency and memory on target CPUs (Raspberry Pi, phones), offline."""
    if exec_:  # refuse what cannot run (armhf, a profile without a CPU model, no sysroot) before any work
        from .device_env.build import check_arch, require_ready, target_cpu

        check_arch(os_arch)
        [target_cpu(name.strip()) for name in targets.split(",") if name.strip()]
        require_ready(os_arch)
    from .emulator import estimate_for, load_device

    devices = [load_device(name.strip()) for name in targets.split(",") if name.strip()]
    graph, results = estimate_for(artifact, devices, threads)
    if graph.uncosted:
        click.echo(f"not costed (estimate excludes them): {', '.join(graph.uncosted)}", err=True)
    runs = _exec_runs(artifact, devices, threads, input_file, samples, os_arch, as_json) if exec_ else None
    if as_json:
        estimates = [r.to_dict() for r in results]
        click.echo(json.dumps(estimates if runs is None else {"estimates": estimates,
                                                              "exec": [run.to_dict() for run in runs]}, indent=2))
        _exec_verdict(artifact, runs)
        return
    click.echo(f"{artifact}  {human_size(graph.size_bytes)}  {graph.total_macs / 1e6:.1f} M multiply-accumulates  "
               f"{len(graph.ops)} ops")
    click.echo(render(["target", "threads", "estimate ms", "range ms", "memory MB", "fits"],
                      [[r.target, r.threads, round(r.estimate_ms, 2), f"{r.low_ms:.2f}-{r.high_ms:.2f}",
                        round(r.memory_mb, 1), "yes" if r.fits else "NO"] for r in results], align="lrrrrl"))
    if top:
        for r in results:
            slow = sorted(r.ops, key=lambda o: -o.ms)[:top]
            click.echo(f"{r.target} slowest ops: " + ", ".join(f"#{o.index} {o.type} {o.precision} {o.ms:.3f} ms "
                                                              f"({o.bound})" for o in slow))
    click.echo("range: leave-one-device-out errors against published measurements, widened until bands built "
               "without a device held ~80% of its rows (benchmarks/emulator_accuracy.py)"
               + (" (for a profile from edgekit profile run: the 10th-90th percentile of its leave-one-probe-out errors)"
                  if any(hasattr(d, "measured_threads") for d in devices) else "")
               + "; memory fits when under half the target's smallest RAM configuration")
    if runs is not None:
        from .device_env.report import PLUGIN_NOTE, exec_lines

        for run in runs:
            click.echo("\n".join(exec_lines(run)))
        click.echo(PLUGIN_NOTE)
        _exec_verdict(artifact, runs)


def _exec_verdict(artifact, runs) -> None:
    """After the full report: a device runtime that rejects the artifact is exit 4, for scripts and CI."""
    rejected = [run for run in runs or [] if not run.loaded]
    if rejected:
        raise ArtifactError(f"{artifact.name} does not load on the device runtime of "
                            + ", ".join(f"{r.target} ({r.failure['kind']}: {r.failure['reason']})" for r in rejected))


def _exec_runs(artifact, devices, threads, input_file, samples, os_arch, quiet):
    from .device_env import run_exec

    return [run_exec(artifact, d.name, threads, input_file, samples, arch=os_arch,
                     progress=lambda m: None if quiet else _progress(m)) for d in devices]


@main.group("device-env")
def device_env():
    """The emulated device sysroot `edgekit emulate --exec` runs in (built once into a cache folder)."""


@device_env.command("build")
@click.argument("target", default="rpi4")
@click.option("--os-arch", default="arm64", show_default=True, type=click.Choice(["arm64", "armhf"]))
@click.option("--force", is_flag=True, help="Remove an existing environment and build it again.")
def device_env_build(target, os_arch, force):
    """Build the Raspberry Pi OS 64-bit (Debian bookworm arm64) sysroot with the device install of edgekit."""
    from .device_env import build_env

    build_env(target, os_arch, progress=_progress, force=force)


@device_env.command("status")
@click.option("--os-arch", default="arm64", show_default=True, type=click.Choice(["arm64", "armhf"]))
@click.option("--json", "as_json", is_flag=True)
def device_env_status(os_arch, as_json):
    """Where the sysroot is, whether it is ready, what it holds."""
    from .device_env import env_status

    status = env_status(os_arch)
    if as_json:
        click.echo(json.dumps(status.to_dict(), indent=2))
        return
    state = "ready" if status.ready else ("partial (re-run build to finish)" if status.stages else "not built")
    click.echo(f"{status.path}: {state}" + (f", {status.size_mb:.0f} MB, built in {status.build_s} s, mode "
                                            f"{status.mode}" if status.ready else ""))
    if status.packages:
        click.echo("device install: " + ", ".join(f"{k} {v}" for k, v in sorted(status.packages.items())))


@device_env.command("remove")
@click.option("--os-arch", default="arm64", show_default=True, type=click.Choice(["arm64", "armhf"]))
def device_env_remove(os_arch):
    """Delete the sysroot."""
    from .device_env import remove_env

    click.echo("removed" if remove_env(os_arch) else "nothing to remove")


@main.command()
def targets():
    """List device profiles for `edgekit emulate`."""
    from .emulator import core_rows, device_names, load_device

    rows = []
    for name in device_names():
        d = load_device(name)
        cores = " + ".join(f"{c.count}x {c.core.name} @{c.clock_ghz}" for c in d.clusters)
        fitted = core_rows()
        kinds = {c.core.name: c.core for c in d.clusters}.values()  # a core type once, fastest cluster first
        calibrated = ", ".join(f"{k.name} {fitted[k.name]} rows" if k.calibrated and k.name in fitted
                               else f"{k.name} {'fitted' if k.calibrated else 'prior'}" for k in kinds)
        rows.append([name, d.description, cores, int(d.ram_mb), calibrated])
    click.echo(render(["target", "device", "cores (GHz)", "RAM MB", "fitted (published rows per core type)"], rows))
    click.echo("fitted: a core type's speed fitted to N published measurements of real devices "
               "(benchmarks/emulator_accuracy.py); prior = no published rows for it, so its speed comes "
               "from its specification alone and the estimate is less certain. For a device of your own: "
               "edgekit profile run -o mydevice.json, then emulate --target mydevice.json")


@main.group()
def profile():
    """Calibrate a device: time generated probe models here and write a profile for `emulate --target`."""


@profile.command("run")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Profile JSON to write.")
@click.option("--threads", default=None, help="Thread counts to profile, comma-separated (default: 1 and min(4, cores)).")
@click.option("--name", help="Target name shown by emulate (default: the file stem).")
@click.option("--quick", is_flag=True, help="The reduced probe suite (one shape per op kind, a few kernel-grid "
              "shapes; seconds, less accurate).")
@click.option("--seconds-per-probe", default=0.25, show_default=True, type=click.FloatRange(min=0.01),
              help="Timing per probe and thread count (kernel-grid probes: at most 0.12 s, one thread).")
@click.option("--statistic", default="min_median", show_default=True, type=click.Choice(["min_median", "p50", "p10"]),
              help="min_median: the lowest of 3 interleaved block medians (robust on a shared machine); "
                   "p50: the median of all runs, as `edgekit bench` prints it; p10: their 10th percentile.")
@click.option("--force", is_flag=True, help="Overwrite an existing profile.")
def profile_run(out, threads, name, quick, seconds_per_probe, statistic, force):
    """Time the probe suite and the kernel grid on this device, fit kernel models and per-op-kind costs,
    write a device profile JSON."""
    from .profile.run import profile as run_profile

    check_writable([out], force)
    cores = os.cpu_count() or 1
    from .emulator import default_threads

    counts = sorted({1, default_threads(cores)}) if threads is None else _thread_list(threads, cores)
    result = run_profile(name or out.stem, counts, quick=quick, seconds_per_probe=seconds_per_probe,
                         statistic=statistic, progress=_progress)
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    fits = ", ".join(f"{n} thread{'s' * (n != '1')}: probe fit {e['fit_median_abs_error_pct']}% "
                     f"(held-out probes {e['leave_one_probe_out_median_abs_error_pct']}%)"
                     for n, e in result["threads"].items())
    click.echo(f"profiled {result['probes']} probes in {result['seconds']:.0f} s; {fits}")
    click.echo(f"wrote {out}; next: edgekit emulate MODEL.tflite --target {out}")


def _thread_list(text: str, cores: int) -> list[int]:
    try:
        counts = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise InputError(f"--threads expects comma-separated counts like 1,2, got {text!r}") from None
    if not counts or counts[0] < 1 or counts[-1] > cores:
        raise InputError(f"--threads expects counts in 1..{cores} (this device's cores), got {text!r}")
    return counts


@main.command()
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port for the REST API.")
@click.option("--threads", type=click.IntRange(min=1), help="Interpreter threads per model.")
@click.option("--api-key", envvar="EDGEKIT_API_KEY", help="Require 'Authorization: Bearer KEY' (or $EDGEKIT_API_KEY).")
@click.option("--allow-ip", default="", help="Comma-separated CIDRs allowed to connect, e.g. 192.168.1.0/24.")
@click.option("--max-batch", default=1, show_default=True, type=click.IntRange(min=1),
              help="Micro-batch up to this many samples (models with a resizable batch).")
@click.option("--batch-timeout-ms", default=2.0, show_default=True, type=click.FloatRange(min=0),
              help="How long a request waits for others to share its micro-batch (with --max-batch > 1).")
@click.option("--max-body-mb", default=32.0, show_default=True, type=click.FloatRange(min=0.001),
              help="Largest request body (413 above it).")
@click.option("--trusted-proxy", default="", help="Comma-separated CIDRs of reverse proxies whose --proxy-header "
              "names the client; from anyone else proxy headers are ignored and the TCP peer is the client.")
@click.option("--proxy-header", default="x-forwarded-for", show_default=True,
              type=click.Choice(["x-forwarded-for", "forwarded", "x-real-ip"]),
              help="The one header your proxy sets (only read from --trusted-proxy peers).")
@click.option("--max-json-mb", default=4.0, show_default=True, type=click.FloatRange(min=0.001),
              help="Largest JSON body or binary-extension JSON header: JSON tensors cost 10-20x their size in "
                   "memory; send large tensors with the binary extension.")
@click.option("--max-image-pixels", default=25_000_000, show_default=True,
              type=click.IntRange(1, 89_478_485),  # Pillow's own bomb limit; above it Pillow refuses anyway
              help="Largest image /classify decodes, width x height (413 above it), checked before decoding.")
@click.option("--header-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds for a client to send a request's headers (408 and close after).")
@click.option("--body-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds for a client to send a request's body (408 and close after).")
@click.option("--keep-alive", default=5.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds an idle keep-alive connection stays open.")
@click.option("--grpc-port", type=click.IntRange(0, 65535),
              help="Also serve the protocol's gRPC API on this port (same models, batching, auth, metrics).")
@click.option("--ui/--no-ui", default=None,
              help="The web page at / (default: on when --host is loopback).")
def serve(artifacts, host, port, threads, api_key, allow_ip, max_batch, batch_timeout_ms, max_body_mb, trusted_proxy,
          proxy_header, max_json_mb, max_image_pixels, header_timeout, body_timeout, keep_alive, grpc_port, ui):
    """Serve ARTIFACTS ([name=]path.tflite ...) over the KServe v2 REST (and gRPC) protocol."""
    from ._deps import require

    require("uvicorn", "edgekit serve")
    require("starlette", "edgekit serve")
    if grpc_port is not None:
        require("grpc", "edgekit serve --grpc-port")
    from .serve.app import ServerConfig, create_app
    from .serve.guard import parse_networks
    from .serve.models import load_models

    models = load_models(artifacts, threads)
    config = ServerConfig(api_key=api_key or None, allow_ips=parse_networks(allow_ip, "--allow-ip"),
                          trusted_proxies=parse_networks(trusted_proxy, "--trusted-proxy"), proxy_header=proxy_header,
                          max_batch=max_batch, batch_timeout_ms=batch_timeout_ms,
                          max_body_bytes=int(max_body_mb * 2**20), max_json_bytes=int(max_json_mb * 2**20),
                          max_image_pixels=max_image_pixels, body_timeout=body_timeout, grpc_port=grpc_port, host=host,
                          ui=_is_loopback(host) if ui is None else ui)
    from .serve.run import ensure_port_free, run_server

    if grpc_port is not None:
        ensure_port_free(host, grpc_port, "--grpc-port")
    app = create_app(models, config)
    click.echo(f"serving {', '.join(models)} on http://{host}:{port}/v2 "
               f"{f'and grpc {host}:{grpc_port} ' if grpc_port is not None else ''}"
               f"{f'(page http://{host}:{port}/) ' if config.ui else ''}"
               f"(auth {'on' if config.api_key else 'off'}, micro-batching "
               f"{'up to ' + str(max_batch) if max_batch > 1 else 'off'}, {proxy_header} "
               f"{'trusted from ' + trusted_proxy if config.trusted_proxies else 'ignored'}); "
               "Ctrl-C or SIGTERM stops", err=True)
    # grpc.aio runs on the stock asyncio loop; uvloop (uvicorn's "auto" pick when installed) is not supported there
    run_server(app, host, port, header_timeout=header_timeout, keep_alive=keep_alive,
               loop="asyncio" if grpc_port is not None else "auto")
    click.echo("server stopped", err=True)


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@main.command()
@click.argument("artifacts", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), help="Bundle folder to create.")
@click.option("--check", "check_dir", type=click.Path(path_type=Path), help="Re-verify an existing bundle instead.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--exec", "exec_targets", default="",
              help="Also record `emulate --exec` verdicts for these targets, comma-separated (needs `edgekit device-env build`).")
def bundle(artifacts, out, check_dir, force, exec_targets):
    """Lay out ARTIFACTS for the app builds: android/, ios/, manifest.json with checksums, README.md."""
    from .bundle import build_bundle, check_bundle

    exec_targets = tuple(t.strip() for t in exec_targets.split(",") if t.strip())
    if exec_targets:  # refuse before any copying: a profile without a CPU model, no sysroot
        from .device_env.build import require_ready, target_cpu

        [target_cpu(t) for t in exec_targets]
        require_ready()

    if check_dir is not None:
        if artifacts or out:
            raise InputError("--check takes only the bundle folder; drop the artifacts and -o")
        problems = check_bundle(check_dir)
        for p in problems:
            click.echo(f"  {p.path}: {p.reason}", err=True)
        if problems:
            raise ArtifactError(f"bundle {str(check_dir)!r} failed its check: {len(problems)} problem(s), first: "
                                f"{problems[0].path}: {problems[0].reason}")
        count = len(json.loads((check_dir / "manifest.json").read_text())["files"])
        click.echo(f"bundle {check_dir} ok: {count} files match their sha256, every artifact loads")
        return
    if out is None:
        raise InputError("bundle expects -o DIR (or --check DIR)")
    result = build_bundle(list(artifacts), out, force=force, progress=_progress, exec_targets=exec_targets)
    rows = [[a["path"], a["format"], a["recipe"], human_size(a["size_bytes"])] for a in result["artifacts"]]
    click.echo(render(["path", "format", "recipe", "size"], rows))
    click.echo(f"bundle: {out} ({len(result['files'])} files, checksums in manifest.json, README.md for app "
               f"developers). Next: edgekit bundle --check {out}")


@main.command()
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="HTML file to write.")
@click.option("--targets", default="rpi3,rpi4,rpi5,pixel6", show_default=True, help="Emulated targets.")
@click.option("--bench-runs", default=30, show_default=True, type=click.IntRange(min=0),
              help="Host latency runs per .tflite (0: skip).")
@click.option("--threads", type=click.IntRange(min=1), help="Host benchmark threads.")
@click.option("--title", help="Page title (default: the model name from the artifacts' manifests).")
@click.option("--force", is_flag=True, help="Overwrite an existing report.")
def report(artifacts, out, targets, bench_runs, threads, title, force):
    """One self-contained HTML page comparing ARTIFACTS: size, parity, host and emulated latency."""
    from .emulator import load_device

    check_writable([out], force)
    out.parent.mkdir(parents=True, exist_ok=True)  # an unusable -o fails (exit 2) before any slow work
    from .report import collect, render as render_html

    target_names = [t.strip() for t in targets.split(",") if t.strip()]
    for name in target_names:
        load_device(name)  # unknown names fail here, before any work
    rows = collect(list(artifacts), target_names, bench_runs, threads)
    page = render_html(rows, target_names, title)  # default: the full model name from the manifests
    atomic_write_text(out, page)
    click.echo(f"report: {out} ({len(rows)} artifacts, {len(page) // 1024} KB, self-contained)")


def _print_coreml(info, as_json: bool) -> None:
    """`edgekit inspect` of an .mlpackage (edgekit.coreml.info reads it)."""
    if as_json:
        click.echo(json.dumps({"path": str(info.path), "size_bytes": info.size_bytes,
                               "inputs": [{"name": i.name, "shape": i.program_shape, "dtype": i.dtype}
                                          for i in info.inputs],
                               "outputs": info.outputs, "ops": dict(info.op_counts.most_common()),
                               "compressed_weights": dict(info.compressed_weights), "author": info.author,
                               "license": info.license, "version": info.version, "description": info.description,
                               "manifest": info.manifest}, indent=2))
        return
    click.echo(f"{info.path}  {human_size(info.size_bytes)}  Core ML ML program (spec v{info.spec_version})")
    for item in info.inputs:
        click.echo(f"input   {item.name}: {item.kind}{item.detail} -> program {item.program_shape}")
    click.echo(f"outputs {', '.join(info.outputs)}")
    click.echo(render(["op", "count"], [[op, n] for op, n in info.op_counts.most_common()], align="lr"))
    if info.compressed_weights:
        click.echo("compressed weights: " + ", ".join(f"{op} x{n}" for op, n in info.compressed_weights.items()))
    click.echo(f"metadata: author {info.author or '-'}, license {info.license or '-'}, version {info.version or '-'}")
    manifest = info.manifest
    if manifest:
        parity = manifest.get("parity") or {}
        click.echo(f"edgekit manifest: recipe {manifest.get('recipe')}, labels {len(manifest.get('labels') or [])}, "
                   f"parity cosine {_num(parity.get('cosine'), '.6f')}")
    else:
        click.echo("no edgekit manifest")


@main.command()
def recipes():
    """List compression recipes, which formats make them, and from which sources."""
    from .recipes import FAMILIES, FORMATS, RECIPES, TFLITE_ROUTE, unsupported

    columns = [(fmt, family) for fmt in FORMATS for family in FAMILIES]
    rows = [[r.name, r.summary] + ["yes" if unsupported(r.name, fmt, family) is None else "-"
                                   for fmt, family in columns]
            + [f"{r.gate.min_cosine}", f"{100 * r.gate.min_top1:.0f}%"] for r in RECIPES.values()]
    click.echo(render(["recipe", "what it does", *[f"{fmt}<-{family}" for fmt, family in columns],
                       "gate: cosine", "top-1"], rows))
    click.echo("sources: tensorflow = Keras .keras/.h5 and SavedModel; torch = PyTorch .pt2/TorchScript/"
               "--source factory and ONNX; tflite = an existing float .tflite")
    click.echo("tflite routes: " + "; ".join(f"{family}: {route}" for family, route in TFLITE_ROUTE.items()))
    reasons = sorted({why for fmt, family in columns for r in RECIPES.values()
                      if r.supports(fmt) and (why := unsupported(r.name, fmt, family))})
    for why in reasons:
        click.echo(f"not possible: {why}")
    click.echo("gate: the parity an artifact must reach against its source or `convert` rejects it "
               "(--min-cosine/--min-top1 to change, --no-gate to turn off)")


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--window", default="1h", show_default=True,
              help="Window length: a duration (90s, 30m, 1h, 1d) by created_utc, or a row count (e.g. 200).")
@click.option("--artifact", type=click.Path(path_type=Path),
              help="The artifact the rows were predicted with (default: the rows' model file beside STORE or here).")
@click.option("--json", "as_json", is_flag=True, help="Print every window's statistics as JSON.")
def monitor(store, window, artifact, as_json):
    """Drift per window of an `edgekit predict --out` STORE against the artifact's reference_stats."""
    from .monitor.offline import monitor_store, summary_counts, table_rows

    results = monitor_store(store, window, artifact)
    counts = summary_counts(results)
    if as_json:
        click.echo(json.dumps({"summary": counts, "windows": [r.to_dict() for r in results]}, indent=2))
        return
    headers, rows = table_rows(results)
    click.echo(render(headers, rows))
    click.echo(f"{counts['drifting']} of {counts['evaluated']} evaluated windows drifting "
               f"({counts['samples']} rows, {counts['windows']} windows of {window})")


@main.command()
@click.argument("model", type=click.Path(path_type=Path), required=False)
@click.option("--source", "factory", help="Refused by sweep (it builds from a saved file): save the nn.Module "
                                          "with torch.export.save and sweep the .pt2.")
@click.option("--input-shape", help="Input shape(s) of a TorchScript model, which does not say them, e.g. 1,3,224,224.")
@click.option("--target", "targets", default="rpi4", show_default=True,
              help="Emulated target(s), comma-separated (see `edgekit targets`); the first one orders the frontier.")
@click.option("--max-drop", default=1.0, show_default=True, type=float,
              help="Accuracy budget: most top-1 points a variant may lose against the source model.")
@click.option("--calibration", required=True, type=click.Path(path_type=Path),
              help="Calibration inputs (images or .npz): int8 ranges and distillation data.")
@click.option("--validate", required=True, type=click.Path(path_type=Path),
              help="Labelled validation images: one sub-folder per class, or a labels.csv of file,label rows.")
@click.option("--labels", type=click.Path(path_type=Path), help="Class names, one per line, in output order.")
@click.option("--mean", help="Normalization mean: (pixel - mean) / std.")
@click.option("--std", help="Normalization std.")
@click.option("--recipes", default="fp32,fp16,int8-weights,int8", show_default=True,
              help="Quantization recipes of the grid, comma-separated; each format takes those it supports "
                   "(int8: TFLite only; palettize-N: Core ML only).")
@click.option("--compress", "compressions",
              help="Compression levels of the grid, comma-separated ('none': the model as is). Default: none,"
                   "prune-channels-30+distill,prune-channels-50+distill, and prune-blocks-50+distill-40 when the "
                   "model has identity-shortcut residual blocks.")
@click.option("--formats", help="Formats of the grid, comma-separated (tflite, coreml); each takes the --recipes it "
                                "supports. Default: tflite, plus coreml when a target is an Apple device.")
@click.option("--jobs", type=click.IntRange(min=1),
              help="Worker processes building variants side by side (host latency is timed afterwards, one "
                   "artifact at a time). Default: 1 below 4 cores (2 on 2 cores measured no faster), else one per 2 "
                   "cores as free memory allows (~2.5 GB each).")
@click.option("--budget-minutes", type=float, help="Stop starting new variants after this long (a re-run continues).")
@click.option("--bench-runs", default=100, show_default=True, type=click.IntRange(min=0),
              help="Host latency runs per artifact (0: skip).")
@click.option("--threads", type=click.IntRange(min=1), help="Host benchmark threads.")
@click.option("--seed", default=0, show_default=True, type=int, help="Distillation seed.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for models, artifacts, per-variant results, sweep.json and sweep.html.")
def sweep(model, factory, input_shape, targets, max_drop, calibration, validate, labels, mean, std, recipes,
          compressions, formats, jobs, budget_minutes, bench_runs, threads, seed, out_dir):
    """Search compression x quantization variants of MODEL (Keras .keras/.h5, PyTorch .pt2 or TorchScript .pt,
    ONNX .onnx) for the fastest one inside an accuracy budget."""
    from .preprocess import parse_floats
    from .converters.options import parse_input_shapes
    from .converters.sweep import SweepOptions, sweep as run_sweep
    from .converters.sweep_report import table

    if factory:  # not wired through the sweep's spawned workers (each reloads the source) and models/ naming
        raise InputError(f"sweep builds from a saved model file, not --source {factory}: save the module with "
                         "torch.export.save(torch.export.export(model, args), 'model.pt2') and sweep model.pt2")
    if model is None:
        raise InputError("sweep expects MODEL, a .keras/.h5, .pt2, TorchScript .pt or .onnx file")

    def items(text: str) -> tuple[str, ...]:
        return tuple(t.strip() for t in text.split(",") if t.strip())

    opts = SweepOptions(model=model, out_dir=out_dir, calibration=calibration, validate=validate,
                        targets=items(targets), max_drop=max_drop, budget_minutes=budget_minutes,
                        recipes=items(recipes), compressions=items(compressions) if compressions else None,
                        formats=items(formats.lower()) if formats else None, jobs=jobs, labels=labels,
                        mean=parse_floats(mean, "--mean"), std=parse_floats(std, "--std"), seed=seed,
                        bench_runs=bench_runs, threads=threads, input_shapes=parse_input_shapes(input_shape))
    result = run_sweep(opts, progress=_progress)
    click.echo(table(result))
    click.echo(f"report: {out_dir / 'sweep.html'}, {out_dir / 'sweep.json'} ({result.seconds:.0f} s)")


if __name__ == "__main__":
    main()

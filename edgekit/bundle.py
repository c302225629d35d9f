"""`edgekit bundle`: hand artifacts to the app builds — android/ and ios/ folders, a manifest
with checksums, and a README for the app developers; `--check` re-verifies a bundle."""
from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .artifact import app_manifest, kind_of
from .errors import ArtifactError, InputError, OutputExistsError
from .fileio import path_size, replace_dir, sha256_path
from .table import human_size

BUNDLE_SCHEMA = "edgekit.bundle/1"
EMULATED_TARGETS = ("rpi3", "rpi4", "rpi5", "pixel6")


@dataclass
class Problem:
    path: str
    reason: str


def build_bundle(artifacts: list[Path], out: Path, force: bool = False, progress=lambda m: None,
                 exec_targets: tuple[str, ...] = ()) -> dict:
    if not artifacts:
        raise InputError("bundle expects at least one artifact")
    names = [a.name for a in artifacts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"two artifacts share the name {', '.join(duplicates)}; the bundle would hold one of them; "
                         "rename one or bundle them separately")
    missing = [str(a) for a in artifacts if not a.exists()]
    if missing:
        raise InputError(f"artifact(s) not found: {', '.join(missing)}")
    if out.exists() and not force:
        raise OutputExistsError(f"output folder {str(out)!r} exists; pass --force to replace it or choose another -o")
    manifests = {a: app_manifest(a) for a in artifacts}
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        entries = []
        for artifact, manifest in manifests.items():
            progress(f"adding {artifact.name}")
            entries.append(_add(artifact, manifest, staging, exec_targets))
        files = [{"path": str(p.relative_to(staging)), "sha256": sha256_path(p), "size_bytes": p.stat().st_size}
                 for p in sorted(staging.rglob("*")) if p.is_file()]
        bundle = {"schema": BUNDLE_SCHEMA, "files": files, "artifacts": entries}
        (staging / "README.md").write_text(render_readme(entries))
        files.append({"path": "README.md", "sha256": sha256_path(staging / "README.md"),
                      "size_bytes": (staging / "README.md").stat().st_size})
        (staging / "manifest.json").write_text(json.dumps(bundle, indent=2) + "\n")
        replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return bundle


def _add(artifact: Path, manifest: dict, root: Path, exec_targets: tuple[str, ...] = ()) -> dict:
    entry = {"name": artifact.name, "format": manifest.get("format"), "recipe": manifest.get("recipe"),
             "model": manifest.get("model", {}), "inputs": manifest.get("inputs"), "outputs": manifest.get("outputs"),
             "preprocessing": manifest.get("preprocessing"), "labels_count": len(manifest.get("labels") or []),
             "parity": {k: v for k, v in (manifest.get("parity") or {}).items() if k != "outputs"}}
    if kind_of(artifact) == "tflite":
        target = root / "android" / artifact.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(artifact, target)
        entry["path"] = str(target.relative_to(root))
        if manifest.get("labels"):
            labels = root / "android" / "labels.txt"
            labels.write_text("".join(f"{label}\n" for label in manifest["labels"]))
            entry["labels_path"] = str(labels.relative_to(root))
        entry["emulated_latency_ms"] = _emulated(target)
        if exec_targets:
            entry["device_exec"] = _device_exec(target, exec_targets)
    else:
        target = root / "ios" / artifact.name
        shutil.copytree(artifact, target)
        archive = target.with_name(artifact.name + ".zip")
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(target.rglob("*")):
                zf.write(f, f.relative_to(target.parent))
        entry["path"] = str(target.relative_to(root))
        entry["zip_path"] = str(archive.relative_to(root))
    entry["size_bytes"] = path_size(target)
    return entry


def _device_exec(path: Path, targets: tuple[str, ...]) -> dict:
    """`edgekit emulate --exec` verdicts (the device's runtime build under qemu), kept for the app team."""
    from .device_env import run_exec

    out = {}
    for name in targets:
        r = run_exec(path, name, samples=5)
        out[name] = {"cpu": r.cpu, "loaded": r.loaded, "failure": r.failure,
                     "xnnpack_nodes": f"{len(r.delegated)}/{r.nodes}" if r.loaded else None,
                     "parity": [{k: p[k] for k in ("name", "bit_exact", "differing_fraction", "cosine", "max_abs_err")}
                                for p in r.parity],
                     "runtime": {k: r.install.get(k) for k in ("python", "machine", "litert", "numpy", "edgekit")}}
    return out


def _emulated(path: Path) -> dict:
    from .emulator import estimate_for, load_device

    _, estimates = estimate_for(path, [load_device(name) for name in EMULATED_TARGETS])
    out = {}
    for name, e in zip(EMULATED_TARGETS, estimates):
        out[name] = {"estimate_ms": round(e.estimate_ms, 3), "low_ms": round(e.low_ms, 3),
                     "high_ms": round(e.high_ms, 3), "threads": e.threads}
    return out


def check_bundle(root: Path, load_artifacts: bool = True) -> list[Problem]:
    """Every listed file present with its checksum, nothing unlisted, every artifact loadable."""
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"expected a bundle folder with manifest.json, got {str(root)!r}")
    try:
        bundle = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return [Problem("manifest.json", f"not valid JSON ({e})")]
    files, artifacts = _manifest_entries(bundle, root)
    problems = []
    listed = {"manifest.json"}
    for f in files:
        path, reason = contained(root, f["path"])
        listed.add(f["path"])
        if reason:
            problems.append(Problem(f["path"], reason))
        elif not path.is_file():
            problems.append(Problem(f["path"], "missing"))
        elif path.stat().st_size != f["size_bytes"] or sha256_path(path) != f["sha256"]:
            problems.append(Problem(f["path"], "changed (sha256 differs from manifest.json)"))
    listed_dirs = {str(Path(p).parents[i]) for p in listed for i in range(len(Path(p).parents) - 1)}
    for path in sorted(root.rglob("*")):  # rglob does not follow symlinked folders: each is reported here
        rel = str(path.relative_to(root))
        if path.is_symlink():
            problems.append(Problem(rel, "a symlink (bundles hold plain files only)"))
        elif path.is_file() and rel not in listed:
            problems.append(Problem(rel, "not listed in manifest.json"))
        elif path.is_dir() and rel not in listed_dirs:
            problems.append(Problem(rel, "a folder with no listed file"))
    if load_artifacts and not problems:
        for rel in artifacts:
            problems.extend(_check_loads(root / rel, rel))
    return problems


def contained(root: Path, rel: object) -> tuple[Path, str]:
    """(path, "") when `rel` names a path inside `root` with no symlink on the way, else (root,
    reason): a manifest must not make the checker stat, open or hash files outside the bundle."""
    if not isinstance(rel, str) or not rel:
        return root, "not a relative path"
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts or "\\" in rel:
        return root, "points outside the bundle (absolute or '..')"
    path = root
    for part in parts:
        path = path / part
        if path.is_symlink():
            return root, "goes through a symlink"
    if not path.resolve().is_relative_to(root.resolve()):
        return root, "points outside the bundle"
    return path, ""


def _manifest_entries(bundle: object, root: Path) -> tuple[list[dict], list[str]]:
    """The manifest's file entries and artifact paths, or an ArtifactError naming what is malformed."""
    def bad(what: str) -> ArtifactError:
        return ArtifactError(f"bundle {str(root)!r} has a malformed manifest.json: {what}; rebuild it with "
                             "edgekit bundle")

    if not isinstance(bundle, dict):
        raise bad("it is not a JSON object")
    files = bundle.get("files")
    if not isinstance(files, list):
        raise bad("'files' is missing or not a list")
    for i, f in enumerate(files):
        if not (isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)
                and type(f.get("size_bytes")) is int):
            raise bad(f"files[{i}] lacks a string 'path', string 'sha256' or integer 'size_bytes'")
    artifacts = bundle.get("artifacts", [])
    if not isinstance(artifacts, list) or not all(isinstance(a, dict) and isinstance(a.get("path"), str)
                                                  for a in artifacts):
        raise bad("'artifacts' is not a list of objects with a string 'path'")
    for a in artifacts:
        if contained(root, a["path"])[1]:
            raise bad(f"artifact path {a['path']!r} {contained(root, a['path'])[1]}")
    return files, [a["path"] for a in artifacts]


def _check_loads(path: Path, rel: str) -> list[Problem]:
    from . import load
    from .native_output import captured_native_output

    try:
        with captured_native_output():
            load(path)
    except Exception as e:  # any failure to load is a finding, reported by name
        return [Problem(rel, f"does not load: {e}")]
    return []


def render_readme(entries: list[dict]) -> str:
    android = [e for e in entries if e["format"] == "tflite"]
    ios = [e for e in entries if e["format"] == "coreml"]
    first = entries[0]
    pp = first.get("preprocessing")
    lines = [f"# {first['model'].get('name', 'model')} — edge artifacts", "",
             "Generated by `edgekit bundle`. Every file is listed with its sha256 in `manifest.json`; "
             "`edgekit bundle --check <this folder>` re-verifies them.", "", "## Which file for which device", ""]
    lines += ["| file | format | recipe | size | parity cosine | top-1 agreement | emulated latency |",
              "|---|---|---|---|---|---|---|"]
    for e in entries:
        lat = e.get("emulated_latency_ms") or {}
        lat_text = ", ".join(f"{t} {v['estimate_ms']:.1f} ms" for t, v in lat.items()) or "n/a (Core ML)"
        top1 = e["parity"].get("top1_agreement")
        lines.append(f"| `{e['path']}` | {e['format']} | {e['recipe']} | {human_size(e['size_bytes'])} | "
                     f"{e['parity'].get('cosine', float('nan')):.5f} | {'-' if top1 is None else f'{100 * top1:.1f}%'} | "
                     f"{lat_text} |")
    lines += ["", "Rules of thumb: on Raspberry Pi and Android CPUs pick the smallest `int8` artifact whose parity "
              "you accept (integer kernels are the fastest there); `fp16` for GPU delegates; on iOS `fp16` runs on "
              "the Neural Engine, palettized/int8-weights variants trade a little accuracy for size.", ""]
    lines += ["## Feeding the model", ""]
    if pp:
        color = "RGB" if pp["channels"] == 3 else "grayscale"
        lines += [f"- Input: {pp['width']}x{pp['height']} {color} image, layout {pp['layout']}.",
                  f"- Normalization: `(pixel - mean) / std` with mean {pp['mean']} and std {pp['std']} "
                  "(already inside the TFLite Metadata and the Core ML image input: the platform libraries apply it).",
                  ]
    else:
        lines += ["- Inputs: " + ", ".join(f"`{t['name']}` {t['shape']} {t['dtype']}" for t in first["inputs"])]
    if first["labels_count"]:
        lines += [f"- Labels: {first['labels_count']} classes; `android/labels.txt` (also packed inside each .tflite) "
                  "and the Core ML classifier's class labels."]
    if android:
        from .android_snippet import kotlin_section

        lines += kotlin_section(android)
    if ios:
        name = ios[0]["path"].split("/")[-1].replace(".mlpackage", "")
        cls = "".join(c if c.isalnum() else "_" for c in name)
        lines += ["", "## iOS (Swift, Core ML + Vision)", "", "```swift",
                  f"let model = try VNCoreMLModel(for: {cls}(configuration: MLModelConfiguration()).model)",
                  "let request = VNCoreMLRequest(model: model) { request, _ in",
                  "    let best = (request.results as? [VNClassificationObservation])?.first",
                  "    print(best?.identifier ?? \"-\", best?.confidence ?? 0)", "}",
                  "try VNImageRequestHandler(cgImage: image).perform([request])", "```", "",
                  f"Drag `ios/{name}.mlpackage` into Xcode (or unzip `ios/{name}.mlpackage.zip`): Xcode generates the "
                  f"`{cls}` class; the image input's scale/bias and the class labels are in the model."]
    return "\n".join(lines) + "\n"


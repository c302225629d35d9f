"""Issue #15 item 5: `bundle --check` and the Core ML package reader stay inside the folder they
check: no path from a manifest is stat'ed, opened or hashed outside it."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import SAMPLES, run_cli

pytestmark = pytest.mark.device

INT8 = SAMPLES / "artifacts" / "digits_cnn_int8.tflite"
PASSWD = Path("/etc/passwd")


@pytest.fixture
def bundle(tmp_path):
    if not INT8.exists():
        pytest.skip("sample_models/artifacts not built")
    out = tmp_path / "bundle"
    result = run_cli("bundle", INT8, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert run_cli("bundle", "--check", out).exit_code == 0
    return out


def _edit(bundle: Path, change) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _passwd_entry(path: str) -> dict:
    data = PASSWD.read_bytes()
    return {"path": path, "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}


@pytest.mark.parametrize("path", ["../../../../../../etc/passwd", "/etc/passwd", "android/../../x"])
def test_paths_outside_the_bundle_fail_even_with_the_right_checksum(bundle, path):
    _edit(bundle, lambda m: m["files"].append(_passwd_entry(path)))
    result = run_cli("bundle", "--check", bundle)
    assert result.exit_code == 4
    assert "outside the bundle" in result.stderr and "match" not in result.stdout


def test_a_symlinked_file_or_folder_fails(bundle):
    os.symlink(PASSWD, bundle / "android" / "passwd")
    _edit(bundle, lambda m: m["files"].append(_passwd_entry("android/passwd")))
    result = run_cli("bundle", "--check", bundle)
    assert result.exit_code == 4 and "symlink" in result.stderr
    os.unlink(bundle / "android" / "passwd")
    os.symlink("/etc", bundle / "etc")
    _edit(bundle, lambda m: m["files"].pop())
    result = run_cli("bundle", "--check", bundle)
    assert result.exit_code == 4 and "etc: a symlink" in result.stderr


def test_an_unlisted_folder_fails(bundle):
    (bundle / "extra" / "deeper").mkdir(parents=True)
    result = run_cli("bundle", "--check", bundle)
    assert result.exit_code == 4 and "extra: a folder with no listed file" in result.stderr


@pytest.mark.parametrize("change", [
    lambda m: m.pop("files"), lambda m: m.update(files="all"), lambda m: m["files"][0].pop("sha256"),
    lambda m: m["files"].append(3), lambda m: m.update(artifacts=[{"path": "/etc/passwd"}]),
], ids=["no-files", "files-str", "no-sha", "entry-int", "artifact-abs"])
def test_a_malformed_manifest_is_one_line_exit_4(bundle, change):
    _edit(bundle, change)
    result = run_cli("bundle", "--check", bundle)
    assert result.exit_code == 4, result.stderr
    assert result.stderr.count("\n") == 1 and "malformed manifest.json" in result.stderr


def test_coreml_manifest_paths_stay_inside_the_package(tmp_path):
    from edgekit.coreml.executor import check_package_paths
    from edgekit.errors import ArtifactError

    source = SAMPLES / "artifacts" / "digits_cnn_fp16.mlpackage"
    if not source.exists():
        pytest.skip("sample_models/artifacts not built")
    package = tmp_path / "m.mlpackage"
    shutil.copytree(source, package)
    check_package_paths(package)
    manifest = json.loads((package / "Manifest.json").read_text())
    first = next(iter(manifest["itemInfoEntries"].values()))
    for bad in ("../../../../../../etc/passwd", "/etc/passwd"):
        first["path"] = bad
        (package / "Manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ArtifactError, match="not a plain file inside the package"):
            check_package_paths(package)
    first["path"] = "com.apple.CoreML/link"
    os.symlink(PASSWD, package / "Data" / "com.apple.CoreML" / "link")
    (package / "Manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="not a plain file inside the package"):
        check_package_paths(package)
    (package / "Manifest.json").write_text("[1]")
    with pytest.raises(ArtifactError, match="Manifest.json is malformed"):
        check_package_paths(package)

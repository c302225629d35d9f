"""`edgekit emulate --exec`: the artifact on the device's own runtime build (aarch64 LiteRT wheel in a
Debian bookworm arm64 sysroot) under emulated Cortex-A53/A72/A76 cores, compared with the host.

Needs a built device environment (`edgekit device-env build rpi4`: root, qemu-user-static, debootstrap,
about 10 minutes once). tests/run_installed.sh's exec tier builds it first. Without it these tests
skip with the command to run, and fail under CI=true, where .ci/run installs the prerequisites.
"""
from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import pytest
from conftest import run_cli

pytestmark = pytest.mark.exec

TARGETS = {"rpi3": "cortex-a53", "rpi4": "cortex-a72", "rpi5": "cortex-a76"}
MIN_COSINE = 0.9999


def _unavailable(reason: str):
    """Loud: a skipped exec test says why and what to run; in CI a missing prerequisite is a failure."""
    message = f"exec tier cannot run: {reason}"
    print(f"\n{message}", file=sys.stderr)
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: .ci/run installs qemu-user-static debootstrap, the exec tier builds)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def device_env():
    import shutil

    from edgekit.device_env import env_status

    missing = [t for t in ("qemu-aarch64-static", "debootstrap") if not shutil.which(t)]
    if missing:
        _unavailable(f"{' and '.join(missing)} not installed: apt-get install qemu-user-static debootstrap")
    status = env_status()
    if not status.ready:
        _unavailable(f"no device environment in {status.path}: run `edgekit device-env build rpi4` as root "
                     "(about 10 minutes, once; EDGEKIT_CACHE_DIR chooses where)")
    return status


def _exec_json(*args) -> dict:
    result = run_cli("emulate", *args, "--exec", "--json")
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("recipe", ["int8", "fp32"])
def test_sample_runs_on_each_core_with_parity(device_env, artifacts, recipe):
    report = _exec_json(artifacts / f"digits_cnn_{recipe}.tflite", "--target", ",".join(TARGETS), "--samples", "5")
    assert [r["target"] for r in report["estimates"]] == list(TARGETS)  # the estimate is still there
    for run in report["exec"]:
        assert run["cpu"] == TARGETS[run["target"]]
        # the CPU model took effect: only the A76 advertises dotprod (XNNPACK's int8 sdot kernels)
        assert ("asimddp" in run["cpu_features"]) == (run["target"] == "rpi5"), run["cpu_features"]
        assert run["loaded"], run["failure"]
        assert run["threads"] == 4 and run["samples"] == 5
        assert run["install"]["machine"] == "aarch64" and run["install"]["python"].startswith("3.11")
        assert run["install"]["edgekit"], run["install"]  # the device install imports on the device
        # XNNPACK takes the convolutions on ARM as on x86 (int8 SOFTMAX stays on the built-in kernel)
        assert run["nodes"] == 9 and len(run["delegated"]) >= 8, run
        assert run["host_delegated"] == len(run["delegated"])  # the same partition as on x86
        (out,) = run["parity"]
        assert out["cosine"] >= MIN_COSINE, out
        if recipe == "int8":  # integer outputs: identical codes, or the differing fraction is reported
            assert out["dtype"] == "int8"
            assert out["bit_exact"] or 0 < out["differing_fraction"] <= 1, out


def test_text_report_says_what_it_proves(device_env, artifacts):
    result = run_cli("emulate", artifacts / "digits_cnn_int8.tflite", "--target", "rpi4", "--exec", "--samples", "2")
    assert result.exit_code == 0, result.output + result.stderr
    out = result.stdout
    assert "rpi4 exec (QEMU_CPU=cortex-a72, 4 thread(s)): device install: Python 3.11" in out
    assert "loads: yes; XNNPACK took" in out and "left on built-in kernels: SOFTMAX" in out
    assert "parity vs host on 2 input(s), output" in out
    assert "not device time" in out and "instruction counts: not available" in out


def test_given_inputs_are_the_validation_images(device_env, artifacts, samples, tmp_path):
    """--input: the committed validation images (as a .npy of pixels; the manifest normalizes them)."""
    import numpy as np
    from PIL import Image

    files = sorted((samples / "validation").glob("*.png"))[:4]
    np.save(tmp_path / "val.npy", np.stack([np.asarray(Image.open(f), dtype=np.float32)[..., None] for f in files]))
    report = _exec_json(artifacts / "digits_cnn_int8.tflite", "--target", "rpi5", "--input", tmp_path / "val.npy")
    (run,) = report["exec"]
    assert run["samples"] == 4 and run["inputs"] == "val.npy"
    (out,) = run["parity"]
    assert out["cosine"] >= MIN_COSINE and (out["bit_exact"] or out["differing_fraction"] > 0)


def _edited(src: Path, dst: Path, edit) -> Path:
    from ai_edge_litert.tools import flatbuffer_utils

    model = copy.deepcopy(flatbuffer_utils.read_model(str(src)))
    edit(model)
    # write_model drops the zip of associated files appended to the flatbuffer: drop the metadata that
    # points at it (and edgekit's manifest of the original), or the file reads as truncated
    model.metadata = [m for m in model.metadata if m.name not in (b"TFLITE_METADATA", b"edgekit_manifest")]
    flatbuffer_utils.write_model(model, str(dst))
    return dst


@pytest.fixture(scope="module")
def vendor_op_model(artifacts, tmp_path_factory):
    """The fp32 sample with its last op (SOFTMAX) swapped for CUSTOM 'MyVendorOp', which no stock
    runtime registers: what a model converted with a vendor's op library looks like."""
    from ai_edge_litert import schema_py_generated as schema

    def edit(model):
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        code.customCode, code.version = "MyVendorOp", 1
        model.operatorCodes.append(code)
        op = model.subgraphs[0].operators[-1]
        op.opcodeIndex, op.builtinOptionsType, op.builtinOptions = len(model.operatorCodes) - 1, 0, None

    return _edited(artifacts / "digits_cnn_fp32.tflite", tmp_path_factory.mktemp("vendor") / "vendor_op.tflite", edit)


def test_missing_custom_op_is_reported(device_env, vendor_op_model):
    from edgekit.device_env import run_exec

    run = run_exec(vendor_op_model, "rpi4")
    assert not run.loaded
    assert run.failure["kind"] == "missing op"
    assert "custom op MyVendorOp is not in the device runtime" in run.failure["reason"]
    assert "MyVendorOp" in (run.host_failure or "")  # the host runtime rejects it too: said, not hidden
    result = run_cli("emulate", vendor_op_model, "--target", "rpi4", "--exec")
    assert "loads: NO (missing op): custom op MyVendorOp is not in the device runtime" in result.stdout
    assert result.exit_code == 4  # after the report: scripts and CI can gate on it
    assert "Error: vendor_op.tflite does not load on the device runtime of rpi4 (missing op: " in result.stderr


def test_unknown_op_version_is_reported(device_env, artifacts, tmp_path):
    def edit(model):
        model.operatorCodes[0].version = 99  # CONV_2D v99: newer than any runtime build

    model = _edited(artifacts / "digits_cnn_fp32.tflite", tmp_path / "conv_v99.tflite", edit)
    from edgekit.device_env import run_exec

    run = run_exec(model, "rpi3")
    assert not run.loaded and run.failure["kind"] == "op version"
    assert run.failure["reason"].startswith("the device runtime has no CONV_2D version 99")


def test_bundle_records_the_exec_verdict(device_env, artifacts, tmp_path):
    out = tmp_path / "bundle"
    result = run_cli("bundle", artifacts / "digits_cnn_int8.tflite", "-o", out, "--exec", "rpi3,rpi5")
    assert result.exit_code == 0, result.output + result.stderr
    (entry,) = json.loads((out / "manifest.json").read_text())["artifacts"]
    verdicts = entry["device_exec"]
    assert set(verdicts) == {"rpi3", "rpi5"} and verdicts["rpi5"]["cpu"] == "cortex-a76"
    assert all(v["loaded"] and v["xnnpack_nodes"] == "8/9" and v["runtime"]["machine"] == "aarch64"
               for v in verdicts.values())
    assert run_cli("bundle", "--check", out).exit_code == 0


# --- no sysroot needed: refusals with a reason --------------------------------------------------

def test_a_native_crash_on_the_device_is_a_verdict():
    """LiteRT can die by SIGSEGV in allocate_tensors on malformed sparse tensors: the guest leaves its
    stage behind, and the host reports a crash while loading instead of a missing result."""
    import subprocess

    from edgekit.device_env.execute import ExecResult, _crashed

    result = ExecResult("rpi4", "cortex-a72", 4, loaded=False)
    _crashed(result, {"stage": "loading", "python": "3.11.2"}, subprocess.CompletedProcess([], 139, "", ""))
    assert not result.loaded and result.failure["kind"] == "crash"
    assert result.failure["reason"].startswith("the device runtime crashed (signal 11) while loading the model")


def test_a_different_wheel_marks_the_sysroot_stale(tmp_path, monkeypatch):
    """A reused sysroot (outside CI) must run the wheel under test, not the one it was built with."""
    from edgekit.device_env.build import _sha256, _stale_wheel

    wheel = tmp_path / "edgekit-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"new build")
    monkeypatch.setenv("EDGEKIT_WHEEL", str(wheel))
    assert _stale_wheel({"device_wheel_sha256": "0" * 64})
    assert not _stale_wheel({"device_wheel_sha256": _sha256(wheel)})
    monkeypatch.delenv("EDGEKIT_WHEEL")
    assert not _stale_wheel({"device_wheel_sha256": "0" * 64})  # built from a checkout: keep it


def test_armhf_is_explained(artifacts):
    for args in (["emulate", artifacts / "digits_cnn_int8.tflite", "--target", "rpi4", "--exec", "--os-arch", "armhf"],
                 ["device-env", "build", "rpi3", "--os-arch", "armhf"]):
        result = run_cli(*args)
        assert result.exit_code == 2, result.output
        assert ("32-bit Raspberry Pi OS (armhf, armv7l) has no LiteRT build on PyPI: ai-edge-litert and tflite-runtime "
                "publish no armv7l wheels") in result.stderr
        assert "use Raspberry Pi OS 64-bit (arm64)" in result.stderr


def test_target_without_a_cpu_model_is_refused(artifacts):
    result = run_cli("emulate", artifacts / "digits_cnn_int8.tflite", "--target", "iphone13", "--exec")
    assert result.exit_code == 2
    assert "target 'iphone13' has no emulated CPU model" in result.stderr


def test_exec_without_an_environment_says_what_to_run(artifacts, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "empty-cache"))
    result = run_cli("emulate", artifacts / "digits_cnn_int8.tflite", "--target", "rpi4", "--exec")
    assert result.exit_code == 6
    assert "run `edgekit device-env build rpi4` first" in result.stderr
    status = run_cli("device-env", "status")
    assert status.exit_code == 0 and "not built" in status.stdout


def test_fallback_without_binfmt(device_env, artifacts, tmp_path, monkeypatch):
    """A container without binfmt_misc: packages unpacked on the host, wheels installed by the host's
    pip for the Pi's platform, the sysroot's python run by qemu-aarch64-static -L (about 1 minute)."""
    from edgekit.device_env import build_env, remove_env, run_exec

    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGEKIT_NO_BINFMT", "1")
    lines: list[str] = []
    try:
        status = build_env("rpi4", progress=lines.append)
        assert status.ready and status.mode == "qemu-L", lines
        assert any("unpacking" in line and "maintainer scripts are skipped" in line for line in lines)
        run = run_exec(artifacts / "digits_cnn_int8.tflite", "rpi4", samples=3)
        assert run.loaded and run.install["machine"] == "aarch64" and run.install["edgekit"]
        assert len(run.delegated) == 8 and run.parity[0]["cosine"] >= MIN_COSINE
    finally:
        remove_env()


def test_chroot_sysroot_runs_without_root_or_binfmt(device_env, artifacts, monkeypatch):
    """chroot needs root and binfmt (gone after a reboot); a built sysroot still runs via qemu -L."""
    from edgekit.device_env import execute

    monkeypatch.setattr(execute, "run_mode", lambda mode: "qemu-L")
    run = execute.run_exec(artifacts / "digits_cnn_int8.tflite", "rpi5", samples=3)
    assert run.loaded and run.install["machine"] == "aarch64" and run.install["edgekit"]
    assert "asimddp" in run.cpu_features and len(run.delegated) == 8
    assert run.parity[0]["bit_exact"] or run.parity[0]["differing_fraction"] > 0

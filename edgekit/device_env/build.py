"""The managed device sysroot: Debian bookworm arm64 (what Raspberry Pi OS 64-bit is built on) with the
device install of edgekit, built once into a cache folder from Debian's packages and PyPI only.

Stages are resumable (a stamp per stage in env.json): the second debootstrap stage runs every
maintainer script under emulation and takes about 10 minutes on a busy 2-core machine, so an
interrupted build must not start over. The wheels are resolved on the host first (seconds) so that
an install that cannot resolve for the Pi's Python/platform fails before the long part.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import EdgekitError, InputError

Progress = Callable[[str], None]
PER_PACKAGE = re.compile(r"I: (Retrieving|Validating|Extracting|Unpacking|Configuring) ")

SUITE = "bookworm"  # Raspberry Pi OS 64-bit (2023-) is Debian bookworm arm64: glibc 2.36, CPython 3.11
ARCH = "arm64"
PY_VERSION = "3.11"
# what `pip install edgekit` on the Pi resolves against (the same tags tests/run_installed.sh's pi tier uses)
PLATFORMS = ("manylinux_2_27_aarch64", "manylinux2014_aarch64")
QEMU = "qemu-aarch64-static"
BINFMT_NAME = "qemu-aarch64"
BINFMT_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
VENV = "/opt/edgekit/venv"        # inside the sysroot: where a Pi user's `python3 -m venv` would be
SITE = "/opt/edgekit/site"        # fallback mode: wheels unpacked by the host's pip (no emulated pip)
WHEELS = "/opt/edgekit/wheels"    # the host-resolved aarch64 wheels, installed offline inside
ARMHF_REASON = ("32-bit Raspberry Pi OS (armhf, armv7l) has no LiteRT build on PyPI: ai-edge-litert and tflite-runtime "
                "publish no armv7l wheels, so `pip install edgekit` cannot resolve there; use Raspberry Pi OS 64-bit "
                "(arm64), which every Pi from the 3 on runs")


class DeviceEnvError(EdgekitError):
    """The device environment cannot be built or used on this machine; the message says what to run."""

    exit_code = 6


class UnsupportedTargetError(InputError):
    """A target or OS architecture edgekit cannot emulate exactly (no runtime build for it)."""


def cache_dir() -> Path:
    """EDGEKIT_CACHE_DIR, else $XDG_CACHE_HOME/edgekit, else ~/.cache/edgekit."""
    if os.environ.get("EDGEKIT_CACHE_DIR"):
        return Path(os.environ["EDGEKIT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekit"


def env_dir(arch: str = ARCH) -> Path:
    return cache_dir() / "device-env" / f"{arch}-{SUITE}"


def target_cpu(target: str) -> str:
    """The qemu CPU model of a device profile (its `qemu_cpu` field: the core the runtime's kernels
    are dispatched for, e.g. cortex-a72 on a Pi 4)."""
    try:
        profile = json.loads(resources.files("edgekit").joinpath("devices", f"{target}.json").read_text())
    except (FileNotFoundError, OSError):
        raise UnsupportedTargetError(f"expected a device profile name (see `edgekit targets`), got {target!r}") from None
    cpu = profile.get("qemu_cpu")
    if not cpu:
        raise UnsupportedTargetError(f"target {target!r} has no emulated CPU model (only Arm Linux targets run under "
                                     f"qemu: rpi3, rpi4, rpi5, pixel phones); use plain `edgekit emulate` for an estimate")
    return cpu


def check_arch(arch: str) -> None:
    if arch in ("armhf", "armv7", "armv7l"):
        raise UnsupportedTargetError(ARMHF_REASON)
    if arch != ARCH:
        raise UnsupportedTargetError(f"expected --os-arch arm64 (or armhf, which is explained), got {arch!r}")


# --- state --------------------------------------------------------------------------------------

def _state_path(arch: str = ARCH) -> Path:
    return env_dir(arch) / "env.json"


def _load_state(arch: str = ARCH) -> dict:
    try:
        return json.loads(_state_path(arch).read_text())
    except (FileNotFoundError, ValueError):
        return {"stages": {}}


def _save_state(state: dict, arch: str = ARCH) -> None:
    path = _state_path(arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


@dataclass
class EnvStatus:
    path: Path
    ready: bool
    mode: str | None            # "chroot" (binfmt registered) or "qemu-L" (qemu-aarch64-static -L SYSROOT)
    stages: dict
    packages: dict              # name -> version of the device install
    size_mb: float | None
    build_s: float | None

    def to_dict(self) -> dict:
        return {"path": str(self.path), "ready": self.ready, "mode": self.mode, "stages": self.stages,
                "packages": self.packages, "size_mb": self.size_mb, "build_s": self.build_s}


def env_status(arch: str = ARCH) -> EnvStatus:
    check_arch(arch)
    state = _load_state(arch)
    return EnvStatus(env_dir(arch), bool(state.get("ready")), state.get("mode"), state.get("stages", {}),
                     state.get("packages", {}), state.get("size_mb"), state.get("build_s"))


def require_ready(arch: str = ARCH) -> EnvStatus:
    status = env_status(arch)
    if not status.ready:
        raise DeviceEnvError(f"expected a built device environment in {status.path}, found "
                             f"{'a partial build' if status.stages else 'none'}; run `edgekit device-env build rpi4` "
                             "first (about 10 minutes, once)")
    return status


# --- prerequisites ------------------------------------------------------------------------------

def binfmt_registered() -> bool:
    return (BINFMT_DIR / BINFMT_NAME).exists()


def ensure_binfmt(progress: Progress) -> bool:
    """Register qemu for arm64 ELF files (what `systemd-binfmt` does at boot) so chroot runs the
    sysroot's own binaries; False when this machine cannot (no root, read-only /proc in a container):
    the build then falls back to qemu-aarch64-static -L SYSROOT."""
    if os.environ.get("EDGEKIT_NO_BINFMT") == "1":  # what a container without binfmt_misc gets (tests it here)
        progress(f"EDGEKIT_NO_BINFMT=1: not using binfmt_misc; the sysroot's python runs under {QEMU} -L SYSROOT")
        return False
    if binfmt_registered():
        return True
    if os.geteuid() != 0 or not BINFMT_CONF.exists():
        return False
    try:
        if not (BINFMT_DIR / "register").exists():
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], check=True,
                           capture_output=True)
        (BINFMT_DIR / "register").write_text(BINFMT_CONF.read_text().strip() + "\n")
    except (OSError, subprocess.CalledProcessError) as e:
        progress(f"cannot register qemu with binfmt_misc ({e}); falling back to {QEMU} -L SYSROOT")
        return False
    progress(f"registered {BINFMT_NAME} with binfmt_misc (from {BINFMT_CONF})")
    return binfmt_registered()


def check_prerequisites() -> None:
    missing = [tool for tool in (QEMU, "debootstrap") if not shutil.which(tool)]
    if missing:
        raise DeviceEnvError(f"expected {' and '.join(missing)} on PATH, found none; install them: "
                             "apt-get install qemu-user-static debootstrap")
    if os.geteuid() != 0:
        raise DeviceEnvError("building the device sysroot needs root (debootstrap creates device files and owners); "
                             "run `sudo edgekit device-env build rpi4` once, later runs need no root in qemu-L mode")


# --- stages -------------------------------------------------------------------------------------

def _run(cmd: list[str], progress: Progress, what: str, prefixes: tuple[str, ...] = ("I: ",), **kw) -> None:
    """Run a build step, forwarding its progress lines; on failure one line with the step's last words."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", **kw)
    tail: list[str] = []
    seen: dict[str, int] = {}
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-20:]
        if not line.startswith(prefixes):
            continue
        verb = PER_PACKAGE.match(line)
        if verb:  # one line per package is ~500 lines: show every 10th, counted
            seen[verb[1]] = seen.get(verb[1], 0) + 1
            if seen[verb[1]] % 10 != 1:
                continue
            line = f"{line} (package {seen[verb[1]]})"
        progress(f"  {line}")
    if proc.wait() != 0:
        last = next((t for t in reversed(tail) if t.strip()), "no output")
        raise DeviceEnvError(f"{what} failed (exit {proc.returncode}): {last[:200]}; fix that and re-run "
                             "`edgekit device-env build` (finished stages are kept)")


def _device_wheel(folder: Path, progress: Progress) -> Path:
    """The wheel a Pi user installs: EDGEKIT_WHEEL, else built from this checkout."""
    given = os.environ.get("EDGEKIT_WHEEL")
    if given:
        if not Path(given).is_file():
            raise InputError(f"expected EDGEKIT_WHEEL to name a wheel file, got {given!r}")
        return Path(given)
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "pyproject.toml").exists():
        raise DeviceEnvError("expected EDGEKIT_WHEEL=path/to/edgekit-*.whl (edgekit is installed from a wheel, "
                             "there is no checkout to build one from); set it and re-run")
    progress(f"building the edgekit wheel from {checkout}")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(folder), str(checkout)], progress,
         "pip wheel")
    return max(folder.glob("edgekit-*.whl"), key=lambda p: p.stat().st_mtime)


def _resolve_wheels(root: Path, state: dict, progress: Progress) -> None:
    wheels = root / WHEELS.lstrip("/")
    if wheels.exists():
        shutil.rmtree(wheels)
    wheels.mkdir(parents=True)
    wheel = _device_wheel(wheels, progress)
    if wheel.parent != wheels:
        shutil.copy2(wheel, wheels / wheel.name)
    progress(f"resolving the device install for CPython {PY_VERSION} / {PLATFORMS[0]} on the host (pip download)")
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--only-binary=:all:",
           "--python-version", PY_VERSION, "--implementation", "cp", "-d", str(wheels), str(wheels / wheel.name)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DeviceEnvError(f"the device install does not resolve for CPython {PY_VERSION} on {PLATFORMS[0]}: "
                             f"{_last_error(proc.stderr)}")
    state["resolved"] = sorted(p.name for p in wheels.glob("*.whl"))
    state["device_wheel"] = wheel.name
    state["device_wheel_sha256"] = _sha256(wheel)
    progress(f"resolved {len(state['resolved'])} wheels: {', '.join(state['resolved'])}")


def _last_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("WARNING: Location")]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["no output"])[0][:240]


def _unpack_on_host(root: Path, progress: Progress) -> None:
    """Fallback second stage without binfmt: unpack every downloaded .deb on the host. Maintainer
    scripts do not run (no emulated shell), which a Python that only imports wheels does not need."""
    debs = sorted((root / "var/cache/apt/archives").glob("*.deb"))
    progress(f"unpacking {len(debs)} packages on the host (no binfmt: maintainer scripts are skipped)")
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, capture_output=True)


def run_mode(mode: str) -> str:
    """How to start the sysroot's Python now: chroot needs root and a registered binfmt handler (gone
    after a reboot, absent for other users); qemu -L needs neither, so any user can run a built sysroot."""
    return "chroot" if mode == "chroot" and os.geteuid() == 0 and binfmt_registered() else "qemu-L"


def guest_site(root: Path, built_mode: str) -> str | None:
    """The device install's site-packages to put on sys.path when not started through its venv."""
    if built_mode == "chroot":
        return str(root / VENV.lstrip("/") / f"lib/python{PY_VERSION}/site-packages")
    return str(root / SITE.lstrip("/"))


def guest_python(root: Path, mode: str, cpu: str | None = None) -> tuple[list[str], dict]:
    """The command (and extra environment) that runs the sysroot's Python under an emulated `cpu`."""
    env = {"QEMU_CPU": cpu} if cpu else {}
    if mode == "chroot":
        # binfmt starts qemu for every arm64 binary; qemu reads QEMU_CPU from the environment
        return ["chroot", str(root), f"{VENV}/bin/python3"], env
    cmd = [shutil.which(QEMU) or QEMU, "-L", str(root)] + (["-cpu", cpu] if cpu else [])
    return cmd + [str(root / "usr/bin/python3.11")], {}


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stale_wheel(state: dict) -> bool:
    given = os.environ.get("EDGEKIT_WHEEL")
    return bool(given) and Path(given).is_file() and _sha256(Path(given)) != state.get("device_wheel_sha256")


def _install_device_wheels(root: Path, mode: str, state: dict, progress: Progress) -> None:
    name = state["device_wheel"]
    for old in (VENV, SITE):  # a reinstall of the same version would be "already satisfied" and keep the old one
        shutil.rmtree(root / old.lstrip("/"), ignore_errors=True)
    if mode == "chroot":
        progress(f"python3 -m venv {VENV} and pip install --no-index {name} inside the sysroot (emulated)")
        _run(["chroot", str(root), "python3", "-m", "venv", VENV], progress, "python3 -m venv (in the sysroot)")
        _run(["chroot", str(root), f"{VENV}/bin/pip", "install", "--no-index", "--disable-pip-version-check",
              "--find-links", WHEELS, f"{WHEELS}/{name}"], progress, "pip install (in the sysroot)",
             prefixes=("Successfully",))
        listing = subprocess.run(["chroot", str(root), f"{VENV}/bin/pip", "list", "--format=json",
                                  "--disable-pip-version-check"], capture_output=True, text=True, check=False)
    else:
        progress(f"pip install --target {SITE} for {PLATFORMS[0]} on the host (qemu-L mode)")
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index",
               "--find-links", str(root / WHEELS.lstrip("/")), "--only-binary=:all:", "--python-version", PY_VERSION,
               "--implementation", "cp", "--target", str(root / SITE.lstrip("/")), str(root / WHEELS.lstrip("/") / name)]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        _run(cmd, progress, "pip install --target")
        listing = subprocess.run([sys.executable, "-m", "pip", "list", "--format=json", "--disable-pip-version-check",
                                  "--path", str(root / SITE.lstrip("/"))], capture_output=True, text=True, check=False)
    try:
        state["packages"] = {p["name"].lower(): p["version"] for p in json.loads(listing.stdout)}
    except ValueError:
        state["packages"] = {}


def _du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sm", "--one-file-system", str(path)], capture_output=True, text=True, check=False).stdout
    return float(out.split()[0]) if out.strip() else 0.0


def build_env(target: str = "rpi4", arch: str = ARCH, progress: Progress = print, force: bool = False) -> EnvStatus:
    """Build (or finish building) the sysroot for `target`'s family; a no-op when it is ready."""
    check_arch(arch)
    target_cpu(target)
    if force:
        remove_env(arch)
    state = _load_state(arch)
    if state.get("ready") and _stale_wheel(state):
        # a reused sysroot must test the wheel under test: reinstall the device wheels (~2 min), not the OS
        progress("EDGEKIT_WHEEL differs from the sysroot's device wheel: reinstalling the device wheels")
        for name in ("resolve wheels", "install the device wheels"):
            state["stages"].pop(name, None)
        state["ready"] = False
    if state.get("ready"):
        progress(f"device environment ready in {env_dir(arch)} (built in {state.get('build_s')} s)")
        return env_status(arch)
    check_prerequisites()
    root = env_dir(arch) / "root"
    stages = state.setdefault("stages", {})
    start = time.monotonic()
    mode = "chroot" if ensure_binfmt(progress) else "qemu-L"
    if state.get("mode") not in (None, mode):  # a half-built sysroot of the other kind cannot be finished this way
        raise DeviceEnvError(f"expected to finish a {state['mode']} build, but this machine now allows {mode}; "
                             f"run `edgekit device-env remove` and build again")
    state["mode"] = mode

    def stage(name: str, step: Callable[[], None]) -> None:
        if name in stages:
            return
        t0 = time.monotonic()
        progress(f"[{len(stages) + 1}/4] {name}")
        step()
        stages[name] = round(time.monotonic() - t0, 1)
        _save_state(state, arch)
        progress(f"      {name}: {stages[name]} s")

    # resolve first: seconds, and a device install that cannot resolve makes the 10 minutes pointless
    stage("resolve wheels", lambda: _resolve_wheels(root, state, progress))
    stage("debootstrap (download)", lambda: _run(
        ["debootstrap", "--foreign", f"--arch={ARCH}", "--variant=minbase", "--include=python3,python3-venv",
         SUITE, str(root)], progress, "debootstrap --foreign"))
    if mode == "chroot":
        stage("debootstrap second stage (emulated, ~10 min)", lambda: _run(
            ["chroot", str(root), "/debootstrap/debootstrap", "--second-stage"], progress,
            "debootstrap --second-stage"))
    else:
        stage("unpack packages on the host", lambda: _unpack_on_host(root, progress))
    stage("install the device wheels", lambda: _install_device_wheels(root, mode, state, progress))
    state["size_mb"] = _du_mb(root)
    state["build_s"] = round(sum(stages.values()), 1)
    state["ready"] = True
    _save_state(state, arch)
    progress(f"device environment ready in {env_dir(arch)}: {state['size_mb']:.0f} MB, "
             f"{round(time.monotonic() - start)} s this run; try `edgekit emulate MODEL.tflite --target rpi4 --exec`")
    return env_status(arch)


def remove_env(arch: str = ARCH) -> bool:
    """Delete the sysroot (unmounting anything a killed build left mounted inside first)."""
    check_arch(arch)
    folder = env_dir(arch)
    if not folder.exists():
        return False
    inside = str(folder.resolve()) + "/"
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(inside)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    shutil.rmtree(folder)
    return True

#!/usr/bin/env bash
# Test what a user installs: build the wheel and sdist, install the wheel into a fresh virtual
# environment per install flavour, and run each test tier there against the installed package.
#
#   bash tests/run_installed.sh                 # every tier (what .ci/run runs)
#   TIERS="device serve" bash tests/run_installed.sh
#   EDGEKIT_TEST_WORK=/tmp/t bash tests/run_installed.sh   # keep the work folder (wheel, logs) afterwards
#
# Disk: each venv is removed after its last tier and a work folder this script made is removed at
# exit, so a full run needs ~12 GB free at its peak (torch's CUDA build) and leaves nothing behind.
# It once left 6 GB per run in /tmp, which later filled the disk under CI ("No space left on device"
# in four installs); an install now checks the free space first and fails its tiers in one line.
#
# pytest runs from a scratch folder, never from the checkout: `python -m pytest` in the repo root
# would import ./edgekit instead of the wheel (a `pip install -e` hid a broken wheel in round 1),
# and EDGEKIT_TEST_INSTALLED=1 makes conftest.py refuse a checkout that shadows the package.
set -euo pipefail

ROOT="${EDGEKIT_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}"
# --one-file-system: never into a mount a failed debootstrap left inside the exec tier's sysroot
if [ -n "${EDGEKIT_TEST_WORK:-}" ]; then WORK="$EDGEKIT_TEST_WORK"
else WORK="$(mktemp -d -t edgekit-tests.XXXXXX)"; trap 'rm -rf --one-file-system "$WORK"' EXIT; fi
PYTHON="${PYTHON:-python3}"
TIERS="${TIERS:-pi packaging device exec serve convert torch batch charts slow}"
PIP_FLAGS=(-q --disable-pip-version-check)
mkdir -p "$WORK"
TIMES="$WORK/tier_times.tsv"
: > "$TIMES"

say() { printf '\n== %s\n' "$*"; }
# pip on machines with an extra local index prints a warning per package for each missing folder
quiet() { "$@" 2> >(grep -v "^WARNING: Location '" >&2); }

free_gb() { df -Pk "$WORK" | awk 'NR == 2 {print int($4 / 1048576)}'; }

fresh_venv() {  # fresh_venv NAME "wheel[extras]" NEEDED-GB -> prints the venv path, or fails saying why
    local venv="$WORK/venv-$1" free
    rm -rf "$venv"
    free="$(free_gb)"
    if [ "$free" -lt "$3" ]; then
        echo "Error: the $1 install needs ~$3 GB free in $WORK, $free GB are; free some disk or set EDGEKIT_TEST_WORK to a folder on a larger one" >&2
        return 1
    fi
    if ! { "$PYTHON" -m venv "$venv" && quiet "$venv/bin/pip" install "${PIP_FLAGS[@]}" "$2" "pytest>=8" >&2; }; then
        echo "Error: installing $2 into $venv failed (pip's message above)" >&2
        rm -rf "$venv"
        return 1
    fi
    echo "$venv"
}

install_failed() {  # install_failed LABEL...: each tier that could not run is a failed tier, in the times table
    local label
    for label in "$@"; do printf '%s\t0\tnot-installed\n' "$label" >> "$TIMES"; done
    failed=1
}

# venv_tier NAME "wheel[extras]" NEEDED-GB MARK-EXPRESSION: a tier in a venv of its own, removed after it
venv_tier() {
    local venv
    if venv="$(fresh_venv "$1" "$2" "$3")"; then
        run_tier "$venv" "$1" "$4" || failed=1
        rm -rf "$venv"
    else install_failed "$1"; fi
}

run_tier() {  # run_tier VENV LABEL MARK-EXPRESSION
    local venv="$1" label="$2" marks="$3" start end status=0
    say "tier $label: pytest -m \"$marks\" in $(basename "$venv")"
    start=$(date +%s)
    (cd "$WORK" && EDGEKIT_TEST_INSTALLED=1 "$venv/bin/python" -m pytest "$ROOT/tests" -m "$marks" \
        -q -rs -p no:cacheprovider --rootdir "$ROOT" -o console_output_style=classic) \
        > >(tee "$WORK/tier-$label.log") || status=$?
    end=$(date +%s)
    printf '%s\t%s\t%s\n' "$label" "$((end - start))" "$status" >> "$TIMES"
    # exit 5 = no test selected: a tier that selects nothing is a broken tier, not a pass
    return "$status"
}

wanted() { [[ " $TIERS " == *" $1 "* ]]; }

say "building the wheel and sdist from $ROOT into $WORK/dist"
"$PYTHON" -m venv "$WORK/venv-build"
quiet "$WORK/venv-build/bin/pip" install "${PIP_FLAGS[@]}" build
rm -rf "$ROOT/build"
"$WORK/venv-build/bin/python" -m build --outdir "$WORK/dist" "$ROOT" > "$WORK/build.log" 2>&1 \
    || { tail -30 "$WORK/build.log"; exit 1; }
rm -rf "$ROOT/build" "$ROOT"/*.egg-info
WHEEL="$(ls "$WORK"/dist/edgekit-*.whl)"
SDIST="$(ls "$WORK"/dist/edgekit-*.tar.gz)"
export EDGEKIT_WHEEL="$WHEEL" EDGEKIT_SDIST="$SDIST"
echo "wheel: $WHEEL ($(du -k "$WHEEL" | cut -f1) KB)"
echo "sdist: $SDIST ($(du -k "$SDIST" | cut -f1) KB)"

failed=0
if wanted pi; then
    # Raspberry Pi OS bookworm 64-bit = aarch64, glibc 2.36, CPython 3.11: the device install must
    # resolve to binary wheels there, or a Pi user meets a compiler (or nothing) at `pip install`.
    say "tier pi: resolving the device install for manylinux_2_27_aarch64 / CPython 3.11"
    start=$(date +%s); status=0
    quiet "$WORK/venv-build/bin/pip" download "${PIP_FLAGS[@]}" --only-binary=:all: --python-version 3.11 \
        --implementation cp --platform manylinux_2_27_aarch64 --platform manylinux2014_aarch64 \
        -d "$WORK/pi-wheels" "$WHEEL" || status=$?
    ls "$WORK/pi-wheels" | sed 's/^/  /'
    printf '%s\t%s\t%s\n' pi "$(( $(date +%s) - start ))" "$status" >> "$TIMES"
    [ "$status" -eq 0 ] || failed=1
fi
if wanted device; then
    say "device install: the wheel alone (numpy + LiteRT, no TensorFlow)"
    if venv="$(fresh_venv device "$WHEEL" 1)"; then
        if "$venv/bin/python" -c "import tensorflow" 2>/dev/null; then
            echo "the device venv has tensorflow: the device tier would not prove anything"; exit 1
        fi
        site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
        echo "device venv site-packages: $(du -sm "$site" | cut -f1) MB (pytest included)"
        run_tier "$venv" device "device" || failed=1
        rm -rf "$venv"
    else install_failed device; fi
fi
if wanted exec; then
    # emulate --exec: the device install in a Debian bookworm arm64 sysroot under qemu (root,
    # qemu-user-static, debootstrap). Built first, with progress (~10 min on 2 cores), into this run's
    # folder under CI (CI=true: nothing cached between runs); elsewhere into the user's cache, reused by
    # later runs (a 10-minute build per local test run would be waste on a shared machine).
    say "exec install: the wheel alone, then edgekit device-env build rpi4"
    if venv="$(fresh_venv exec "$WHEEL" 2)"; then
        if [ "${CI:-}" = "true" ]; then export EDGEKIT_CACHE_DIR="${EDGEKIT_CACHE_DIR:-$WORK/cache}"
        else export EDGEKIT_CACHE_DIR="${EDGEKIT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edgekit}"; fi
        start=$(date +%s)
        if (cd "$WORK" && "$venv/bin/edgekit" device-env build rpi4); then
            echo "device sysroot: $(du -sm --one-file-system "$EDGEKIT_CACHE_DIR" | cut -f1) MB, $(( $(date +%s) - start )) s"
        else
            echo "edgekit device-env build failed: the exec tests say why (and fail under CI=true)"
        fi
        PYTEST_ADDOPTS="-rs" run_tier "$venv" exec "exec" || failed=1
        rm -rf "$venv"
    else install_failed exec; fi
fi
if wanted serve; then
    # [serve-test]: tritonclient and websocket-client, the clients tests/test_serve_conformance.py and
    # test_serve_ui.py drive the server with (test-only; a user's install is edgekit[serve])
    say "serve install: edgekit[serve] + [serve-test]"
    venv_tier serve "$WHEEL[serve,serve-test]" 1 "serve"
fi
if wanted convert; then
    # [charts]: `edgekit sweep` draws its frontier chart with matplotlib (README: sweep needs both)
    say "convert install: edgekit[convert,charts] (README command 1 installs [convert]; sweep needs [charts])"
    venv_tier convert "$WHEEL[convert,charts]" 4 "convert and not slow"
fi
if wanted torch; then
    # PyTorch/ONNX sources: [onnx] brings [torch] and [convert]; [torch-test] torchvision + the ONNX exporter;
    # [charts]: `edgekit sweep` of a .pt2/.onnx draws its frontier chart with matplotlib, as for Keras
    say "torch install: edgekit[onnx,torch-test,charts]"
    venv_tier torch "$WHEEL[onnx,torch-test,charts]" 12 "torch"  # ~8 GB installed (torch's CUDA build)
fi
if wanted batch; then
    # Ray and psycopg are extras (not on a Pi); the PostgreSQL server is the system's (.ci/run installs it)
    say "batch install: edgekit[ray,sql]"
    PYTEST_ADDOPTS="-rs" venv_tier batch "$WHEEL[ray,sql]" 2 "batch"
fi
if wanted packaging || wanted charts || wanted slow; then
    say "dev install: edgekit[dev]"
    if venv="$(fresh_venv dev "$WHEEL[dev]" 4)"; then
        if wanted packaging; then run_tier "$venv" packaging "packaging" || failed=1; fi
        # matplotlib is the [charts] extra, in [dev] only; the browser check uses the system's chromium
        if wanted charts; then run_tier "$venv" charts "charts" || failed=1; fi
        if wanted slow; then run_tier "$venv" slow "slow" || failed=1; fi
        rm -rf "$venv"
    else
        for tier in packaging charts slow; do if wanted "$tier"; then install_failed "$tier"; fi; done
    fi
fi

say "tier times (seconds; exit status)"
column -t "$TIMES" 2>/dev/null || cat "$TIMES"
# one closing line over every tier, from each tier's own pytest summary line
count() { cat "$WORK"/tier-*.log 2>/dev/null | grep -E "^[0-9]+ (passed|failed|skipped|error)|, [0-9]+ (passed|failed|skipped|error)" \
    | grep -oE "[0-9]+ $1" | awk '{n += $1} END {print n + 0}'; }
not_installed="$(grep -c "not-installed" "$TIMES" || true)"
printf '\ntotal: %s passed, %s failed, %s skipped%s\n' "$(count passed)" "$(( $(count failed) + $(count error) ))" \
    "$(count skipped)" "$([ "$not_installed" -eq 0 ] || echo ", $not_installed tiers not run: their install failed")"
exit "$failed"

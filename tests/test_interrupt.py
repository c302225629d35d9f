"""The signal seam under `edgekit convert` (edgekit/interrupt.py), with real signals in a real process.

The convert-tier tests send signals at seeded times; these pin the two windows a timed signal only
hits sometimes (CI stop 25 hit one): a signal landing inside a finalizer, which Python reports with a
traceback and then swallows, and a signal landing after the run said it was done."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.device


def run_script(body: str) -> subprocess.CompletedProcess:
    code = "import os, signal, sys\nfrom edgekit import interrupt\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_a_signal_inside_a_finalizer_is_silent_and_stops_the_run_at_the_next_checkpoint():
    proc = run_script("""
        class Resource:
            def __del__(self):  # TensorFlow's objects free themselves like this, mid-run
                os.kill(os.getpid(), signal.SIGTERM)

        with interrupt.signals_as_interrupts() as state:
            try:
                Resource()  # collected at once: the handler raises inside __del__, Python swallows it
                print("swallowed, recorded", state.signum == signal.SIGTERM, flush=True)
                interrupt.checkpoint()
                print("not stopped")
            except interrupt.Interrupted as e:
                print("stopped at checkpoint", e.exit_code)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["swallowed, recorded True", "stopped at checkpoint 143"]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr


def test_other_exceptions_in_finalizers_are_still_reported():
    proc = run_script("""
        class Broken:
            def __del__(self):
                raise ValueError("a real bug in a finalizer")

        with interrupt.signals_as_interrupts():
            Broken()
        print("went on")
    """)
    assert proc.stdout.strip() == "went on"
    assert "ValueError: a real bug in a finalizer" in proc.stderr


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_after_outputs_complete_keeps_them_and_sets_the_exit_code(sig):
    proc = run_script(f"""
        late = interrupt.LateSignals()
        with interrupt.signals_as_interrupts(after=late):
            interrupt.outputs_complete()
            os.kill(os.getpid(), signal.{sig})  # not an interrupt any more: recorded for the exit
            print("done", flush=True)
        os.kill(os.getpid(), signal.{sig})  # after the block: the late handler, never Python's default
        print("after the block", flush=True)
    """)
    code = {"SIGINT": 130, "SIGTERM": 143}[sig]
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stdout.splitlines() == ["done", "after the block"]
    assert proc.stderr.strip() == (f"Error: interrupted by {sig} after the run had finished; "
                                   "its outputs are complete and were kept")


def test_outputs_complete_refuses_to_declare_done_after_a_swallowed_signal():
    proc = run_script("""
        late = interrupt.LateSignals()
        with interrupt.signals_as_interrupts(after=late) as state:
            try:
                os.kill(os.getpid(), signal.SIGINT)
            except interrupt.Interrupted:
                pass  # what a library that catches KeyboardInterrupt does
            try:
                interrupt.outputs_complete()
                print("declared done")
            except interrupt.Interrupted as e:
                print("refused", e.exit_code, state.complete)
    """)
    assert proc.stdout.strip() == "refused 130 False", proc.stderr

"""Capture what TensorFlow's and LiteRT's C++ code prints straight to file descriptors 1/2.

The converter writes lines such as "fully_quantize: 0, inference_type: 6" and the
interpreter "INFO: Created TensorFlow Lite XNNPACK delegate" below Python, so
`contextlib.redirect_stdout` cannot catch them. We point the descriptors at a temp file
for the duration of a call; the text is kept for error reports and shown with EDGEKIT_DEBUG=1.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings


class Captured:
    text: str = ""
    _fds: tuple | None = None          # ((saved stdout, saved stderr), sink) while capturing

    def passing_through(self, progress):
        """`progress` writing to the real stdout/stderr while it runs: a long step inside the capture
        (distillation's epochs) still shows its progress, while the native chatter around it stays
        captured."""
        def call(message: str) -> None:
            if self._fds is None:
                progress(message)
                return
            saved, sink = self._fds
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            try:
                progress(message)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(sink, 1)
                os.dup2(sink, 2)
        return call


@contextlib.contextmanager
def captured_native_output():
    captured = Captured()
    if os.environ.get("EDGEKIT_DEBUG") == "1":
        yield captured
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings():
        # tf.lite.Interpreter's deprecation warning, raised inside TF's own quantization debugger
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        captured._fds = (tuple(saved), sink.fileno())
        try:
            yield captured
        finally:
            captured._fds = None
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", errors="replace")


def quiet_native():
    """Silence the runtime's own INFO lines (\"Created TensorFlow Lite XNNPACK delegate for CPU\" on
    every load) unless the user asked to see them: `edgekit -v` or EDGEKIT_VERBOSE=1."""
    if os.environ.get("EDGEKIT_VERBOSE") == "1":
        return contextlib.nullcontext(Captured())
    return captured_native_output()

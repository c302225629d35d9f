"""The `--exec` verdict as lines a person reads (the CLI prints them; --json prints ExecResult)."""
from __future__ import annotations

from .execute import ExecResult

PLUGIN_NOTE = ("instruction counts: not available (Debian's qemu-user/qemu-user-static 7.2 ship no TCG plugins "
               "such as libinsn.so, and qemu-aarch64-static is built without -plugin)")
TIMING_NOTE = "timing under qemu is translation time, not device time: use the estimate above for latency"


def exec_lines(r: ExecResult) -> list[str]:
    head = f"{r.target} exec (QEMU_CPU={r.cpu}, {r.threads} thread(s)):"
    install = r.install
    lines = [(f"{head} device install: Python {install.get('python')} {install.get('machine')}, "
             f"edgekit {install.get('edgekit') or 'NOT importable: ' + str(install.get('edgekit_error'))}, "
             f"ai-edge-litert {install.get('litert')}, numpy {install.get('numpy')} "
             f"({len(install.get('resolved', []))} wheels resolved for manylinux_2_27_aarch64 / cp311)")]
    features = set(r.cpu_features)
    lines.append(f"  emulated core: dotprod (int8 sdot) {'yes' if 'asimddp' in features else 'no'}, fp16 arithmetic "
                 f"{'yes' if 'asimdhp' in features else 'no'}")
    if not r.target.startswith("rpi"):  # phones: same core and XNNPACK source, another build and libc
        lines.append("  note: an Android app runs LiteRT's Android build; this is the Linux aarch64 wheel on the same core")
    if r.host_failure:
        lines.append(f"  host runtime also rejects it: {r.host_failure}")
    if not r.loaded:
        f = r.failure or {}
        lines.append(f"  loads: NO ({f.get('kind')}): {f.get('reason')}")
        lines.append(f"  runtime said: {f.get('message')}")
        return lines
    left = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in sorted(r.not_delegated.items())) or "none"
    host = f" (host x86: {r.host_delegated})" if r.host_delegated is not None else ""
    lines.append(f"  loads: yes; XNNPACK took {len(r.delegated)} of {r.nodes} nodes{host}; left on built-in kernels: {left}")
    for message in r.delegate_messages[:3]:
        lines.append(f"  delegate: {message}")
    for p in r.parity:
        if p["bit_exact"]:
            verdict = "bit-exact"
        elif p["dtype"].startswith(("int", "uint")):
            verdict = f"{p['differing_fraction']:.4%} of codes differ (max {p['max_abs_err']:.0f} step(s))"
        else:
            verdict = f"cosine {p['cosine']:.7f}, max abs err {p['max_abs_err']:.3g}"
        lines.append(f"  parity vs host on {r.samples} input(s), output {p['name']} ({p['dtype']}): {verdict}")
    if r.invoke_ms:
        mean = sum(r.invoke_ms) / len(r.invoke_ms)
        lines.append(f"  emulated run: {r.wall_s:.1f} s wall, {mean:.0f} ms per invoke under qemu ({TIMING_NOTE})")
    return lines

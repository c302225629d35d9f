"""Whether XNNPACK may use Intel AMX in this process, and a way to forbid it (Linux x86-64 only).

XNNPACK (inside LiteRT) runs int8 convolutions with its AMX kernels (qs8-qc8w-igemm-16x64c4-avx512amx)
whenever the CPU has AMX-INT8 and Linux grants the process the tile state: it asks for it once,
with arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), when the first interpreter is built. No
LiteRT option selects the kernel family, so the only way to time the same artifact on XNNPACK's
AVX-512 VNNI kernels (7x16c8, the family x86 CPUs without AMX run) is to make that request fail:
a seccomp filter returning EPERM for that one arch_prctl call, installed before LiteRT is imported.
The filter lasts for the life of the process (run it in a subprocess); nothing else is blocked.
"""
from __future__ import annotations

import ctypes
import platform
import struct

SYS_ARCH_PRCTL = 158                     # x86-64
ARCH_GET_XCOMP_PERM, ARCH_REQ_XCOMP_PERM = 0x1022, 0x1023
XFEATURE_XTILEDATA = 18
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def supported() -> bool:
    return platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64")


def cpu_has_amx_int8() -> bool:
    try:
        return supported() and " amx_int8" in open("/proc/cpuinfo").read()
    except OSError:
        return False


def tiles_granted() -> bool:
    """True once this process holds the AMX tile-data permission (XNNPACK asked and Linux agreed)."""
    if not supported():
        return False
    mask = ctypes.c_uint64(0)
    if _libc().syscall(SYS_ARCH_PRCTL, ARCH_GET_XCOMP_PERM, ctypes.byref(mask)) != 0:
        return False
    return bool(mask.value >> XFEATURE_XTILEDATA & 1)


def forbid() -> None:
    """From now on this process cannot obtain AMX tiles: XNNPACK falls back to its AVX-512 VNNI kernels.
    Call before the first LiteRT interpreter exists (XNNPACK asks once per process)."""
    if not supported():
        raise OSError("forbidding AMX needs Linux on x86-64")
    ld_nr, ld_arg0 = struct.pack("HBBI", 0x20, 0, 0, 0), struct.pack("HBBI", 0x20, 0, 0, 16)  # BPF_LD|W|ABS
    prog = b"".join([
        ld_nr,
        struct.pack("HBBI", 0x15, 0, 3, SYS_ARCH_PRCTL),          # BPF_JMP|JEQ|K: not arch_prctl -> allow
        ld_arg0,
        struct.pack("HBBI", 0x15, 0, 1, ARCH_REQ_XCOMP_PERM),     # another arch_prctl code -> allow
        struct.pack("HBBI", 0x06, 0, 0, 0x00050000 | 1),          # BPF_RET: SECCOMP_RET_ERRNO | EPERM
        struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000),              # BPF_RET: SECCOMP_RET_ALLOW
    ])

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    code = ctypes.create_string_buffer(prog, len(prog))
    fprog = SockFprog(len(prog) // 8, ctypes.cast(code, ctypes.c_void_p))
    libc = _libc()
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or \
            libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "seccomp filter against AMX refused")
    forbid.program = code  # the kernel copied it; kept only so nothing dangles

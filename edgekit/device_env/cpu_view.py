"""The device's CPU as the runtime sees it through /proc and /sys, written into the sysroot per run.

Why: LiteRT's XNNPACK delegate starts only when the cpuinfo library can read the processor lists in
/sys/devices/system/cpu; in a bare chroot (no /sys, and qemu-user shows the *host's* /proc/cpuinfo)
cpuinfo fails ("failed to parse both lists of possible and present processors") and XNNPACK is
silently skipped, so every op would run on the built-in reference kernels, which a Pi never does.
cpuinfo also reads the core's MIDR part number from /proc/cpuinfo to pick microarchitecture-tuned
kernels (in-order A53 vs out-of-order A72/A76). The ISA itself (dotprod, fp16) comes from AT_HWCAP,
which qemu sets from QEMU_CPU. Plain files, not mounts: nothing to clean up, nothing of the host leaks in.
"""
from __future__ import annotations

from pathlib import Path

# MIDR part numbers (Arm Technical Reference Manuals) and the Features line the kernel prints.
# BCM2837/BCM2711 (Pi 3/4) have no crypto extensions; the A76 (Pi 5, phones) is Armv8.2 with dotprod.
CORES = {
    "cortex-a53": ("0xd03", 4, "fp asimd evtstrm crc32 cpuid"),
    "cortex-a72": ("0xd08", 3, "fp asimd evtstrm crc32 cpuid"),
    "cortex-a76": ("0xd0b", 1, ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                                "lrcpc dcpop asimddp")),
}


def cpuinfo_text(cpu: str, cores: int) -> str:
    part, revision, features = CORES[cpu]
    blocks = [f"processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
              f"CPU architecture: 8\nCPU variant\t: 0x{4 if cpu == 'cortex-a76' else 0}\nCPU part\t: {part}\n"
              f"CPU revision\t: {revision}\n" for n in range(cores)]
    return "\n".join(blocks) + "\n"


def write_cpu_view(root: Path, cpu: str, cores: int) -> None:
    """/proc/cpuinfo and /sys/devices/system/cpu/{possible,present,online} of a `cores`-core `cpu`."""
    if cpu not in CORES:
        raise ValueError(f"no CPU view for {cpu!r}; known: {', '.join(CORES)}")
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc/cpuinfo").write_text(cpuinfo_text(cpu, cores))
    system = root / "sys/devices/system/cpu"
    system.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present", "online"):
        (system / name).write_text(f"0-{cores - 1}\n")

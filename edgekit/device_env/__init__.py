"""Device environments: an emulated Raspberry Pi OS sysroot with the device install of edgekit, to run
an artifact on the device's own runtime build under an emulated Cortex core (`edgekit emulate --exec`).

build.py owns the sysroot (build, status, remove); execute.py runs an artifact in it and compares it
with the host runtime; guest.py is the script that runs inside, on the device's Python.
"""
from .build import (
           DeviceEnvError,
           UnsupportedTargetError,
           build_env,
           env_status,
           remove_env,
           target_cpu,
)
from .execute import ExecResult, run_exec

__all__ = [
           "DeviceEnvError",
           "ExecResult",
           "UnsupportedTargetError",
           "build_env",
           "env_status",
           "remove_env",
           "run_exec",
           "target_cpu",
]

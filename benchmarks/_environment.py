"""Where a run ran: the device, the machine, the library versions, the commit."""

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import jax

import momentax
from benchmarks import _native


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _first_field(path: str, key: str) -> str | None:
    """The value after ``key:`` on the first line of ``path`` that starts with it."""
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory_gib() -> float | None:
    total = _first_field("/proc/meminfo", "MemTotal:")
    return None if total is None else round(int(total.split()[0]) / 2**20, 1)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def environment(torch: Any | None) -> dict[str, Any]:
    """The device, the machine and the library versions of this run."""
    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "cpu": _first_field("/proc/cpuinfo", "model name")
        or platform.processor()
        or "unknown",
        "cpu_count": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "momentax": momentax.__version__,
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "optax": _version("optax"),
        "numpy": _version("numpy"),
        "torch": None if torch is None else torch.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
        "uses_single_sweep": momentax.uses_single_sweep(),
        "one_pass_reference": _native.library()[1],
        "commit": _git_commit(),
    }
    if torch is not None:
        env["torch_threads"] = torch.get_num_threads()
    return env

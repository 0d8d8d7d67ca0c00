"""The step sections again in child processes: the fusion flag, glibc's tunables.

Both settings are read once, when a process starts (XLA reads ``XLA_FLAGS``,
glibc ``GLIBC_TUNABLES``), so the suite starts ``python -m benchmarks`` again
with them and keeps the child's rows.
"""

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FLAG_OPTION = "xla_cpu_use_multi_output_fusion"
FLAG = f"--xla_backend_extra_options={FLAG_OPTION}"
"""XLA:CPU's multi-output fusion, off by default."""
# glibc's malloc gives large freed buffers back to the kernel (4 MB ones
# already, measured here), so a step that allocates one (outputs without
# donation, a temporary) faults its pages in again on every call. These
# tunables keep freed memory in the process.
GLIBC_TUNABLES = (
    "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
    f"glibc.malloc.trim_threshold={2**40}"
)
ALLOCATOR_MIN_SIZE = 10**6
"""The allocator run times the sizes from this one up."""


def _run(options: list[str], sections: Sequence[str], env: dict[str, str]) -> Any:
    """Runs ``sections`` in a child process with ``env`` added; returns its rows."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "child.json"
        command = [sys.executable, "-m", "benchmarks", *options]
        command += ["--sections", ",".join(sections), "--child-json", str(out)]
        subprocess.run(command, env={**os.environ, **env}, check=True)
        child: dict[str, Any] = json.loads(out.read_text())
    return {
        "uses_single_sweep": child["environment"]["uses_single_sweep"],
        **{key: child[key] for key in sections},
    }


def _flagged_env() -> dict[str, str]:
    """``XLA_FLAGS`` as it is, with the fusion flag added."""
    return {"XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FLAG}".strip()}


def flag_run(options: list[str], sections: Sequence[str]) -> dict[str, Any]:
    """``sections`` again with the fusion flag on.

    Args:
        options: The command-line options the child gets (sizes, repeats).
        sections: The step sections to run.
    """
    env = _flagged_env()
    return {"xla_flags": env["XLA_FLAGS"], **_run(options, sections, env)}


def allocator_run(
    options: list[str], sizes: Sequence[int], with_flag: bool
) -> dict[str, Any]:
    """The sizes from 1e6 up again, glibc keeping freed memory: plain and flagged.

    At least the largest size runs, when all are smaller.
    """
    smallest = min([s for s in sizes if s >= ALLOCATOR_MIN_SIZE] or [max(sizes)])
    options = [*options, "--min-size", str(smallest)]
    given = os.environ.get("GLIBC_TUNABLES")
    env = {"GLIBC_TUNABLES": f"{given}:{GLIBC_TUNABLES}" if given else GLIBC_TUNABLES}
    run: dict[str, Any] = {
        "glibc_tunables": env["GLIBC_TUNABLES"],
        "sizes": _run(options, ["sizes"], env)["sizes"],
    }
    if with_flag:
        flagged = {**env, **_flagged_env()}
        run["with_flag"] = {
            "xla_flags": flagged["XLA_FLAGS"],
            **_run(options, ["sizes"], flagged),
        }
    return run

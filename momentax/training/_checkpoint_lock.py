"""One writer per checkpoint directory, claimed with a lock file.

Orbax writes step ``k`` into ``<directory>/k.orbax-checkpoint-tmp`` and then
renames it; two jobs saving the same step at once would write into the same
folder. So a :class:`~momentax.training.CheckpointManager` claims
``<directory>/momentax.lock`` (created with ``O_CREAT | O_EXCL``: exactly one
can) on its first save, on process 0 for all processes, and releases it when
closed. A lock whose process has ended on this machine is removed with a
warning; one of another machine is reported for you to delete.
"""

import contextlib
import json
import os
import socket
import warnings
from typing import Any

import jax
import numpy as np

LOCK = "momentax.lock"


def _holder(lock: str) -> dict[str, Any]:
    try:
        with open(lock) as f:
            holder = json.load(f)
    except (OSError, ValueError):
        return {}  # Being written by the manager that just claimed it.
    return holder if isinstance(holder, dict) else {}


def _is_dead(holder: dict[str, Any]) -> bool:
    """Whether the process that claimed a lock is known to have ended."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False  # Another machine's process, or unknown: assume it runs.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _claim(directory: str) -> str:
    lock = os.path.join(directory, LOCK)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if not _is_dead(holder):
                who = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}"
                raise FileExistsError(
                    f"another CheckpointManager saves to {directory!r} ({who} holds "
                    f"{lock!r}); one job writes a directory at a time: close that "
                    "manager or use another directory. If none runs, delete the file."
                ) from None
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock)
            warnings.warn(
                f"removed {lock!r}, the lock of a CheckpointManager whose process "
                f"({holder['pid']}) has ended.",
                stacklevel=4,  # the caller of CheckpointManager.save
            )
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
        return lock
    raise FileExistsError(f"another CheckpointManager claimed {lock!r} first.")


def claim_everywhere(directory: str) -> str | None:
    """Claims ``directory`` on process 0 and tells every process whether it could.

    Returns:
        The lock to :func:`release` on process 0, None on the others.

    Raises:
        FileExistsError: If another live manager holds the directory.
    """
    lock, refusal = None, None
    if jax.process_index() == 0:
        try:
            lock = _claim(directory)
        except OSError as error:  # Told to every process, then raised.
            refusal = error
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        claimed = multihost_utils.broadcast_one_to_all(np.int32(refusal is None))
        if refusal is None and not int(claimed):
            refusal = FileExistsError(
                f"process 0 could not claim {directory!r} for saving (see its error)."
            )
    if refusal is not None:
        raise refusal
    return lock


def release(lock: str) -> None:
    """Ends the claim of :func:`claim_everywhere`."""
    with contextlib.suppress(FileNotFoundError):  # Deleted by hand meanwhile.
        os.remove(lock)

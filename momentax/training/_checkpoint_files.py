"""A checkpoint's files: the claim of a save on its path, leftovers, the record.

A save claims ``<path>.momentax-lock`` (created with ``O_CREAT | O_EXCL``, so
exactly one save can hold it), has Orbax write into ``<path>.momentax-tmp``,
adds ``momentax.json`` (the record) there and renames the folder to
``<path>``: a checkpoint at ``<path>`` is always complete.
"""

import contextlib
import glob
import json
import os
import shutil
import socket
import warnings
from typing import Any

import jax
import numpy as np

RECORD = "momentax.json"
FORMAT = "momentax checkpoint"
VERSION = 1
_LOCK, _STAGING, _ORBAX_TMP = ".momentax-lock", ".momentax-tmp", ".orbax-checkpoint-tmp"


def staging(path: str) -> str:
    """Where a save to ``path`` writes before it renames the folder to ``path``."""
    return path + _STAGING


def is_temporary(path: str) -> bool:
    """Whether ``path`` is a save's temporary folder, never a checkpoint."""
    return path.endswith(_STAGING) or _ORBAX_TMP in os.path.basename(path)


def leftovers(path: str) -> list[str]:
    """The temporary folders that interrupted saves to ``path`` left behind."""
    found = glob.glob(glob.escape(staging(path)) + "*")
    found += glob.glob(glob.escape(path) + _ORBAX_TMP + "*")
    return sorted(set(found))


def _holder(lock: str) -> dict[str, Any]:
    try:
        with open(lock) as f:
            holder = json.load(f)
    except (OSError, ValueError):
        return {}  # Being written by the save that just claimed it.
    return holder if isinstance(holder, dict) else {}


def _is_dead(holder: dict[str, Any]) -> bool:
    """Whether the process that claimed a lock is known to have ended."""
    if holder.get("host") != socket.gethostname() or not isinstance(
        holder.get("pid"), int
    ):
        return False  # Another machine's process, or unknown: assume it runs.
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim(path: str) -> str:
    """Claims ``path`` for one save and returns the lock to :func:`release`.

    Raises:
        FileExistsError: If another live save holds ``path``.
    """
    lock = path + _LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if not _is_dead(holder):
                who = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}"
                raise FileExistsError(
                    f"another save to {path!r} is in progress ({who} holds {lock!r}); "
                    "wait for it to finish, or save under another name. If no save "
                    "is running, delete that file."
                ) from None
            # Its save was killed: no one writes to the path now. (Two saves
            # that find the same dead lock at once both get here; the second
            # one's O_EXCL below then fails and it reports the first.)
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock)
            warnings.warn(
                f"removed {lock!r}, the lock of an interrupted save to {path!r} "
                f"(process {holder['pid']} has ended).",
                stacklevel=4,  # the caller of save_checkpoint
            )
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
        return lock
    raise FileExistsError(f"another save to {path!r} claimed it first ({lock!r}).")


def release(lock: str) -> None:
    """Ends the claim of :func:`claim`."""
    with contextlib.suppress(FileNotFoundError):  # Deleted by hand meanwhile.
        os.remove(lock)


def clean(path: str) -> None:
    """Deletes what interrupted saves to ``path`` left, saying what and why."""
    for leftover in leftovers(path):
        shutil.rmtree(leftover, ignore_errors=True)
        warnings.warn(
            f"removed {leftover!r}: an interrupted save to {path!r} left it "
            "(it is never a complete checkpoint).",
            stacklevel=4,  # the caller of save_checkpoint
        )


def sync(name: str) -> None:
    """Waits for every process of a multi-process run to get here."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"momentax.save_checkpoint: {name}")


def _refuse_existing(path: str) -> None:
    if os.path.exists(path):
        raise FileExistsError(
            f"path {path!r} exists; save_checkpoint never replaces a checkpoint: "
            "choose a new directory."
        )


def claim_everywhere(path: str) -> str | None:
    """Claims ``path`` on process 0 and tells every process whether it could.

    Returns:
        The lock to :func:`release` on process 0, ``None`` on the others.

    Raises:
        FileExistsError: If ``path`` exists or another save holds it.
        OSError: If the lock or a leftover folder cannot be handled.
    """
    lock, refusal = None, None
    if jax.process_index() == 0:
        try:
            _refuse_existing(path)
            lock = claim(path)
            _refuse_existing(path)  # A save may have finished in between.
            clean(path)
        except OSError as error:  # Told to every process, then raised.
            if lock is not None:
                release(lock)
            refusal = error
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        claimed = multihost_utils.broadcast_one_to_all(np.int32(refusal is None))
        if refusal is None and not int(claimed):
            refusal = FileExistsError(
                f"process 0 refused the save to {path!r} (the path exists or "
                "another save holds it: see its error)."
            )
    if refusal is not None:
        raise refusal
    return lock


def inventory(directory: str) -> dict[str, int]:
    """Every file under ``directory`` (but the record) and its size in bytes."""
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            full = os.path.join(root, name)
            relative = os.path.relpath(full, directory)
            if relative != RECORD:
                files[relative] = os.path.getsize(full)
    return files


def write_record(directory: str, record: dict[str, Any]) -> None:
    """Writes ``record`` as the record of the checkpoint in ``directory``."""
    target = os.path.join(directory, RECORD)
    with open(target + ".tmp", "w") as f:
        json.dump({"format": FORMAT, "version": VERSION, **record}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(target + ".tmp", target)


def damaged(path: str, problem: str) -> ValueError:
    """The error for a checkpoint that is damaged or was never completed."""
    return ValueError(
        f"the checkpoint at {path!r} is damaged or incomplete: {problem}. Nothing "
        "was restored; restore an earlier checkpoint."
    )


def _is_dtype(name: Any) -> bool:
    try:
        np.dtype(name)
    except TypeError:
        return False
    return isinstance(name, str)


def _well_formed(record: dict[str, Any]) -> bool:
    fields = ("nodes", "leaves", "packed", "files")
    if not all(isinstance(record.get(field), dict) for field in fields):
        return False
    return all(
        isinstance(leaf, dict)
        and isinstance(leaf.get("shape"), list)
        and _is_dtype(leaf.get("dtype"))
        and isinstance(leaf.get("sha256"), str)
        for leaf in record["leaves"].values()
    )


def read_record(path: str) -> dict[str, Any]:
    """Reads and checks the record of the checkpoint at ``path``.

    Raises:
        FileNotFoundError: If ``path`` is empty.
        ValueError: If the record, or a file it lists, is missing or damaged.
    """
    if not os.listdir(path):
        raise FileNotFoundError(f"path {path!r} is an empty folder, no checkpoint.")
    try:
        with open(os.path.join(path, RECORD)) as f:
            record = json.load(f)
    except FileNotFoundError:
        raise damaged(
            path,
            f"{RECORD} is missing (not written by save_checkpoint, or its save "
            "was interrupted)",
        ) from None
    except (OSError, ValueError) as error:
        raise damaged(path, f"{RECORD} cannot be read ({error})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise damaged(path, f"{RECORD} is not a momentax checkpoint record")
    if record.get("version") != VERSION:
        # A record of another version may use other fields: say so, read nothing.
        raise ValueError(
            f"the checkpoint at {path!r} has record version {record.get('version')}; "
            f"this momentax reads version {VERSION}."
        )
    if not _well_formed(record):
        raise damaged(path, f"{RECORD} has missing or malformed fields")
    have = inventory(path)
    for name, size in sorted(record["files"].items()):
        if name not in have:
            raise damaged(path, f"its file {name} is missing")
        if have[name] != size:
            raise damaged(
                path, f"its file {name} has {have[name]} bytes, {size} at save"
            )
    return record

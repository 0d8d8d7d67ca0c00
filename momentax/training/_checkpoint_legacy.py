"""Reading checkpoints of the earlier ``save_checkpoint`` (record version 1).

Such a checkpoint is one folder: Orbax's ``StandardCheckpointer`` files and
the record ``momentax.json`` (container types, each leaf's shape, dtype and
SHA-256 of its whole bytes, every file's size). :func:`convert_checkpoint`
reads one with those checks and saves it as a step of a
:class:`~momentax.training.CheckpointManager`.
"""

import hashlib
import os
from typing import Any

import jax
import numpy as np

from momentax import hyperparams as hp
from momentax.training import _checkpoint as checkpoint
from momentax.training import _checkpoint_files as files
from momentax.training import _checkpoint_tree as tree_record

PyTree = Any


def _sha256(value: Any) -> str:
    data = np.ascontiguousarray(np.asarray(value)).reshape(-1)
    return hashlib.sha256(data.view(np.uint8).data).hexdigest()


def _files(folder: str) -> dict[str, int]:
    sizes = {}
    for root, _, names in os.walk(folder):
        for name in names:
            relative = os.path.relpath(os.path.join(root, name), folder)
            if relative != files.RECORD_FILE:
                sizes[relative] = os.path.getsize(os.path.join(root, name))
    return sizes


def _read_record(path: str, where: str) -> dict[str, Any]:
    record = files.read_json(os.path.join(path, files.RECORD_FILE), where)
    if not isinstance(record, dict) or record.get("version") != 1:
        raise ValueError(
            f"{where} is not a checkpoint of save_checkpoint (record version 1)."
        )
    have = _files(path)
    for name, size in sorted(record["files"].items()):
        if have.get(name) != size:
            raise files.damaged(where, f"its file {name} is missing or resized")
    return record


def convert_checkpoint(
    path: str | os.PathLike[str],
    target: PyTree,
    manager: "checkpoint.CheckpointManager",
    step: int,
) -> PyTree:
    """Converts a checkpoint of the earlier ``save_checkpoint`` into a manager's step.

    Reads the folder ``path`` written by ``momentax.training.save_checkpoint``
    (the format before :class:`~momentax.training.CheckpointManager`, record
    version 1) into ``target`` with the checks it was written for (the target
    must fit; every file at its size; every leaf's SHA-256), then saves it as
    ``step`` of ``manager`` and waits until that is on disk.
    Each leaf is hashed whole, as that format requires: run the conversion in
    one process.

    Args:
        path: The folder of the earlier checkpoint.
        target: What to restore into, as for
            :meth:`momentax.training.CheckpointManager.restore`.
        manager: The manager to save the converted checkpoint in.
        step: The step number to save it as.

    Returns:
        The restored pytree, with the treedef of ``target``.

    Raises:
        ValueError: If ``path`` is not such a checkpoint, does not fit
            ``target``, or is damaged.
        FileExistsError: If ``manager`` already has ``step``.

    Examples:
        >>> import tempfile
        >>> import jax.numpy as jnp
        >>> import optax
        >>> import momentax
        >>> params = {"b": jnp.zeros(3), "w": jnp.zeros((2, 3))}
        >>> target = {
        ...     "params": params,
        ...     "opt_state": optax.sgd(0.1, 0.9).init(params),
        ...     "step": 0,
        ... }
        >>> manager = momentax.training.CheckpointManager(tempfile.mkdtemp())
        >>> old = "tests/data/checkpoint-v1"  # written by save_checkpoint
        >>> state = momentax.training.convert_checkpoint(old, target, manager, 7)
        >>> state["params"]["b"], manager.all_steps()
        (Array([ 0.45, -0.9 ,  1.8 ], dtype=float32), [7])
    """
    path = os.path.abspath(os.fspath(path))
    step = hp.check_integer("step", step, low=0)
    where = f"the checkpoint at {path!r}"
    record = _read_record(path, where)
    treedef, names, targets, saved = tree_record.fitted_leaves(record, target, where)
    values: list[Any] = []
    if targets:
        abstract = [
            tree_record.abstract_leaf(leaf, target)
            for leaf, target in zip(saved, targets, strict=True)
        ]
        ocp = checkpoint.orbax()
        with ocp.StandardCheckpointer() as reader:
            values = jax.tree.leaves(
                reader.restore(path, jax.tree.unflatten(treedef, abstract))
            )
    changed = [
        name
        for name, value, leaf in zip(names, values, saved, strict=True)
        if _sha256(value) != leaf["sha256"]
    ]
    if changed:
        raise files.damaged(where, f"the values of {', '.join(changed)} changed")
    restored = jax.tree.unflatten(
        treedef,
        [tree_record.as_target(v, t) for v, t in zip(values, targets, strict=True)],
    )
    manager.save(step, restored)
    manager.wait()
    return restored

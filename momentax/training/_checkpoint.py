"""Checkpoints of params and optimizer state, through Orbax.

A layer over ``orbax.checkpoint.StandardCheckpointer`` that adds what a
resumable training run needs from it. What it checks and promises:

* **Never lost, never half-written.** A save never replaces an existing
  checkpoint. It writes into ``<path>.momentax-tmp`` and renames that folder
  to ``<path>`` only when everything is on disk, so a killed save never leaves
  a checkpoint at ``<path>``. A save that fails with an exception removes its
  temporary folders; those of killed saves are removed, with a warning naming
  them, by the next save to the same path, and a restore from such a folder,
  or from a path that only has one, says so.
* **One save at a time.** A save claims ``<path>.momentax-lock`` atomically;
  a second save to the same path while the first runs is refused at once with
  a ``FileExistsError`` naming the process that holds it (the first one
  completes). A lock left by a killed save on this machine is removed (with a
  warning); one of another machine is reported by name, for you to delete.
* **The target must fit.** Before anything is read, the target is compared
  with the record (``momentax.json``) written at save: every leaf's path, its
  shape and its dtype *kind* (bool, signed or unsigned integer, floating,
  complex: a Python int step restores into an int32 array, float32 into
  bfloat16 when the target asks for it), the type name of every container on
  the way (so another optimizer or the other ``convention``, whose state is a
  chain ordered differently, is refused with both names), and the layout of
  every :class:`~momentax.training.Packed` (leaf names, shapes, dtypes,
  offsets). The error lists every difference.
* **Damage is detected.** The record holds every file's size and each leaf's
  SHA-256 (of its bytes in C order, with its shape and dtype). A restore
  checks that every file is there at its size, and each restored leaf's hash
  before it converts it to the target's dtype; a damaged, truncated or
  incomplete checkpoint is a ``ValueError`` that names the file or leaf.

Deliberately not checked: the values of static (non-pytree) fields, such as a
Flax ``TrainState``'s ``apply_fn`` and ``tx``; hyperparameters that are not in
the optimizer state (a checkpoint restores into an optimizer with another
learning rate or momentum of the same state type); Orbax's own metadata files
beyond their sizes and Orbax reading them (the values are what is verified).
The hashes detect accidental damage, not tampering: whoever can rewrite the
data can rewrite the record. Container types are compared by name, so a
``dict`` checkpoint does not restore into a Flax ``FrozenDict``. Hashing reads
every leaf once more at save and at restore; a leaf no one process can
address is gathered to every process for it.
"""

import os
import shutil
from typing import Any

import jax
import numpy as np

from momentax.training import _checkpoint_files as files
from momentax.training._checkpoint_tree import (
    describe,
    differences,
    path_name,
    sha256,
    shown,
)

PyTree = Any
PathLike = str | os.PathLike[str]


def _orbax() -> Any:
    try:
        import orbax.checkpoint as ocp
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "momentax checkpoints need orbax-checkpoint: "
            "pip install 'momentax[checkpoint]'."
        ) from error
    return ocp


def _as_array(key: tuple[Any, ...], leaf: Any) -> Any:
    """What is saved for a leaf: a NumPy array for a number, of JAX's dtype for it.

    A Python number becomes what it is under ``jax.jit`` (an int becomes
    int32), as NumPy: Orbax refuses host-local JAX arrays in multi-process runs.
    """
    if isinstance(leaf, bool | int | float | complex):
        try:
            return np.asarray(jax.numpy.asarray(leaf))
        except OverflowError:
            raise ValueError(
                f"{shown(path_name(key))} is {leaf}, out of range for JAX's "
                f"{type(leaf).__name__} type; save it as a NumPy array."
            ) from None
    if isinstance(leaf, np.generic):
        return np.asarray(leaf)
    if isinstance(leaf, jax.Array) and leaf.is_deleted():
        raise ValueError(
            f"{shown(path_name(key))} is a deleted (donated) array; save the arrays "
            "a train step returned, not the ones it was given."
        )
    return leaf


def save_checkpoint(path: PathLike, tree: PyTree) -> None:
    """Saves a pytree of arrays (params, optimizer state, step) to a new directory.

    Every leaf is written with its values from all devices and processes, so a
    sharded state is saved whole; in a multi-process run every process must
    call this with the same ``path``. The call returns once the checkpoint is
    complete on disk, with its record (``momentax.json``: container types,
    shapes, dtypes, SHA-256 hashes, file sizes) beside Orbax's files. Python
    numbers are saved as 0-d arrays of the dtype JAX gives them (a Python int
    as int32, as under ``jax.jit``), NumPy scalars as 0-d arrays of theirs. See
    the module docstring for everything that is checked.

    Args:
        path: A directory that must not exist yet (its parent must). Existing
            checkpoints are never replaced: write each one under a new name,
            for example with the step number.
        tree: The pytree to save, such as
            ``{"params": params, "opt_state": opt_state, "step": step}`` or a
            Flax ``TrainState``; an empty tree is saved too.

    Raises:
        FileExistsError: If ``path`` exists, or another save to it is running.
        FileNotFoundError: If the parent directory of ``path`` does not exist.
        TypeError: If a leaf is not an array or a number.
        ValueError: If a leaf is a deleted (donated) array.

    Examples:
        See :func:`restore_checkpoint`.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(os.path.dirname(path)):
        raise FileNotFoundError(
            f"the parent directory of path {path!r} does not exist; create it first."
        )
    if files.is_temporary(path):
        raise ValueError(f"path {path!r} has the name of a save's temporary folder.")
    tree = jax.tree_util.tree_map_with_path(_as_array, tree)
    record = describe(tree)  # Refuses leaves that are not arrays, naming them.
    for key, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        record["leaves"][path_name(key)]["sha256"] = sha256(leaf)
    lock = files.claim_everywhere(path)
    staging = files.staging(path)
    try:
        if record["leaves"]:
            checkpointer = _orbax().StandardCheckpointer()
            try:
                checkpointer.save(staging, tree)
                checkpointer.wait_until_finished()
            finally:
                checkpointer.close()
        elif lock is not None:
            os.mkdir(staging)  # Orbax refuses an empty tree; the record suffices.
        files.sync("written")
        if lock is not None:
            files.write_record(staging, {**record, "files": files.inventory(staging)})
            os.rename(staging, path)
        files.sync("renamed")
    except BaseException:
        if lock is not None:  # Ours alone: the lock is still held.
            for leftover in files.leftovers(path):
                shutil.rmtree(leftover, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            files.release(lock)


def _restore_as(saved: dict[str, Any], target: Any) -> Any:
    """The abstract leaf Orbax restores into: the saved dtype, the target's place."""
    dtype = np.dtype(saved["dtype"])
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        return np.empty(saved["shape"], dtype)  # float64 without jax_enable_x64
    if isinstance(target, jax.Array | jax.ShapeDtypeStruct) and target.sharding:
        sharding = target.sharding
    else:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(tuple(saved["shape"]), dtype, sharding=sharding)


def _as_target(value: Any, target: Any, place: Any) -> Any:
    """Converts a verified restored leaf to the target leaf's dtype and type."""
    if isinstance(target, jax.Array | jax.ShapeDtypeStruct):
        if not isinstance(value, jax.Array) or value.dtype != target.dtype:
            value = jax.device_put(np.asarray(value).astype(target.dtype), place)
        return value
    if isinstance(target, np.ndarray | np.generic):
        value = np.asarray(value).astype(target.dtype)
        return value[()] if isinstance(target, np.generic) else value
    return value  # A Python number's leaf comes back as the array saved.


def restore_checkpoint(path: PathLike, target: PyTree) -> PyTree:
    """Restores a checkpoint into the structure, dtypes and shardings of ``target``.

    ``target`` says what to restore and where to put it: a pytree of the
    structure that was saved, whose leaves are arrays or ``jax.ShapeDtypeStruct``
    (with a ``sharding``, or on the default device without one), NumPy arrays
    or scalars (restored as NumPy values of their dtype), or Python numbers
    (restored as the JAX array that was saved, so a fresh Flax
    ``TrainState.create(...)``, whose ``step`` is the Python int 0, is a
    target). Each array is read straight into its target sharding, which need
    not be the sharding it was saved from: a checkpoint of a fully sharded run
    restores into a data-parallel one, or onto one device. Nothing in
    ``target`` is modified; the restored arrays are new.

    Args:
        path: A directory written by :func:`save_checkpoint`.
        target: The pytree to restore into, for example the state of a fresh
            run, or abstract leaves from ``jax.eval_shape`` with shardings from
            :meth:`momentax.training.Placement.param_sharding` and
            :func:`momentax.training.opt_state_sharding`.

    Returns:
        The restored pytree, with the treedef of ``target``.

    Raises:
        FileNotFoundError: If there is no checkpoint at ``path`` (also when
            only the temporary folder of an interrupted save is there; the
            message names it), or ``path`` is an empty folder.
        ValueError: If the checkpoint does not fit ``target`` (a leaf missing
            on either side, another shape or dtype kind, another container
            type, another packed layout: every difference is listed and
            nothing is read), or is damaged or incomplete (the message names
            the file or leaf).
        TypeError: If a leaf of ``target`` is not an array or a number.

    Examples:
        >>> import tempfile, os
        >>> import jax.numpy as jnp
        >>> import optax
        >>> import momentax
        >>> opt = momentax.momentum(0.1, 0.9)
        >>> params = {"w": jnp.arange(3.0)}
        >>> state = {"params": params, "opt_state": opt.init(params), "step": 100}
        >>> path = os.path.join(tempfile.mkdtemp(), "step_100")
        >>> momentax.training.save_checkpoint(path, state)
        >>> fresh = {"params": params, "opt_state": opt.init(params), "step": 0}
        >>> restored = momentax.training.restore_checkpoint(path, fresh)
        >>> restored["params"]["w"], restored["step"]
        (Array([0., 1., 2.], dtype=float32), Array(100, dtype=int32))
        >>> optax.tree.get(restored["opt_state"], "velocity")
        {'w': Array([0., 0., 0.], dtype=float32)}
        >>> wide = {**fresh, "params": {"w": jnp.zeros(4)}}
        >>> momentax.training.restore_checkpoint(path, wide)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: the checkpoint at '...' does not fit the target (nothing was ...
          params/w: checkpoint has float32[3], target has float32[4]
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        left = files.leftovers(path)
        found = f"; only {left} is there, left by an interrupted save" if left else ""
        raise FileNotFoundError(f"path {path!r} holds no checkpoint{found}.")
    if files.is_temporary(path):
        raise ValueError(
            f"{path!r} is the temporary folder of a save that was interrupted, never "
            "a checkpoint; the next save to its path deletes it."
        )
    record = files.read_record(path)
    mismatches = differences(record, describe(target))
    if mismatches:
        raise ValueError(
            f"the checkpoint at {path!r} does not fit the target (nothing was "
            "restored):\n" + "\n".join(mismatches)
        )
    keyed, treedef = jax.tree_util.tree_flatten_with_path(target)
    names = [path_name(key) for key, _ in keyed]
    targets = [leaf for _, leaf in keyed]
    if not targets:
        return jax.tree.unflatten(treedef, [])
    saved = [record["leaves"][name] for name in names]
    abstract = [_restore_as(s, t) for s, t in zip(saved, targets, strict=True)]
    checkpointer = _orbax().StandardCheckpointer()
    try:
        restored = jax.tree.leaves(
            checkpointer.restore(path, jax.tree.unflatten(treedef, abstract))
        )
    except Exception as error:  # Orbax and TensorStore raise many types.
        problem = str(error).strip().splitlines()[0][:300] if str(error) else ""
        raise files.damaged(
            path, f"Orbax cannot read it ({type(error).__name__}: {problem})"
        ) from error
    finally:
        checkpointer.close()
    changed = [
        name
        for name, value, s in zip(names, restored, saved, strict=True)
        if sha256(value) != s["sha256"]
    ]
    if changed:
        raise files.damaged(
            path,
            f"the values of {', '.join(changed)} differ from the ones saved (their "
            "SHA-256 does not match the record)",
        )
    return jax.tree.unflatten(
        treedef,
        [
            _as_target(value, t, getattr(a, "sharding", None))
            for value, t, a in zip(restored, targets, abstract, strict=True)
        ],
    )

"""Checkpoints of params and optimizer state, through Orbax.

A thin layer over ``orbax.checkpoint.StandardCheckpointer`` that adds what a
resumable training run needs from it: a save never replaces an existing
checkpoint, and a restore first compares the checkpoint's tree (every leaf's
path, shape and dtype) with the target's and refuses, naming each difference,
before it reads anything.
"""

import os
from typing import Any

import jax
import numpy as np

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


def _key(entry: Any) -> str:
    for field in ("key", "name", "idx"):
        if hasattr(entry, field):
            return str(getattr(entry, field))
    return str(entry)


def _describe(tree: PyTree) -> dict[str, tuple[tuple[int, ...], str]]:
    """Maps each leaf's path (``a/b/0``) to its shape and dtype name."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    out = {}
    for path, leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None:
            dtype = np.asarray(leaf).dtype
        shape = tuple(getattr(leaf, "shape", np.shape(leaf)))
        out["/".join(_key(entry) for entry in path)] = (shape, np.dtype(dtype).name)
    return out


def _differences(saved: PyTree, target: PyTree) -> list[str]:
    have, want = _describe(saved), _describe(target)
    lines = [
        f"  {path}: in the target, not in the checkpoint"
        for path in want.keys() - have.keys()
    ]
    lines += [
        f"  {path}: in the checkpoint, not in the target"
        for path in have.keys() - want.keys()
    ]
    for path in sorted(have.keys() & want.keys()):
        (shape, dtype), (want_shape, want_dtype) = have[path], want[path]
        if (shape, dtype) != (want_shape, want_dtype):
            lines.append(
                f"  {path}: checkpoint has {dtype}{list(shape)}, "
                f"target has {want_dtype}{list(want_shape)}"
            )
    return sorted(lines)


def save_checkpoint(path: PathLike, tree: PyTree) -> None:
    """Saves a pytree of arrays (params, optimizer state, step) to a new directory.

    Every leaf is written with its values from all devices and processes, so a
    sharded state is saved whole; in a multi-process run every process must
    call this with the same ``path``. The call returns once the checkpoint is
    complete on disk.

    Args:
        path: A directory that must not exist yet (its parent must). Existing
            checkpoints are never replaced: write each one under a new name,
            for example with the step number.
        tree: The pytree to save, such as
            ``{"params": params, "opt_state": opt_state, "step": step}``.

    Raises:
        FileExistsError: If ``path`` exists.

    Examples:
        See :func:`restore_checkpoint`.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path):
        raise FileExistsError(
            f"path {path!r} exists; save_checkpoint never replaces a checkpoint: "
            "choose a new directory."
        )
    checkpointer = _orbax().StandardCheckpointer()
    checkpointer.save(path, tree)
    checkpointer.wait_until_finished()
    checkpointer.close()


def _as_target(leaf: Any) -> Any:
    if isinstance(leaf, jax.ShapeDtypeStruct):
        if leaf.sharding is not None:
            return leaf
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device)
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    return leaf  # A Python or NumPy scalar comes back as one.


def restore_checkpoint(path: PathLike, target: PyTree) -> PyTree:
    """Restores a checkpoint into the structure, dtypes and shardings of ``target``.

    ``target`` says what to restore and where to put it: a pytree of the
    structure that was saved, whose leaves are arrays or ``jax.ShapeDtypeStruct``
    (with a ``sharding``, or on the default device without one). Each array is
    read straight into its target sharding, which need not be the sharding it
    was saved from: a checkpoint of a fully sharded run restores into a
    data-parallel one, or onto one device. Nothing in ``target`` is modified;
    the restored arrays are new.

    Args:
        path: A directory written by :func:`save_checkpoint`.
        target: The pytree to restore into, for example the state of a fresh
            run, or abstract leaves from ``jax.eval_shape`` with shardings from
            :meth:`momentax.training.Placement.param_sharding` and
            :func:`momentax.training.opt_state_sharding`.

    Returns:
        The restored pytree, with the treedef of ``target``.

    Raises:
        FileNotFoundError: If there is no checkpoint at ``path``.
        ValueError: If the checkpoint's tree differs from ``target``'s (a leaf
            missing on either side, or another shape or dtype); the message
            lists every difference, and nothing is read.

    Examples:
        >>> import tempfile, os
        >>> import jax.numpy as jnp
        >>> import momentax
        >>> opt = momentax.momentum(0.1, 0.9)
        >>> params = {"w": jnp.arange(3.0)}
        >>> state = {"params": params, "opt_state": opt.init(params)}
        >>> path = os.path.join(tempfile.mkdtemp(), "step_100")
        >>> momentax.training.save_checkpoint(path, state)
        >>> restored = momentax.training.restore_checkpoint(path, state)
        >>> restored["params"]["w"], type(restored["opt_state"]).__name__
        (Array([0., 1., 2.], dtype=float32), 'MomentumState')
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"path {path!r} holds no checkpoint.")
    checkpointer = _orbax().StandardCheckpointer()
    try:
        saved = checkpointer.metadata(path).item_metadata.tree
        differences = _differences(saved, target)
        if differences:
            raise ValueError(
                f"the checkpoint at {path!r} does not fit the target (nothing was "
                "restored):\n" + "\n".join(differences)
            )
        return checkpointer.restore(path, jax.tree.map(_as_target, target))
    finally:
        checkpointer.close()

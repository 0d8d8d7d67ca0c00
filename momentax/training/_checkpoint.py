"""Numbered checkpoints of a training run, on Orbax's ``CheckpointManager``.

Orbax gives the folders and their life: one folder per step, written under a
temporary name and renamed when complete, older ones deleted past
``max_to_keep``, saves that finish in the background, restores into any
sharding. This module adds what a resumable run needs beyond that:

* **The target must fit.** Before anything is read, the target is compared
  with the record written at save (``<step>/record/momentax.json``): every
  leaf's path, shape and dtype *kind* (bool, signed or unsigned integer,
  floating, complex), the type name of every container on the way (so another
  optimizer, or the other ``convention``, is refused with both names) and the
  layout of every :class:`~momentax.training.Packed`. The error lists every
  difference.
* **Damage is detected.** Each process writes the checksums of the shards it
  holds (``<step>/checksums/process_<i>.json``, see below); a restore checks
  the values it read the same way, before any dtype conversion. A damaged,
  truncated or incomplete checkpoint is a ``ValueError`` naming the leaf or
  what Orbax could not read.
* **No process needs the whole model.** A checksum is a sum over elements
  (:mod:`momentax.training._checksum`): each process adds up its own shards
  and only these per-leaf numbers cross processes, never arrays.
* **One writer at a time.** Orbax writes step ``k`` into one temporary
  folder, ``k.orbax-checkpoint-tmp``, so two jobs saving to a directory would
  mix their files. A manager claims the directory (``momentax.lock``) on its
  first save and releases it on :meth:`CheckpointManager.close`; another
  manager's save is refused at once, naming the process. A save killed
  midway leaves only the temporary folder, which no restore reads.
* **Leaves Orbax refuses**: Python numbers are saved as the 0-d arrays JAX
  makes of them (a Python int as int32); leaves with no elements are recorded
  by shape and dtype alone (Orbax cannot write them) and restore as empty
  arrays; a tree with no leaves at all saves and restores.

Deliberately not checked: the values of static (non-pytree) fields, such as a
Flax ``TrainState``'s ``apply_fn`` and ``tx``; hyperparameters outside the
optimizer state; tampering (whoever can rewrite the data can rewrite the
checksums). Container types are compared by name, so a ``dict`` checkpoint
does not restore into a Flax ``FrozenDict``.
"""

import os
from typing import Any

import jax
import numpy as np

from momentax import hyperparams as hp
from momentax.training import _checkpoint_files as files
from momentax.training import _checkpoint_lock as lock
from momentax.training import _checkpoint_tree as tree_record
from momentax.training import _checksum as checksum

PyTree = Any
PathLike = str | os.PathLike[str]

_STATE = "state"  # The Orbax item of the arrays.


def orbax() -> Any:
    """``orbax.checkpoint``, or an ImportError that says how to install it."""
    try:
        import orbax.checkpoint as ocp
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "momentax checkpoints need orbax-checkpoint: "
            "pip install 'momentax[checkpoint]'."
        ) from error
    return ocp


def _check_directory(directory: Any) -> str:
    if not isinstance(directory, str | os.PathLike):
        raise TypeError(f"directory must be a path; got {directory!r}.")
    name = os.fspath(directory)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            f"directory must name the folder of the checkpoints; got {name!r}. "
            "Pass a folder such as 'checkpoints' (use '.' for the working directory)."
        )
    name = os.path.abspath(name)
    if os.path.exists(name) and not os.path.isdir(name):
        raise NotADirectoryError(f"directory {name!r} is a file, not a folder.")
    return name


def _refuse_version_1(directory: str) -> None:
    """A checkpoint of ``save_checkpoint`` (version 1) here is refused, with the fix."""
    if not os.path.isdir(directory):
        return
    for folder in (directory, *(e.path for e in os.scandir(directory) if e.is_dir())):
        if os.path.isfile(os.path.join(folder, files.RECORD_FILE)):
            raise ValueError(
                f"{folder!r} is a checkpoint of momentax's earlier format (written by "
                "save_checkpoint), not a folder of numbered steps. Convert it into "
                "a new directory: momentax.training.convert_checkpoint("
                f"{folder!r}, target, momentax.training.CheckpointManager(new_dir), "
                "step)."
            )


class CheckpointManager:
    """Numbered checkpoints of params and optimizer state in one directory.

    A thin layer over ``orbax.checkpoint.CheckpointManager``: each
    :meth:`save` writes the folder ``<directory>/<step>``, in the background
    by default (:meth:`wait` waits for it), and keeps the newest
    ``max_to_keep`` steps. :meth:`restore` reads any step into a target, in
    the target's sharding. On top of Orbax it checks that the target fits the
    checkpoint before reading and that the values read are the values saved,
    shard by shard (see the module docstring of
    ``momentax/training/_checkpoint.py``). Pass a manager to
    :func:`momentax.training.fit` as ``checkpoint=`` to save periodically and
    resume after a crash. In a multi-process run every process creates its
    manager on the same directory and makes the same calls.

    Args:
        directory: The folder of the checkpoints; created if missing.
        max_to_keep: How many of the newest steps to keep (default: all).
        asynchronous: Whether :meth:`save` returns once the arrays are copied
            to host memory and writes the files in the background (True), or
            only when the step is on disk (False).

    Raises:
        TypeError: If ``directory`` is not a path.
        ValueError: If ``directory`` is empty, ``max_to_keep`` is not an
            integer >= 1, or the folder holds a checkpoint of
            ``save_checkpoint``'s earlier format (the message says how to
            convert it with :func:`convert_checkpoint`).
        NotADirectoryError: If ``directory`` is a file.

    Examples:
        >>> import tempfile
        >>> import jax.numpy as jnp
        >>> import momentax
        >>> opt = momentax.momentum(0.1, 0.9)
        >>> params = {"w": jnp.arange(3.0)}
        >>> manager = momentax.training.CheckpointManager(tempfile.mkdtemp())
        >>> manager.save(100, {"params": params, "opt_state": opt.init(params)})
        >>> manager.wait()
        >>> manager.latest_step()
        100
        >>> fresh = {"params": {"w": jnp.zeros(3)}, "opt_state": opt.init(params)}
        >>> manager.restore(fresh)["params"]
        {'w': Array([0., 1., 2.], dtype=float32)}
        >>> wide = {**fresh, "params": {"w": jnp.zeros(4)}}
        >>> manager.restore(wide)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: the checkpoint of step 100 in '...' does not fit the target ...
          params/w: checkpoint has float32[3], target has float32[4]
        >>> manager.close()
    """

    def __init__(
        self,
        directory: PathLike,
        *,
        max_to_keep: int | None = None,
        asynchronous: bool = True,
    ):
        self.directory = _check_directory(directory)
        if max_to_keep is not None:
            max_to_keep = hp.check_integer("max_to_keep", max_to_keep, low=1)
        if not isinstance(asynchronous, bool):
            raise TypeError(
                f"asynchronous must be True or False; got {asynchronous!r}."
            )
        _refuse_version_1(self.directory)
        ocp = orbax()
        checksums = ocp.JsonCheckpointHandler(
            f"process_{jax.process_index()}.json",
            # Every process writes its own file, not only the primary one.
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=None
            ),
        )
        self._lock: str | None = None
        self._claimed = False
        self._orbax = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, enable_async_checkpointing=asynchronous
            ),
            item_handlers={
                _STATE: ocp.StandardCheckpointHandler(),
                files.RECORD: ocp.JsonCheckpointHandler(files.RECORD_FILE),
                files.CHECKSUMS: checksums,
            },
        )

    def latest_step(self) -> int | None:
        """The newest saved step (a save in progress counts), or None if none."""
        step: int | None = self._orbax.latest_step()
        return step

    def all_steps(self) -> list[int]:
        """Every saved step, oldest first."""
        return sorted(self._orbax.all_steps())

    def save(self, step: int, tree: PyTree) -> None:
        """Saves ``tree`` as ``step``; returns once the arrays are copied to the host.

        Args:
            step: The step number, an integer >= 0 that has no checkpoint yet.
            tree: A pytree of arrays and numbers, such as
                ``{"params": params, "opt_state": opt_state}`` or a Flax
                ``TrainState``. The arrays may be donated to the next train
                step as soon as this returns.

        Raises:
            FileExistsError: If ``step`` is saved already (never replaced), or
                another manager, in a live process, saves to the directory.
            TypeError: If a leaf is not an array or a number.
            ValueError: If ``step`` is not an integer >= 0 or a leaf is a
                deleted (donated) array.
        """
        step = hp.check_integer("step", step, low=0)
        tree = jax.tree_util.tree_map_with_path(tree_record.as_saved, tree)
        record = tree_record.describe(tree)  # Refuses leaves that are not arrays.
        keyed, treedef = jax.tree_util.tree_flatten_with_path(tree)
        sums = {
            tree_record.path_name(key): f"{checksum.partial_checksum(leaf):016x}"
            for key, leaf in keyed
            if np.size(leaf)
        }
        ocp = orbax()
        items = {
            files.RECORD: ocp.args.JsonSave(
                {
                    "format": files.FORMAT,
                    "version": files.VERSION,
                    "process_count": jax.process_count(),
                    **record,
                }
            ),
            files.CHECKSUMS: ocp.args.JsonSave(sums),
        }
        if not self._claimed:
            self._lock = lock.claim_everywhere(self.directory, self)
            self._claimed = True
        if sums:  # Orbax refuses leaves without elements: they are None there.
            state = [leaf if np.size(leaf) else None for _, leaf in keyed]
            items[_STATE] = ocp.args.StandardSave(jax.tree.unflatten(treedef, state))
        try:
            self._orbax.save(step, args=ocp.args.Composite(**items), force=True)
        except ocp.checkpoint_manager.StepAlreadyExistsError:
            raise FileExistsError(
                f"step {step} is saved in {self.directory!r} already; a checkpoint "
                "is never replaced: save under another step."
            ) from None

    def restore(self, target: PyTree, *, step: int | None = None) -> PyTree:
        """Restores a step into the structure, dtypes and shardings of ``target``.

        ``target``'s leaves are arrays or ``jax.ShapeDtypeStruct`` (with a
        ``sharding``, or on the default device without one), NumPy arrays or
        scalars (restored as NumPy values of their dtype), or Python numbers
        (restored as the JAX array saved, so a fresh Flax
        ``TrainState.create(...)``, whose ``step`` is the int 0, is a target).
        Each array is read straight into its target sharding, which need not be
        the one it was saved from. A dtype of the same kind is converted after
        the check (float32 saved, bfloat16 target). ``target`` is not modified.

        Args:
            target: The pytree to restore into: the state of a fresh run, or
                ``jax.eval_shape`` of it with shardings (see
                :meth:`momentax.training.Placement.param_sharding` and
                :func:`momentax.training.opt_state_sharding`).
            step: The step to restore (default: the latest).

        Returns:
            The restored pytree, with the treedef of ``target``.

        Raises:
            FileNotFoundError: If the directory has no checkpoint, or none of
                ``step`` (the message lists the steps there are).
            ValueError: If the checkpoint does not fit ``target`` (every
                difference listed, nothing read), a target sharding cannot
                hold its leaf's shape (the leaf named, nothing read), or the
                checkpoint is damaged or incomplete.
            TypeError: If a leaf of ``target`` is not an array or a number.
        """
        self._orbax.wait_until_finished()
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise FileNotFoundError(f"{self.directory!r} holds no checkpoint.")
            step = steps[-1]
        step = hp.check_integer("step", step, low=0)
        if step not in steps:
            raise FileNotFoundError(
                f"{self.directory!r} holds no checkpoint of step {step}; it holds "
                f"steps {steps}."
            )
        where = f"the checkpoint of step {step} in {self.directory!r}"
        folder = os.path.join(self.directory, str(step))
        record = files.read_record(folder, where)
        expected = files.read_checksums(folder, record, where)
        treedef, names, targets, saved = tree_record.fitted_leaves(
            record, target, where
        )
        tree_record.check_shardings(names, saved, targets)
        values = self._read(step, where, treedef, saved, targets)
        checked = [(n, v) for n, v in zip(names, values, strict=True) if n in expected]
        found = checksum.across_processes(
            [checksum.partial_checksum(value) for _, value in checked]
        )
        changed = [
            name
            for (name, _), value in zip(checked, found, strict=True)
            if value != expected[name]
        ]
        if changed:
            raise files.damaged(
                where,
                f"the values of {', '.join(changed)} differ from the ones saved "
                "(their checksums do not match)",
            )
        return jax.tree.unflatten(
            treedef,
            [tree_record.as_target(v, t) for v, t in zip(values, targets, strict=True)],
        )

    def _read(
        self, step: int, where: str, treedef: Any, saved: list[Any], targets: list[Any]
    ) -> list[Any]:
        """Every leaf as saved (dtype), in its target's sharding."""
        empty = [0 in leaf["shape"] for leaf in saved]
        abstract = [
            None if no_elements else tree_record.abstract_leaf(leaf, target)
            for leaf, target, no_elements in zip(saved, targets, empty, strict=True)
        ]
        read = [None] * len(saved)
        if not all(empty):
            ocp = orbax()
            state = ocp.args.StandardRestore(jax.tree.unflatten(treedef, abstract))
            try:
                restored = self._orbax.restore(
                    step, args=ocp.args.Composite(state=state)
                )
            except Exception as error:  # Orbax and TensorStore raise many types.
                text = str(error).strip()
                problem = text.splitlines()[0][:300] if text else ""
                raise files.damaged(
                    where, f"Orbax cannot read it ({type(error).__name__}: {problem})"
                ) from error
            read = treedef.flatten_up_to(restored[_STATE])
        return [
            tree_record.zeros(leaf, target) if no_elements else value
            for leaf, target, no_elements, value in zip(
                saved, targets, empty, read, strict=True
            )
        ]

    def wait(self) -> None:
        """Waits until every save has finished writing (re-raises its error)."""
        self._orbax.wait_until_finished()

    def close(self) -> None:
        """Waits for the saves, releases Orbax's resources and the directory."""
        try:
            self._orbax.close()
        finally:
            if self._lock is not None:
                lock.release(self._lock)
            self._lock, self._claimed = None, False

    def __enter__(self) -> "CheckpointManager":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CheckpointManager({self.directory!r})"

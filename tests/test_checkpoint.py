"""Checkpoints: a resumed run is bit-for-bit the run that never stopped."""

import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType

import momentax
import momentax.training
from momentax import tasks
from tests.helpers import TOL, warmup_then_decay

CPUS = jax.devices("cpu")
TASK = tasks.wide_regression(num_examples=64, num_features=32, num_outputs=8)
# Four mini-batches of 16, so resuming must also pick up the batch order.
BATCHES = jax.tree.map(lambda a: a.reshape(4, 16, *a.shape[1:]), TASK.train)
NUM_STEPS, STOP_AT = 90, 37  # 37 is not a multiple of 4: resume mid-epoch.


def placement(layout):
    if layout == "one_device":
        return None
    if len(CPUS) < 8:
        pytest.skip("needs the 8 CPU devices of tests/conftest.py")
    mesh = jax.make_mesh(
        (2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2, devices=CPUS[:8]
    )
    if layout == "data_parallel":
        return momentax.training.Placement.data_parallel(mesh)
    return momentax.training.Placement.fully_sharded(mesh, batch_axis="data")


def optimizer(convention):
    # A schedule: resuming must restore the step count it reads.
    schedule = warmup_then_decay
    return momentax.momentum(schedule, 0.9, convention=convention, nesterov=True)


def train(opt, where, num_steps, **kwargs):
    return momentax.training.fit(
        tasks.linear_loss,
        opt,
        kwargs.pop("params", None) or tasks.linear_init(32, 8),
        BATCHES,
        stacked=True,
        num_steps=num_steps,
        placement=where,
        **kwargs,
    )


def resume(opt, where, restored):
    """Trains the rest of the run from a restored checkpoint."""
    return train(
        opt,
        where,
        NUM_STEPS - int(restored["step"]),
        params=restored["params"],
        opt_state=restored["opt_state"],
        start_step=int(restored["step"]),
    )


def fresh_target(opt, where):
    """What a new process builds before restoring: a state of the right form."""
    params = tasks.linear_init(32, 8)
    if where is None:
        return {"params": params, "opt_state": opt.init(params), "step": 0}
    params = where.put_params(params)
    return {"params": params, "opt_state": where.init(opt, params), "step": 0}


def bits(tree):
    return [
        np.atleast_1d(np.asarray(leaf)).view(np.uint8) for leaf in jax.tree.leaves(tree)
    ]


def assert_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(bits(a), bits(b), strict=True):
        np.testing.assert_array_equal(x, y)


def digest(directory):
    """A hash of every file under ``directory``: names and contents."""
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(directory)):
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, directory).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


@pytest.mark.parametrize("convention", momentax.CONVENTIONS)
@pytest.mark.parametrize("layout", ["one_device", "fully_sharded"])
def test_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path, convention, layout):
    opt, where = optimizer(convention), placement(layout)
    uninterrupted = train(opt, where, NUM_STEPS)

    first = train(opt, where, STOP_AT)
    path = tmp_path / f"step_{STOP_AT}"
    momentax.training.save_checkpoint(
        path, {"params": first.params, "opt_state": first.opt_state, "step": STOP_AT}
    )
    restored = momentax.training.restore_checkpoint(path, fresh_target(opt, where))
    assert restored["step"] == STOP_AT
    resumed = resume(opt, where, restored)
    assert_bitwise_equal(resumed.params, uninterrupted.params)
    assert_bitwise_equal(resumed.opt_state, uninterrupted.opt_state)
    if where is not None:
        velocity = optax.tree.get(resumed.opt_state, "velocity")
        assert velocity["w"].sharding.is_equivalent_to(resumed.params["w"].sharding, 2)


def test_restore_into_another_sharding(tmp_path):
    opt = optimizer("pytorch")
    sharded, replicated = placement("fully_sharded"), placement("data_parallel")
    first = train(opt, sharded, STOP_AT)
    saved = {"params": first.params, "opt_state": first.opt_state, "step": STOP_AT}
    momentax.training.save_checkpoint(tmp_path / "ckpt", saved)
    for where in (replicated, None):
        target = fresh_target(opt, where)
        restored = momentax.training.restore_checkpoint(tmp_path / "ckpt", target)
        # Restoring is exact; the Python int step comes back as an int32 array.
        assert_bitwise_equal(restored, {**saved, "step": jnp.asarray(STOP_AT)})
        for got, want in zip(
            jax.tree.leaves(restored), jax.tree.leaves(target), strict=True
        ):
            if isinstance(want, jax.Array):
                assert got.sharding.is_equivalent_to(want.sharding, got.ndim)
    # Training on under the new layout reorders sums only: float32 tolerance.
    restored = momentax.training.restore_checkpoint(
        tmp_path / "ckpt", fresh_target(opt, replicated)
    )
    resumed = resume(opt, replicated, restored)
    uninterrupted = train(opt, sharded, NUM_STEPS)
    np.testing.assert_allclose(
        resumed.params["w"], uninterrupted.params["w"], **TOL[jnp.dtype(jnp.float32)]
    )


def wrong_targets(opt):
    good = fresh_target(opt, None)
    missing = {"params": good["params"], "opt_state": good["opt_state"]}
    extra = {**good, "extra": jnp.zeros(3)}
    wide = {**good, "params": tasks.linear_init(33, 8)}
    integer = {
        **good,
        "params": jax.tree.map(lambda x: x.astype(jnp.int32), good["params"]),
    }
    adam = {**good, "opt_state": optax.adam(0.1).init(good["params"])}
    return {
        "a leaf missing from the target": (missing, r"step: in the checkpoint, not in"),
        "a leaf missing from the checkpoint": (extra, r"extra: in the target, not in"),
        "another shape": (wide, r"params/w: checkpoint has float32\[32, 8\], target"),
        "another dtype kind": (
            integer,
            r"params/b: checkpoint has float32\[8\], target has int32\[8\]",
        ),
        # The container types name both optimizers (tuple positions after the rewrite).
        "another optimizer": (
            adam,
            r"opt_state(/\d)?: checkpoint has \w+, target has \w+",
        ),
    }


@pytest.mark.parametrize("case", list(wrong_targets(optimizer("pytorch"))))
def test_wrong_structure_is_refused_and_overwrites_nothing(tmp_path, case):
    opt = optimizer("pytorch")
    saved = fresh_target(opt, None)
    saved["params"] = jax.tree.map(lambda x: x + 1, saved["params"])
    momentax.training.save_checkpoint(tmp_path / "ckpt", saved)
    before = digest(tmp_path / "ckpt")
    target, message = wrong_targets(opt)[case]
    target_before = [np.array(leaf) for leaf in jax.tree.leaves(target)]
    with pytest.raises(ValueError, match=message) as error:
        momentax.training.restore_checkpoint(tmp_path / "ckpt", target)
    assert "does not fit the target (nothing was restored)" in str(error.value)
    assert digest(tmp_path / "ckpt") == before
    for leaf, old in zip(jax.tree.leaves(target), target_before, strict=True):
        np.testing.assert_array_equal(np.asarray(leaf), old)  # still alive, unchanged


def test_save_never_replaces_a_checkpoint(tmp_path):
    params = {"w": jnp.arange(4.0)}
    momentax.training.save_checkpoint(tmp_path / "ckpt", params)
    before = digest(tmp_path / "ckpt")
    with pytest.raises(FileExistsError, match="never replaces a checkpoint"):
        momentax.training.save_checkpoint(tmp_path / "ckpt", {"w": jnp.zeros(4)})
    assert digest(tmp_path / "ckpt") == before
    np.testing.assert_array_equal(
        momentax.training.restore_checkpoint(tmp_path / "ckpt", params)["w"],
        np.arange(4.0),
    )


def test_restore_from_nowhere(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        momentax.training.restore_checkpoint(tmp_path / "absent", {"w": jnp.zeros(2)})


def test_a_dtype_of_the_same_kind_is_restored_and_cast(tmp_path):
    # As in Orbax: float32 restores into a bfloat16 target (the values are
    # checked against their hashes in float32 first, then cast).
    saved = {"w": jnp.linspace(0.0, 1.0, 7)}
    momentax.training.save_checkpoint(tmp_path / "ckpt", saved)
    target = {"w": jnp.zeros(7, jnp.bfloat16)}
    restored = momentax.training.restore_checkpoint(tmp_path / "ckpt", target)
    assert restored["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(restored["w"], saved["w"].astype(jnp.bfloat16))

"""Checkpoints: a resumed run is bit-for-bit the run that never stopped."""

import functools
import gc
import hashlib
import json
import os
import shutil
import socket

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
FIXTURE_V1 = os.path.join(os.path.dirname(__file__), "data", "checkpoint-v1")


# One optimizer and one placement of each kind per module: fit reuses its compiled
# loop for the same ones, so the tests that train alike compile once.
@functools.cache
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


@functools.cache
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


def fresh_target(opt, where):
    """What a new process builds before restoring: a state of the right form."""
    params = tasks.linear_init(32, 8)
    if where is None:
        return {"params": params, "opt_state": opt.init(params)}
    params = where.put_params(params)
    return {"params": params, "opt_state": where.init(opt, params)}


def abstract_target(opt, where):
    """The same without allocating it: shapes, dtypes and shardings only."""
    params = jax.eval_shape(lambda: tasks.linear_init(32, 8))
    if where is not None:
        params = jax.tree.map(
            lambda p, s: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=s),
            params,
            where.param_sharding(params),
        )
        shardings = momentax.training.opt_state_sharding(opt, params)
    state = jax.eval_shape(opt.init, params)
    if where is not None:
        state = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            state,
            shardings,
        )
    return {"params": params, "opt_state": state}


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


@pytest.fixture
def manager(tmp_path):
    with momentax.training.CheckpointManager(tmp_path / "ckpt") as manager:
        yield manager


@pytest.mark.parametrize(
    ("layout", "convention"),
    [
        # Each layout and each convention once in the fast tier (the fully
        # sharded pytorch run's loops are test_restore_into_another_sharding's
        # too), the other pairs in the slow tier.
        ("one_device", "sutskever"),
        ("fully_sharded", "pytorch"),
        pytest.param("one_device", "pytorch", marks=pytest.mark.slow),
        pytest.param("fully_sharded", "sutskever", marks=pytest.mark.slow),
    ],
)
def test_resume_is_bitwise_equal_to_an_uninterrupted_run(manager, layout, convention):
    opt, where = optimizer(convention), placement(layout)
    uninterrupted = train(opt, where, NUM_STEPS)

    first = train(opt, where, STOP_AT)
    manager.save(STOP_AT, {"params": first.params, "opt_state": first.opt_state})
    for leaf in jax.tree.leaves((first.params, first.opt_state)):
        leaf.delete()  # Donated right after: the save copied what it needs.
    manager.wait()
    # Abstract target: nothing is allocated before the restore reads.
    restored = manager.restore(abstract_target(opt, where))
    resumed = train(
        opt,
        where,
        NUM_STEPS - STOP_AT,
        params=restored["params"],
        opt_state=restored["opt_state"],
        start_step=STOP_AT,
    )
    assert_bitwise_equal(resumed.params, uninterrupted.params)
    assert_bitwise_equal(resumed.opt_state, uninterrupted.opt_state)
    if where is not None:
        velocity = optax.tree.get(resumed.opt_state, "velocity")
        assert velocity["w"].sharding.is_equivalent_to(resumed.params["w"].sharding, 2)


def test_a_target_sharding_that_cannot_hold_the_shape_is_named_not_damage(manager):
    if len(CPUS) < 2:
        pytest.skip("needs the CPU devices of tests/conftest.py")
    saved = {"w": jnp.arange(3.0), "b": jnp.zeros(4)}
    manager.save(1, saved)
    mesh = jax.make_mesh((2,), ("x",), axis_types=(AxisType.Auto,), devices=CPUS[:2])
    halves = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
    target = {
        "w": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=halves),  # 3 / 2
        "b": jax.ShapeDtypeStruct((4,), jnp.float32, sharding=halves),
    }
    with pytest.raises(ValueError, match="target's sharding of w cannot hold") as e:
        manager.restore(target)
    assert "damaged" not in str(e.value)
    # The checkpoint is intact: a target that fits restores it.
    target["w"] = jax.ShapeDtypeStruct((3,), jnp.float32)
    restored = manager.restore(target)
    np.testing.assert_array_equal(restored["w"], saved["w"])


def test_restore_into_another_sharding(manager):
    opt = optimizer("pytorch")
    sharded, replicated = placement("fully_sharded"), placement("data_parallel")
    first = train(opt, sharded, STOP_AT)
    saved = {"params": first.params, "opt_state": first.opt_state}
    manager.save(STOP_AT, saved)
    for where in (replicated, None):
        target = fresh_target(opt, where)
        restored = manager.restore(target)
        assert_bitwise_equal(restored, saved)  # Restoring is exact.
        for got, want in zip(
            jax.tree.leaves(restored), jax.tree.leaves(target), strict=True
        ):
            assert got.sharding.is_equivalent_to(want.sharding, got.ndim)
    # Training on under the new layout reorders sums only: float32 tolerance.
    restored = manager.restore(fresh_target(opt, replicated))
    resumed = train(
        opt,
        replicated,
        NUM_STEPS - STOP_AT,
        params=restored["params"],
        opt_state=restored["opt_state"],
        start_step=STOP_AT,
    )
    uninterrupted = train(opt, sharded, NUM_STEPS)
    np.testing.assert_allclose(
        resumed.params["w"], uninterrupted.params["w"], **TOL[jnp.dtype(jnp.float32)]
    )


def test_steps_retention_and_restore_of_any_step(tmp_path):
    with momentax.training.CheckpointManager(
        tmp_path / "ckpt", max_to_keep=2
    ) as manager:
        assert manager.latest_step() is None and manager.all_steps() == []
        for step in (10, 20, 30):
            manager.save(step, {"w": jnp.full(3, float(step))})
        manager.wait()
        assert manager.all_steps() == [20, 30] and manager.latest_step() == 30
        assert sorted(os.listdir(tmp_path / "ckpt")) == ["20", "30", "momentax.lock"]
        assert float(manager.restore({"w": jnp.zeros(3)})["w"][0]) == 30.0
        assert float(manager.restore({"w": jnp.zeros(3)}, step=20)["w"][0]) == 20.0
        with pytest.raises(
            FileNotFoundError, match=r"no checkpoint of step 10; .*\[20, 30\]"
        ):
            manager.restore({"w": jnp.zeros(3)}, step=10)
    # A new manager on the directory (a restarted job) sees the same steps.
    with momentax.training.CheckpointManager(tmp_path / "ckpt") as again:
        assert again.all_steps() == [20, 30]
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["20", "30"]  # lock released


def test_a_synchronous_manager_has_the_step_on_disk_when_save_returns(tmp_path):
    manager = momentax.training.CheckpointManager(tmp_path, asynchronous=False)
    manager.save(1, {"w": jnp.arange(3.0)})
    # Orbax writes a step into a temporary folder and renames it once committed:
    # no temporary folder is left, without a wait.
    assert sorted(os.listdir(tmp_path)) == ["1", "momentax.lock"]
    manager.close()


def wrong_targets(opt):
    good = fresh_target(opt, None)
    missing = {"params": good["params"]}
    extra = {**good, "extra": jnp.zeros(3)}
    wide = {**good, "params": tasks.linear_init(33, 8)}
    integer = {
        **good,
        "params": jax.tree.map(lambda x: x.astype(jnp.int32), good["params"]),
    }
    adam = {**good, "opt_state": optax.adam(0.1).init(good["params"])}
    return {
        "a leaf missing from the target": (
            missing,
            r"opt_state/\S+: in the checkpoint, not in",
        ),
        "a leaf missing from the checkpoint": (extra, r"extra: in the target, not in"),
        "another shape": (wide, r"params/w: checkpoint has float32\[32, 8\], target"),
        "another dtype kind": (
            integer,
            r"params/b: checkpoint has float32\[8\], target has int32\[8\]",
        ),
        # The container types name both optimizers.
        "another optimizer": (
            adam,
            r"opt_state(/\d)?: checkpoint has \w+, target has \w+",
        ),
    }


@pytest.mark.parametrize("case", list(wrong_targets(optimizer("pytorch"))))
def test_wrong_structure_is_refused_and_overwrites_nothing(manager, case):
    opt = optimizer("pytorch")
    saved = fresh_target(opt, None)
    saved["params"] = jax.tree.map(lambda x: x + 1, saved["params"])
    manager.save(5, saved)
    manager.wait()
    before = digest(manager.directory)
    target, message = wrong_targets(opt)[case]
    target_before = [np.array(leaf) for leaf in jax.tree.leaves(target)]
    with pytest.raises(ValueError, match=message) as error:
        manager.restore(target)
    assert "step 5 in" in str(error.value)
    assert "does not fit the target (nothing was restored)" in str(error.value)
    assert digest(manager.directory) == before
    for leaf, old in zip(jax.tree.leaves(target), target_before, strict=True):
        np.testing.assert_array_equal(np.asarray(leaf), old)  # still alive, unchanged


def test_a_step_is_never_replaced(manager):
    params = {"w": jnp.arange(4.0)}
    manager.save(1, params)
    manager.wait()
    before = digest(os.path.join(manager.directory, "1"))
    with pytest.raises(FileExistsError, match=r"step 1 is saved in .* never replaced"):
        manager.save(1, {"w": jnp.zeros(4)})
    assert digest(os.path.join(manager.directory, "1")) == before
    np.testing.assert_array_equal(manager.restore(params)["w"], np.arange(4.0))


def test_restore_from_nowhere(manager):
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        manager.restore({"w": jnp.zeros(2)})


def test_a_dtype_of_the_same_kind_is_restored_and_cast(manager):
    # As in Orbax: float32 restores into a bfloat16 target (the values are
    # checked against their checksums in float32 first, then cast).
    saved = {"w": jnp.linspace(0.0, 1.0, 7)}
    manager.save(0, saved)
    restored = manager.restore({"w": jnp.zeros(7, jnp.bfloat16)})
    assert restored["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(restored["w"], saved["w"].astype(jnp.bfloat16))


@pytest.mark.parametrize(
    "directory, error, message",
    [
        ("", ValueError, "directory must name the folder .* got ''"),
        ("  ", ValueError, "directory must name the folder"),
        (3, TypeError, "directory must be a path; got 3"),
    ],
)
def test_a_directory_that_names_no_folder_is_refused(directory, error, message):
    with pytest.raises(error, match=message):
        momentax.training.CheckpointManager(directory)


def test_bad_manager_options_are_refused(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep must be an integer >= 1; got 0"):
        momentax.training.CheckpointManager(tmp_path, max_to_keep=0)
    with pytest.raises(TypeError, match="asynchronous must be True or False"):
        momentax.training.CheckpointManager(tmp_path, asynchronous="yes")
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        momentax.training.CheckpointManager(tmp_path / "file")


def v1_target():
    """The structure of tests/data/checkpoint-v1 (written by save_checkpoint)."""
    params = {"b": jnp.zeros(3), "w": jnp.zeros((2, 3))}
    return {"params": params, "opt_state": optax.sgd(0.1, 0.9).init(params), "step": 0}


@pytest.mark.parametrize("where", ["the folder itself", "a folder in it"])
def test_the_earlier_format_is_refused_naming_the_converter(tmp_path, where):
    if where == "the folder itself":
        directory = tmp_path / "old"
        shutil.copytree(FIXTURE_V1, directory)
    else:
        directory = tmp_path
        shutil.copytree(FIXTURE_V1, tmp_path / "step_7")
    with pytest.raises(
        ValueError, match=r"earlier format .*training.convert_checkpoint\("
    ):
        momentax.training.CheckpointManager(directory)


def test_the_earlier_format_converts_into_a_step(tmp_path):
    manager = momentax.training.CheckpointManager(tmp_path / "new")
    converted = momentax.training.convert_checkpoint(
        FIXTURE_V1, v1_target(), manager, 7
    )
    # The fixture: params [[0, 1, 2], [3, 4, 5]] and [0.5, -1, 2] after one
    # optax.sgd(0.1, 0.9) step (so the trace holds the gradient, the params).
    expected_w = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    step = np.float32(-0.1) * expected_w  # float32, as optax computed it
    np.testing.assert_array_equal(converted["params"]["w"], expected_w + step)
    np.testing.assert_array_equal(converted["opt_state"][0].trace["w"], expected_w)
    assert int(converted["step"]) == 7
    assert manager.all_steps() == [7]
    assert_bitwise_equal(manager.restore(v1_target()), converted)
    manager.close()


def test_a_damaged_earlier_checkpoint_is_not_converted(tmp_path):
    shutil.copytree(FIXTURE_V1, tmp_path / "old")
    data = max(
        (
            os.path.join(root, name)
            for root, _, names in os.walk(tmp_path / "old" / "ocdbt.process_0")
            for name in names
        ),
        key=os.path.getsize,
    )
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) - 1)
    manager = momentax.training.CheckpointManager(tmp_path / "new")
    with pytest.raises(
        ValueError, match=r"is damaged or incomplete: its file .* resized"
    ):
        momentax.training.convert_checkpoint(tmp_path / "old", v1_target(), manager, 7)
    assert manager.all_steps() == []
    manager.close()


def test_leaves_without_elements_save_and_restore(manager, tmp_path):
    saved = {
        "w": jnp.arange(3.0),
        "none": jnp.zeros((0, 4)),
        "ints": np.zeros(0, np.int8),
    }
    manager.save(1, saved)
    restored = manager.restore(
        {"w": jnp.zeros(3), "none": jnp.ones((0, 4)), "ints": np.ones(0, np.int8)}
    )
    assert restored["none"].shape == (0, 4) and restored["none"].dtype == jnp.float32
    assert (
        isinstance(restored["ints"], np.ndarray) and restored["ints"].dtype == np.int8
    )
    np.testing.assert_array_equal(restored["w"], np.arange(3.0))
    with pytest.raises(
        ValueError,
        match=r"none: checkpoint has float32\[0, 4\], target has float32\[4, 0\]",
    ):
        manager.restore(
            {"w": jnp.zeros(3), "none": jnp.ones((4, 0)), "ints": np.ones(0, np.int8)}
        )
    # A tree of empty leaves only: Orbax writes nothing, the record says all.
    manager.save(2, {"none": jnp.zeros((0,))})
    assert manager.restore({"none": jnp.zeros((0,))}, step=2)["none"].shape == (0,)


def test_a_sharded_empty_leaf_restores_into_its_sharding(manager):
    where = placement("fully_sharded")
    sharding = jax.sharding.NamedSharding(
        where.mesh, jax.sharding.PartitionSpec(None, "model")
    )
    manager.save(1, {"e": jnp.zeros((0, 8))})
    target = {"e": jax.ShapeDtypeStruct((0, 8), jnp.float32, sharding=sharding)}
    restored = manager.restore(target)
    assert restored["e"].shape == (0, 8) and restored["e"].sharding == sharding


def test_a_dropped_manager_frees_its_directory(tmp_path):
    # A manager that is garbage-collected without close() (a notebook cell run
    # again) releases its claim, so a new manager in this process can save.
    tree = {"w": jnp.arange(3.0)}
    first = momentax.training.CheckpointManager(tmp_path / "ckpt")
    first.save(1, tree)
    first.wait()
    del first
    gc.collect()
    with momentax.training.CheckpointManager(tmp_path / "ckpt") as second:
        second.save(2, tree)
        second.wait()
        assert second.all_steps() == [1, 2]


def test_a_lock_of_this_process_that_no_manager_holds_is_removed(tmp_path):
    # What a manager that never released its claim leaves (os._exit in a
    # notebook kernel is one way): this process's pid, held by no manager.
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "momentax.lock").write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    )
    with momentax.training.CheckpointManager(directory) as manager:
        with pytest.warns(
            UserWarning, match="of this process that no manager holds any more"
        ):
            manager.save(1, {"w": jnp.ones(2)})
        manager.wait()
        # A live manager's claim still refuses a second writer.
        other = momentax.training.CheckpointManager(directory)
        with pytest.raises(FileExistsError, match="another CheckpointManager"):
            other.save(2, {"w": jnp.ones(2)})

"""Damaged, partial and unusual checkpoints: a named error, never wrong data."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import momentax
import momentax.training

STEP = 7


def tree():
    rng = np.random.default_rng(0)  # Random values: the data files barely compress.
    params = {"w": jnp.asarray(rng.standard_normal((64, 64)), jnp.float32)}
    params["b"] = jnp.zeros(64)
    opt = momentax.momentum(0.1, 0.9)
    return {"params": params, "opt_state": opt.init(params), "step": 7}


@pytest.fixture
def manager(tmp_path):
    with momentax.training.CheckpointManager(tmp_path / "ckpt") as manager:
        yield manager


@pytest.fixture
def checkpoint(manager):
    """The folder of a complete step, and the manager that wrote it."""
    manager.save(STEP, tree())
    manager.wait()
    return manager, manager.directory + f"/{STEP}"


def files_under(path):
    return sorted(
        os.path.join(root, name) for root, _, names in os.walk(path) for name in names
    )


def largest_data_file(folder):
    return max(
        files_under(os.path.join(folder, "state", "ocdbt.process_0", "d")),
        key=os.path.getsize,
    )


def flip_byte(file, position):
    with open(file, "r+b") as f:
        f.seek(position)
        byte = f.read(1)
        f.seek(position)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_flipped_byte_is_an_error_naming_the_leaf(checkpoint):
    manager, folder = checkpoint
    data = largest_data_file(folder)  # params/w's 16 KiB: the largest leaf
    flip_byte(data, os.path.getsize(data) // 2)
    with pytest.raises(ValueError, match="is damaged or incomplete") as error:
        manager.restore(tree())
    # Orbax decompresses without a complaint; the checksum finds the change.
    assert "the values of params/w differ from the ones saved" in str(error.value)
    assert "params/b" not in str(error.value)


def truncate(file):
    with open(file, "r+b") as f:
        f.truncate(os.path.getsize(file) // 2)


def garble(file):
    with open(file, "wb") as f:
        f.write(b"\x00garbage" * (os.path.getsize(file) // 8 + 1))


def edit_json(file, edit):
    with open(file) as f:
        content = json.load(f)
    edit(content)
    with open(file, "w") as f:
        json.dump(content, f)


RECORD = ("record", "momentax.json")
CHECKSUMS = ("checksums", "process_0.json")


def at(folder, *parts):
    return os.path.join(folder, *parts)


DAMAGE = {
    "_METADATA missing": (
        lambda c: os.remove(at(c, "state", "_METADATA")),
        "Orbax cannot read it",
    ),
    "_METADATA garbage": (
        lambda c: garble(at(c, "state", "_METADATA")),
        "Orbax cannot read it",
    ),
    "manifest missing": (
        lambda c: os.remove(at(c, "state", "manifest.ocdbt")),
        "Orbax cannot read it|the values of",
    ),
    "a data file truncated": (
        lambda c: truncate(largest_data_file(c)),
        "Orbax cannot read it|the values of params/w differ",
    ),
    "a data file missing": (
        lambda c: os.remove(largest_data_file(c)),
        "Orbax cannot read it|the values of params/w differ",
    ),
    "the data folder missing": (
        lambda c: shutil.rmtree(at(c, "state", "ocdbt.process_0")),
        "Orbax cannot read it|the values of",
    ),
    "the record missing": (
        lambda c: os.remove(at(c, *RECORD)),
        "record/momentax.json is missing",
    ),
    "the record garbage": (
        lambda c: garble(at(c, *RECORD)),
        "record/momentax.json cannot be read",
    ),
    "the record with a field lost": (
        lambda c: edit_json(at(c, *RECORD), lambda r: r.pop("process_count")),
        "momentax.json has missing or malformed fields",
    ),
    "the record of another program": (
        lambda c: edit_json(at(c, *RECORD), lambda r: r.update(format="other")),
        "momentax.json is not a momentax checkpoint record",
    ),
    "the checksums missing": (
        lambda c: os.remove(at(c, *CHECKSUMS)),
        "checksums/process_0.json is missing",
    ),
    "the checksums garbage": (
        lambda c: garble(at(c, *CHECKSUMS)),
        "checksums/process_0.json cannot be read",
    ),
    "a checksum lost": (
        lambda c: edit_json(at(c, *CHECKSUMS), lambda s: s.pop("params/w")),
        "the checksums do not name the recorded leaves",
    ),
    "a checksum changed": (
        lambda c: edit_json(at(c, *CHECKSUMS), lambda s: s.update({"step": "0"})),
        "the values of step differ from the ones saved",
    ),
}


# A restore that Orbax abandons midway can leave TensorStore reads that finish
# after Orbax closed their event loop; Python reports them as unraisable.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damage_is_a_value_error_naming_it(checkpoint, kind):
    manager, folder = checkpoint
    damage, message = DAMAGE[kind]
    damage(folder)
    with pytest.raises(
        ValueError, match=f"step {STEP} in .* is damaged or incomplete: .*({message})"
    ):
        manager.restore(tree())


def test_a_record_of_another_version_is_named(checkpoint):
    manager, folder = checkpoint
    edit_json(at(folder, *RECORD), lambda r: r.update(version=3))
    with pytest.raises(ValueError, match="has record version 3; this momentax reads"):
        manager.restore(tree())


def test_the_temporary_folder_of_a_killed_save_is_never_a_step(checkpoint):
    manager, folder = checkpoint
    # What a save killed midway leaves: Orbax's temporary folder, never renamed.
    shutil.copytree(folder, folder.replace(f"/{STEP}", "/8.orbax-checkpoint-tmp"))
    with momentax.training.CheckpointManager(manager.directory) as again:
        assert again.all_steps() == [STEP]
        with pytest.raises(
            FileNotFoundError, match=r"no checkpoint of step 8; .*\[7\]"
        ):
            again.restore(tree(), step=8)


OTHER_LAYOUTS = {  # Eight float32 as saved: the same buffer, other leaves in it.
    "other shapes": ({"a": jnp.zeros(5), "b": jnp.zeros(3)}, r"'shape': \[3\]"),
    "other names": ({"x": jnp.zeros(3), "y": jnp.zeros(5)}, r"'name': 'a'"),
}


@pytest.mark.parametrize("case", list(OTHER_LAYOUTS))
def test_a_packed_layout_is_recorded_and_checked(manager, case):
    pack = momentax.training.pack
    saved = {"params": pack({"a": jnp.arange(3.0), "b": jnp.arange(5.0)})}
    manager.save(1, saved)
    same = {"params": pack({"a": jnp.zeros(3), "b": jnp.zeros(5)})}
    restored = manager.restore(same)["params"].unpack()
    np.testing.assert_array_equal(restored["b"], np.arange(5.0))
    other, field = OTHER_LAYOUTS[case]
    with pytest.raises(
        ValueError, match=f"params: checkpoint has a packed leaf .*{field}"
    ):
        manager.restore({"params": pack(other)})


def test_a_numpy_scalar_leaf_restores_as_a_numpy_scalar(manager):
    manager.save(1, {"scale": np.float32(1.5), "step": 3})
    restored = manager.restore({"scale": np.float32(0.0), "step": 0})
    assert type(restored["scale"]) is np.float32 and restored["scale"] == 1.5
    # A Python number is saved as the JAX array it becomes under jit.
    assert (
        isinstance(restored["step"], jax.Array) and restored["step"].dtype == jnp.int32
    )
    assert int(restored["step"]) == 3


@pytest.mark.parametrize("empty", [{}, (), {"opt_state": optax.EmptyState()}, None])
def test_an_empty_tree_saves_and_restores(manager, empty):
    manager.save(1, empty)
    assert manager.restore(empty) == empty
    with pytest.raises(ValueError, match="w: in the target, not in the checkpoint"):
        manager.restore({"w": jnp.zeros(2)})


def test_an_empty_container_of_another_type_is_refused(manager):
    manager.save(1, {"w": jnp.zeros(2), "s": optax.EmptyState()})
    with pytest.raises(ValueError, match="s: checkpoint has EmptyState, target has No"):
        manager.restore({"w": jnp.zeros(2), "s": None})
    with pytest.raises(ValueError, match="s: a EmptyState in the checkpoint, not the"):
        manager.restore({"w": jnp.zeros(2)})


def test_what_cannot_be_saved_is_refused_by_name(manager):
    with pytest.raises(TypeError, match="model/name is a str"):
        manager.save(1, {"model": {"name": "mlp", "w": jnp.zeros(2)}})
    donated = jnp.zeros(3)
    donated.delete()
    with pytest.raises(ValueError, match="w is a deleted \\(donated\\) array"):
        manager.save(1, {"w": donated})
    with pytest.raises(ValueError, match="step must be an integer >= 0; got -1"):
        manager.save(-1, {"w": jnp.zeros(2)})
    manager.wait()
    assert manager.all_steps() == []  # Nothing written.

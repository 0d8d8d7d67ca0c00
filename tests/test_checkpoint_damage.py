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

save, restore = momentax.training.save_checkpoint, momentax.training.restore_checkpoint


def tree():
    rng = np.random.default_rng(0)  # Random values: the data files barely compress.
    params = {"w": jnp.asarray(rng.standard_normal((64, 64)), jnp.float32)}
    params["b"] = jnp.zeros(64)
    opt = momentax.momentum(0.1, 0.9)
    return {"params": params, "opt_state": opt.init(params), "step": 7}


@pytest.fixture
def checkpoint(tmp_path):
    save(tmp_path / "ckpt", tree())
    return tmp_path / "ckpt"


def files_under(path):
    return sorted(
        os.path.join(root, name) for root, _, names in os.walk(path) for name in names
    )


def largest_data_file(path):
    return max(files_under(path / "ocdbt.process_0" / "d"), key=os.path.getsize)


def flip_byte(file, position):
    with open(file, "r+b") as f:
        f.seek(position)
        byte = f.read(1)
        f.seek(position)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_flipped_byte_is_an_error_naming_the_leaf(checkpoint):
    data = largest_data_file(checkpoint)  # params/w's 16 KiB: the largest leaf
    flip_byte(data, os.path.getsize(data) // 2)
    with pytest.raises(ValueError, match="is damaged or incomplete") as error:
        restore(checkpoint, tree())
    # Orbax decompresses without a complaint; the recorded hash finds the change.
    assert "the values of params/w differ from the ones saved" in str(error.value)
    assert "params/b" not in str(error.value)


def truncate(file):
    with open(file, "r+b") as f:
        f.truncate(os.path.getsize(file) // 2)


def garble(file):
    with open(file, "wb") as f:
        f.write(b"\x00garbage" * (os.path.getsize(file) // 8 + 1))


def same_size_garbage(file):
    size = os.path.getsize(file)
    with open(file, "wb") as f:
        f.write(b"#" * size)


def edit_record(checkpoint, edit):
    record = json.loads((checkpoint / "momentax.json").read_text())
    edit(record)
    (checkpoint / "momentax.json").write_text(json.dumps(record))


DAMAGE = {
    "_METADATA missing": (lambda c: os.remove(c / "_METADATA"), "_METADATA is missing"),
    "_METADATA truncated": (lambda c: truncate(c / "_METADATA"), "_METADATA has \\d+"),
    "_METADATA garbage": (lambda c: garble(c / "_METADATA"), "_METADATA has \\d+"),
    "_METADATA garbage of its size": (
        lambda c: same_size_garbage(c / "_METADATA"),
        "Orbax cannot read it",
    ),
    "manifest missing": (
        lambda c: os.remove(c / "manifest.ocdbt"),
        "manifest.ocdbt is missing",
    ),
    "a data file missing": (
        lambda c: os.remove(largest_data_file(c)),
        "ocdbt.process_0/d/\\w+ is missing",
    ),
    "the data folder missing": (
        lambda c: shutil.rmtree(c / "ocdbt.process_0"),
        "ocdbt.process_0/\\S+ is missing",
    ),
    "the record missing": (
        lambda c: os.remove(c / "momentax.json"),
        "momentax.json is missing \\(not written by save_checkpoint, or its save",
    ),
    "the record garbage": (
        lambda c: garble(c / "momentax.json"),
        "momentax.json cannot be read",
    ),
    "the record with a field lost": (
        lambda c: edit_record(c, lambda r: r["leaves"]["params/w"].pop("sha256")),
        "momentax.json has missing or malformed fields",
    ),
    "the record with a dtype garbled": (
        lambda c: edit_record(c, lambda r: r["leaves"]["step"].update(dtype="flo!t")),
        "momentax.json has missing or malformed fields",
    ),
    "the record of another program": (
        lambda c: (c / "momentax.json").write_text('{"format": "other"}'),
        "momentax.json is not a momentax checkpoint record",
    ),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damage_is_a_value_error_naming_it(checkpoint, kind):
    damage, message = DAMAGE[kind]
    damage(checkpoint)
    with pytest.raises(ValueError, match=f"is damaged or incomplete: .*{message}"):
        restore(checkpoint, tree())


def leftover_of_a_killed_save(tmp_path, suffix):
    """A killed save's temporary folder: Orbax's files, no record, not renamed."""
    save(tmp_path / "done", tree())
    leftover = tmp_path / f"ckpt{suffix}"
    shutil.copytree(tmp_path / "done", leftover)
    os.remove(leftover / "momentax.json")
    return leftover


@pytest.mark.parametrize("suffix", [".momentax-tmp", ".orbax-checkpoint-tmp-1234"])
def test_the_temporary_folder_of_a_killed_save_is_never_restored(tmp_path, suffix):
    leftover = leftover_of_a_killed_save(tmp_path, suffix)
    with pytest.raises(ValueError, match="temporary folder of a save that was inter"):
        restore(leftover, tree())
    with pytest.raises(FileNotFoundError, match=f"only .*ckpt{suffix}.* is there"):
        restore(tmp_path / "ckpt", tree())


def test_an_empty_folder_holds_no_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is an empty folder, no checkpoint"):
        restore(tmp_path / "empty", tree())


OTHER_LAYOUTS = {  # Eight float32 as saved: the same buffer, other leaves in it.
    "other shapes": ({"a": jnp.zeros(5), "b": jnp.zeros(3)}, r"'shape': \[3\]"),
    "other names": ({"x": jnp.zeros(3), "y": jnp.zeros(5)}, r"'name': 'a'"),
}


@pytest.mark.parametrize("case", list(OTHER_LAYOUTS))
def test_a_packed_layout_is_recorded_and_checked(tmp_path, case):
    pack = momentax.training.pack
    saved = {"params": pack({"a": jnp.arange(3.0), "b": jnp.arange(5.0)})}
    save(tmp_path / "ckpt", saved)
    same = {"params": pack({"a": jnp.zeros(3), "b": jnp.zeros(5)})}
    restored = restore(tmp_path / "ckpt", same)["params"].unpack()
    np.testing.assert_array_equal(restored["b"], np.arange(5.0))
    other, field = OTHER_LAYOUTS[case]
    with pytest.raises(
        ValueError, match=f"params: checkpoint has a packed leaf .*{field}"
    ):
        restore(tmp_path / "ckpt", {"params": pack(other)})


def test_a_numpy_scalar_leaf_restores_as_a_numpy_scalar(tmp_path):
    save(tmp_path / "ckpt", {"scale": np.float32(1.5), "step": 3})
    restored = restore(tmp_path / "ckpt", {"scale": np.float32(0.0), "step": 0})
    assert type(restored["scale"]) is np.float32 and restored["scale"] == 1.5
    # A Python number is saved as the JAX array it becomes under jit.
    assert (
        isinstance(restored["step"], jax.Array) and restored["step"].dtype == jnp.int32
    )
    assert int(restored["step"]) == 3


@pytest.mark.parametrize("empty", [{}, (), {"opt_state": optax.EmptyState()}, None])
def test_an_empty_tree_saves_and_restores(tmp_path, empty):
    save(tmp_path / "ckpt", empty)
    assert restore(tmp_path / "ckpt", empty) == empty
    with pytest.raises(ValueError, match="w: in the target, not in the checkpoint"):
        restore(tmp_path / "ckpt", {"w": jnp.zeros(2)})


def test_an_empty_container_of_another_type_is_refused(tmp_path):
    save(tmp_path / "ckpt", {"w": jnp.zeros(2), "s": optax.EmptyState()})
    with pytest.raises(ValueError, match="s: checkpoint has EmptyState, target has No"):
        restore(tmp_path / "ckpt", {"w": jnp.zeros(2), "s": None})
    with pytest.raises(ValueError, match="s: a EmptyState in the checkpoint, not the"):
        restore(tmp_path / "ckpt", {"w": jnp.zeros(2)})


def test_what_cannot_be_saved_is_refused_by_name(tmp_path):
    with pytest.raises(TypeError, match="model/name is a str"):
        save(tmp_path / "a", {"model": {"name": "mlp", "w": jnp.zeros(2)}})
    donated = jnp.zeros(3)
    donated.delete()
    with pytest.raises(ValueError, match="w is a deleted \\(donated\\) array"):
        save(tmp_path / "b", {"w": donated})
    with pytest.raises(FileNotFoundError, match=r"parent directory .* does not exist"):
        save(tmp_path / "absent" / "ckpt", {"w": jnp.zeros(2)})
    assert sorted(os.listdir(tmp_path)) == []  # Nothing claimed or left behind.

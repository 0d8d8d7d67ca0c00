"""Two JAX processes save and restore through one CheckpointManager, shard by shard."""

import os
import pathlib
import signal
import socket
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import momentax.training
from tests.helpers import subprocess_env

pytestmark = pytest.mark.slow  # child processes
ROOT = pathlib.Path(__file__).parent.parent
NUM_PROCESSES = 2

# Each process holds half of "w": no process can address all of it, and no
# process ever gathers it (every process_allgather is recorded and checked).
WORKER = """
import json, os, sys
import numpy as np
import jax

directory, port, index = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=index,
    initialization_timeout=120,
)
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
import momentax.training

gathered = []
allgather = multihost_utils.process_allgather

def recording_allgather(tree, *args, **kwargs):
    gathered.extend(np.size(leaf) for leaf in jax.tree.leaves(tree))
    return allgather(tree, *args, **kwargs)

multihost_utils.process_allgather = recording_allgather

def held_here(array):
    return sum(shard.data.size for shard in array.addressable_shards)

mesh = jax.make_mesh((2,), ("x",))
rows = NamedSharding(mesh, PartitionSpec("x"))
columns = NamedSharding(mesh, PartitionSpec(None, "x"))
values = np.arange(16, dtype=np.float32).reshape(8, 2)
w = jax.make_array_from_callback(values.shape, rows, lambda i: values[i])
assert not w.is_fully_addressable and held_here(w) == 8

manager = momentax.training.CheckpointManager(directory)
manager.save(3, {"w": w, "step": 3})
manager.wait()
try:
    manager.save(3, {"w": w, "step": 4})
except FileExistsError as error:
    print(f"process {index} refused: {error}")

for name, sharding in (("rows", rows), ("columns", columns)):
    target = {"w": jax.ShapeDtypeStruct((8, 2), np.float32, sharding=sharding),
              "step": 0}
    restored = manager.restore(target)
    assert restored["w"].sharding == sharding and held_here(restored["w"]) == 8
    equal = all(np.array_equal(shard.data, values[shard.index])
                for shard in restored["w"].addressable_shards)
    print(f"process {index} restored step {int(restored['step'])} into {name}, "
          f"w equal: {equal}")

# Damage in the other process's checksums is found by both processes.
checksums = os.path.join(directory, "3", "checksums", "process_1.json")
if index == 0:
    with open(checksums) as f:
        original = f.read()
    changed = json.loads(original)
    changed["w"] = f"{(int(changed['w'], 16) + 1) % 2**64:016x}"
    with open(checksums, "w") as f:
        json.dump(changed, f)
multihost_utils.sync_global_devices("checksums changed")
try:
    manager.restore(target)
except ValueError as error:
    print(f"process {index} found damage: {error}")
multihost_utils.sync_global_devices("damage found")
if index == 0:
    with open(checksums, "w") as f:
        f.write(original)
manager.close()
print(f"process {index} gathered at most {max(gathered)} elements at once")
jax.distributed.shutdown()
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_save_and_restore_through_one_manager(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    port, directory = str(free_port()), str(tmp_path / "ckpt")
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
    workers = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "worker.py"), directory, port, str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, to kill it whole
        )
        for i in range(NUM_PROCESSES)
    ]
    try:
        outputs = [worker.communicate(timeout=240)[0] for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.communicate()
    for i, (worker, output) in enumerate(zip(workers, outputs, strict=True)):
        assert worker.returncode == 0, output[-3000:]
        for layout in ("rows", "columns"):
            assert f"process {i} restored step 3 into {layout}, w equal: True" in output
        assert f"process {i} refused: step 3 is saved in" in output
        assert f"process {i} found damage: the checkpoint of step 3" in output
        assert "the values of w differ from the ones saved" in output
        # Only the per-leaf checksums crossed processes (two numbers for each
        # of the two leaves), never w's 16 elements or half of them.
        assert f"process {i} gathered at most 4 elements at once" in output
    # The checksums of the two processes' shards add up to the checksums of
    # the whole arrays: one process restores and verifies the checkpoint.
    with momentax.training.CheckpointManager(directory) as manager:
        restored = manager.restore({"w": jnp.zeros((8, 2)), "step": 0})
    np.testing.assert_array_equal(restored["w"], np.arange(16.0).reshape(8, 2))
    assert sorted(os.listdir(directory)) == ["3"]

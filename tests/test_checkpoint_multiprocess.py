"""Two JAX processes save and restore one checkpoint of a cross-process array."""

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

# Each process holds half of "w": no process can address all of it.
WORKER = """
import sys
import numpy as np
import jax

path, port, index = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=index,
    initialization_timeout=120,
)
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
import momentax.training

sharding = NamedSharding(jax.make_mesh((2,), ("x",)), PartitionSpec("x"))
values = np.arange(16, dtype=np.float32).reshape(8, 2)
w = jax.make_array_from_callback(values.shape, sharding, lambda i: values[i])
assert not w.is_fully_addressable
momentax.training.save_checkpoint(path, {"w": w, "step": 3})
try:
    momentax.training.save_checkpoint(path, {"w": w, "step": 4})
except FileExistsError as error:
    print(f"process {index} refused: {error}")
target = {"w": jax.ShapeDtypeStruct((8, 2), np.float32, sharding=sharding), "step": 0}
restored = momentax.training.restore_checkpoint(path, target)
assert restored["w"].sharding == sharding
full = multihost_utils.process_allgather(restored["w"], tiled=True)
print(f"process {index} restored step {int(restored['step'])}, "
      f"w equal: {np.array_equal(full, values)}")
jax.distributed.shutdown()
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_save_and_restore_one_checkpoint(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    port, path = str(free_port()), str(tmp_path / "ckpt")
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
    workers = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "worker.py"), path, port, str(i)],
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
        assert f"process {i} restored step 3, w equal: True" in output
    # Process 0 saw the path exist; process 1 was told, instead of waiting.
    assert "process 0 refused: path" in outputs[0]
    assert "process 1 refused: process 0 refused the save" in outputs[1]
    # The hash was of the whole array: one process restores and verifies it.
    restored = momentax.training.restore_checkpoint(
        path, {"w": jnp.zeros((8, 2)), "step": 0}
    )
    np.testing.assert_array_equal(restored["w"], np.arange(16.0).reshape(8, 2))
    assert sorted(os.listdir(tmp_path)) == ["ckpt", "worker.py"]

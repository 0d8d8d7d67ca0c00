"""Saves that overlap or are killed: refused at once, never half-written."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

import momentax.training
from tests.helpers import subprocess_env

pytestmark = pytest.mark.slow  # child processes
ROOT = pathlib.Path(__file__).parent.parent

# A process whose manager saves step 1, then step 2, and stops in the middle
# of step 2 (Orbax's files written into 2.orbax-checkpoint-tmp, not renamed)
# until the test says go.
SLOW_SAVE = """
import os, sys, time
import jax.numpy as jnp
import orbax.checkpoint as ocp
import momentax.training

directory, ready, go = sys.argv[1:]
save_json = ocp.JsonCheckpointHandler._save_fn

async def pause_in_step_2(self, item, folder):
    await save_json(self, item, folder)
    if "2.orbax-checkpoint-tmp" in str(folder):
        open(ready, "w").close()
        deadline = time.monotonic() + 300  # never outlive a failed test for long
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.02)

ocp.JsonCheckpointHandler._save_fn = pause_in_step_2
manager = momentax.training.CheckpointManager(directory)
manager.save(1, {"w": jnp.arange(4.0)})
manager.save(2, {"w": jnp.arange(4.0) + 10})
manager.close()
"""


@pytest.fixture
def paused_save(tmp_path):
    """A child process in the middle of saving step 2 to ``tmp_path / "ckpt"``."""
    (tmp_path / "slow_save.py").write_text(SLOW_SAVE)
    ready, go = tmp_path / "ready", tmp_path / "go"
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
    child = subprocess.Popen(
        [
            sys.executable,
            *map(str, (tmp_path / "slow_save.py", tmp_path / "ckpt", ready, go)),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    while not ready.exists():  # Bounded by the child's own exit on error.
        if child.poll() is not None:
            pytest.fail(f"the saving process ended early:\n{child.stdout.read()}")
        time.sleep(0.02)
    yield child, go
    if child.poll() is None:
        child.kill()
    child.communicate()


def test_a_second_writer_is_refused_at_once_and_readers_are_not(tmp_path, paused_save):
    child, go = paused_save
    manager = momentax.training.CheckpointManager(tmp_path / "ckpt")
    # Reading while another process writes: the complete step 1 only.
    assert manager.all_steps() == [1]
    np.testing.assert_array_equal(
        manager.restore({"w": jnp.zeros(4)})["w"], np.arange(4.0)
    )
    with pytest.raises(FileExistsError, match=f"\\(process {child.pid} on "):
        manager.save(3, {"w": jnp.zeros(4)})
    assert child.poll() is None  # The refusal did not wait for the other save.
    go.touch()
    output, _ = child.communicate(timeout=300)
    assert child.returncode == 0, output
    # The other save completed with its values and released the directory.
    manager = momentax.training.CheckpointManager(tmp_path / "ckpt")
    restored = manager.restore({"w": jnp.zeros(4)})
    np.testing.assert_array_equal(restored["w"], np.arange(4.0) + 10)
    manager.save(3, {"w": jnp.ones(4)})
    manager.close()
    assert manager.all_steps() == [1, 2, 3]


def test_a_killed_save_leaves_no_step_and_the_next_writer_takes_over(
    tmp_path, paused_save
):
    child, _ = paused_save
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    directory = tmp_path / "ckpt"
    # Step 2 is left unfinished in Orbax's temporary folder (some Orbax versions
    # add a numeric suffix: 2.orbax-checkpoint-tmp-4).
    one, unfinished, lock = sorted(os.listdir(directory))
    assert (one, lock) == ("1", "momentax.lock")
    assert unfinished.startswith("2.orbax-checkpoint-tmp"), unfinished
    manager = momentax.training.CheckpointManager(directory)
    assert manager.all_steps() == [1] and manager.latest_step() == 1
    with pytest.warns(UserWarning, match=f"process \\({child.pid}\\) has ended") as w:
        manager.save(2, {"w": jnp.ones(4)})
    assert w[0].filename == __file__  # The warning points at the save call.
    manager.close()
    np.testing.assert_array_equal(
        manager.restore({"w": jnp.zeros(4)}, step=2)["w"], np.ones(4)
    )
    assert sorted(os.listdir(directory)) == ["1", "2"]

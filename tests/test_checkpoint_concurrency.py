"""Saves that overlap or are killed: refused at once, cleaned up, never half-written."""

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

save, restore = momentax.training.save_checkpoint, momentax.training.restore_checkpoint
pytestmark = pytest.mark.slow  # child processes
ROOT = pathlib.Path(__file__).parent.parent

# A save in another process that stops once Orbax has written its files (before
# momentax writes its record and renames the folder) until the test says go.
SLOW_SAVE = """
import os, sys, time
import jax.numpy as jnp
import orbax.checkpoint as ocp
import momentax.training

path, ready, go = sys.argv[1:]
close = ocp.StandardCheckpointer.close

def pause_then_close(self):  # momentax closes the checkpointer once Orbax is done
    open(ready, "w").close()
    deadline = time.monotonic() + 300  # never outlive a failed test for long
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.02)
    close(self)

ocp.StandardCheckpointer.close = pause_then_close
momentax.training.save_checkpoint(path, {"w": jnp.arange(4.0)})
"""


@pytest.fixture
def paused_save(tmp_path):
    """A child process in the middle of a save to ``tmp_path / "ckpt"``."""
    (tmp_path / "slow_save.py").write_text(SLOW_SAVE)
    ready, go = tmp_path / "ready", tmp_path / "go"
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
    child = subprocess.Popen(
        [
            sys.executable,
            *map(str, (tmp_path / "slow_save.py", tmp_path / "ckpt")),
            str(ready),
            str(go),
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


def test_a_second_save_to_the_path_is_refused_at_once(tmp_path, paused_save):
    child, go = paused_save
    with pytest.raises(FileExistsError, match=f"in progress \\(process {child.pid} "):
        save(tmp_path / "ckpt", {"w": jnp.zeros(4)})
    assert child.poll() is None  # The refusal did not wait for the first save.
    go.touch()
    output, _ = child.communicate(timeout=300)
    assert child.returncode == 0, output
    # The first save completed, with its values, and released its claim.
    restored = restore(tmp_path / "ckpt", {"w": jnp.zeros(4)})
    np.testing.assert_array_equal(restored["w"], np.arange(4.0))
    assert sorted(os.listdir(tmp_path)) == ["ckpt", "go", "ready", "slow_save.py"]


def test_a_killed_save_leaves_no_checkpoint_and_the_next_save_cleans_up(
    tmp_path, paused_save
):
    child, _ = paused_save
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not (tmp_path / "ckpt").exists()
    with pytest.raises(FileNotFoundError, match=r"only .*ckpt\.momentax-tmp.* is"):
        restore(tmp_path / "ckpt", {"w": jnp.zeros(4)})

    with pytest.warns(UserWarning) as warned:
        save(tmp_path / "ckpt", {"w": jnp.ones(4)})
    messages = sorted(str(w.message) for w in warned)
    assert len(messages) == 2, messages
    assert {w.filename for w in warned} == {__file__}  # they point at the save call
    assert "ckpt.momentax-lock', the lock of an interrupted save" in messages[0]
    assert f"(process {child.pid} has ended)" in messages[0]
    assert "ckpt.momentax-tmp': an interrupted save to" in messages[1]
    restored = restore(tmp_path / "ckpt", {"w": jnp.zeros(4)})
    np.testing.assert_array_equal(restored["w"], np.ones(4))
    assert sorted(os.listdir(tmp_path)) == ["ckpt", "ready", "slow_save.py"]

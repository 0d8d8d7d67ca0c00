"""Two JAX processes on loopback (jax.distributed, gloo) train like one."""

import os
import pathlib
import runpy
import signal
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import TOL, subprocess_env

pytestmark = pytest.mark.slow  # child processes
SCRIPT = pathlib.Path(__file__).parent.parent / "examples" / "multiprocess.py"
EXAMPLE = runpy.run_path(str(SCRIPT))  # its globals: train() and the settings


def launch(out, *args, timeout=240):
    """Runs the launcher; kills its whole process group if it overruns."""
    launcher = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        env=subprocess_env(
            PYTHONPATH=os.pathsep.join([str(SCRIPT.parent.parent), *sys.path])
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = launcher.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.communicate()
        raise
    return launcher.returncode, output


def running_with(marker):
    """PIDs of live processes whose command line mentions ``marker``."""
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            continue
        if marker in cmdline and "--process-id" in cmdline:
            pids.append(entry.name)
    return pids


@pytest.fixture(scope="module")
def single_process():
    result = EXAMPLE["train"]()
    return {name: np.asarray(value) for name, value in result.params.items()}


@pytest.mark.parametrize(
    ("num_processes", "layout"),
    [(2, "data_parallel"), (2, "fully_sharded"), (4, "fully_sharded")],
)
def test_processes_match_one_and_checkpoint_shard_by_shard(
    tmp_path, num_processes, layout, single_process
):
    code, output = launch(
        tmp_path,
        "--num-processes",
        str(num_processes),
        "--layout",
        layout,
        "--timeout",
        "180",
    )
    assert code == 0, output[-3000:]
    steps = [EXAMPLE["NUM_STEPS"] - EXAMPLE["CHECKPOINT_EVERY"], EXAMPLE["NUM_STEPS"]]
    for i in range(num_processes):
        # Each worker restored the last step into its shardings, compared it
        # with its params shard by shard and, fully sharded, found that it
        # never held a whole param or velocity (see check_restored).
        assert f"process {i}/{num_processes}: " in output
        assert f"checkpoints {steps} restored and checked" in output
    w_size = EXAMPLE["TASK_SIZE"]["num_features"] * EXAMPLE["TASK_SIZE"]["num_outputs"]
    held = w_size // num_processes if layout == "fully_sharded" else w_size
    assert output.count(f"holds {held} of w's {w_size} elements") == num_processes
    assert f"checkpoint of step {EXAMPLE['NUM_STEPS']} restored on one device" in output
    # Restored on one device from the processes' shards, the params are the
    # single-process params up to the order of the cross-process sums (the
    # float32 tolerance for reordered sums).
    params = np.load(tmp_path / "params.npz")
    for name in ("w", "b"):
        np.testing.assert_allclose(
            params[name], single_process[name], **TOL[jnp.dtype(jnp.float32)]
        )
    loss = np.load(tmp_path / "process_0.npz")["loss"]
    assert loss.shape == (EXAMPLE["NUM_STEPS"],)
    assert loss[-1] < 0.01 * loss[0]
    assert not running_with(str(tmp_path))


def test_launcher_timeout_kills_every_worker(tmp_path):
    # One second is less than a worker needs to start JAX and join the others.
    code, output = launch(tmp_path, "--num-processes", "2", "--timeout", "1")
    assert code != 0
    assert "timed out after 1 s; all workers were killed" in output
    assert not running_with(str(tmp_path))

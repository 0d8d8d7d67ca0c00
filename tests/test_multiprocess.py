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
NUM_PROCESSES = 2


def launch(out, *args, timeout=240):
    """Runs the launcher; kills its whole process group if it overruns."""
    launcher = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        env=subprocess_env(),
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


@pytest.mark.parametrize("layout", EXAMPLE["LAYOUTS"])
def test_two_processes_match_one(tmp_path, layout, single_process):
    code, output = launch(
        tmp_path,
        "--num-processes",
        str(NUM_PROCESSES),
        "--layout",
        layout,
        "--timeout",
        "180",
    )
    assert code == 0, output[-3000:]
    assert f"{NUM_PROCESSES} processes ({layout}) ended with identical params" in output
    results = [np.load(tmp_path / f"process_{i}.npz") for i in range(NUM_PROCESSES)]
    for name in ("w", "b"):
        # Every process holds the same global params, bit for bit ...
        np.testing.assert_array_equal(results[1][name], results[0][name])
        # ... and they are the single-process params up to the order of the
        # cross-process sums (the float32 tolerance for reordered sums).
        np.testing.assert_allclose(
            results[0][name], single_process[name], **TOL[jnp.dtype(jnp.float32)]
        )
    loss = results[0]["loss"]
    assert loss.shape == (EXAMPLE["NUM_STEPS"],)
    assert loss[-1] < 0.01 * loss[0]
    assert not running_with(str(tmp_path))


def test_launcher_timeout_kills_every_worker(tmp_path):
    # One second is less than a worker needs to start JAX and join the others.
    code, output = launch(tmp_path, "--num-processes", "2", "--timeout", "1")
    assert code != 0
    assert "timed out after 1 s; all workers were killed" in output
    assert not running_with(str(tmp_path))

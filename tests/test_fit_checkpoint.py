"""fit with a CheckpointManager: periodic saves, resume after a kill, failed calls."""

import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

import momentax
import momentax.training
from momentax import tasks
from tests.helpers import subprocess_env

ROOT = pathlib.Path(__file__).parent.parent
TASK = tasks.wide_regression(num_examples=64, num_features=32, num_outputs=8)
BATCHES = jax.tree.map(lambda a: a.reshape(4, 16, *a.shape[1:]), TASK.train)
OPT = momentax.momentum(0.05, 0.9, nesterov=True)


def train(num_steps, **kwargs):
    return momentax.training.fit(
        tasks.linear_loss,
        OPT,
        tasks.linear_init(32, 8),
        BATCHES,
        stacked=True,
        num_steps=num_steps,
        **kwargs,
    )


def assert_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(
            np.atleast_1d(np.asarray(x)).view(np.uint8),
            np.atleast_1d(np.asarray(y)).view(np.uint8),
        )


def test_saves_at_every_multiple_and_at_the_end(tmp_path):
    with momentax.training.CheckpointManager(tmp_path) as manager:
        result = train(25, checkpoint=manager, checkpoint_every=10, start_step=3)
        assert manager.all_steps() == [10, 20, 28]  # start 3, end 3 + 25
        saved = manager.restore(
            {"params": result.params, "opt_state": result.opt_state}
        )
    assert_bitwise_equal(
        saved, {"params": result.params, "opt_state": result.opt_state}
    )


def test_a_second_fit_resumes_from_the_latest_step_bit_for_bit(tmp_path):
    uninterrupted = train(90)
    with momentax.training.CheckpointManager(tmp_path, max_to_keep=2) as manager:
        first = train(37, checkpoint=manager, checkpoint_every=10)
        assert first.step == 37 and manager.all_steps() == [30, 37]
    with momentax.training.CheckpointManager(tmp_path, max_to_keep=2) as manager:
        steps = []
        resumed = train(
            90,
            checkpoint=manager,
            checkpoint_every=10,
            callback=lambda done, total: steps.append((done, total)),
        )
        assert manager.all_steps() == [80, 90]
    assert resumed.step == 90 and resumed.history["loss"].shape == (53,)
    assert steps[0] == (40, 90) and steps[-1] == (90, 90)  # Progress goes on.
    assert_bitwise_equal(resumed.params, uninterrupted.params)
    assert_bitwise_equal(resumed.opt_state, uninterrupted.opt_state)
    # Once done, a fit with the same manager restores the end and runs nothing.
    with momentax.training.CheckpointManager(tmp_path) as manager:
        again = train(90, checkpoint=manager)
    assert again.history == {} and again.step == 90
    assert_bitwise_equal(again.params, uninterrupted.params)


def test_checkpoint_arguments_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(
        TypeError, match=r"checkpoint must be a momentax\.training\.Check"
    ):
        train(5, checkpoint=str(tmp_path))
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint="):
        train(5, checkpoint_every=2)
    with momentax.training.CheckpointManager(tmp_path) as manager:
        with pytest.raises(
            ValueError, match="checkpoint_every must be an integer >= 1"
        ):
            train(5, checkpoint=manager, checkpoint_every=0)
        train(20, checkpoint=manager)
        with pytest.raises(
            ValueError, match="holds step 20, past this fit's last step 5"
        ):
            train(5, checkpoint=manager)


# A run of 60 steps, 2 per compiled call, saving every 10: reports each call's
# progress and waits a little after it, so that the test can kill it midway.
CHILD = """
import sys, time
import numpy as np
import jax
from tests.test_fit_checkpoint import train
import momentax.training

mode, directory, out = sys.argv[1:]
if mode == "uninterrupted":
    result = train(60, steps_per_call=2)
else:
    manager = momentax.training.CheckpointManager(directory)
    print(f"resuming from {manager.latest_step()}", flush=True)

    def report(done, total):
        print(f"done {done}", flush=True)
        time.sleep(0.05)

    result = train(60, steps_per_call=2, checkpoint=manager, checkpoint_every=10,
                   callback=report)
    manager.close()
np.savez(out, **{str(i): np.asarray(x) for i, x in enumerate(jax.tree.leaves(
    (result.params, result.opt_state)))})
"""


def start(tmp_path, mode, out):
    (tmp_path / "child.py").write_text(CHILD)
    return subprocess.Popen(
        [sys.executable, str(tmp_path / "child.py"), mode, str(tmp_path / "ckpt"), out],
        env=subprocess_env(PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path])),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(child):
    try:
        output, _ = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
    assert child.returncode == 0, output[-3000:]
    return output


@pytest.mark.slow
def test_a_killed_fit_resumes_bit_for_bit_losing_at_most_checkpoint_every(tmp_path):
    finish(start(tmp_path, "uninterrupted", str(tmp_path / "uninterrupted.npz")))

    child = start(tmp_path, "resumable", str(tmp_path / "resumed.npz"))
    reported = 0
    for line in child.stdout:  # Ends early only if the child dies on its own.
        if line.startswith("done "):
            reported = int(line.split()[1])
            if reported >= 34:
                os.killpg(child.pid, signal.SIGKILL)
                break
    child.communicate()
    assert child.returncode == -signal.SIGKILL, "the child ended before the kill"

    output = finish(start(tmp_path, "resumable", str(tmp_path / "resumed.npz")))
    resumed_from = int(output.split("resuming from ")[1].split()[0])
    assert 0 < reported - resumed_from <= 10, (reported, resumed_from)
    assert f"done {resumed_from + 2}\n" in output and "done 60\n" in output
    resumed, uninterrupted = (
        np.load(tmp_path / f"{name}.npz") for name in ("resumed", "uninterrupted")
    )
    assert sorted(resumed.files) == sorted(uninterrupted.files)
    for name in resumed.files:
        np.testing.assert_array_equal(
            resumed[name].view(np.uint8), uninterrupted[name].view(np.uint8)
        )


FAIL_AT = {"call": None}  # The loss's callback raises on this call (1-based).
CALLS = []


def count_calls(_):
    CALLS.append(1)
    if len(CALLS) == FAIL_AT["call"]:
        raise RuntimeError(f"simulated device error in call {len(CALLS)}")


def loss_with_callback(params, batch):
    jax.debug.callback(count_calls, params["w"])
    return tasks.linear_loss(params, batch)


def run_failing(fail_at, **kwargs):
    FAIL_AT["call"], CALLS[:] = fail_at, []
    return momentax.training.fit(
        loss_with_callback,
        OPT,
        tasks.linear_init(32, 8),
        TASK.train,
        num_steps=10,
        steps_per_call=2,
        **kwargs,
    )


def test_an_error_in_a_compiled_call_leaves_no_deleted_array_in_fit_result(tmp_path):
    # The loss runs once a step: its 5th call is in the 3rd compiled call.
    with pytest.raises(Exception, match="simulated device error in call 5") as error:
        run_failing(5)
    result = error.value.fit_result
    assert result.step == 4 and result.history["loss"].shape == (4,)
    # The failing call consumed the donated params and state: none are handed
    # back rather than deleted arrays, and the note says how to resume.
    assert result.params is None and result.opt_state is None
    note = "\n".join(error.value.__notes__)
    assert "fit stopped after 4 of 10 steps" in note
    assert "consumed the donated params and state" in note
    assert "pass checkpoint= (a momentax.training.CheckpointManager)" in note


def test_without_donation_fit_result_holds_the_completed_steps(tmp_path):
    with pytest.raises(Exception, match="simulated device error") as error:
        run_failing(5, donate=False)
    result = error.value.fit_result
    assert result.step == 4
    FAIL_AT["call"] = None
    reference = momentax.training.fit(
        loss_with_callback,
        OPT,
        tasks.linear_init(32, 8),
        TASK.train,
        num_steps=4,
        steps_per_call=2,
    )
    assert_bitwise_equal(result.params, reference.params)
    assert_bitwise_equal(result.opt_state, reference.opt_state)


def test_after_an_error_in_a_compiled_call_the_manager_resumes_the_run(tmp_path):
    uninterrupted = run_failing(None)
    manager = momentax.training.CheckpointManager(tmp_path)
    with pytest.raises(Exception, match="simulated device error") as error:
        run_failing(5, checkpoint=manager, checkpoint_every=2)
    result, note = error.value.fit_result, "\n".join(error.value.__notes__)
    assert result.step == 4
    if result.params is None:  # The failing call consumed them (donated).
        assert "Call fit again with the same checkpoint manager" in note
        assert "its latest step, 4." in note
    else:  # Not donated (on the CPU, Orbax's host copy shares the buffers).
        live = jax.tree.leaves((result.params, result.opt_state))
        assert not any(leaf.is_deleted() for leaf in live)
        assert "error.fit_result holds their params" in note
        assert_bitwise_equal(
            manager.restore({"params": result.params, "opt_state": result.opt_state}),
            {"params": result.params, "opt_state": result.opt_state},
        )
    resumed = run_failing(None, checkpoint=manager, checkpoint_every=2)
    manager.close()
    assert resumed.step == 10 and resumed.history["loss"].shape == (6,)
    assert_bitwise_equal(resumed.params, uninterrupted.params)
    assert_bitwise_equal(resumed.opt_state, uninterrupted.opt_state)

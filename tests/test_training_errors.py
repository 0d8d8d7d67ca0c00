"""fit and the train step when things go wrong: bad input, failures, huge steps.

Everything checkable is refused before anything is donated; a failure part-way
hands back the completed steps, from which the run resumes bit for bit.
"""

import signal

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import momentax
import momentax.training
from momentax import tasks

TASK = tasks.noisy_line(seed=0)


def minibatches(count):
    """The noisy task's 80 training points as ``count`` stacked batches."""
    return jax.tree.map(lambda a: a.reshape(count, -1), TASK.train)


class Stop(Exception):
    pass


def stop_at(call, error=Stop):
    """A callback that raises ``error`` at its ``call``-th call."""
    calls = []

    def callback(done, total):
        calls.append(done)
        if len(calls) == call:
            raise error()

    return callback


class FailSafeTest(parameterized.TestCase):
    """A fit that fails part-way hands back every completed step."""

    OPT = momentax.momentum(0.05, momentum=0.9)

    def train(self, **kwargs):
        return momentax.training.fit(
            tasks.mse_loss,
            self.OPT,
            kwargs.pop("params", None) or tasks.init_params(),
            minibatches(5),
            stacked=True,
            record=("loss", "velocity"),
            **kwargs,
        )

    @parameterized.parameters(Stop, ZeroDivisionError, KeyboardInterrupt)
    def test_a_failing_callback_keeps_the_completed_steps(self, error):
        params = tasks.init_params()
        with pytest.raises(error) as caught:
            self.train(
                params=params,
                num_steps=20,
                steps_per_call=4,
                callback=stop_at(2, error),
            )
        partial = caught.value.fit_result
        assert partial.step == 8  # two calls of 4 steps completed
        assert partial.history["loss"].shape == (8,)
        assert "stopped after 8 of 20 steps" in str(caught.value.__notes__)
        # The inputs were donated; the partial result's arrays are live.
        assert params["k"].is_deleted()
        assert np.isfinite(float(partial.params["k"]))
        # Resuming from it is the uninterrupted run, bit for bit.
        later = self.train(
            params=partial.params,
            opt_state=partial.opt_state,
            num_steps=12,
            start_step=partial.step,
            steps_per_call=4,
        )
        whole = self.train(num_steps=20, steps_per_call=4)
        chex.assert_trees_all_equal(later.params, whole.params)
        chex.assert_trees_all_equal(later.opt_state, whole.opt_state)
        joined = jax.tree.map(
            lambda a, b: jnp.concatenate([a, b]), partial.history, later.history
        )
        chex.assert_trees_all_equal(joined, whole.history)
        assert later.step == whole.step == 20

    def test_ctrl_c_during_a_call_waits_for_its_outputs(self):
        # A real SIGINT, delivered while the first call traces: the call
        # completes, its outputs are kept, then KeyboardInterrupt is raised.
        def loss_fn(params, batch):
            signal.raise_signal(signal.SIGINT)
            return tasks.mse_loss(params, batch)

        with pytest.raises(KeyboardInterrupt) as caught:
            momentax.training.fit(
                loss_fn,
                self.OPT,
                tasks.init_params(),
                TASK.train,
                num_steps=9,
                steps_per_call=3,
            )
        partial = caught.value.fit_result
        assert partial.step == 3
        assert np.isfinite(float(partial.params["k"]))

    def test_an_error_while_tracing_donates_nothing(self):
        params = tasks.init_params()

        def loss_fn(params, batch):
            raise Stop

        with pytest.raises(Stop) as caught:
            momentax.training.fit(loss_fn, self.OPT, params, TASK.train, num_steps=3)
        assert caught.value.fit_result.step == 0
        assert caught.value.fit_result.history == {}
        assert float(params["k"]) == 0.0

    @parameterized.named_parameters(
        ("not_callable", 5, "callback must be a function"),
        ("one_argument", lambda done: None, "two positional arguments"),
        ("three_arguments", lambda a, b, c: None, "two positional arguments"),
    )
    def test_a_bad_callback_is_refused_before_anything_runs(self, callback, message):
        params = tasks.init_params()
        with pytest.raises(TypeError, match=message):
            self.train(params=params, num_steps=4, callback=callback)
        assert float(params["k"]) == 0.0  # nothing donated


class StepIndexTest(parameterized.TestCase):
    """Step indices are Python integers: no int32 wrap, any start."""

    def fit(self, start_step, num_steps=3):
        return momentax.training.fit(
            tasks.mse_loss,
            momentax.momentum(0.05, momentum=0.9),
            tasks.init_params(),
            minibatches(5),
            stacked=True,
            num_steps=num_steps,
            start_step=start_step,
        )

    @parameterized.parameters(2**31 - 2, 2**31, 2**63 + 1)
    def test_huge_start_steps_use_the_right_batches(self, start):
        # Five batches: 2**31 - 2 + 2 wrapped to -2**31 would pick batch 2, not 3.
        result = self.fit(start)
        same_batches = self.fit(start % 5)
        chex.assert_trees_all_equal(result.params, same_batches.params)
        assert result.step == start + 3


class Unhashable:
    __hash__ = None

    def __call__(self, *args):
        return tasks.mse_loss(*args)


class ValidationTest(parameterized.TestCase):
    def fit(self, **overrides):
        kwargs = dict(
            loss_fn=tasks.mse_loss,
            optimizer=momentax.momentum(0.1),
            params=tasks.init_params(),
            data=TASK.train,
            num_steps=3,
        )
        kwargs.update(overrides)
        return momentax.training.fit(**kwargs)

    @parameterized.named_parameters(
        ("unknown_record", {"record": ("loss", "hessian")}, ValueError, "'hessian'"),
        ("record_string", {"record": "loss"}, TypeError, "sequence of built-in"),
        ("record_none", {"record": None}, TypeError, "sequence of built-in"),
        ("record_not_callable", {"record": {"x": 1.0}}, TypeError, r"record\['x'\]"),
        ("record_key", {"record": {1: len}}, TypeError, "record keys"),
        ("no_num_steps", {"num_steps": None}, ValueError, "num_steps"),
        (
            "zero_steps",
            {"num_steps": 0},
            ValueError,
            "num_steps must be an integer >= 1",
        ),
        ("float_steps", {"num_steps": 2.0}, ValueError, "num_steps"),
        ("bad_per_call", {"steps_per_call": -1}, ValueError, "steps_per_call"),
        ("zero_per_call", {"steps_per_call": 0}, ValueError, "steps_per_call"),
        ("bool_per_call", {"steps_per_call": True}, ValueError, "steps_per_call"),
        (
            # One compiled lax.scan counts its steps in int32.
            "steps_beyond_int32",
            {"num_steps": 2**31},
            ValueError,
            r"num_steps=2147483648 is more steps than one compiled call can run "
            r"\(2147483647: .*\); pass steps_per_call",
        ),
        (
            "per_call_beyond_int32",
            {"num_steps": 2**40, "steps_per_call": 2**31},
            ValueError,
            r"steps_per_call=2147483648 is more steps than one compiled call",
        ),
        ("repeated_record", {"record": ("loss", "loss")}, ValueError, "more than once"),
        ("stacked_not_bool", {"stacked": 1}, TypeError, "stacked must be"),
        ("bad_loss", {"loss_fn": "mse"}, TypeError, "loss_fn"),
        ("bad_optimizer", {"optimizer": optax.sgd}, TypeError, "optimizer"),
        ("negative_start", {"start_step": -1}, ValueError, "start_step"),
        ("float_start", {"start_step": 1.5}, ValueError, "start_step"),
        ("bad_placement", {"placement": "data"}, TypeError, "placement must be"),
        (
            "state_of_another_optimizer",
            {"opt_state": optax.adam(0.1).init(tasks.init_params())},
            ValueError,
            "state of another optimizer",
        ),
        (
            "state_of_other_params",
            {
                "opt_state": momentax.momentum(0.1).init(
                    {"k": jnp.zeros(2), "b": jnp.zeros(())}
                )
            },
            ValueError,
            r"has shape \(2,\)",
        ),
    )
    def test_rejects(self, overrides, error, message):
        params = tasks.init_params()
        with pytest.raises(error, match=message):
            self.fit(params=params, **overrides)
        assert float(params["k"]) == 0.0  # refused before donating

    def test_accepts_numpy_integers_and_unhashable_callables(self):
        result = self.fit(
            loss_fn=Unhashable(), num_steps=np.int64(3), steps_per_call=np.int32(2)
        )
        assert result.history["loss"].shape == (3,)

    def test_rejects_shared_buffers_when_donating(self):
        tied = jnp.zeros(())
        with pytest.raises(ValueError, match=r"share an array.*donate=False"):
            self.fit(params={"k": tied, "b": tied})
        result = self.fit(params={"k": tied, "b": tied}, donate=False)
        assert np.isfinite(float(result.params["k"]))

    def test_rejects_ragged_batches(self):
        ragged = tasks.Batch(jnp.ones((4, 5)), jnp.ones((3, 5)))
        with pytest.raises(ValueError, match=r"leading lengths \[3, 4\]"):
            self.fit(data=ragged, stacked=True)

    def test_train_step_rejects_unknown_records(self):
        with pytest.raises(ValueError, match="'velocities'"):
            momentax.training.make_train_step(
                tasks.mse_loss, optax.sgd(0.1), record=("velocities",)
            )


class TrainStepMessagesTest(parameterized.TestCase):
    OPT = momentax.momentum(0.1, momentum=0.9)

    def test_tied_params_get_the_message_fit_gives(self):
        tied = jnp.zeros(())
        params = {"k": tied, "b": tied}
        step = momentax.training.make_train_step(tasks.mse_loss, self.OPT)
        with pytest.raises(ValueError, match=r"share an array.*donate=False"):
            step(params, self.OPT.init(params), TASK.train)
        assert not tied.is_deleted()
        step = momentax.training.make_train_step(tasks.mse_loss, self.OPT, donate=False)
        _, _, records = step(params, self.OPT.init(params), TASK.train)
        assert np.isfinite(float(records["loss"]))

    @parameterized.named_parameters(
        ("none", lambda p: None, TypeError, "opt_state is None"),
        ("adam", lambda p: optax.adam(0.1).init(p), ValueError, "another optimizer"),
        ("params", lambda p: p, ValueError, "another optimizer"),
    )
    def test_a_wrong_state_is_named(self, make_state, error, message):
        params = tasks.init_params()
        step = momentax.training.make_train_step(tasks.mse_loss, self.OPT)
        with pytest.raises(error, match=message):
            step(params, make_state(tasks.init_params()), TASK.train)
        assert float(params["k"]) == 0.0


class DeletedInputsTest(parameterized.TestCase):
    """Arrays consumed by an earlier donated call are named, with the cause."""

    OPT = momentax.momentum(0.1, momentum=0.9)
    MESSAGE = r"params\['b'\] is an array that has been deleted.*earlier donated call"

    def test_fit_names_a_params_leaf_an_earlier_fit_consumed(self):
        params = tasks.init_params()
        first = momentax.training.fit(
            tasks.mse_loss, self.OPT, params, TASK.train, num_steps=2
        )
        with pytest.raises(ValueError, match=self.MESSAGE):
            momentax.training.fit(
                tasks.mse_loss, self.OPT, params, TASK.train, num_steps=2
            )
        # The returned params are live and train on.
        again = momentax.training.fit(
            tasks.mse_loss, self.OPT, first.params, TASK.train, num_steps=2
        )
        assert np.isfinite(float(again.params["k"]))

    def test_fit_names_a_state_leaf(self):
        params = tasks.init_params()
        state = self.OPT.init(params)
        step = momentax.training.make_train_step(tasks.mse_loss, self.OPT)
        live_params, _, _ = step(tasks.init_params(), state, TASK.train)
        with pytest.raises(ValueError, match=r"opt_state\S* is an array that has"):
            momentax.training.fit(
                tasks.mse_loss,
                self.OPT,
                live_params,
                TASK.train,
                num_steps=2,
                opt_state=state,
            )
        assert not live_params["k"].is_deleted()  # refused before donating

    def test_the_train_step_names_a_leaf_it_consumed(self):
        params = tasks.init_params()
        step = momentax.training.make_train_step(tasks.mse_loss, self.OPT)
        step(params, self.OPT.init(params), TASK.train)
        with pytest.raises(ValueError, match=self.MESSAGE):
            step(params, self.OPT.init(tasks.init_params()), TASK.train)

"""The training utilities: train step, lax.scan fit, records, donation, velocity."""

import gc
import signal
import weakref

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
from tests.helpers import TOL

F32 = TOL[jnp.dtype("float32")]
TASK = tasks.noisy_line(seed=0)
RECORD = ("loss", "params", "grads", "updates", "velocity")
OPTIMIZERS = {
    "sutskever": lambda: momentax.momentum(0.01, momentum=0.93),
    "pytorch-nesterov": lambda: momentax.momentum(
        0.01, momentum=0.9, nesterov=True, convention="pytorch"
    ),
    "sgd": lambda: momentax.momentum(0.01, momentum=0.0),
    "optax-sgd": lambda: optax.sgd(0.01, momentum=0.9),
}


def stepwise(opt, steps, batches=None, record=RECORD):
    """The same training as fit, one jitted train-step call per step."""
    step = momentax.training.make_train_step(tasks.mse_loss, opt, record=record)
    params = tasks.init_params()
    state = opt.init(params)
    history = []
    for i in range(steps):
        index = i % 4
        batch = (
            TASK.train
            if batches is None
            else jax.tree.map(lambda b, index=index: b[index], batches)
        )
        params, state, records = step(params, state, batch)
        history.append(records)
    return params, state, jax.tree.map(lambda *xs: jnp.stack(xs), *history)


def fit_noisy(opt, num_steps, **kwargs):
    """``momentax.training.fit`` of the noisy task's MSE from k = b = 0, full batch."""
    return momentax.training.fit(
        tasks.mse_loss,
        opt,
        tasks.init_params(),
        TASK.train,
        num_steps=num_steps,
        **kwargs,
    )


def minibatches(count=4):
    """The noisy task's 80 training points as ``count`` stacked batches."""
    return jax.tree.map(lambda a: a.reshape(count, -1), TASK.train)


def velocity(state):
    return optax.tree.get(state, "velocity")


class FitMatchesStepwiseTest(parameterized.TestCase):
    @parameterized.named_parameters(*OPTIMIZERS.items())
    def test_full_batch(self, make_opt):
        opt = make_opt()
        fitted = fit_noisy(
            opt,
            60,
            record=RECORD,
        )
        params, state, history = stepwise(opt, 60)
        # Same operations; XLA may fuse the scan body differently from the single
        # step, so agreement is to float32 rounding (helpers.TOL), not bitwise.
        chex.assert_trees_all_close(fitted.params, params, **F32)
        chex.assert_trees_all_close(fitted.opt_state, state, **F32)
        chex.assert_trees_all_close(fitted.history, history, **F32)

    def test_stacked_batches_cycle(self):
        opt = momentax.momentum(0.05, momentum=0.9)
        fitted = momentax.training.fit(
            tasks.mse_loss,
            opt,
            tasks.init_params(),
            minibatches(),
            stacked=True,
            num_steps=10,
            record=RECORD,
        )
        params, _, history = stepwise(opt, 10, batches=minibatches())
        chex.assert_trees_all_close(fitted.params, params, **F32)
        chex.assert_trees_all_close(fitted.history, history, **F32)

    @parameterized.parameters(1, 4, 6)
    def test_start_step_continues_the_batch_cycle(self, start):
        # A run stopped after `start` steps and continued from start_step=start
        # is the uninterrupted run; continuing from step 0 would reuse batch 0.
        opt = momentax.momentum(0.05, momentum=0.9)
        common = dict(data=minibatches(), stacked=True, record=("loss",))
        whole = momentax.training.fit(
            tasks.mse_loss, opt, tasks.init_params(), num_steps=start + 5, **common
        )
        first = momentax.training.fit(
            tasks.mse_loss, opt, tasks.init_params(), num_steps=start, **common
        )
        later = momentax.training.fit(
            tasks.mse_loss,
            opt,
            first.params,
            opt_state=first.opt_state,
            num_steps=5,
            start_step=start,
            **common,
        )
        chex.assert_trees_all_equal(later.params, whole.params)
        chex.assert_trees_all_equal(
            later.history["loss"], whole.history["loss"][start:]
        )

    def test_batches_default_to_one_pass(self):
        result = momentax.training.fit(
            tasks.mse_loss,
            optax.sgd(0.01),
            tasks.init_params(),
            minibatches(),
            stacked=True,
        )
        assert result.history["loss"].shape == (4,)
        assert result.step == 4

    @parameterized.parameters(1, 7, 60)
    def test_steps_per_call_does_not_change_the_result(self, per_call):
        opt = momentax.momentum(0.01, momentum=0.93)
        whole = fit_noisy(
            opt,
            60,
            record=RECORD,
        )
        chunked = fit_noisy(
            opt,
            60,
            record=RECORD,
            steps_per_call=per_call,
        )
        chex.assert_trees_all_close(whole, chunked, **F32)
        assert chunked.history["loss"].shape == (60,)


class RecordTest(parameterized.TestCase):
    @parameterized.parameters("sutskever", "pytorch")
    def test_velocity_is_the_optimizer_state_after_each_step(self, convention):
        opt = momentax.momentum(0.01, momentum=0.93, convention=convention)
        result = fit_noisy(
            opt,
            30,
            record=("params", "grads", "velocity"),
        )
        # Replay the recorded gradients through the optimizer by hand: the
        # recorded velocity must be its state after every step, exactly.
        state = opt.init(tasks.init_params())
        for t in range(30):
            grads = jax.tree.map(lambda h, t=t: h[t], result.history["grads"])
            params = jax.tree.map(lambda h, t=t: h[t], result.history["params"])
            _, state = jax.jit(opt.update)(grads, state, params)
            recorded = jax.tree.map(lambda h, t=t: h[t], result.history["velocity"])
            chex.assert_trees_all_equal(recorded, velocity(state))
        chex.assert_trees_all_equal(state, result.opt_state)

    def test_plain_sgd_records_no_velocity(self):
        result = fit_noisy(
            momentax.momentum(0.1, momentum=0),
            3,
            record=("velocity",),
        )
        assert result.history["velocity"] is None

    def test_metrics_see_the_step(self):
        result = fit_noisy(
            momentax.momentum(0.01, momentum=0.9),
            20,
            record={
                "params": momentax.training.RECORDABLE["params"],
                "test_loss": lambda s: tasks.mse_loss(s.params, TASK.test),
            },
        )
        expected = jax.vmap(lambda k, b: tasks.mse_loss({"k": k, "b": b}, TASK.test))(
            result.history["params"]["k"], result.history["params"]["b"]
        )
        chex.assert_trees_all_close(result.history["test_loss"], expected, **F32)

    def test_train_step_returns_exactly_the_records_asked_for(self):
        opt = momentax.momentum(0.01, momentum=0.9)
        params = tasks.init_params()
        for record, keys in (((), set()), (("grads",), {"grads"})):
            step = momentax.training.make_train_step(tasks.mse_loss, opt, record=record)
            _, _, out = step(tasks.init_params(), opt.init(params), TASK.train)
            assert set(out) == keys

    def test_train_step_records_the_loss_by_default(self):
        opt = momentax.momentum(0.01, momentum=0.9)
        step = momentax.training.make_train_step(tasks.mse_loss, opt)
        params = tasks.init_params()
        expected = tasks.mse_loss(params, TASK.train)
        _, _, records = step(params, opt.init(params), TASK.train)
        assert set(records) == {"loss"}
        chex.assert_trees_all_close(records["loss"], expected, **F32)

    def test_velocity_reads_optax_trace(self):
        result = fit_noisy(optax.sgd(0.01, momentum=0.9), 3, record=("velocity",))
        chex.assert_trees_all_equal(
            jax.tree.map(lambda h: h[-1], result.history["velocity"]),
            result.opt_state[0].trace,
        )

    def test_velocity_is_not_confused_by_a_param_named_velocity(self):
        # optax.tree.get alone would also match the params' dict key.
        def loss_fn(params, batch):
            return tasks.mse_loss({"k": params["velocity"], "b": params["b"]}, batch)

        params = {"velocity": jnp.array(0.0), "b": jnp.array(0.0)}
        result = momentax.training.fit(
            loss_fn,
            optax.sgd(0.1, momentum=0.9),
            params,
            TASK.train,
            num_steps=2,
            record=("velocity",),
        )
        assert result.history["velocity"]["velocity"].shape == (2,)
        assert set(result.history["velocity"]) == {"velocity", "b"}
        with pytest.raises(ValueError, match="neither: drop 'velocity'"):
            momentax.training.fit(
                loss_fn,
                optax.rmsprop(0.1),
                result.params,
                TASK.train,
                num_steps=2,
                record=("velocity",),
            )
        assert not result.params["b"].is_deleted()  # refused before donating


class ReproducibilityAndDonationTest(parameterized.TestCase):
    def test_runs_are_bitwise_reproducible_from_a_seed(self):
        def once():
            task = tasks.noisy_line(seed=3)
            return momentax.training.fit(
                tasks.mse_loss,
                momentax.momentum(0.01, momentum=0.93),
                tasks.init_params(),
                data=task.train,
                num_steps=100,
                record=RECORD,
            )

        chex.assert_trees_all_equal(once(), once())

    def test_train_step_donates_and_returned_values_are_reusable(self):
        opt = momentax.momentum(0.01, momentum=0.9)
        step = momentax.training.make_train_step(tasks.mse_loss, opt)
        params = tasks.init_params()
        state = opt.init(params)
        new_params, new_state, _ = step(params, state, TASK.train)
        assert all(leaf.is_deleted() for leaf in jax.tree.leaves((params, state)))
        # The returned buffers are live: read them, and feed them to more steps.
        k = float(new_params["k"])
        for _ in range(3):
            new_params, new_state, _ = step(new_params, new_state, TASK.train)
        assert np.isfinite(k) and np.isfinite(float(new_params["k"]))
        assert not TASK.train.x.is_deleted()  # the batch is never donated

    def test_fit_donates_its_inputs_and_returns_live_values(self):
        params = tasks.init_params()
        opt = momentax.momentum(0.01, momentum=0.9)
        state = opt.init(params)
        result = momentax.training.fit(
            tasks.mse_loss,
            opt,
            params,
            opt_state=state,
            data=TASK.train,
            num_steps=5,
            steps_per_call=2,
        )
        assert all(leaf.is_deleted() for leaf in jax.tree.leaves((params, state)))
        again = momentax.training.fit(
            tasks.mse_loss,
            momentax.momentum(0.01, momentum=0.9),
            result.params,
            data=TASK.train,
            num_steps=5,
            opt_state=result.opt_state,
        )
        assert np.isfinite(float(again.params["k"]))

    @parameterized.parameters("train_step", "fit")
    def test_donate_false_keeps_the_inputs(self, kind):
        opt = momentax.momentum(0.01, momentum=0.9)
        params = tasks.init_params()
        if kind == "fit":
            momentax.training.fit(
                tasks.mse_loss, opt, params, data=TASK.train, num_steps=2, donate=False
            )
        else:
            step = momentax.training.make_train_step(tasks.mse_loss, opt, donate=False)
            step(params, opt.init(params), TASK.train)
        assert float(params["k"]) == 0.0


def counting_loss(traces):
    """The noisy task's MSE, appending to ``traces`` each time it is traced."""

    def loss_fn(params, batch):
        traces.append(1)  # runs only while tracing
        return tasks.mse_loss(params, batch)

    return loss_fn


class CompilationTest(parameterized.TestCase):
    def test_fit_compiles_once_per_chunk_length(self):
        traces = []
        loss_fn = counting_loss(traces)
        opt = momentax.momentum(0.01, momentum=0.9)
        test_loss = {"test": lambda s: tasks.mse_loss(s.params, TASK.test)}
        for _ in range(2):
            momentax.training.fit(
                loss_fn, opt, tasks.init_params(), TASK.train, num_steps=10
            )
        assert len(traces) == 1
        # 25 steps in calls of 10: two full calls reuse one trace, the last 5 adds one.
        momentax.training.fit(
            loss_fn,
            opt,
            tasks.init_params(),
            TASK.train,
            num_steps=25,
            steps_per_call=10,
        )
        assert len(traces) == 2
        # The same record functions: one more trace for the new records, then none.
        for _ in range(2):
            momentax.training.fit(
                loss_fn,
                opt,
                tasks.init_params(),
                TASK.train,
                num_steps=10,
                record=test_loss,
            )
        assert len(traces) == 3

    def test_the_cache_does_not_keep_dropped_objects_alive(self):
        def train_once():
            loss_fn = counting_loss([])
            opt = momentax.momentum(0.01, momentum=0.9)
            test_loss = lambda s: tasks.mse_loss(s.params, TASK.test)  # noqa: E731
            momentax.training.fit(
                loss_fn,
                opt,
                tasks.init_params(),
                TASK.train,
                num_steps=3,
                record={"test": test_loss},
            )
            # An optax optimizer is a NamedTuple (no weakrefs): watch its functions.
            return [weakref.ref(x) for x in (loss_fn, opt.init, opt.update, test_loss)]

        refs = train_once()
        gc.collect()
        assert [ref() for ref in refs] == [None] * len(refs)

    def test_objects_without_weakrefs_still_train(self):
        class Slotted:  # Neither hashable nor weakly referenceable.
            __slots__ = ()
            __hash__ = None

            def __call__(self, params, batch):
                return tasks.mse_loss(params, batch)

        result = momentax.training.fit(
            Slotted(), optax.sgd(0.1), tasks.init_params(), TASK.train, num_steps=3
        )
        assert result.history["loss"].shape == (3,)

    def test_callback_reports_progress_after_each_call(self):
        calls = []
        fit_noisy(
            momentax.momentum(0.01, momentum=0.9),
            25,
            steps_per_call=10,
            callback=lambda done, total: calls.append((done, total)),
        )
        assert calls == [(10, 25), (20, 25), (25, 25)]


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

"""The training utilities: train step, lax.scan fit, records, donation, velocity."""

import gc
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

    def test_two_velocities_are_refused_by_name(self):
        opt = optax.chain(momentax.scale_by_momentum(0.9), momentax.momentum(0.1))
        with pytest.raises(ValueError, match=r"ambiguous: .* holds 2 'velocity'"):
            fit_noisy(opt, 2, record=("velocity",))

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

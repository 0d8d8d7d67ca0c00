"""Schedules, per-leaf hyperparameters and the absence of retracing."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized

import momentax
from tests import helpers

LINE = {"k": jnp.array([0.5]), "b": jnp.array([-1.0])}


def _per_leaf_reference(opt_k, opt_b, params, grads, variant):
    """Runs one optimizer on the slope and another on the intercept."""
    k, _ = helpers.run(opt_k, params["k"], [g["k"] for g in grads], variant)
    b, _ = helpers.run(opt_b, params["b"], [g["b"] for g in grads], variant)
    return {"k": k, "b": b}


class PerLeafTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(convention=momentax.CONVENTIONS)
    def test_per_leaf_learning_rates_and_momenta(self, convention):
        grads = helpers.gradient_stream(LINE, 40)
        schedule = lambda count: jnp.where(count < 20, 0.1, 0.01)  # noqa: E731
        opt = momentax.momentum(
            {"k": 0.01, "b": schedule}, {"k": 0.9, "b": 0.5}, convention=convention
        )
        got, _ = helpers.run(opt, LINE, grads, self.variant)
        want = _per_leaf_reference(
            momentax.momentum(0.01, 0.9, convention=convention),
            momentax.momentum(schedule, 0.5, convention=convention),
            LINE,
            grads,
            self.variant,
        )
        chex.assert_trees_all_close(got, want, **helpers.TOL[jnp.dtype("float32")])

    @chex.variants(with_jit=True, without_jit=True)
    def test_prefix_tree_applies_to_whole_subtrees(self):
        params = {"body": helpers.nested_params(), "head": jnp.ones(3)}
        grads = helpers.gradient_stream(params, 10)
        opt = momentax.momentum({"body": 0.0, "head": 0.1})
        got, _ = helpers.run(opt, params, grads, self.variant)
        chex.assert_trees_all_equal(got["body"], params["body"])
        want, _ = helpers.run(
            momentax.momentum(0.1), params["head"], [g["head"] for g in grads]
        )
        chex.assert_trees_all_close(
            got["head"], want, **helpers.TOL[jnp.dtype("float32")]
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_schedule_is_evaluated_at_the_step_count(self):
        opt = momentax.momentum(
            lambda count: 0.1 * (count.astype(jnp.float32) + 1), momentum=0
        )
        update = self.variant(opt.update)
        state = opt.init(LINE)
        for step in range(3):
            updates, state = update(LINE, state)
            # lr_t = 0.1 (t + 1) with t = 0, 1, 2 the updates already applied.
            scale = -0.1 * (step + 1)
            want = jax.tree.map(lambda p, scale=scale: scale * p, LINE)
            chex.assert_trees_all_close(updates, want, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_momentum_schedule(self):
        grads = helpers.gradient_stream(LINE, 20)
        schedule = optax.linear_schedule(0.5, 0.99, transition_steps=20)
        opt = momentax.scale_by_momentum(schedule)
        _, state = helpers.run(opt, LINE, grads, self.variant)
        velocity = jax.tree.map(jnp.zeros_like, LINE)
        for t, g in enumerate(grads):
            velocity = jax.tree.map(lambda b, g, t=t: schedule(t) * b + g, velocity, g)
        chex.assert_trees_all_close(
            helpers.velocity(state), velocity, **helpers.TOL[jnp.dtype("float32")]
        )


class ZeroMomentumStepTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(convention=momentax.CONVENTIONS, dampening=(0.0, 0.3))
    def test_a_zero_momentum_step_restarts_the_buffer(self, convention, dampening):
        # A momentum warm-up from 0 and a schedule that drops to 0 mid-run.
        momenta = [0.0, 0.5, 0.9, 0.9, 0.0, 0.0, 0.9, 0.9, 0.9, 0.9]
        with jax.enable_x64(True):
            params = jnp.asarray([0.5, -1.0, 2.0])
            grads = helpers.gradient_stream(params, len(momenta))
            opt = momentax.momentum(
                0.1,
                lambda count: jnp.asarray(momenta)[count],
                dampening=dampening,
                convention=convention,
            )
            got, _ = helpers.run(opt, params, grads, self.variant)
        want, _ = helpers.reference_momentum(
            np.asarray(params),
            [np.asarray(g) for g in grads],
            learning_rate=lambda t: 0.1,
            momentum=lambda t: momenta[t],
            dampening=dampening,
            convention=convention,
        )
        np.testing.assert_allclose(got, want, rtol=1e-12)


class OptaxScheduleTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    # Named cases: a function's repr holds its address, which differs between the
    # processes of a parallel run (pytest-xdist), which must collect the same ids.
    @parameterized.named_parameters(
        ("cosine", optax.cosine_decay_schedule(0.1, 30)),
        ("piecewise", optax.piecewise_constant_schedule(0.1, {10: 0.5, 20: 0.5})),
        ("warmup_cosine", optax.warmup_cosine_decay_schedule(0.0, 0.1, 5, 30)),
    )
    def test_optax_schedules(self, schedule):
        # These Optax schedules need standard dtype promotion (conftest sets strict).
        with jax.numpy_dtype_promotion("standard"):
            params = helpers.nested_params()
            grads = helpers.gradient_stream(params, 30)
            ours = momentax.momentum(schedule, 0.9, convention="pytorch")
            got, _ = helpers.run(ours, params, grads, self.variant)
            want, _ = helpers.run(optax.sgd(schedule, 0.9), params, grads)
        chex.assert_trees_all_close(got, want, **helpers.TOL[jnp.dtype("float32")])


class NoRetraceTest(chex.TestCase):
    def setUp(self):
        super().setUp()
        chex.clear_trace_counter()  # the counter is keyed by code, shared by parameters

    @parameterized.product(convention=momentax.CONVENTIONS)
    def test_schedules_and_per_leaf_values_never_retrace(self, convention):
        opt = momentax.momentum(
            {"k": helpers.warmup_then_decay, "b": 0.05},
            optax.linear_schedule(0.5, 0.9, 30),
            weight_decay=1e-3,
            convention=convention,
        )
        step = jax.jit(chex.assert_max_traces(helpers.make_step(opt), n=1))
        params, state = LINE, opt.init(LINE)
        learning_rates = set()
        for g in helpers.gradient_stream(LINE, 60):
            learning_rates.add(
                float(helpers.warmup_then_decay(helpers.counts(state)[0]))
            )
            params, state = step(params, state, g)
        self.assertGreater(len(learning_rates), 50)  # the value really changed

    @parameterized.product(convention=momentax.CONVENTIONS)
    def test_injected_values_never_retrace(self, convention):
        opt = optax.inject_hyperparams(momentax.momentum, static_args=("convention",))(
            learning_rate=0.1, momentum=0.9, convention=convention
        )
        step = jax.jit(chex.assert_max_traces(helpers.make_step(opt), n=1))
        params, state = LINE, opt.init(LINE)
        for i, g in enumerate(helpers.gradient_stream(LINE, 30)):
            state.hyperparams["learning_rate"] = jnp.asarray(0.1 / (i + 1), jnp.float32)
            state.hyperparams["momentum"] = jnp.asarray(0.5 + i / 100, jnp.float32)
            params, state = step(params, state, g)

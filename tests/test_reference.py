"""momentax against optax.sgd and against closed forms."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized

import momentax
from tests import helpers

STEPS = 100
LR, MU = 0.05, 0.9
SCHEDULE = helpers.warmup_then_decay


class OptaxParityTest(chex.TestCase):
    def _run_pair(self, device_name, ours, reference):
        device = helpers.DEVICES[device_name]
        with jax.default_device(device):
            params = jax.device_put(helpers.nested_params(), device)
            grads = jax.device_put(helpers.gradient_stream(params, STEPS), device)
            got = helpers.run(ours, params, grads, self.variant)
            want = helpers.run(reference, params, grads, self.variant)
        helpers.assert_on_device(got, device)
        return got, want

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(
        convention=momentax.CONVENTIONS,
        nesterov=(False, True),
        device=helpers.DEVICE_NAMES,
    )
    def test_constant_lr_matches_optax_sgd(self, convention, nesterov, device):
        ours = momentax.momentum(LR, MU, nesterov=nesterov, convention=convention)
        reference = optax.sgd(LR, MU, nesterov=nesterov)
        (params, state), (want_params, want_state) = self._run_pair(
            device, ours, reference
        )
        chex.assert_trees_all_close(
            params, want_params, **helpers.TOL[jnp.dtype("float32")]
        )
        # The velocity is Optax's trace, scaled by -lr under "sutskever".
        scale = -LR if convention == "sutskever" else 1.0
        want_velocity = jax.tree.map(lambda t: scale * t, want_state[0].trace)
        chex.assert_trees_all_close(
            helpers.velocity(state), want_velocity, **helpers.TOL[jnp.dtype("float32")]
        )
        self.assertEqual(helpers.counts(state), [])  # a constant rate counts nothing

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(nesterov=(False, True), device=helpers.DEVICE_NAMES)
    def test_pytorch_convention_under_schedule_matches_optax_sgd(
        self, nesterov, device
    ):
        ours = momentax.momentum(SCHEDULE, MU, nesterov=nesterov, convention="pytorch")
        reference = optax.sgd(SCHEDULE, MU, nesterov=nesterov)
        (params, _), (want, _) = self._run_pair(device, ours, reference)
        chex.assert_trees_all_close(params, want, **helpers.TOL[jnp.dtype("float32")])

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(nesterov=(False, True), device=helpers.DEVICE_NAMES)
    def test_sutskever_under_schedule_is_a_trace_of_scaled_gradients(
        self, nesterov, device
    ):
        # v_t = mu v_{t-1} - lr_t g_t is Optax's trace of the pre-scaled -lr_t g_t.
        ours = momentax.momentum(SCHEDULE, MU, nesterov=nesterov)
        reference = optax.chain(
            optax.scale_by_schedule(lambda count: -SCHEDULE(count)),
            optax.trace(MU, nesterov=nesterov),
        )
        (params, state), (want, want_state) = self._run_pair(device, ours, reference)
        tol = helpers.TOL[jnp.dtype("float32")]
        chex.assert_trees_all_close(params, want, **tol)
        chex.assert_trees_all_close(helpers.velocity(state), want_state[1].trace, **tol)

    @chex.variants(with_jit=True, without_jit=True)
    def test_conventions_differ_under_a_schedule(self):
        params = helpers.nested_params()
        grads = helpers.gradient_stream(params, 30)
        tol = helpers.TOL[jnp.dtype("float32")]
        inside, _ = helpers.run(
            momentax.momentum(SCHEDULE, MU), params, grads, self.variant
        )
        outside, _ = helpers.run(
            momentax.momentum(SCHEDULE, MU, convention="pytorch"),
            params,
            grads,
            self.variant,
        )
        with self.assertRaises(AssertionError):
            chex.assert_trees_all_close(inside, outside, **tol)

    @chex.variants(with_jit=True, without_jit=True)
    def test_pytorch_equals_sutskever_with_rescaled_momentum(self):
        # lr outside == lr inside run with momentum mu * lr_t / lr_{t-1}.
        def rescaled_momentum(count):
            previous = SCHEDULE(jnp.maximum(count - 1, 0))
            return MU * SCHEDULE(count) / previous

        params = helpers.nested_params()
        grads = helpers.gradient_stream(params, STEPS)
        outside, outside_state = helpers.run(
            momentax.momentum(SCHEDULE, MU, convention="pytorch"),
            params,
            grads,
            self.variant,
        )
        inside, inside_state = helpers.run(
            momentax.momentum(SCHEDULE, rescaled_momentum), params, grads, self.variant
        )
        tol = helpers.TOL[jnp.dtype("float32")]
        chex.assert_trees_all_close(inside, outside, **tol)
        # v_t = -lr_t b_t, with lr_t the rate of the last step taken.
        last_lr = SCHEDULE(STEPS - 1)
        chex.assert_trees_all_close(
            helpers.velocity(inside_state),
            jax.tree.map(lambda b: -last_lr * b, helpers.velocity(outside_state)),
            **tol,
        )


class ClosedFormTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(
        {"convention": c, "nesterov": n, "dampening": d, "device": device}
        for c in momentax.CONVENTIONS
        for n, d in ((False, 0.0), (False, 0.25), (True, 0.0))
        for device in helpers.DEVICE_NAMES
    )
    def test_constant_gradient(self, convention, nesterov, dampening, device):
        device = helpers.DEVICES[device]
        lr, mu, g, steps = 0.1, 0.8, 1.5, 20
        opt = momentax.momentum(
            lr, mu, nesterov=nesterov, dampening=dampening, convention=convention
        )
        update = self.variant(opt.update)
        with jax.default_device(device):
            params = jnp.zeros([2], jnp.float32)
            state = opt.init(params)
            grads = jnp.full([2], g, jnp.float32)
            for t in range(1, steps + 1):
                updates, state = update(grads, state, params)
                # b_1 = g; b_t = mu b_{t-1} + (1 - d) g, summed in closed form.
                buffer = mu ** (t - 1) * g + (1 - dampening) * g * (
                    1 - mu ** (t - 1)
                ) / (1 - mu)
                want_update = -lr * (g + mu * buffer if nesterov else buffer)
                want_velocity = -lr * buffer if convention == "sutskever" else buffer
                np.testing.assert_allclose(updates, want_update, rtol=1e-5)
                np.testing.assert_allclose(
                    helpers.velocity(state), want_velocity, rtol=1e-5
                )
        helpers.assert_on_device(state, device)

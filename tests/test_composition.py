"""momentax inside Optax's wrappers and Flax's TrainState."""

import chex
import jax
import jax.numpy as jnp
import optax
from absl.testing import parameterized

import momentax
from tests import helpers

flax_train_state = helpers.optional_import("flax.training.train_state")

TOL = helpers.TOL[jnp.dtype("float32")]


class CompositionTest(chex.TestCase):
    # Optax's wrappers around momentax, jitted as a training loop runs them (the
    # eager update is checked against references in test_properties.py).
    def setUp(self):
        super().setUp()
        self.params = helpers.nested_params()
        self.grads = helpers.gradient_stream(self.params, 12)

    @chex.variants(with_jit=True)
    @parameterized.product(convention=momentax.CONVENTIONS)
    def test_chain_after_clipping(self, convention):
        opt = momentax.momentum(0.1, convention=convention)
        chained = optax.chain(optax.clip_by_global_norm(0.5), opt)
        got, state = helpers.run(chained, self.params, self.grads, self.variant)
        clip = optax.clip_by_global_norm(0.5)
        clipped = [clip.update(g, clip.init(g))[0] for g in self.grads]
        want, _ = helpers.run(opt, self.params, clipped)
        chex.assert_trees_all_close(got, want, **TOL)
        # The buffer is the momentum piece's: after the learning rate (sutskever)
        # or before it (pytorch).
        position = 1 if convention == "sutskever" else 0
        self.assertIs(
            optax.tree_utils.tree_get(state, "velocity"), state[1][position].velocity
        )

    @chex.variants(with_jit=True)
    @parameterized.product(convention=momentax.CONVENTIONS)
    def test_inject_hyperparams_changed_between_steps(self, convention):
        injected = optax.inject_hyperparams(
            momentax.momentum, static_args="convention"
        )(learning_rate=0.1, momentum=0.9, convention=convention)
        step = self.variant(helpers.make_step(injected))
        params, state = self.params, injected.init(self.params)
        for i, g in enumerate(self.grads):
            if i == 6:  # halve the rate, lower the momentum half-way through
                state.hyperparams["learning_rate"] = jnp.asarray(0.05, jnp.float32)
                state.hyperparams["momentum"] = jnp.asarray(0.5, jnp.float32)
            params, state = step(params, state, g)
        # The same change written as schedules of the step count.
        scheduled = momentax.momentum(
            lambda c: jnp.where(c < 6, 0.1, 0.05),
            lambda c: jnp.where(c < 6, 0.9, 0.5),
            convention=convention,
        )
        want, want_state = helpers.run(scheduled, self.params, self.grads)
        chex.assert_trees_all_close(params, want, **TOL)
        chex.assert_trees_all_close(
            optax.tree_utils.tree_get(state, "velocity"),
            helpers.velocity(want_state),
            **TOL,
        )

    @chex.variants(with_jit=True)
    def test_multi_steps_averages_micro_batches(self):
        opt = momentax.momentum(0.1, nesterov=True)
        # optax.MultiSteps divides by its int32 step counter: standard promotion only.
        with jax.numpy_dtype_promotion("standard"):
            multi = optax.MultiSteps(opt, 3)
            got, _ = helpers.run(multi, self.params, self.grads, self.variant)
        means = [
            jax.tree.map(lambda *g: sum(g) / 3, *self.grads[i : i + 3])
            for i in range(0, len(self.grads), 3)
        ]
        want, _ = helpers.run(opt, self.params, means)
        chex.assert_trees_all_close(got, want, **TOL)

    @chex.variants(with_jit=True)
    def test_masked_touches_only_the_masked_leaves(self):
        mask = jax.tree.map(lambda _: False, self.params) | {
            "dense": {"w": True, "b": True}
        }
        opt = momentax.momentum(0.1, weight_decay=0.01)
        masked = optax.masked(opt, mask)
        state = masked.init(self.params)
        update = self.variant(masked.update)
        for g in self.grads:
            updates, state = update(g, state, self.params)
        # Masked-out leaves pass through unchanged (Optax's rule); no buffer for them.
        chex.assert_trees_all_equal(updates["blocks"], self.grads[-1]["blocks"])
        velocity = optax.tree_utils.tree_get(state, "velocity")
        self.assertEqual(jax.tree.structure(velocity["blocks"]).num_leaves, 0)
        want_state = opt.init(self.params["dense"])
        for g in self.grads:
            want_updates, want_state = opt.update(
                g["dense"], want_state, self.params["dense"]
            )
        chex.assert_trees_all_close(updates["dense"], want_updates, **TOL)

    @chex.variants(with_jit=True)
    @parameterized.parameters(jnp.nan, jnp.inf)
    def test_apply_if_finite_skips_bad_steps(self, bad):
        opt = optax.apply_if_finite(momentax.momentum(0.1), max_consecutive_errors=5)
        grads = list(self.grads)
        grads[4] = jax.tree.map(lambda g: g.at[...].set(bad), grads[4])
        update = self.variant(opt.update)
        state = opt.init(self.params)
        for g in grads[:4]:
            _, state = update(g, state, self.params)
        before = optax.tree_utils.tree_get(state, "velocity")
        updates, state = update(grads[4], state, self.params)
        chex.assert_trees_all_equal(
            optax.tree_utils.tree_get(state, "velocity"), before
        )
        chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, self.params))
        self.assertEqual(int(state.notfinite_count), 1)
        chex.assert_tree_all_finite(before)

    @chex.variants(with_jit=True)
    def test_flax_train_state(self):
        if flax_train_state is None:
            self.skipTest("flax is not installed: pip install flax")
        opt = momentax.momentum(helpers.warmup_then_decay, 0.9, convention="pytorch")
        ts = flax_train_state.TrainState.create(
            apply_fn=None, params=self.params, tx=opt
        )
        apply = self.variant(lambda ts, g: ts.apply_gradients(grads=g))
        for g in self.grads:
            ts = apply(ts, g)
        want, _ = helpers.run(opt, self.params, self.grads)
        chex.assert_trees_all_close(ts.params, want, **TOL)
        self.assertEqual(int(ts.step), len(self.grads))
        self.assertIsNotNone(optax.tree_utils.tree_get(ts.opt_state, "velocity"))

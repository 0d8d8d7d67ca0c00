"""Dtypes, tree shapes, complex params and the momentum=0 fast path."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import momentax
from tests import helpers


def _dtypes(tree):
    return jax.tree.map(lambda x: x.dtype, tree)


# (convention, param dtype, accumulator dtype): each compiles a step. The fast tier
# takes every pair of values (9 cases), the slow tier the other 9.
DTYPE_GRID = list(
    itertools.product(
        momentax.CONVENTIONS,
        ("bfloat16", "float16", "float32"),
        (None, "float32", "bfloat16"),
    )
)
DTYPE_FAST = helpers.pairwise(DTYPE_GRID)


def _dtype_cases(cases):
    return [
        {
            "testcase_name": f"_{convention}_{param}_{accumulator}",
            "convention": convention,
            "param_dtype": param,
            "accumulator_dtype": accumulator,
        }
        for convention, param, accumulator in cases
    ]


class StateDtypeCheck:
    """The dtypes a state keeps over three steps, jitted."""

    # Jitted: eager steps keep their dtypes under Hypothesis (test_properties.py).
    def check_state_keeps_its_dtypes(self, convention, param_dtype, accumulator_dtype):
        params = helpers.nested_params(param_dtype)
        # Hyperparameters as float32 arrays: Optax would upcast a bf16 state here.
        opt = momentax.momentum(
            jnp.array(0.1, jnp.float32),
            jnp.array(0.9, jnp.float32),
            dampening=jnp.array(0.1, jnp.float32),
            weight_decay=jnp.array(1e-3, jnp.float32),
            convention=convention,
            accumulator_dtype=accumulator_dtype,
        )
        state = opt.init(params)
        velocity_dtype = accumulator_dtype or param_dtype
        chex.assert_trees_all_equal_dtypes(
            helpers.velocity(state),
            jax.tree.map(lambda p: p.astype(velocity_dtype), params),
        )
        # Dampening reads the step count: the one count of the state.
        self.assertEqual(optax.tree.get(state, "count").dtype, jnp.int32)
        update = self.variant(opt.update)
        for grads in helpers.gradient_stream(params, 3):
            updates, new_state = update(grads, state, params)
            chex.assert_trees_all_equal_structs(new_state, state)
            chex.assert_trees_all_equal_dtypes(new_state, state)
            chex.assert_trees_all_equal_shapes(new_state, state)
            chex.assert_trees_all_equal_dtypes(updates, grads)
            state = new_state


class DtypeTest(StateDtypeCheck, chex.TestCase):
    @chex.variants(with_jit=True)
    @parameterized.named_parameters(*_dtype_cases(DTYPE_FAST))
    def test_state_keeps_its_dtypes(self, convention, param_dtype, accumulator_dtype):
        self.check_state_keeps_its_dtypes(convention, param_dtype, accumulator_dtype)

    @parameterized.product(convention=momentax.CONVENTIONS)
    def test_lax_scan_carry_is_stable_for_bf16(self, convention):
        params = helpers.nested_params(jnp.bfloat16)
        grads = helpers.gradient_stream(params, 5)
        stacked = jax.tree.map(lambda *g: jnp.stack(g), *grads)
        opt = momentax.momentum(0.1, jnp.array(0.9, jnp.float32), convention=convention)

        def body(carry, g):
            params, state = carry
            updates, state = opt.update(g, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params_out, state), _ = jax.lax.scan(body, (params, opt.init(params)), stacked)
        chex.assert_trees_all_equal_dtypes(params_out, params)
        self.assertEqual(helpers.counts(state), [])  # nothing reads a count here

    def test_float32_accumulator_accumulates_in_float32(self):
        params = helpers.nested_params(jnp.bfloat16)
        grads = helpers.gradient_stream(params, 20)
        opt = momentax.scale_by_momentum(0.9, accumulator_dtype=jnp.float32)
        reference = momentax.scale_by_momentum(0.9)
        _, state = helpers.run(opt, params, grads, jax.jit)
        grads32 = [jax.tree.map(lambda g: g.astype(jnp.float32), g) for g in grads]
        params32 = jax.tree.map(lambda p: p.astype(jnp.float32), params)
        _, want = helpers.run(reference, params32, grads32, jax.jit)
        # Same f32 arithmetic on the same (bf16-exact) gradients: equal to f32 rounding.
        chex.assert_trees_all_close(
            helpers.velocity(state), helpers.velocity(want), rtol=1e-6
        )
        _, bf16_state = helpers.run(reference, params, grads, jax.jit)
        with self.assertRaises(AssertionError):  # a bf16 buffer is visibly coarser
            chex.assert_trees_all_close(
                bf16_state.velocity, helpers.velocity(want), rtol=1e-6
            )

    def test_float64_accumulator_under_x64(self):
        with jax.enable_x64(True):
            params = helpers.nested_params(jnp.float32)
            opt = momentax.momentum(0.1, accumulator_dtype=jnp.float64)
            state = opt.init(params)
            _, state = jax.jit(opt.update)(params, state, params)
            for leaf in jax.tree.leaves(helpers.velocity(state)):
                self.assertEqual(leaf.dtype, jnp.float64)


@pytest.mark.slow
class DtypeGridTest(StateDtypeCheck, chex.TestCase):
    @chex.variants(with_jit=True)
    @parameterized.named_parameters(
        *_dtype_cases(case for case in DTYPE_GRID if case not in DTYPE_FAST)
    )
    def test_state_keeps_its_dtypes(self, convention, param_dtype, accumulator_dtype):
        self.check_state_keeps_its_dtypes(convention, param_dtype, accumulator_dtype)


class TreeTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(convention=momentax.CONVENTIONS, momentum=(0, 0.9))
    def test_none_leaves_are_preserved(self, convention, momentum):
        params = {"w": jnp.ones(3), "frozen": None, "nested": [None, jnp.ones(2)]}
        opt = momentax.momentum(0.1, momentum, weight_decay=0.01, convention=convention)
        state = opt.init(params)
        updates, new_state = self.variant(opt.update)(params, state, params)
        chex.assert_trees_all_equal_structs(updates, params)
        chex.assert_trees_all_equal_structs(new_state, state)
        self.assertIsNone(updates["frozen"])
        if momentum:
            self.assertIsNone(helpers.velocity(new_state)["nested"][0])

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(convention=momentax.CONVENTIONS, nesterov=(False, True))
    def test_complex_params_match_optax(self, convention, nesterov):
        rng = np.random.default_rng(3)
        params = {
            "z": jnp.asarray(
                rng.normal(size=4) + 1j * rng.normal(size=4), jnp.complex64
            )
        }
        grads = [
            {
                "z": jnp.asarray(
                    rng.normal(size=4) + 1j * rng.normal(size=4), jnp.complex64
                )
            }
            for _ in range(30)
        ]
        ours = momentax.momentum(
            0.05,
            0.9,
            nesterov=nesterov,
            convention=convention,
            accumulator_dtype="float32",
        )
        got, state = helpers.run(ours, params, grads, self.variant)
        want, _ = helpers.run(optax.sgd(0.05, 0.9, nesterov=nesterov), params, grads)
        chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
        # The imaginary part is kept: a real f32 accumulator would drop it.
        self.assertEqual(helpers.velocity(state)["z"].dtype, jnp.complex64)

    def test_complex_params_with_float64_accumulator(self):
        with jax.enable_x64(True):
            params = jnp.ones(2, jnp.complex64)
            state = momentax.momentum(0.1, accumulator_dtype="float64").init(params)
            self.assertEqual(helpers.velocity(state).dtype, jnp.complex128)


class NoMomentumTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(convention=momentax.CONVENTIONS, momentum=(0, 0.0))
    def test_zero_momentum_is_plain_sgd_without_buffer(self, convention, momentum):
        params = helpers.nested_params()
        grads = helpers.gradient_stream(params, 10)
        opt = momentax.momentum(0.1, momentum, convention=convention)
        got, state = helpers.run(opt, params, grads, self.variant)
        want, _ = helpers.run(optax.sgd(0.1), params, grads)
        chex.assert_trees_all_close(got, want, **helpers.TOL[jnp.dtype("float32")])
        self.assertIsNone(helpers.velocity(state))
        self.assertEqual(jax.tree.leaves(state), [])  # no buffer and no count

    def test_scale_by_momentum_zero_is_the_identity(self):
        opt = momentax.scale_by_momentum(0)
        params = helpers.nested_params()
        updates, state = opt.update(params, opt.init(params))
        chex.assert_trees_all_equal(updates, params)
        self.assertIsNone(helpers.velocity(state))

    @parameterized.product(convention=momentax.CONVENTIONS)
    def test_dampening_has_no_effect_without_momentum(self, convention):
        # As in torch.optim.SGD; also when momentum is an array known only at run time.
        params = helpers.nested_params()
        grads = helpers.gradient_stream(params, 5)
        opt = momentax.momentum(
            0.1, jnp.array(0.0), dampening=0.5, convention=convention
        )
        got, _ = helpers.run(opt, params, grads)
        want, _ = helpers.run(optax.sgd(0.1), params, grads)
        chex.assert_trees_all_close(got, want, **helpers.TOL[jnp.dtype("float32")])

    def test_array_momentum_zero_keeps_a_buffer(self):
        # An array may change at run time (inject_hyperparams), so the buffer stays.
        state = momentax.momentum(0.1, jnp.array(0.0)).init(helpers.nested_params())
        chex.assert_trees_all_equal_shapes(
            helpers.velocity(state), helpers.nested_params()
        )

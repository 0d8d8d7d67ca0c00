"""Property tests: random trees, dtypes and hyperparameters.

The update rule's Hypothesis grid is :func:`test_named_error_or_reference_numbers`:
for every drawn combination, either construction raises an error naming an
argument that is really out of range, or the params equal the float64 NumPy
reference of the documented rule (``helpers.reference_momentum``).
"""

import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import momentax
from tests import helpers

# Reproducible in CI (which sets CI=true), exploring elsewhere.
settings.register_profile("momentax", max_examples=40, deadline=None)
settings.register_profile(
    "ci", parent=settings.get_profile("momentax"), derandomize=True
)
settings.load_profile("ci" if os.environ.get("CI") else "momentax")

shapes = hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)
trees = st.dictionaries(
    st.sampled_from("abcdef"),
    st.one_of(shapes, st.lists(shapes, min_size=1, max_size=3).map(tuple)),
    min_size=1,
    max_size=4,
)


@st.composite
def options(draw):
    """Valid keyword arguments for momentax.momentum."""
    mu = draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))
    nesterov = mu > 0 and draw(st.booleans())
    return {
        "learning_rate": draw(st.floats(0.0, 1.0)),
        "momentum": mu,
        "nesterov": nesterov,
        "dampening": 0.0 if nesterov else draw(st.sampled_from([0.0, 0.1, 1.0])),
        "weight_decay": draw(st.sampled_from([0.0, 1e-2])),
        "maximize": draw(st.booleans()),
        "convention": draw(st.sampled_from(momentax.CONVENTIONS)),
    }


def _params(shape_tree, dtype, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda shape: jnp.asarray(rng.normal(size=shape), dtype),
        shape_tree,
        is_leaf=lambda x: isinstance(x, tuple) and all(isinstance(d, int) for d in x),
    )


def _state_structure_and_dtype_are_stable(
    shape_tree, kwargs, dtype, accumulator_dtype, seed
):
    params = _params(shape_tree, dtype, seed)
    opt = momentax.momentum(**kwargs, accumulator_dtype=accumulator_dtype)
    state = opt.init(params)
    for grads in helpers.gradient_stream(params, 3, seed=seed):
        updates, new_state = opt.update(grads, state, params)
        chex.assert_trees_all_equal_structs(new_state, state)
        chex.assert_trees_all_equal_dtypes(new_state, state)
        chex.assert_trees_all_equal_shapes(new_state, state)
        chex.assert_trees_all_equal_shapes_and_dtypes(updates, grads)
        state = new_state


def _zero_gradient_from_zero_velocity_is_a_zero_update(shape_tree, kwargs, seed):
    # With weight decay the followed gradient is wd * p, so use zero params there.
    params = _params(shape_tree, "float32", seed)
    if kwargs["weight_decay"]:
        params = jax.tree.map(jnp.zeros_like, params)
    opt = momentax.momentum(**kwargs)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, state = opt.update(zeros, opt.init(params), params)
    chex.assert_trees_all_equal(updates, zeros)
    if helpers.velocity(state) is not None:
        chex.assert_trees_all_equal(helpers.velocity(state), zeros)


STATE_DRAWS = given(
    shape_tree=trees,
    kwargs=options(),
    dtype=st.sampled_from(["float32", "bfloat16", "float16"]),
    accumulator_dtype=st.sampled_from([None, "float32", "bfloat16"]),
    seed=st.integers(0, 2**16),
)
ZERO_DRAWS = given(shape_tree=trees, kwargs=options(), seed=st.integers(0, 2**16))

# Few examples for the two properties below: each (param dtype, accumulator
# dtype, convention) is also checked, jitted, in test_dtypes_and_trees.py. Each
# example runs op by op on new shapes, compiling each operation anew (about 0.5 s
# an example): the fast tier draws 5, the slow tier 15 of its own.


@settings(max_examples=5)
@STATE_DRAWS
def test_state_structure_and_dtype_are_stable(
    shape_tree, kwargs, dtype, accumulator_dtype, seed
):
    _state_structure_and_dtype_are_stable(
        shape_tree, kwargs, dtype, accumulator_dtype, seed
    )


@pytest.mark.slow
@settings(max_examples=15)
@STATE_DRAWS
def test_state_structure_and_dtype_are_stable_on_more_examples(
    shape_tree, kwargs, dtype, accumulator_dtype, seed
):
    _state_structure_and_dtype_are_stable(
        shape_tree, kwargs, dtype, accumulator_dtype, seed
    )


@settings(max_examples=5)
@ZERO_DRAWS
def test_zero_gradient_from_zero_velocity_is_a_zero_update(shape_tree, kwargs, seed):
    _zero_gradient_from_zero_velocity_is_a_zero_update(shape_tree, kwargs, seed)


@pytest.mark.slow
@settings(max_examples=15)
@ZERO_DRAWS
def test_zero_gradient_from_zero_velocity_is_a_zero_update_on_more_examples(
    shape_tree, kwargs, seed
):
    _zero_gradient_from_zero_velocity_is_a_zero_update(shape_tree, kwargs, seed)


# Mostly in range, sometimes out of it (negative, above 1, NaN, infinite, a bool).
rates = st.one_of(
    st.floats(0.0, 2.0), st.sampled_from([-0.1, math.nan, math.inf, True])
)
unit = st.one_of(st.floats(0.0, 1.0), st.sampled_from([-0.2, 1.5, math.nan]))
decays = st.one_of(st.floats(0.0, 0.5), st.sampled_from([-1e-3, math.inf]))
leaf_shapes = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)
# float64 runs up to 25 steps under a tight tolerance; the low precisions run 4.
STEPS = {"float64": 25, "float32": 4, "bfloat16": 4, "float16": 4}


def _problems(lr, mu, damp, wd, nesterov):
    """The arguments that the documented ranges rule out."""
    bad = set()
    if isinstance(lr, bool) or not (math.isfinite(lr) and lr >= 0):
        bad.add("learning_rate")
    if not 0 <= mu <= 1:  # NaN fails both comparisons
        bad.add("momentum")
    if not 0 <= damp <= 1:
        bad.add("dampening")
    if not (math.isfinite(wd) and wd >= 0):
        bad.add("weight_decay")
    if nesterov and not bad and (mu == 0 or damp != 0):
        bad.add("nesterov")
    return bad


@settings(max_examples=100, deadline=None)
@given(
    lr=rates,
    mu=unit,
    damp=unit,
    wd=decays,
    nesterov=st.booleans(),
    maximize=st.booleans(),
    convention=st.sampled_from(momentax.CONVENTIONS),
    dtype=st.sampled_from(list(STEPS)),
    schedules=st.booleans(),
    decay=st.floats(0.8, 1.2),
    shapes=st.lists(leaf_shapes, min_size=1, max_size=3),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_named_error_or_reference_numbers(
    lr,
    mu,
    damp,
    wd,
    nesterov,
    maximize,
    convention,
    dtype,
    schedules,
    decay,
    shapes,
    data,
    seed,
):
    kwargs = dict(
        learning_rate=lr,
        momentum=mu,
        dampening=damp,
        weight_decay=wd,
        nesterov=nesterov,
        maximize=maximize,
        convention=convention,
    )
    bad = _problems(lr, mu, damp, wd, nesterov)
    if bad:
        with pytest.raises((ValueError, TypeError)) as error:
            momentax.momentum(**kwargs)
        assert any(name in str(error.value) for name in bad), (bad, error.value)
        return

    # With ``schedules`` the rate changes by ``decay`` a step and the momentum
    # ramps up from a third of ``mu`` over three steps (constant ``mu`` after).
    steps = data.draw(st.integers(1, STEPS[dtype]), label="steps")
    if schedules:
        kwargs["learning_rate"] = lambda count: lr * decay ** jnp.asarray(count, float)
        kwargs["momentum"] = lambda count: (
            mu * jnp.minimum((jnp.asarray(count, float) + 1.0) / 3.0, 1.0)
        )
    lr_at = lambda t: lr * decay**t if schedules else lr  # noqa: E731
    mu_at = lambda t: mu * min((t + 1) / 3, 1.0) if schedules else mu  # noqa: E731

    rng = np.random.default_rng(seed)
    with jax.enable_x64(dtype == "float64"):
        params = {
            f"p{i}": jnp.asarray(rng.uniform(-2, 2, size=shape), dtype)
            for i, shape in enumerate(shapes)
        }
        grads = [
            jax.tree.map(
                lambda p: jnp.asarray(rng.uniform(-2, 2, p.shape), dtype), params
            )
            for _ in range(steps)
        ]
        opt = momentax.momentum(**kwargs)
        got, state = params, opt.init(params)
        for g in grads:
            updates, state = opt.update(g, state, got)
            assert all(bool(jnp.isfinite(u).all()) for u in jax.tree.leaves(updates))
            got = optax.apply_updates(got, updates)
        chex.assert_trees_all_equal_dtypes(got, params)
        velocity = helpers.velocity(state)

    largest_lr = max(lr_at(t) for t in range(steps))
    for name, param in params.items():
        want, want_velocity = helpers.reference_momentum(
            np.asarray(param, np.float64),
            [np.asarray(g[name], np.float64) for g in grads],
            learning_rate=lr_at,
            momentum=mu_at,
            dampening=damp,
            nesterov=nesterov,
            weight_decay=wd,
            maximize=maximize,
            convention=convention,
        )
        # The params are rounded to their dtype at each step (eps/2 of |p| each)
        # and each update to it after a few operations scaled by lr. In units of
        # eps * (1 + max lr) * (1 + max |p|), the worst of 660 random cases was
        # 1.3 in the low precisions (4 steps; bfloat16) and 4.2 in float64 (up to
        # 25 steps; 1.9 for the velocity on its own scale): 8 and 64 leave margins
        # of 6x and 15x, while a wrong formula (a missing mu, an off-by-one step)
        # is off by O(lr).
        scale = (1.0 + largest_lr) * (1.0 + np.max(np.abs(want), initial=0.0))
        units = 64 if dtype == "float64" else 8
        atol = units * float(jnp.finfo(dtype).eps) * scale
        np.testing.assert_allclose(np.asarray(got[name], np.float64), want, atol=atol)
        if dtype == "float64" and velocity is not None:
            # The same units, on the scale of the velocity itself.
            scale = (1.0 + largest_lr) * (1.0 + np.max(np.abs(want_velocity)))
            atol = units * float(jnp.finfo(dtype).eps) * scale
            np.testing.assert_allclose(velocity[name], want_velocity, atol=atol)

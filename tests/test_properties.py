"""Property tests: random trees, dtypes and hyperparameters."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
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


@given(
    shape_tree=trees,
    kwargs=options(),
    dtype=st.sampled_from(["float32", "bfloat16", "float16"]),
    accumulator_dtype=st.sampled_from([None, "float32", "bfloat16"]),
    seed=st.integers(0, 2**16),
)
def test_state_structure_and_dtype_are_stable(
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


@given(shape_tree=trees, kwargs=options(), seed=st.integers(0, 2**16))
def test_zero_gradient_from_zero_velocity_is_a_zero_update(shape_tree, kwargs, seed):
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


@given(
    kwargs=options(),
    decay=st.floats(0.8, 1.2),
    steps=st.integers(1, 25),
    seed=st.integers(0, 2**16),
)
def test_matches_the_reference_formula(kwargs, decay, steps, seed):
    lr0 = kwargs.pop("learning_rate")
    with jax.enable_x64(True):
        params = _params({"w": (5,)}, "float64", seed)["w"]
        grads = [g for g in helpers.gradient_stream(params, steps, seed=seed + 1)]
        schedule = lambda count: lr0 * decay ** jnp.asarray(count, float)  # noqa: E731
        got, state = helpers.run(momentax.momentum(schedule, **kwargs), params, grads)
        want, want_velocity = helpers.reference_momentum(
            np.asarray(params),
            [np.asarray(g) for g in grads],
            learning_rate=lambda t: lr0 * decay**t,
            **kwargs,
        )
    # float64 with values below ~1e3 after 25 steps: 1e-10 is ~1e4 roundings of margin.
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    if kwargs["momentum"]:
        np.testing.assert_allclose(
            helpers.velocity(state), want_velocity, rtol=1e-10, atol=1e-10
        )

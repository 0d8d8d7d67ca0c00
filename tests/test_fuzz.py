"""Hypothesis over hyperparameters, trees and dtypes: a named error, or right numbers.

For every drawn combination either construction (or ``init``) raises a
``ValueError``/``TypeError`` that names an argument that is really out of
range, or every update is finite and the params equal the NumPy float64
reference of the documented rule (``helpers.reference_momentum``).
"""

import math

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings

import momentax
from tests import helpers

STEPS = 4
DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]

# Mostly in range, sometimes out of it (negative, above 1, NaN, infinite, a bool).
rates = st.one_of(
    st.floats(0.0, 2.0), st.sampled_from([-0.1, math.nan, math.inf, True])
)
unit = st.one_of(st.floats(0.0, 1.0), st.sampled_from([-0.2, 1.5, math.nan]))
decays = st.one_of(st.floats(0.0, 0.5), st.sampled_from([-1e-3, math.inf]))
shapes = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)


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


@settings(max_examples=80, deadline=None)
@given(
    lr=rates,
    mu=unit,
    damp=unit,
    wd=decays,
    nesterov=st.booleans(),
    maximize=st.booleans(),
    convention=st.sampled_from(momentax.CONVENTIONS),
    dtype=st.sampled_from(DTYPES),
    leaf_shapes=st.lists(shapes, min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_named_error_or_reference_numbers(
    lr, mu, damp, wd, nesterov, maximize, convention, dtype, leaf_shapes, seed
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

    rng = np.random.default_rng(seed)
    params = {
        f"p{i}": jnp.asarray(rng.uniform(-2, 2, size=shape), dtype)
        for i, shape in enumerate(leaf_shapes)
    }
    grads = [
        jax.tree.map(lambda p: jnp.asarray(rng.uniform(-2, 2, p.shape), dtype), params)
        for _ in range(STEPS)
    ]
    opt = momentax.momentum(**kwargs)
    got, state = params, opt.init(params)
    for g in grads:
        updates, state = opt.update(g, state, got)
        assert all(bool(jnp.isfinite(u).all()) for u in jax.tree.leaves(updates))
        got = optax.apply_updates(got, updates)

    for name, param in params.items():
        want, _ = helpers.reference_momentum(
            np.asarray(param, np.float64),
            [np.asarray(g[name], np.float64) for g in grads],
            learning_rate=lambda t: lr,
            momentum=mu,
            dampening=damp,
            nesterov=nesterov,
            weight_decay=wd,
            maximize=maximize,
            convention=convention,
        )
        # The params are rounded to their dtype at each of the 4 steps (eps/2 of
        # |p| each) and each update to it after a few operations scaled by lr.
        # In units of eps * (1 + lr) * (1 + max |p|) the worst of 300 random
        # cases was 1.02 (float16); 8 leaves an 8x margin, while a wrong formula
        # (a missing mu, an off-by-one step) is off by O(lr) >> this.
        scale = (1.0 + lr) * (1.0 + np.max(np.abs(want), initial=0.0))
        atol = 8 * float(jnp.finfo(dtype).eps) * scale
        np.testing.assert_allclose(np.asarray(got[name], np.float64), want, atol=atol)

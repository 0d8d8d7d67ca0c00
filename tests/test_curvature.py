"""estimate_curvature: Lanczos's extreme Ritz values against known spectra."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import momentax

# The tuning targets' problem: a diagonal quadratic, 1000 eigenvalues log-spaced
# in [1, 1000].
SPECTRUM = jnp.logspace(0, 3, 1000)


def quadratic(params):
    return 0.5 * jnp.sum(SPECTRUM * params**2)


@jax.jit
def estimate_30(params, key):
    return momentax.estimate_curvature(quadratic, params, num_iterations=30, key=key)


@jax.jit
def estimate_45(params, key):
    return momentax.estimate_curvature(quadratic, params, num_iterations=45, key=key)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_largest_eigenvalue_within_one_percent_in_30_hvps(seed):
    est = estimate_30(jnp.ones(1000), jax.random.key(seed))
    assert int(est.num_hvps) == 30
    # Ritz values lie inside the spectrum: a lower bound, within the 1% target.
    assert 0.99 * 1000 <= float(est.max_curvature) <= 1000 * (1 + 1e-5)
    # The smallest Ritz value after 30 HVPs is 1.72-1.82 for these keys (the
    # bottom of a log-spaced spectrum is crowded): an upper bound on 1.
    assert 1.0 <= float(est.min_curvature) <= 2.0


@pytest.mark.slow  # a Lanczos compile of its own (45 HVPs)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_smallest_eigenvalue_within_factor_one_and_a_half_in_45_hvps(seed):
    # Measured over keys 0-9: the worst is 1.49 at 40 HVPs, 1.41 at 45.
    est = estimate_45(jnp.ones(1000), jax.random.key(seed))
    assert 1.0 <= float(est.min_curvature) <= 1.5
    assert float(est.max_curvature) >= 0.9999 * 1000


def test_exact_on_a_small_dense_matrix_and_a_pytree():
    # Fewer params (6) than iterations: the Krylov space is the whole space,
    # and the Ritz values are the eigenvalues up to float32 rounding.
    a = jax.random.normal(jax.random.key(3), (6, 6))
    hessian = a @ a.T + 0.5 * jnp.eye(6)

    def loss(params):
        x = jnp.concatenate([params["w"].ravel(), params["b"]])
        return 0.5 * x @ hessian @ x

    params = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    est = momentax.estimate_curvature(loss, params, num_iterations=6)
    exact = np.linalg.eigvalsh(np.asarray(hessian, np.float64))
    # float32 Lanczos on a matrix of norm ~20: errors ~1e-6 relative.
    chex.assert_trees_all_close(est.ritz_values, exact, rtol=1e-4, atol=1e-4)
    assert jax.tree.structure(est.top_vector) == jax.tree.structure(params)


# 20 iterations on a smaller space breaks down repeatedly (4-5 s): slow tier.
@pytest.mark.parametrize(
    "num_iterations", [3, pytest.param(20, marks=pytest.mark.slow)]
)
def test_breakdown_gives_no_nan(num_iterations):
    # Three params, up to 20 iterations: the space is exhausted after 3 steps.
    def loss(x):
        return 0.5 * jnp.sum(jnp.array([1.0, 2.0, 3.0]) * x**2)

    est = momentax.estimate_curvature(loss, jnp.zeros(3), num_iterations=num_iterations)
    chex.assert_tree_all_finite(est)
    assert int(est.krylov_dimension) == 3
    np.testing.assert_allclose(est.ritz_values[:3], [1.0, 2.0, 3.0], rtol=1e-5)
    # The entries past the Krylov space's dimension repeat the largest.
    np.testing.assert_allclose(est.ritz_values[3:], 3.0, rtol=1e-5)
    top = np.abs(np.asarray(est.top_vector))
    np.testing.assert_allclose(top, [0.0, 0.0, 1.0], atol=1e-3)


@pytest.mark.slow  # a Lanczos compile of its own (2-4 s on 2 cores)
def test_few_distinct_eigenvalues_restart_without_nan():
    # Two distinct eigenvalues: each Krylov space is exhausted after two steps
    # and Lanczos restarts from fresh random vectors.
    def loss(x):
        return 0.5 * jnp.sum(jnp.where(jnp.arange(100) < 50, 1.0, 5.0) * x**2)

    est = momentax.estimate_curvature(loss, jnp.zeros(100), num_iterations=20)
    chex.assert_tree_all_finite(est)
    np.testing.assert_allclose(
        [est.min_curvature, est.max_curvature], [1.0, 5.0], rtol=1e-5
    )


@pytest.mark.slow  # a Lanczos compile of its own (2-4 s on 2 cores)
def test_linear_function_has_zero_curvature():
    est = momentax.estimate_curvature(lambda x: jnp.sum(x), jnp.ones(4))
    chex.assert_tree_all_finite(est)
    assert float(est.max_curvature) == 0.0 == float(est.min_curvature)


def test_non_convex_gives_negative_min_and_heavy_ball_tuning_refuses_it():
    def saddle(x):
        return 0.5 * (x[0] ** 2 - 2.0 * x[1] ** 2)

    est = momentax.estimate_curvature(saddle, jnp.zeros(2), num_iterations=2)
    np.testing.assert_allclose([est.min_curvature, est.max_curvature], [-2.0, 1.0])
    with pytest.raises(ValueError, match="min_curvature must be a finite number > 0"):
        momentax.heavy_ball_tuning(est.max_curvature, est.min_curvature)


def test_feeds_heavy_ball_tuning_as_floats():
    est = estimate_30(jnp.ones(1000), jax.random.key(0))
    tuning = momentax.heavy_ball_tuning(est.max_curvature, est.min_curvature)
    # The same tuning as from the Python floats the estimate converts to.
    assert tuning == momentax.heavy_ball_tuning(
        float(est.max_curvature), float(est.min_curvature)
    )
    assert tuning.learning_rate > 0 and 0 < tuning.momentum < 1


def test_deterministic_for_a_key_and_the_default_key_is_key_0():
    params = jnp.ones(50)

    def loss(x):
        return 0.5 * jnp.sum(jnp.arange(1.0, 51.0) * x**2)

    first = momentax.estimate_curvature(loss, params, num_iterations=5)
    again = momentax.estimate_curvature(
        loss, params, num_iterations=5, key=jax.random.key(0)
    )
    other = momentax.estimate_curvature(
        loss, params, num_iterations=5, key=jax.random.key(7)
    )
    chex.assert_trees_all_equal(first, again)
    assert float(first.min_curvature) != float(other.min_curvature)


@pytest.mark.slow  # two Lanczos compiles on a pytree (8-10 s on 2 cores)
def test_jit_matches_eager():
    params = {"a": jnp.ones(40), "b": jnp.ones((2, 3))}

    def loss(p):
        return 0.5 * jnp.sum(jnp.arange(1.0, 41.0) * p["a"] ** 2) + jnp.sum(
            jnp.cos(p["b"])
        )

    eager = momentax.estimate_curvature(loss, params, num_iterations=8)
    jitted = jax.jit(lambda p: momentax.estimate_curvature(loss, p, num_iterations=8))(
        params
    )
    # The same float32 operations, fused differently under jit.
    chex.assert_trees_all_close(eager, jitted, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # Lanczos run op by op (8-9 s on 2 cores)
def test_an_unhashable_loss_object_works():
    class Loss:  # holds an array and compares by value, like many modules
        def __init__(self, scale):
            self.scale = scale

        def __eq__(self, other):
            return isinstance(other, Loss) and bool(jnp.all(self.scale == other.scale))

        __hash__ = None

        def __call__(self, p):
            return 0.5 * jnp.sum(self.scale * p**2)

    est = momentax.estimate_curvature(Loss(jnp.arange(1.0, 9.0)), jnp.ones(8))
    assert float(est.max_curvature) == pytest.approx(8.0, rel=1e-4)


@pytest.mark.slow  # a Lanczos compile of its own (2-4 s on 2 cores)
def test_warm_start_from_the_top_vector():
    params = jnp.ones(1000)
    cold = estimate_30(params, jax.random.key(0))
    warm = momentax.estimate_curvature(
        quadratic, params, num_iterations=5, initial_vector=cold.top_vector
    )
    fresh = momentax.estimate_curvature(quadratic, params, num_iterations=5)
    # Five HVPs from the top Ritz vector keep what 30 found (996.2, then 997.2),
    # where five from a random start stay far below.
    assert float(warm.max_curvature) >= float(cold.max_curvature) * (1 - 1e-5)
    assert float(fresh.max_curvature) < 0.95 * float(cold.max_curvature)


@pytest.mark.slow  # a Lanczos compile of its own (2-4 s on 2 cores)
def test_float64():
    with jax.enable_x64(True):
        x = jnp.arange(1.0, 11.0, dtype=jnp.float64)

        def loss(p):
            return 0.5 * jnp.sum(x * p**2)

        est = momentax.estimate_curvature(loss, jnp.zeros(10, jnp.float64))
        assert est.max_curvature.dtype == jnp.float64
        np.testing.assert_allclose(
            [est.min_curvature, est.max_curvature], [1.0, 10.0], rtol=1e-10
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_iterations": 0}, ValueError, "num_iterations must be >= 1"),
        ({"num_iterations": 2.5}, TypeError, "num_iterations must be a positive"),
        ({"num_iterations": True}, TypeError, "num_iterations must be a positive"),
        ({"key": 3}, TypeError, "key must be a JAX PRNG key"),
        ({"initial_vector": jnp.ones(2)}, ValueError, "initial_vector must have"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        momentax.estimate_curvature(lambda x: jnp.sum(x**2), jnp.ones(3), **kwargs)


def test_bad_functions_and_params_are_named():
    with pytest.raises(TypeError, match="fn must be a function"):
        momentax.estimate_curvature(3.0, jnp.ones(3))
    with pytest.raises(ValueError, match="fn must return a real floating-point"):
        momentax.estimate_curvature(lambda x: x**2, jnp.ones(3))
    with pytest.raises(TypeError, match="params has dtype int32"):
        momentax.estimate_curvature(lambda x: jnp.sum(x), jnp.ones(3, jnp.int32))
    with pytest.raises(ValueError, match="params must hold at least one array"):
        momentax.estimate_curvature(lambda x: jnp.zeros([]), {})

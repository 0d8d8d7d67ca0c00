"""autotune: the closed-form rule, its safeguards, conventions, state and devices."""

import functools
import math
from fractions import Fraction

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import momentax
import momentax.training
from momentax import _single_step

CPUS = jax.devices("cpu")


# --- The robust region, in closed form -------------------------------------


def polyak_bound(h_max, h_min):
    root = math.sqrt(h_max / h_min)
    return ((root - 1) / (root + 1)) ** 2


def spectral_radius(learning_rate, momentum, h):
    operator = np.array([[1 + momentum - learning_rate * h, -momentum], [1.0, 0.0]])
    return np.max(np.abs(np.linalg.eigvals(operator)))


RANGES = [(1.0, 1.0), (1.0, 10.0), (0.5, 1000.0), (1e-3, 1e3)]


@pytest.mark.parametrize(("h_min", "h_max"), RANGES)
@pytest.mark.parametrize("extra", [0.0, 0.3, 0.9])
def test_spectral_radius_is_sqrt_momentum_on_the_whole_range(h_min, h_max, extra):
    # Any mu between Polyak's bound and 1, with lr = (1 - sqrt(mu))^2 / h_min.
    momentum = polyak_bound(h_max, h_min) + extra * (1 - polyak_bound(h_max, h_min))
    learning_rate = (1 - math.sqrt(momentum)) ** 2 / h_min
    # Interior curvatures (the two ends, where the operator has a double
    # eigenvalue, are checked exactly below): eigvals of a 2x2 float64 matrix
    # with complex eigenvalues are exact to ~1e-15 relative.
    inside = np.geomspace(h_min, h_max, 201)[1:-1] if h_max > h_min else []
    for h in [*inside, *np.linspace(h_min, h_max, 101)[1:-1]]:
        assert (
            abs(spectral_radius(learning_rate, momentum, h) - math.sqrt(momentum))
            <= 1e-10
        )


@pytest.mark.parametrize(("kappa", "extra"), [(100, 0), (100, Fraction(1, 3)), (9, 0)])
def test_robust_region_holds_exactly_at_the_ends(kappa, extra):
    # Exact rational arithmetic: sqrt(kappa) is an integer, so sqrt(mu) is a
    # fraction; |lambda| = sqrt(mu) exactly iff the discriminant is <= 0.
    root = Fraction(math.isqrt(kappa))
    sqrt_momentum = (root - 1) / (root + 1)
    sqrt_momentum += extra * (1 - sqrt_momentum)
    momentum = sqrt_momentum**2
    h_min, h_max = Fraction(1), Fraction(kappa)
    learning_rate = (1 - sqrt_momentum) ** 2 / h_min
    for h in [h_min, (h_min + h_max) / 2, h_max]:
        trace = 1 + momentum - learning_rate * h
        assert trace * trace - 4 * momentum <= 0


@pytest.mark.parametrize(("h_min", "h_max"), RANGES)
@pytest.mark.parametrize(
    ("variance", "distance"), [(0.0, 1.0), (1.0, 1.0), (1e4, 1e-2), (0.0, 0.0)]
)
def test_single_step_rule_lies_in_the_robust_region(h_min, h_max, variance, distance):
    with jax.enable_x64(True):
        f64 = jnp.float64
        rule = _single_step.single_step(
            jnp.asarray(h_max, f64),
            jnp.asarray(h_min, f64),
            jnp.asarray(variance, f64),
            jnp.asarray(distance, f64),
            0.9999,
        )
        mu, lr = float(rule.momentum), float(rule.learning_rate)
    assert mu >= polyak_bound(h_max, h_min) * (1 - 1e-12)
    np.testing.assert_allclose(lr, (1 - math.sqrt(mu)) ** 2 / h_min, rtol=1e-12)
    inside = np.geomspace(h_min, h_max, 51)[1:-1] if h_max > h_min else []
    for h in inside:
        assert abs(spectral_radius(lr, mu, h) - math.sqrt(mu)) <= 1e-10
    if variance == 0:
        # No noise: Polyak's tuning for the range.
        tuning = momentax.heavy_ball_tuning(h_max, h_min)
        np.testing.assert_allclose(
            [lr, mu], [tuning.learning_rate, tuning.momentum], rtol=1e-10
        )


# --- The cubic, never NaN --------------------------------------------------

P_VALUES = [0.0, 1e-38, 1e-30, 1e-10, 1e-3, 1.0, 27.0, 1e3, 1e10, 1e30, 1e38]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_cubic_root_is_the_root_in_zero_one(dtype):
    with jax.enable_x64(dtype == jnp.float64):
        p = jnp.asarray(P_VALUES, dtype)
        y = _single_step.cubic_root(p)
        assert y.dtype == dtype
        chex.assert_tree_all_finite(y)
        assert bool(jnp.all((y >= 0) & (y <= 1)))
        # y^3 + p y = p: compared relative to the larger side, with p clipped
        # at 1e30 as the solver does. 1e-5 (float32) leaves 100x over rounding.
        clipped = jnp.minimum(p, 1e30)
        residual = jnp.abs(y**3 + clipped * y - clipped) / jnp.maximum(clipped, y**3)
        tolerance = 1e-5 if dtype == jnp.float32 else 1e-12
        assert bool(jnp.all(jnp.where(clipped > 0, residual, y) <= tolerance))


def test_cubic_root_limits_and_non_finite_input():
    y = _single_step.cubic_root(jnp.asarray([0.0, jnp.inf, jnp.nan, -1.0]))
    np.testing.assert_array_equal(y, [0.0, 1.0, 1.0, 0.0])


EDGES = [0.0, 1e-30, 1e-10, 1.0, 1e10, 1e30]


@pytest.mark.parametrize(
    ("h_min", "h_max"), [(1.0, 1.0), (1e-20, 1e-14), (1e10, 1e16), (1e-3, 1e3)]
)
def test_single_step_never_gives_nan_or_inf(h_min, h_max):
    # Every pair of (variance, distance) from EDGES at once: the rule is elementwise.
    variance, distance = np.meshgrid(EDGES, EDGES)
    rule = _single_step.single_step(
        jnp.float32(h_max),
        jnp.float32(h_min),
        jnp.asarray(variance, jnp.float32),
        jnp.asarray(distance, jnp.float32),
        0.999,
    )
    chex.assert_tree_all_finite(rule)
    momentum, learning_rate = np.asarray(rule.momentum), np.asarray(rule.learning_rate)
    assert np.all((momentum >= 0) & (momentum <= np.float32(0.999)))
    assert np.all(learning_rate > 0)
    # The stability bound, with float32 rounding.
    assert np.all(learning_rate * h_max <= 2 * (1 + momentum) * (1 + 1e-6))


# --- Convergence on quadratics ---------------------------------------------


def quadratic(spectrum):
    def loss(params):
        return 0.5 * jnp.sum(spectrum * params**2)

    return loss


def errors(opt, loss, x0, num_steps, hvp=False):
    """The relative errors ||x_t|| / ||x_0|| of num_steps steps, and the state."""

    def body(carry, _):
        params, state = carry
        extra = {"value_fn": loss} if hvp else {}
        updates, state = opt.update(jax.grad(loss)(params), state, params, **extra)
        params = optax.apply_updates(params, updates)
        return (params, state), jnp.linalg.norm(params) / jnp.linalg.norm(x0)

    run = jax.jit(lambda: jax.lax.scan(body, (x0, opt.init(x0)), length=num_steps))
    (_, state), errs = run()
    return np.asarray(errs), state


def stepper(opt, loss, hvp=False):
    """A jitted (params, state) -> (params, state) step on ``loss``."""

    @jax.jit
    def step(params, state):
        extra = {"value_fn": loss} if hvp else {}
        updates, state = opt.update(jax.grad(loss)(params), state, params, **extra)
        return optax.apply_updates(params, updates), state

    return step


def steps_to(errs, target=1e-4):
    hits = np.nonzero(errs <= target)[0]
    return int(hits[0]) + 1 if hits.size else None


@pytest.mark.parametrize(
    ("hvp", "convention"),
    [
        (False, "sutskever"),
        (True, "sutskever"),
        # The other convention gives the same iterates, as
        # test_both_conventions_give_the_same_iterates checks: slow tier.
        pytest.param(False, "pytorch", marks=pytest.mark.slow),
        pytest.param(True, "pytorch", marks=pytest.mark.slow),
    ],
)
def test_converges_on_a_small_quadratic(hvp, convention):
    loss = quadratic(jnp.logspace(0, 2, 50))
    errs, state = errors(
        momentax.autotune(convention=convention), loss, jnp.ones(50), 400, hvp
    )
    assert np.all(np.isfinite(errs))
    # Polyak's tuning reaches 1e-4 here in 45 steps; kappa = 100.
    assert steps_to(errs) is not None and steps_to(errs) <= 200, steps_to(errs)
    assert float(state.max_curvature) <= 100 * (1 + 1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(("hvp", "ratio"), [(True, 1.5), (False, 3.0)])
def test_steps_against_exactly_tuned_polyak_on_an_ill_conditioned_quadratic(hvp, ratio):
    # The tuning targets, on kappa = 1000 (eigenvalues log-spaced in [1, 1000]).
    # Measured: Polyak 164 steps, with HVPs 198 (1.21x), gradients only 370 (2.26x).
    loss = quadratic(jnp.logspace(0, 3, 1000))
    x0 = jax.random.normal(jax.random.key(0), (1000,))
    tuning = momentax.heavy_ball_tuning(1000.0, 1.0)
    polyak = momentax.momentum(tuning.learning_rate, momentum=tuning.momentum)
    reference = steps_to(errors(polyak, loss, x0, 1500)[0])
    errs, _ = errors(momentax.autotune(), loss, x0, 1500, hvp)
    assert np.all(np.isfinite(errs)) and np.all(errs[200:] <= errs[:-200] * 1.0 + 1e-12)
    assert steps_to(errs) is not None
    assert steps_to(errs) <= ratio * reference, (steps_to(errs), reference)


# --- Conventions -----------------------------------------------------------


# With HVPs each case compiles Lanczos twice (5-9 s on 2 cores): slow tier.
@pytest.mark.parametrize("hvp", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_both_conventions_give_the_same_iterates(hvp):
    # The rate changes every step early on (warm-up, then the statistics):
    # PyTorch's buffer must be rescaled by eta_{t-1} / eta_t to follow Polyak.
    with jax.enable_x64(True):
        loss = quadratic(jnp.logspace(0, 2, 30, dtype=jnp.float64))
        x0 = jnp.ones(30, jnp.float64)

        def run(convention):
            opt = momentax.autotune(convention=convention)

            def body(carry, _):
                params, state = carry
                extra = {"value_fn": loss} if hvp else {}
                updates, state = opt.update(
                    jax.grad(loss)(params), state, params, **extra
                )
                return (optax.apply_updates(params, updates), state), (
                    params,
                    state.learning_rate,
                )

            return jax.jit(
                lambda: jax.lax.scan(body, (x0, opt.init(x0)), length=150)
            )()[1]

        sutskever, rates = run("sutskever")
        pytorch, _ = run("pytorch")
    assert len(np.unique(np.asarray(rates))) > 5  # the rate did change
    # float64, 150 steps: the two orders of operations differ by rounding only.
    chex.assert_trees_all_close(sutskever, pytorch, rtol=1e-9, atol=1e-12)


# --- State, jit, scan, composition -----------------------------------------


# With HVPs, the Ritz vectors and estimates join the state: a Lanczos compile
# (5-7 s on 2 cores), slow tier.
@pytest.mark.parametrize("hvp", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_state_is_named_and_stable_and_the_rates_are_gettable(hvp):
    opt = momentax.autotune()
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    state = opt.init(params)
    assert isinstance(state, momentax.AutotuneState)
    loss = lambda p: jnp.sum((p["w"] @ jnp.ones(2) - 1.0) ** 2) + jnp.sum(p["b"] ** 2)  # noqa: E731
    step = stepper(opt, loss, hvp=hvp)
    _, new_state = step(*step(*step(params, state)))
    chex.assert_trees_all_equal_shapes_and_dtypes(state, new_state)
    assert jax.tree.structure(state) == jax.tree.structure(new_state)
    assert optax.tree.get(new_state, "learning_rate") == new_state.learning_rate
    assert optax.tree.get(new_state, "momentum") == new_state.momentum
    assert jax.tree.structure(
        optax.tree.get(new_state, "velocity")
    ) == jax.tree.structure(params)
    assert int(new_state.count) == 3


def test_jit_does_not_retrace_and_scan_matches_the_loop():
    loss = quadratic(jnp.logspace(0, 1, 8))
    opt = momentax.autotune()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    params, state = jnp.ones(8), opt.init(jnp.ones(8))
    for _ in range(5):
        params, state = step(params, state)

    def body(carry, _):
        return step(*carry), None

    (scanned, scanned_state), _ = jax.lax.scan(
        body, (jnp.ones(8), opt.init(jnp.ones(8))), length=5
    )
    chex.assert_trees_all_close(
        (params, state), (scanned, scanned_state), rtol=1e-6, atol=1e-7
    )


def test_chain_after_clipping_passes_value_fn_through():
    loss = quadratic(jnp.logspace(0, 2, 20))
    opt = optax.chain(optax.clip_by_global_norm(10.0), momentax.autotune())
    params = 10 * jnp.ones(20)
    state = opt.init(params)
    step = stepper(opt, loss, hvp=True)
    for _ in range(100):
        params, state = step(params, state)
    assert float(optax.tree.get(state, "hessian_max")) == pytest.approx(100.0, rel=1e-3)
    assert float(loss(params)) < 1e-3 * float(loss(10 * jnp.ones(20)))


# Imports Flax and compiles its TrainState's step: slow tier
# (tests/test_checkpoint_flax.py trains a TrainState in the fast one).
@pytest.mark.slow
def test_flax_train_state_loop():
    flax = pytest.importorskip("flax")
    from flax.training import train_state

    x = jax.random.normal(jax.random.key(0), (64, 4))
    y = x @ jnp.array([1.0, -2.0, 0.5, 3.0])[:, None]
    model = flax.linen.Dense(1)
    variables = model.init(jax.random.key(1), x)

    def loss(params):
        return jnp.mean((model.apply({"params": params}, x) - y) ** 2)

    state = train_state.TrainState.create(
        apply_fn=model.apply, params=variables["params"], tx=momentax.autotune()
    )
    first = float(loss(state.params))

    @jax.jit
    def step(state):
        return state.apply_gradients(grads=jax.grad(loss)(state.params))

    for _ in range(200):
        state = step(state)
    assert float(loss(state.params)) < 1e-4 * first
    assert float(optax.tree.get(state.opt_state, "learning_rate")) > 0


# --- Safeguards ------------------------------------------------------------


@functools.cache
def jitted_update(convention):
    """An autotune and its jitted update, compiled once for the cases that share it."""
    opt = momentax.autotune(convention=convention)
    return opt, jax.jit(opt.update)


@pytest.mark.parametrize("convention", ["sutskever", "pytorch"])
# 1e30 is finite, but its square overflows float32: the statistics would be
# infinite, so the step is skipped like a non-finite one.
@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -jnp.inf, 1e30])
def test_a_non_finite_gradient_is_a_zero_step_and_never_seen(convention, bad):
    loss = quadratic(jnp.logspace(0, 1, 6))
    opt, update = jitted_update(convention)

    def run(num_steps, poison_at=None):
        params, state = jnp.ones(6), opt.init(jnp.ones(6))
        states = []
        for t in range(num_steps):
            grads = jax.grad(loss)(params)
            if t == poison_at:
                updates, new = update(grads.at[2].set(bad), state, params)
                np.testing.assert_array_equal(updates, np.zeros(6))
                assert int(new.num_nonfinite) == 1
                chex.assert_trees_all_equal(
                    new._replace(num_nonfinite=state.num_nonfinite), state
                )
                state = new
                continue
            updates, state = update(grads, state, params)
            params = optax.apply_updates(params, updates)
            states.append(state._replace(num_nonfinite=jnp.zeros([], jnp.int32)))
        return params, states

    clean, clean_states = run(11)
    poisoned, poisoned_states = run(12, poison_at=5)
    # The skipped step changes nothing: the run goes on as if it never came.
    chex.assert_trees_all_equal(clean, poisoned)
    chex.assert_trees_all_equal(clean_states, poisoned_states)


def test_a_non_finite_loss_value_is_skipped_too():
    opt = momentax.autotune()
    state = opt.init(jnp.ones(3))
    updates, new = opt.update(jnp.ones(3), state, jnp.ones(3), value=jnp.nan)
    np.testing.assert_array_equal(updates, np.zeros(3))
    assert int(new.num_nonfinite) == 1 and int(new.count) == 0


def test_first_step_is_the_probe_and_the_rate_at_most_doubles():
    loss = quadratic(jnp.full(4, 1e-3))  # tiny curvature: the rule wants lr ~ 1e3
    errs, _ = errors(momentax.autotune(), loss, jnp.ones(4), 1)
    opt = momentax.autotune(initial_learning_rate=0.01)
    params, state = jnp.ones(4), opt.init(jnp.ones(4))
    rates = []
    step = stepper(opt, loss)
    for _ in range(8):
        params, state = step(params, state)
        rates.append(float(state.learning_rate))
    assert rates[0] == pytest.approx(0.01)
    np.testing.assert_allclose(rates, 0.01 * 2.0 ** np.arange(8), rtol=1e-6)
    assert np.all(np.isfinite(errs))


def test_the_rate_holds_while_no_curvature_is_measured():
    # Zero gradients give zero steps and no secant: the warm-up must not double
    # the rate at each of them and then take a 2**19 times larger first step.
    opt, update = jitted_update("sutskever")
    params, state = jnp.ones(6), opt.init(jnp.ones(6))
    for _ in range(20):
        updates, state = update(jnp.zeros(6), state, params)
        np.testing.assert_array_equal(updates, np.zeros(6))
    assert float(state.learning_rate) == pytest.approx(1e-3)
    loss = quadratic(jnp.logspace(0, 1, 6))
    updates, state = update(jax.grad(loss)(params), state, params)
    assert float(state.learning_rate) == pytest.approx(1e-3)  # the probe's rate


def test_learning_rate_respects_the_stability_bound_with_capped_momentum():
    # kappa = 1e6 needs mu = 0.996, above max_momentum = 0.9: the stability bound
    # 2 (1 + mu) / h_max then caps the rate (with the margin on h_max).
    loss = quadratic(jnp.array([1e-3, 1e3]))
    opt = momentax.autotune(max_momentum=0.9, stability_margin=0.1)
    params, state = jnp.ones(2), opt.init(jnp.ones(2))
    step = stepper(opt, loss, hvp=True)
    for _ in range(30):
        params, state = step(params, state)
        bound = 2 * (1 + float(state.momentum)) / (1.1 * float(state.max_curvature))
        assert float(state.learning_rate) <= bound * (1 + 1e-6)
    assert float(state.momentum) == pytest.approx(0.9)
    assert np.all(np.isfinite(params))


@pytest.mark.slow  # a Lanczos compile of its own (4 s on 2 cores)
def test_secants_overrule_a_lanczos_estimate_below_the_path_curvature():
    # value_fn's Hessian is 1000x smaller than the gradients': Lanczos alone
    # would tune the rate for h_max = 0.01 and diverge. The secants measure the
    # gradients' curvature (up to 10), and the range takes the larger.
    spectrum = jnp.logspace(0, 1, 6)
    loss = quadratic(spectrum)
    opt = momentax.autotune()
    params, state = jnp.ones(6), opt.init(jnp.ones(6))

    @jax.jit
    def step(params, state):
        updates, state = opt.update(
            jax.grad(loss)(params), state, params, value_fn=lambda p: 1e-3 * loss(p)
        )
        return optax.apply_updates(params, updates), state

    for _ in range(200):
        params, state = step(params, state)
    assert float(state.hessian_max) == pytest.approx(0.01, rel=1e-3)
    # Secants see at most the true curvature, so the rate may overshoot for a
    # few steps, but it is tuned for the gradients' range: no step overflows
    # (without the secants: 181 of 200 did) and the loss falls. Slowly (to
    # 0.055 of the start here): the gradient change that Lanczos's estimate
    # cannot explain counts as noise, which makes the rate conservative.
    assert float(state.max_curvature) > 1.0
    assert int(state.num_nonfinite) == 0
    assert float(state.variance) > 0
    assert float(loss(params)) < 0.1 * float(loss(jnp.ones(6)))


def noisy_quadratic_run(noisy, steps=1000):
    """autotune with value_fn on h_i = 1/i (100 dims), gradient noise covariance H."""
    spectrum = 1.0 / jnp.arange(1.0, 101.0)
    loss = quadratic(spectrum)
    opt = momentax.autotune()

    def body(carry, key):
        params, state = carry
        noise = jnp.sqrt(spectrum) * jax.random.normal(key, params.shape)
        grads = spectrum * params + (noise if noisy else 0)
        updates, state = opt.update(grads, state, params, value_fn=loss)
        return (optax.apply_updates(params, updates), state), loss(params)

    x0 = 10 * jnp.ones(100)
    keys = jax.random.split(jax.random.key(0), steps)
    run = jax.jit(lambda: jax.lax.scan(body, (x0, opt.init(x0)), keys))
    (_, state), losses = run()
    return state, np.asarray(losses), float(jnp.sum(spectrum))


@pytest.mark.parametrize("noisy", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_with_value_fn_the_noise_is_what_the_hessian_does_not_explain(noisy):
    state, losses, trace = noisy_quadratic_run(noisy)
    if noisy:
        # The noise's variance is tr(H) = 5.19. The estimate is an EMA of about
        # 1000 steps of squared norms of 100-dimensional Gaussians (relative
        # spread ~ 0.14 / sqrt(1000 / 2)): within 15%, measured 5.05.
        assert float(state.variance) == pytest.approx(trace, rel=0.15)
        # Tuned for that noise, the rate is low and the loss settles near its
        # floor (mean of the last 100 steps 0.63 here; Polyak's rate for the
        # range, as without the noise estimate, left it at 3.8).
        assert float(np.mean(losses[-100:])) < 1.5
    else:
        # On a quadratic, H s explains the whole change of the gradient: heavy
        # ball's oscillation is no noise, and the rate is Polyak's.
        assert float(state.variance) == 0.0


# With HVPs: a Lanczos compile of its own (4 s on 2 cores), slow tier.
@pytest.mark.parametrize("hvp", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_non_convex_loss_never_gives_nan(hvp):
    def loss(p):
        return jnp.sum(jnp.cos(3 * p)) + 0.01 * jnp.sum(p**4)

    errs, state = errors(momentax.autotune(), loss, jnp.linspace(-1, 1, 16), 300, hvp)
    assert np.all(np.isfinite(errs))
    chex.assert_tree_all_finite(state)
    assert float(state.min_curvature) > 0


@pytest.mark.slow  # a Lanczos compile of its own (4 s on 2 cores)
def test_hessian_refreshes_only_on_its_schedule():
    def loss(p):  # curvature changes along the path
        return jnp.sum(p**4) + jnp.sum(p**2)

    opt = momentax.autotune(curvature_every=5, curvature_iterations=4)
    params, state = jnp.linspace(1.0, 2.0, 6), opt.init(jnp.ones(6))
    seen = []
    step = stepper(opt, loss, hvp=True)
    for _ in range(12):
        params, state = step(params, state)
        seen.append(float(state.hessian_max))
    changed = [t for t in range(1, 12) if seen[t] != seen[t - 1]]
    # Steps 0, 1, 2, 4 (powers of two below 5), then 5 and 10.
    assert set(changed) <= {1, 2, 4, 5, 10} and {5, 10} <= set(changed), changed


# --- Data parallelism ------------------------------------------------------

X = jax.random.normal(jax.random.key(5), (64, 8)) * jnp.linspace(0.2, 2.0, 8)
Y = X @ jnp.arange(1.0, 9.0) + 0.3 * jax.random.normal(jax.random.key(6), (64,))


def batch_loss(params, x, y):
    return 0.5 * jnp.mean((x @ params - y) ** 2)


def sharded_run(num_devices, hvp):
    mesh = jax.make_mesh(
        (num_devices,),
        ("data",),
        axis_types=(AxisType.Auto,),
        devices=CPUS[:num_devices],
    )
    data = NamedSharding(mesh, P("data"))
    x, y = jax.device_put(X, data), jax.device_put(Y, data)
    opt = momentax.autotune()

    @jax.jit
    def step(params, state, x, y):
        loss = lambda p: batch_loss(p, x, y)  # noqa: E731
        extra = {"value_fn": loss} if hvp else {}
        updates, state = opt.update(jax.grad(loss)(params), state, params, **extra)
        return optax.apply_updates(params, updates), state

    params = jnp.zeros(8)
    state = opt.init(params)
    for _ in range(20):
        params, state = step(params, state, x, y)
    return params, state


@pytest.mark.slow  # three meshes, each compiled: 4-7 s with HVPs on a 2-core CPU
@pytest.mark.skipif(len(CPUS) < 8, reason="needs the 8 CPU devices of conftest.py")
@pytest.mark.parametrize("hvp", [False, True])
def test_statistics_are_global_on_any_mesh(hvp):
    def signed(run):
        # A Ritz vector is defined up to its sign, which rounding picks: each
        # is compared with its first component made nonnegative.
        params, state = run
        canonical = lambda v: v * jnp.where(v[0] < 0, -1, 1)  # noqa: E731
        return params, state._replace(
            top_vector=canonical(state.top_vector),
            bottom_vector=canonical(state.bottom_vector),
        )

    one = signed(sharded_run(1, hvp))
    for num_devices in (2, 8):
        # The same sums, reduced in a different order over devices: float32
        # rounding, amplified over 20 tuned steps.
        chex.assert_trees_all_close(
            one, signed(sharded_run(num_devices, hvp)), rtol=1e-4, atol=1e-5
        )


@pytest.mark.skipif(len(CPUS) < 8, reason="needs the 8 CPU devices of conftest.py")
# With HVPs: Lanczos under shard_map and whole, 5-12 s on 2 cores: slow tier.
@pytest.mark.parametrize("hvp", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_shard_map_with_axis_name_equals_the_whole_batch(hvp):
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,), devices=CPUS[:8])
    split = momentax.autotune(axis_name="data")
    whole = momentax.autotune()

    def local_step(params, state, x, y):
        loss = lambda p: batch_loss(p, x, y)  # noqa: E731
        extra = {"value_fn": loss} if hvp else {}
        updates, state = split.update(jax.grad(loss)(params), state, params, **extra)
        return optax.apply_updates(params, updates), state

    state_spec = jax.tree.map(lambda _: P(), split.init(jnp.zeros(8)))
    sharded_step = jax.jit(
        jax.shard_map(
            local_step,
            mesh=mesh,
            in_specs=(P(), state_spec, P("data"), P("data")),
            out_specs=(P(), state_spec),
            # Per-device gradients, as under pmap: with check_vma=True JAX would
            # sum the gradients of the replicated params over the axis itself.
            check_vma=False,
        )
    )

    @jax.jit
    def whole_step(params, state):
        loss = lambda p: batch_loss(p, X, Y)  # noqa: E731
        extra = {"value_fn": loss} if hvp else {}
        updates, state = whole.update(jax.grad(loss)(params), state, params, **extra)
        return optax.apply_updates(params, updates), state

    split_params, split_state = jnp.zeros(8), split.init(jnp.zeros(8))
    whole_params, whole_state = jnp.zeros(8), whole.init(jnp.zeros(8))
    for _ in range(20):
        split_params, split_state = sharded_step(split_params, split_state, X, Y)
        whole_params, whole_state = whole_step(whole_params, whole_state)
    # The mean of 8 per-device mean gradients is the whole batch's mean gradient,
    # up to float32 rounding of the different summation order.
    chex.assert_trees_all_close(
        (split_params, split_state), (whole_params, whole_state), rtol=1e-4, atol=1e-5
    )


# --- Validation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"convention": "keras"}, ValueError, "convention must be one of"),
        (
            {"initial_learning_rate": 0.0},
            ValueError,
            "initial_learning_rate must be in",
        ),
        ({"initial_learning_rate": "1"}, TypeError, "initial_learning_rate must be a"),
        ({"max_growth": 1.0}, ValueError, "max_growth must be > 1"),
        ({"max_momentum": 1.0}, ValueError, "max_momentum must be in"),
        ({"max_condition_number": 1.0}, ValueError, "max_condition_number must be > 1"),
        ({"stability_margin": -0.1}, ValueError, "stability_margin must be >= 0"),
        ({"stability_margin": None}, TypeError, "stability_margin must be a float"),
        ({"decay": 1.0}, ValueError, "decay must be in"),
        ({"window": 0}, ValueError, "window must be an integer >= 1"),
        ({"curvature_every": 2.5}, ValueError, "curvature_every must be an integer"),
        ({"curvature_iterations": 1}, ValueError, "curvature_iterations must be an"),
        ({"axis_name": 3}, TypeError, "axis_name must be a str"),
        ({"key": 0}, TypeError, "key must be a JAX PRNG key"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        momentax.autotune(**kwargs)


def test_numpy_scalars_are_accepted_and_nan_is_not():
    opt = momentax.autotune(
        initial_learning_rate=np.float32(0.01),
        max_growth=np.int64(3),
        max_momentum=np.float64(0.9),
        stability_margin=np.float32(0.2),
        window=np.int32(5),
    )
    state = opt.init(jnp.ones(2))
    opt.update(jnp.ones(2), state, jnp.ones(2))  # traces with the plain floats
    with pytest.raises(ValueError, match="max_momentum must be in"):
        momentax.autotune(max_momentum=np.float32("nan"))
    with pytest.raises(TypeError, match="decay must be a float"):
        momentax.autotune(decay=np.bool_(True))


def test_bad_update_calls_are_named():
    opt = momentax.autotune()
    state = opt.init(jnp.ones(3))
    with pytest.raises(ValueError, match="value_fn needs the params"):
        opt.update(jnp.ones(3), state, value_fn=lambda p: jnp.sum(p))
    with pytest.raises(TypeError, match="value_fn must be a function"):
        opt.update(jnp.ones(3), state, jnp.ones(3), value_fn=3)
    with pytest.raises(TypeError, match="not an AutotuneState"):
        opt.update(jnp.ones(3), (state,), jnp.ones(3))
    with pytest.raises(TypeError, match="params has dtype int32"):
        opt.init(jnp.ones(3, jnp.int32))


def test_fit_donates_a_fresh_autotune_state():
    # fit refuses a state that holds one buffer in two fields (donation would
    # free it twice): init must give every field its own array.
    params = {"w": jnp.array([1.0, -2.0])}
    state = momentax.autotune().init(params)
    leaves = [x for x in jax.tree.leaves(state) if isinstance(x, jax.Array)]
    assert len({id(x) for x in leaves}) == len(leaves)
    result = momentax.training.fit(
        lambda p, x: jnp.sum((p["w"] * x) ** 2),
        momentax.autotune(),
        params,
        data=jnp.ones(2),
        num_steps=3,
        opt_state=state,
    )
    assert int(optax.tree.get(result.opt_state, "count")) == 3

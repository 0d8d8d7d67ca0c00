"""momentax goes where optax.sgd goes: the Optax contract, and what Optax accepts.

Extra arguments to update (as reduce_on_plateau passes them), a step count only
where something reads it, Python, NumPy and complex params, and refusals, naming
the fix, of what would train wrongly (integer params, a class taken for a
schedule, the state of another optimizer).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import momentax
from tests import helpers

PARAMS = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array(0.3)}
GRADS = {"w": jnp.array([0.1, 0.2, -0.3]), "b": jnp.array(-0.4)}

TRANSFORMS = {
    "sutskever": lambda: momentax.momentum(0.1, 0.9),
    "pytorch": lambda: momentax.momentum(0.1, 0.9, convention="pytorch"),
    "everything": lambda: momentax.momentum(
        optax.linear_schedule(0.1, 0.01, 10),
        lambda count: jnp.minimum(0.5 + 0.1 * jnp.asarray(count, jnp.float32), 0.9),
        dampening=0.1,
        weight_decay=1e-3,
        maximize=True,
        accumulator_dtype=jnp.float32,
    ),
    "nesterov": lambda: momentax.momentum(0.1, 0.9, nesterov=True),
    "plain_sgd": lambda: momentax.momentum(0.1, 0),
    "scale_by_momentum": lambda: momentax.scale_by_momentum(0.9, dampening=0.5),
    "scale_by_momentum_zero": lambda: momentax.scale_by_momentum(0),
}


@pytest.mark.parametrize("name", TRANSFORMS)
@pytest.mark.parametrize("jit", [False, True])
def test_update_accepts_and_ignores_extra_arguments(name, jit):
    opt = TRANSFORMS[name]()
    assert isinstance(opt, optax.GradientTransformationExtraArgs)
    state = opt.init(PARAMS)
    update = jax.jit(opt.update) if jit else opt.update
    with_extra = update(GRADS, state, PARAMS, value=jnp.array(1.5), key=None)
    without = update(GRADS, state, PARAMS)
    jax.tree.map(np.testing.assert_array_equal, with_extra, without)


@pytest.mark.parametrize("convention", momentax.CONVENTIONS)
def test_inside_reduce_on_plateau(convention):
    # reduce_on_plateau reads value=; the chain hands it to every piece.
    opt = optax.chain(
        momentax.momentum(0.5, 0.9, convention=convention),
        optax.contrib.reduce_on_plateau(patience=2, factor=0.5, cooldown=0),
    )
    state = opt.init(PARAMS)
    step = jax.jit(opt.update)
    # Optax's reduce_on_plateau mixes int32 and float32: standard promotion.
    with jax.numpy_dtype_promotion("standard"):
        for _ in range(6):  # a loss that never improves: the scale must drop
            _, state = step(GRADS, state, PARAMS, value=jnp.array(1.0))
    assert float(optax.tree.get(state, "scale")) < 1.0


@pytest.mark.parametrize("convention", momentax.CONVENTIONS)
def test_constant_rate_keeps_no_step_count(convention):
    state = momentax.momentum(0.1, 0.9, convention=convention).init(PARAMS)
    assert helpers.counts(state) == []
    leaves = jax.tree.leaves(state)
    assert len(leaves) == len(jax.tree.leaves(PARAMS))  # the buffer alone


@pytest.mark.parametrize(
    ("kwargs", "num_counts"),
    [
        ({"learning_rate": optax.linear_schedule(0.1, 0.0, 5)}, 1),
        ({"learning_rate": 0.1, "dampening": 0.5}, 1),
        ({"learning_rate": 0.1, "momentum": lambda count: 0.9}, 1),
        ({"learning_rate": {"w": 0.1, "b": lambda count: 0.1}}, 1),
        ({"learning_rate": optax.linear_schedule(0.1, 0.0, 5), "dampening": 0.5}, 2),
    ],
)
def test_a_count_only_where_something_reads_it(kwargs, num_counts):
    opt = momentax.momentum(**kwargs)
    state = opt.init(PARAMS)
    for _ in range(3):
        _, state = opt.update(GRADS, state, PARAMS)
    assert helpers.counts(state) == [3] * num_counts


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"learning_rate": optax.linear_schedule(0.1, 0.0, 5)},
        {"dampening": 0.5},
        {"weight_decay": 1e-3, "maximize": True},
    ],
)
def test_the_two_conventions_have_different_state_structures(kwargs):
    kwargs = {"learning_rate": 0.1, **kwargs}
    sutskever = momentax.momentum(**kwargs, convention="sutskever").init(PARAMS)
    pytorch = momentax.momentum(**kwargs, convention="pytorch").init(PARAMS)
    assert jax.tree.structure(sutskever) != jax.tree.structure(pytorch)
    # ... and the buffer is still found the same way in both.
    for state in (sutskever, pytorch):
        assert jax.tree.structure(helpers.velocity(state)) == jax.tree.structure(PARAMS)


@pytest.mark.parametrize("convention", momentax.CONVENTIONS)
@pytest.mark.parametrize(
    "params",
    [
        {"w": np.ones(3, np.float32), "b": 0.0},
        {"w": np.float32(2.0), "b": np.array(1.5, np.float32)},
        {"w": np.ones((2, 2), np.float64)},  # canonicalized to float32 as in JAX
    ],
    ids=["numpy_and_python_float", "numpy_scalars", "numpy_float64"],
)
def test_python_and_numpy_params_as_optax_sgd(params, convention):
    opt = momentax.momentum(0.1, 0.9, convention=convention)
    state = opt.init(params)
    velocity = helpers.velocity(state)
    for leaf, param in zip(
        jax.tree.leaves(velocity), jax.tree.leaves(params), strict=True
    ):
        assert isinstance(leaf, jax.Array)
        assert leaf.dtype == jnp.result_type(param)
        assert not leaf.weak_type  # a stable lax.scan carry
    grads = jax.tree.map(lambda p: np.full(np.shape(p), 0.5, np.float32), params)
    want_state = optax.sgd(0.1, 0.9).init(params)
    for _ in range(3):
        updates, state = jax.jit(opt.update)(grads, state, params)
        want, want_state = optax.sgd(0.1, 0.9).update(grads, want_state, params)
        # The same f32 operations as optax.sgd up to order: within an ulp or two.
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), updates, want
        )


@pytest.mark.parametrize("convention", momentax.CONVENTIONS)
@pytest.mark.parametrize("accumulator_dtype", [jnp.complex64, jnp.float32])
def test_complex_accumulator_for_complex_params(convention, accumulator_dtype):
    rng = np.random.default_rng(0)
    params = {
        "z": jnp.asarray(rng.normal(size=3) + 1j * rng.normal(size=3), jnp.complex64)
    }
    grads = [
        {"z": jnp.asarray(rng.normal(size=3) + 1j * rng.normal(size=3), jnp.complex64)}
        for _ in range(5)
    ]
    opt = momentax.momentum(
        0.1, 0.9, convention=convention, accumulator_dtype=accumulator_dtype
    )
    got, state = helpers.run(opt, params, grads)
    want, _ = helpers.run(optax.sgd(0.1, 0.9), params, grads)
    assert helpers.velocity(state)["z"].dtype == jnp.complex64
    # One formula, two rounding orders (lr inside or outside): a few f32 ulps.
    np.testing.assert_allclose(got["z"], want["z"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "params",
    [
        {"w": jnp.array([1, 2, 3])},
        {"w": np.arange(3)},
        {"b": 0},
        {"flag": jnp.array(True)},
    ],
    ids=["jax_int", "numpy_int", "python_int", "bool"],
)
def test_integer_params_are_refused_with_the_fix(params):
    # An integer param would cast the rate to its dtype (0.1 -> 0): zero updates,
    # silently. Refused, with the fix.
    with pytest.raises(TypeError, match="needs floating-point or complex params"):
        momentax.momentum(0.1, 0.9).init(params)
    with pytest.raises(TypeError, match="needs floating-point or complex params"):
        momentax.scale_by_momentum(0.9).init(params)


def test_python_int_param_error_suggests_the_float():
    with pytest.raises(
        TypeError, match=r"params\['b'\] .* write the Python number as 0.0"
    ):
        momentax.momentum(0.1).init({"b": 0})


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"learning_rate": int}, "learning_rate"),
        ({"learning_rate": 0.1, "momentum": jnp.float32}, "momentum"),
        ({"learning_rate": {"w": float, "b": 0.1}}, r"learning_rate\['w'\]"),
        ({"learning_rate": np.dtype("float32")}, "learning_rate"),
    ],
)
def test_classes_and_dtypes_are_not_schedules(kwargs, name):
    # A class or dtype is callable: taken for a schedule it would give
    # lr = int(step), or momentum = step. Refused, naming the argument.
    with pytest.raises(TypeError, match=f"{name} must be a number or a schedule"):
        momentax.momentum(**kwargs)


@pytest.mark.parametrize(
    "schedule",
    [lambda count: None, lambda count: jnp.asarray(0.1 + 0.1j), lambda count: "0.1"],
    ids=["none", "complex", "string"],
)
def test_schedule_values_must_be_real_numbers(schedule):
    opt = momentax.momentum(schedule, 0.9)
    with pytest.raises(
        TypeError, match="the learning_rate schedule must be a real number"
    ):
        opt.update(GRADS, opt.init(PARAMS), PARAMS)


def test_state_of_another_optimizer_is_named():
    opt = momentax.scale_by_momentum(0.9)
    other = optax.sgd(0.1, 0.9).init(PARAMS)
    with pytest.raises(TypeError, match="not a MomentumState: tuple"):
        opt.update(GRADS, other)


def test_heavy_ball_tuning_is_finite_at_extreme_curvatures():
    tuning = momentax.heavy_ball_tuning(1e300, 1e-300)
    assert all(np.isfinite(tuning))
    assert 0.0 <= tuning.momentum <= 1.0 and tuning.learning_rate > 0


@pytest.mark.parametrize(
    "dtype", [jnp.float32, jnp.bfloat16, jnp.float16, jnp.float8_e4m3fn]
)
@pytest.mark.parametrize("jit", [False, True])
def test_the_update_is_the_buffer_bit_for_bit(dtype, jit):
    # Under jit the lr-inside update is written as v * 1 (the one behind an
    # optimization barrier) so that XLA:CPU fuses the params' add; it must still
    # be v itself: signed zeros, NaNs, infinities, subnormals (1e-40 in float32).
    values = [0.0, -0.0, 1.5, -2.25, np.inf, -np.inf, np.nan, -np.nan, 1e-8, 1e-40]
    grads = {"w": jnp.asarray(values, dtype)}
    opt = momentax.momentum(1.0, 0.5)
    update = jax.jit(opt.update) if jit else opt.update
    updates, state = update(grads, opt.init(grads))
    velocity = helpers.velocity(state)["w"]
    bits = {1: np.uint8, 2: np.uint16, 4: np.uint32}[jnp.dtype(dtype).itemsize]
    np.testing.assert_array_equal(
        np.asarray(updates["w"]).view(bits),
        np.asarray(velocity).view(bits),
    )


def _momentum_and_sgd(convention):
    """A momentax optimizer and the optax.sgd that gives its numbers."""
    mine = momentax.momentum(0.1, 0.9, convention=convention)
    return mine, optax.sgd(0.1, 0.9)


@pytest.mark.parametrize("convention", momentax.CONVENTIONS)
@pytest.mark.parametrize("with_params", [True, False])
@pytest.mark.parametrize("jit", [False, True])
def test_integer_gradients_give_optax_sgds_float_updates(convention, with_params, jit):
    # Taken at their value in the params' dtype (without params, the default
    # float dtype), as optax.sgd's arithmetic promotes them; 0.1.0 cast the
    # learning rate to the integer dtype and gave zero updates.
    mine, sgd = _momentum_and_sgd(convention)
    grads = {"w": jnp.array([10, -20, 30], jnp.int32), "b": jnp.array(4, jnp.int32)}
    float_grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
    params = PARAMS if with_params else None
    update = jax.jit(mine.update) if jit else mine.update
    state, expected_state = mine.init(PARAMS), sgd.init(PARAMS)
    for _ in range(3):
        updates, state = update(grads, state, params)
        expected, expected_state = sgd.update(float_grads, expected_state, PARAMS)
        for got, want in zip(
            jax.tree.leaves(updates), jax.tree.leaves(expected), strict=True
        ):
            assert got.dtype == jnp.float32
            # Both conventions are optax.sgd's numbers at a constant rate, up to
            # float32 rounding of the order of the operations (a few ulps).
            np.testing.assert_allclose(got, want, rtol=1e-6)


def test_integer_updates_of_scale_by_momentum_come_out_in_the_buffers_dtype():
    grads = {"w": jnp.array([1, 2, 3], jnp.int32), "b": jnp.array(-1, jnp.int32)}
    mine, trace = momentax.scale_by_momentum(0.5), optax.trace(0.5)
    state, expected_state = mine.init(PARAMS), trace.init(PARAMS)
    for _ in range(2):
        updates, state = mine.update(grads, state)
        expected, expected_state = trace.update(
            jax.tree.map(lambda g: g.astype(jnp.float32), grads), expected_state
        )
    chex.assert_trees_all_equal(updates, expected)  # exact: 1 + 0.5 * 1 etc.
    chex.assert_trees_all_equal_dtypes(state.velocity, PARAMS)


@pytest.mark.parametrize("convention", momentax.CONVENTIONS)
@pytest.mark.parametrize("jit", [False, True])
def test_a_learning_rate_schedules_count_is_found_as_in_optax_sgd(convention, jit):
    schedule = optax.linear_schedule(0.1, 0.01, 10)
    mine = momentax.momentum(schedule, 0.9, convention=convention)
    sgd = optax.sgd(schedule, 0.9)
    update = jax.jit(mine.update) if jit else mine.update
    state, sgd_state = mine.init(PARAMS), sgd.init(PARAMS)
    for _ in range(3):
        _, state = update(GRADS, state, PARAMS)
        _, sgd_state = sgd.update(GRADS, sgd_state, PARAMS)
    assert int(optax.tree.get(state, "count")) == 3
    assert int(optax.tree.get(state, "count")) == int(
        optax.tree.get(sgd_state, "count")
    )


def test_the_buffers_state_type_says_whether_it_counts():
    plain = momentax.scale_by_momentum(0.9).init(PARAMS)
    assert type(plain) is momentax.MomentumState
    for counted in (
        momentax.scale_by_momentum(0.9, dampening=0.5),
        momentax.scale_by_momentum(lambda count: 0.9),
    ):
        assert type(counted.init(PARAMS)) is momentax.CountedMomentumState
    assert momentax.MomentumState._fields == ("velocity",)
    assert momentax.CountedMomentumState._fields == ("count", "velocity")


EMPTY_TREES = [{}, None, [], (), {"a": {}, "b": []}]


@pytest.mark.parametrize("tree", EMPTY_TREES, ids=repr)
@pytest.mark.parametrize("name", TRANSFORMS)
@pytest.mark.parametrize("jit", [False, True])
def test_empty_trees_as_optax_sgd(tree, name, jit):
    opt = TRANSFORMS[name]()
    update = jax.jit(opt.update) if jit else opt.update
    state = opt.init(tree)
    if tree is None and name == "everything":
        # params=None means "no params", which weight decay needs (as in
        # optax.add_decayed_weights).
        with pytest.raises(ValueError, match=r"weight_decay=0\.001 needs the params"):
            update(tree, state, tree)
        return
    for _ in range(2):
        updates, state = update(tree, state, tree)
    expected, _ = optax.sgd(0.1, 0.9).update(tree, optax.sgd(0.1, 0.9).init(tree))
    assert jax.tree.structure(updates) == jax.tree.structure(expected)
    # The count, where there is one, still counts the steps.
    assert helpers.counts(state) in ([], [2], [2, 2])


@pytest.mark.parametrize("convention", momentax.CONVENTIONS)
@pytest.mark.parametrize("jit", [False, True])
def test_masked_with_nothing_selected_as_optax_sgd(convention, jit):
    mask = jax.tree.map(lambda _: False, PARAMS)
    mine = optax.masked(momentax.momentum(0.1, 0.9, convention=convention), mask)
    sgd = optax.masked(optax.sgd(0.1, 0.9), mask)
    update = jax.jit(mine.update) if jit else mine.update
    updates, _ = update(GRADS, mine.init(PARAMS), PARAMS)
    expected, _ = sgd.update(GRADS, sgd.init(PARAMS), PARAMS)
    chex.assert_trees_all_equal(updates, expected)  # the gradients, unchanged


@pytest.mark.parametrize("convention", momentax.CONVENTIONS)
@pytest.mark.parametrize("jit", [False, True])
def test_multi_transform_label_no_param_uses_as_optax_sgd(convention, jit):
    labels = jax.tree.map(lambda _: "plain", PARAMS)
    mine = optax.multi_transform(
        {
            "momentum": momentax.momentum(0.1, 0.9, convention=convention),
            "plain": optax.sgd(0.3),
        },
        labels,
    )
    theirs = optax.multi_transform(
        {"momentum": optax.sgd(0.1, 0.9), "plain": optax.sgd(0.3)}, labels
    )
    update = jax.jit(mine.update) if jit else mine.update
    updates, _ = update(GRADS, mine.init(PARAMS), PARAMS)
    expected, _ = theirs.update(GRADS, theirs.init(PARAMS), PARAMS)
    chex.assert_trees_all_equal(updates, expected)  # the plain sgd alone, both ways


@pytest.mark.parametrize("convention", momentax.CONVENTIONS)
def test_python_float_gradients_as_optax_sgd(convention):
    mine, sgd = _momentum_and_sgd(convention)
    params = {"w": 1.0, "b": -2.0}
    grads = {"w": 0.5, "b": -0.25}
    state, sgd_state = mine.init(params), sgd.init(params)
    for _ in range(3):
        updates, state = mine.update(grads, state, params)
        expected, sgd_state = sgd.update(grads, sgd_state, params)
    for got, want in zip(
        jax.tree.leaves(updates), jax.tree.leaves(expected), strict=True
    ):
        assert isinstance(got, jax.Array) and got.dtype == jnp.float32
        np.testing.assert_allclose(got, want, rtol=1e-6)  # a few float32 ulps


@pytest.mark.parametrize("dampening", [0.0, 0.5])
def test_python_float_gradients_into_scale_by_momentum(dampening):
    opt = momentax.scale_by_momentum(0.5, dampening=dampening)
    state = opt.init({"w": 1.0})
    for _ in range(2):
        updates, state = opt.update({"w": 2.0}, state)
    # b1 = 2, b2 = 0.5 * 2 + (1 - d) * 2: exact in float32.
    assert updates["w"].dtype == jnp.float32
    assert float(updates["w"]) == 1.0 + (1 - dampening) * 2.0

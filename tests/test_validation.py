"""Bad input fails early, with a message naming the argument, value and range."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import momentax

PARAMS = {"k": jnp.zeros([3]), "b": jnp.zeros([])}


ACCUMULATOR_DTYPES = (
    "accumulator_dtype must be a floating dtype, one of float16, bfloat16, float32, "
    "float64, "
    "complex64, complex128"
)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"learning_rate": -0.1},
            "learning_rate must be a finite number >= 0; got -0.1",
        ),
        ({"learning_rate": float("nan")}, "learning_rate must be a finite number >= 0"),
        ({"learning_rate": float("inf")}, "learning_rate must be a finite number >= 0"),
        ({"learning_rate": jnp.array(-1.0)}, "learning_rate must be a finite number"),
        ({"learning_rate": jnp.array(-1.0, jnp.bfloat16)}, "learning_rate must be a"),
        ({"learning_rate": {"k": 0.1, "b": -0.2}}, "learning_rate['b'] must be a"),
        ({"learning_rate": jnp.array([0.1, 0.2])}, "learning_rate must be a scalar"),
        ({"momentum": np.full(3, 0.9)}, "momentum must be a scalar; got a value of"),
        ({"dampening": jnp.zeros(2)}, "dampening must be a scalar"),
        ({"momentum": 1.5}, "momentum must be in [0, 1]; got 1.5"),
        ({"momentum": -0.1}, "momentum must be in [0, 1]; got -0.1"),
        ({"momentum": {"k": 0.9, "b": 2.0}}, "momentum['b'] must be in [0, 1]"),
        ({"dampening": 1.1}, "dampening must be in [0, 1]; got 1.1"),
        ({"dampening": -0.5}, "dampening must be in [0, 1]; got -0.5"),
        ({"weight_decay": -1e-4}, "weight_decay must be a finite number >= 0; got"),
        ({"weight_decay": np.ones(3)}, "weight_decay must be a scalar"),
        ({"nesterov": True, "momentum": 0.0}, "nesterov=True requires momentum > 0"),
        ({"nesterov": True, "momentum": jnp.array(0.0)}, "nesterov=True requires mom"),
        ({"nesterov": True, "momentum": {"k": 0.9, "b": 0}}, "nesterov=True requires"),
        ({"nesterov": True, "dampening": 0.1}, "nesterov=True requires dampening=0"),
        (
            {"convention": "keras"},
            "convention must be one of 'sutskever', 'pytorch'; got 'keras'",
        ),
        ({"accumulator_dtype": jnp.int32}, ACCUMULATOR_DTYPES),
        ({"accumulator_dtype": jnp.float8_e4m3fn}, ACCUMULATOR_DTYPES),
        ({"accumulator_dtype": "float64"}, "accumulator_dtype='float64' means float64"),
        ({"accumulator_dtype": float}, "which needs 64-bit mode"),
        ({"learning_rate": {}}, "learning_rate is a pytree with no values"),
    ],
)
def test_momentum_rejects_bad_values(kwargs, message):
    kwargs = {"learning_rate": 0.1} | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        momentax.momentum(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"learning_rate": "0.1"}, "learning_rate must be a float"),
        ({"learning_rate": None}, "learning_rate must be a float"),
        ({"learning_rate": True}, "learning_rate must be a float"),
        ({"learning_rate": 0.1j}, "learning_rate must be real-valued"),
        ({"momentum": None}, "momentum must be a float"),
        ({"dampening": lambda count: 0.1}, "dampening must be a float or a JAX scalar"),
        ({"weight_decay": {"k": 0.1}}, "weight_decay must be a float or a JAX scalar"),
        ({"nesterov": "yes"}, "nesterov must be True or False; got 'yes'"),
        ({"maximize": 1}, "maximize must be True or False; got 1"),
        ({"single_sweep": None}, "single_sweep must be True or False; got None"),
        ({"accumulator_dtype": "not-a-dtype"}, "accumulator_dtype must be a dtype"),
    ],
)
def test_momentum_rejects_bad_types(kwargs, message):
    kwargs = {"learning_rate": 0.1} | kwargs
    with pytest.raises(TypeError, match=re.escape(message)):
        momentax.momentum(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"momentum": 1.01}, "momentum must be in [0, 1]; got 1.01"),
        ({"dampening": 2.0}, "dampening must be in [0, 1]; got 2.0"),
        ({"momentum": 0, "nesterov": True}, "nesterov=True requires momentum > 0"),
        ({"nesterov": True, "dampening": 0.5}, "nesterov=True requires dampening=0"),
        ({"accumulator_dtype": jnp.int8}, ACCUMULATOR_DTYPES),
    ],
)
def test_scale_by_momentum_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        momentax.scale_by_momentum(**kwargs)


def test_boundaries_are_accepted():
    g = jnp.array([1.0, -2.0])
    # Learning rate 0 moves nothing, whatever the buffer holds.
    zero_lr = momentax.momentum(0.0, momentum=1.0, dampening=1.0, weight_decay=0.0)
    updates, _ = zero_lr.update(g, zero_lr.init(g), g)
    np.testing.assert_array_equal(updates, jnp.zeros(2))
    # Dampening without momentum (PyTorch allows it too) is plain SGD.
    plain = momentax.momentum(0.1, momentum=0.0, dampening=0.5)
    updates, _ = plain.update(g, plain.init(g), g)
    np.testing.assert_allclose(updates, -0.1 * g, rtol=1e-6)  # one f32 rounding
    # Momentum 1 with Nesterov: b_1 = g, u_1 = g + 1 * b_1.
    nesterov = momentax.scale_by_momentum(1.0, nesterov=True)
    updates, _ = nesterov.update(g, nesterov.init(g))
    np.testing.assert_array_equal(updates, 2 * g)


@pytest.mark.parametrize("argument", ["learning_rate", "momentum"])
def test_per_leaf_tree_must_match_params(argument):
    kwargs = {"learning_rate": 0.1, argument: {"k": 0.5, "w": 0.5}}
    opt = momentax.momentum(**kwargs)
    with pytest.raises(
        ValueError, match=f"{argument} is a pytree of per-leaf values"
    ) as e:
        opt.init(PARAMS)
    assert "PyTreeDef({'k': *, 'w': *})" in str(e.value)
    assert "PyTreeDef({'b': *, 'k': *})" in str(e.value)


def test_per_leaf_tree_may_be_a_prefix():
    params = {"encoder": {"w": jnp.ones(2), "b": jnp.ones(1)}, "head": jnp.ones(3)}
    opt = momentax.momentum({"encoder": 0.1, "head": 0.01})
    updates, _ = opt.update(params, opt.init(params))
    # A first step with momentum is -lr * g, lr taken from the leaf's prefix.
    want = {"encoder": {"w": jnp.full(2, -0.1), "b": jnp.full(1, -0.1)}}
    want["head"] = jnp.full(3, -0.01)
    chex.assert_trees_all_close(updates, want, rtol=1e-6)  # one f32 rounding


@pytest.mark.parametrize("jit", [False, True])
def test_gradients_must_match_the_state(jit):
    opt = momentax.momentum(0.1)
    state = opt.init(PARAMS)
    update = jax.jit(opt.update) if jit else opt.update
    grads = {"k": jnp.zeros([3]), "bias": jnp.zeros([])}
    with pytest.raises(
        ValueError, match="do not have the structure of the velocity"
    ) as e:
        update(grads, state)
    assert "updates: PyTreeDef({'bias': *, 'k': *})" in str(e.value)
    assert "velocity: PyTreeDef({'b': *, 'k': *})" in str(e.value)


def test_gradients_must_match_the_params_without_velocity():
    opt = momentax.momentum(0.1, momentum=0)
    with pytest.raises(ValueError, match="do not have the structure of the params"):
        opt.update([jnp.zeros(3)], opt.init(PARAMS), PARAMS)


@pytest.mark.parametrize("weight_decay", [1e-4, jnp.array(0.0)])
def test_weight_decay_needs_params(weight_decay):
    opt = momentax.momentum(0.1, weight_decay=weight_decay)
    with pytest.raises(ValueError, match=r"weight_decay=.* needs the params"):
        opt.update(PARAMS, opt.init(PARAMS))


def test_traced_hyperparameters_are_accepted_and_used():
    # Inside jit nothing can be checked at construction: values are used as given.
    @jax.jit
    def run(learning_rate, momentum, dampening):
        opt = momentax.momentum(learning_rate, momentum, dampening=dampening)
        state = opt.init(PARAMS)
        for _ in range(3):
            updates, state = opt.update(PARAMS | {"k": jnp.ones(3)}, state)
        return updates

    static = momentax.momentum(0.1, 0.9, dampening=0.5)
    state = static.init(PARAMS)
    for _ in range(3):
        want, state = static.update(PARAMS | {"k": jnp.ones(3)}, state)
    got = run(jnp.array(0.1), jnp.array(0.9), jnp.array(0.5))
    chex.assert_trees_all_close(got, want, rtol=1e-6)  # One f32 rounding apart.
    # A traced negative rate is not rejected: it ascends, as documented.
    assert float(run(jnp.array(-0.1), jnp.array(0.0), jnp.array(0.0))["k"][0]) > 0


def test_errors_surface_through_optax_wrappers():
    with pytest.raises(ValueError, match="momentum must be in"):
        optax.inject_hyperparams(momentax.momentum)(
            learning_rate=0.1, momentum=3.0
        ).init(PARAMS)


def test_bfloat16_hyperparameters_are_accepted():
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    momentax.momentum(jnp.array(0.1, jnp.bfloat16), jnp.array(0.9, jnp.bfloat16))
    opt = optax.inject_hyperparams(momentax.momentum)(learning_rate=0.1)
    updates, _ = opt.update(params, opt.init(params), params)
    chex.assert_trees_all_equal_dtypes(updates, params)


def test_schedule_must_return_a_scalar():
    opt = momentax.momentum(lambda count: jnp.full(3, 0.1))
    with pytest.raises(ValueError, match="the value of the learning_rate schedule"):
        opt.update(PARAMS, opt.init(PARAMS))


def test_traced_hyperparameter_must_be_a_scalar():
    @jax.jit
    def build(learning_rate):
        return momentax.momentum(learning_rate).init(PARAMS)

    with pytest.raises(ValueError, match=r"learning_rate must be a scalar; .* \(2,\)"):
        build(jnp.array([0.1, 0.2]))


@pytest.mark.parametrize("momentum", [0.9, 0])
def test_gradient_shapes_must_match(momentum):
    opt = momentax.momentum(0.1, momentum)
    grads = PARAMS | {"k": jnp.zeros([3, 1])}
    # The first piece of the chain to see them names what it compares with.
    with pytest.raises(ValueError, match="do not have the shapes of the") as e:
        opt.update(grads, opt.init(PARAMS), PARAMS)
    assert re.search(
        r"\['k'\]: updates \(3, 1\), (params|velocity) \(3,\)", str(e.value)
    )


def test_injected_weight_decay_needs_params_or_static_args():
    injected = optax.inject_hyperparams(momentax.momentum)(learning_rate=0.1)
    with pytest.raises(ValueError, match="list 'weight_decay' in its static_args"):
        injected.update(PARAMS, injected.init(PARAMS))
    static = optax.inject_hyperparams(momentax.momentum, static_args="weight_decay")
    opt = static(learning_rate=0.1)
    updates, _ = jax.jit(opt.update)(PARAMS, opt.init(PARAMS))
    chex.assert_trees_all_equal_shapes(updates, PARAMS)


@pytest.mark.parametrize("convention", ["sutskever", "pytorch"])
def test_complex_accumulator_needs_complex_params(convention):
    opt = momentax.momentum(0.1, accumulator_dtype=jnp.complex64, convention=convention)
    with pytest.raises(ValueError, match=r"complex but params\['b'\] is real"):
        opt.init(PARAMS)


BUFFERS = {
    "sutskever": lambda: momentax.momentum(0.1, 0.9),
    "pytorch": lambda: momentax.momentum(0.1, 0.9, convention="pytorch"),
    "plain_sgd": lambda: momentax.momentum(0.1, 0),
    "scale_by_momentum": lambda: momentax.scale_by_momentum(0.9),
    "scale_by_momentum_zero": lambda: momentax.scale_by_momentum(0),
}


@pytest.mark.parametrize("name", BUFFERS)
@pytest.mark.parametrize("jit", [False, True])
def test_bool_gradients_are_named_with_the_fix(name, jit):
    opt = BUFFERS[name]()
    update = jax.jit(opt.update) if jit else opt.update
    grads = {"k": jnp.zeros([3]), "b": jnp.array(True)}
    with pytest.raises(
        TypeError, match=r"updates\['b'\] has dtype bool, .* mask.astype"
    ):
        update(grads, opt.init(PARAMS))


@pytest.mark.parametrize("convention", momentax.CONVENTIONS)
@pytest.mark.parametrize(
    "params", [{"k": jnp.zeros([3]), "c": jnp.zeros([])}, [jnp.zeros([3])]]
)
@pytest.mark.parametrize("jit", [False, True])
def test_weight_decay_with_params_of_another_structure(convention, params, jit):
    opt = momentax.momentum(0.1, weight_decay=1e-3, convention=convention)
    update = jax.jit(opt.update) if jit else opt.update
    with pytest.raises(
        ValueError, match="do not have the structure of the params"
    ) as error:
        update(PARAMS, opt.init(PARAMS), params)
    assert "params: PyTreeDef(" in str(error.value)
    assert "Pass the params the updates are the gradients of" in str(error.value)


@pytest.mark.parametrize("name", BUFFERS)
@pytest.mark.parametrize("state", [None, {"velocity": PARAMS}])
def test_a_state_that_is_not_the_inits_is_named(name, state):
    opt = BUFFERS[name]()
    with pytest.raises(TypeError, match=r"state.*init") as error:
        opt.update(PARAMS, state, PARAMS)
    assert ("None" if state is None else "dict") in str(error.value)


DAMPED_FROM_UNDAMPED = [
    # (the optimizer that runs, the optimizer whose fresh state it is given)
    (
        lambda: momentax.momentum(0.1, 0.9, dampening=0.5),
        lambda: momentax.momentum(0.1, 0.9),
        "got a MomentumState, the state of an optimizer without dampening",
    ),
    (
        lambda: momentax.momentum(0.1, lambda count: 0.9, convention="pytorch"),
        lambda: momentax.momentum(0.1, 0.9, convention="pytorch"),
        "got a MomentumState, .* but a momentum schedule reads the step count",
    ),
    (
        lambda: momentax.momentum(0.1, 0.9),
        lambda: momentax.momentum(0.1, 0.9, dampening=0.5),
        "got a CountedMomentumState, the state of an optimizer that counts steps",
    ),
    (
        lambda: momentax.scale_by_momentum(0.9, dampening=0.5),
        lambda: momentax.scale_by_momentum(0.9),
        "so its state is a CountedMomentumState",
    ),
    (
        lambda: momentax.scale_by_momentum(0),
        lambda: momentax.scale_by_momentum(0.9),
        r"scale_by_momentum\(0\) keeps no buffer, but the state holds one",
    ),
]


@pytest.mark.parametrize(("make", "make_other", "message"), DAMPED_FROM_UNDAMPED)
@pytest.mark.parametrize("jit", [False, True])
def test_a_buffer_state_with_or_without_a_count_is_refused(
    make, make_other, message, jit
):
    # fit compares the state with init's; plain update checks the state's type,
    # so a damped optimizer never runs on an undamped state with count None.
    opt = make()
    update = jax.jit(opt.update) if jit else opt.update
    with pytest.raises(TypeError, match=message):
        update(PARAMS, make_other().init(PARAMS), PARAMS)


@pytest.mark.parametrize("convention", momentax.CONVENTIONS)
@pytest.mark.parametrize("jit", [False, True])
def test_a_schedule_given_a_constant_rates_state_is_named(convention, jit):
    schedule = momentax.momentum(
        optax.linear_schedule(0.1, 0.0, 5), 0.9, convention=convention
    )
    constant = momentax.momentum(0.1, 0.9, convention=convention)
    for opt, other, message in [
        (
            schedule,
            constant,
            "got the state EmptyState .* but learning_rate is a schedule",
        ),
        (
            constant,
            schedule,
            "got the state ScaleByScheduleState .* but learning_rate is constant",
        ),
    ]:
        update = jax.jit(opt.update) if jit else opt.update
        with pytest.raises(TypeError, match=message):
            update(PARAMS, other.init(PARAMS), PARAMS)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"learning_rate": lambda: 0.1}, "learning_rate"),
        ({"learning_rate": lambda step, total: 0.1}, "learning_rate"),
        ({"learning_rate": 0.1, "momentum": lambda step, total: 0.9}, "momentum"),
        ({"learning_rate": {"k": 0.1, "b": lambda: 0.1}}, r"learning_rate\['b'\]"),
    ],
)
def test_schedules_of_the_wrong_arity_are_named(kwargs, name):
    with pytest.raises(
        TypeError, match=f"{name} is a schedule, so it must take one argument"
    ):
        momentax.momentum(**kwargs)


@pytest.mark.parametrize(
    "schedule",
    [
        lambda count, scale=1.0: 0.1 * scale,
        lambda *args: 0.1,
        optax.linear_schedule(0.1, 0.0, 5),
        jnp.cos,  # no Python signature to read: accepted, and called as it is
    ],
)
def test_schedules_that_take_one_argument_are_accepted(schedule):
    opt = momentax.momentum(schedule, 0.9)
    opt.update(PARAMS, opt.init(PARAMS), PARAMS)

"""momentax against torch.optim.SGD, step for step, for every option combination.

The grid: every valid combination of momentum, dampening, Nesterov, weight decay
and maximize, in both conventions, on every device JAX sees, jitted, in float64
(so that a tolerance of 1e-12 catches any formula error). The fast tier runs a
subset that holds every pair of option values (:data:`PAIRWISE`); the slow tier
(``pytest -m slow``) the rest of the grid. Eager steps and float32 are compared
with references elsewhere: optax.sgd (test_reference.py) and the float64 NumPy
rule under Hypothesis (test_properties.py).
"""

import importlib
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import momentax
from tests import helpers

# torch is imported by the tests that run it (it takes seconds; every pytest-xdist
# worker collects this file).
HAS_TORCH = helpers.optional_present("torch")

STEPS = 50
SCHEDULE = helpers.warmup_then_decay
OPTIONS = [
    {"momentum": m, "dampening": d, "nesterov": n, "weight_decay": w, "maximize": x}
    for m, d, n, w, x in itertools.product(
        (0.0, 0.9), (0.0, 0.3), (False, True), (0.0, 0.01), (False, True)
    )
]
VALID = [
    o for o in OPTIONS if not o["nesterov"] or (o["momentum"] and not o["dampening"])
]
INVALID = [o for o in OPTIONS if o not in VALID]

pytestmark = pytest.mark.skipif(
    not HAS_TORCH, reason="torch is not installed: pip install torch==2.13.0"
)


# Every dict of VALID has the same keys in the same order: the pairwise cover
# of their value tuples is one of the dicts.
_KEYS = tuple(VALID[0])
PAIRWISE = [
    dict(zip(_KEYS, values, strict=True))
    for values in helpers.pairwise([tuple(o.values()) for o in VALID])
]


def _grid():
    """Every valid combination; those outside :data:`PAIRWISE` in the slow tier."""
    return [
        pytest.param(
            options,
            device,
            marks=() if options in PAIRWISE else pytest.mark.slow,
            id="-".join(f"{k}={v}" for k, v in options.items()) + f"-{device}",
        )
        for options in VALID
        for device in helpers.DEVICE_NAMES
    ]


def _torch_run(options, params, grads, schedule):
    """Runs torch.optim.SGD with the learning rate set from ``schedule`` each step."""
    torch = importlib.import_module("torch")
    dtype = {jnp.float32: torch.float32, jnp.float64: torch.float64}[
        jax.tree.leaves(params)[0].dtype.type
    ]
    leaves, treedef = jax.tree.flatten(params)
    tensors = [
        torch.tensor(np.asarray(p), dtype=dtype, requires_grad=True) for p in leaves
    ]
    opt = torch.optim.SGD(tensors, lr=float(schedule(0)), **options)
    for t, step_grads in enumerate(grads):
        opt.param_groups[0]["lr"] = float(schedule(t))
        for tensor, g in zip(tensors, jax.tree.leaves(step_grads), strict=True):
            tensor.grad = torch.tensor(np.asarray(g), dtype=dtype)
        opt.step()
    buffers = [opt.state[t].get("momentum_buffer") for t in tensors]
    as_tree = lambda xs: treedef.unflatten([x.detach().numpy() for x in xs])  # noqa: E731
    return as_tree(tensors), (as_tree(buffers) if buffers[0] is not None else None)


def _compare(options, convention, schedule, device_name):
    device = helpers.DEVICES[device_name]
    with jax.enable_x64(True), jax.default_device(device):
        params = jax.device_put(helpers.nested_params(jnp.float64), device)
        grads = jax.device_put(helpers.gradient_stream(params, STEPS), device)
        opt = momentax.momentum(schedule, convention=convention, **options)
        got, state = helpers.run(opt, params, grads, jax.jit)
        want, want_buffer = _torch_run(options, params, grads, schedule)
    tol = helpers.TOL[jnp.dtype(jnp.float64)]
    helpers.assert_on_device(got, device)
    chex.assert_trees_all_close(got, want, **tol)
    chex.assert_trees_all_equal_dtypes(got, params)
    if options["momentum"]:
        lr = float(schedule(STEPS - 1))
        scale = -lr if convention == "sutskever" else 1.0
        want_velocity = jax.tree.map(lambda b: scale * b, want_buffer)
        chex.assert_trees_all_close(helpers.velocity(state), want_velocity, **tol)
    else:
        assert helpers.velocity(state) is None


def _pairs(options):
    return {
        ((a, options[a]), (b, options[b]))
        for a, b in itertools.combinations(sorted(options), 2)
    }


def test_the_fast_subset_holds_every_pair_of_option_values():
    held = set().union(*map(_pairs, PAIRWISE))
    assert held == set().union(*map(_pairs, VALID))
    assert len(PAIRWISE) < len(VALID)


@pytest.mark.parametrize(("options", "device"), _grid())
def test_pytorch_convention_matches_torch_under_schedule(options, device):
    _compare(options, "pytorch", SCHEDULE, device)


@pytest.mark.parametrize(("options", "device"), _grid())
def test_sutskever_convention_matches_torch_at_constant_lr(options, device):
    _compare(options, "sutskever", optax.constant_schedule(0.05), device)


@pytest.mark.parametrize("options", INVALID)
def test_both_reject_the_same_combinations(options):
    torch = importlib.import_module("torch")
    with pytest.raises(ValueError):
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, **options)
    with pytest.raises(ValueError, match="nesterov"):
        momentax.momentum(0.1, convention="pytorch", **options)

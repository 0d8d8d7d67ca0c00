"""momentax against torch.optim.SGD, step for step, for every option combination.

The grid: every valid combination of momentum, dampening, Nesterov, weight decay
and maximize, in both conventions, on every device JAX sees, jitted, in float64
(so that a tolerance of 1e-12 catches any formula error). Eager steps and float32
are compared with references elsewhere: optax.sgd (test_reference.py) and the
float64 NumPy rule under Hypothesis (test_properties.py).
"""

import itertools
import unittest

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized

import momentax
from tests import helpers

torch = helpers.optional_import("torch")

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


def _torch_run(options, params, grads, schedule):
    """Runs torch.optim.SGD with the learning rate set from ``schedule`` each step."""
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


@unittest.skipIf(torch is None, "torch is not installed: pip install torch==2.13.0")
class TorchParityTest(chex.TestCase):
    def _compare(self, options, convention, schedule, device_name):
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
            self.assertIsNone(helpers.velocity(state))

    @parameterized.product(options=VALID, device=helpers.DEVICE_NAMES)
    def test_pytorch_convention_matches_torch_under_schedule(self, options, device):
        self._compare(options, "pytorch", SCHEDULE, device)

    @parameterized.product(options=VALID, device=helpers.DEVICE_NAMES)
    def test_sutskever_convention_matches_torch_at_constant_lr(self, options, device):
        self._compare(options, "sutskever", optax.constant_schedule(0.05), device)

    @parameterized.parameters(INVALID)
    def test_both_reject_the_same_combinations(self, **options):
        with self.assertRaises(ValueError):
            torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, **options)
        with self.assertRaisesRegex(ValueError, "nesterov"):
            momentax.momentum(0.1, convention="pytorch", **options)

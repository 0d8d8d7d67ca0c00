"""The compiled step, as XLA:CPU emits it: fused multiply-add loops, like optax.sgd's.

A step that compiles to anything else (a lone add, a reduce-precision, a copy)
runs slower than Optax's at the sizes where a step fits in cache, which the
benchmarks show but no timing test may assert. The HLO can be asserted.
"""

import re

import jax
import jax.numpy as jnp
import optax
import pytest

import momentax

pytestmark = [
    pytest.mark.codegen,
    pytest.mark.skipif(
        jax.default_backend() != "cpu", reason="XLA:CPU's fusions are checked"
    ),
]

# Opcodes a fused momentum step may contain besides its fusions' arithmetic.
ARITHMETIC = {"multiply", "add", "subtract", "negate", "broadcast", "constant"}
PLUMBING = {"parameter", "fusion", "tuple", "bitcast", "get-tuple-element"}
OPCODE = re.compile(r"=\s+\S+\s+([a-z][a-z0-9-]*)\(")


def _compiled(optimizer: optax.GradientTransformation) -> str:
    params = [jnp.ones((1000,), jnp.float32)]
    grads = [jnp.full((1000,), 0.5, jnp.float32)]

    def step(params, state, grads):
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    jitted = jax.jit(step, donate_argnums=(0, 1))
    text = jitted.lower(params, optimizer.init(params), grads).compile().as_text()
    assert text is not None
    return text


def _shape(text: str) -> tuple[int, set[str]]:
    """The number of fusions called from the entry, and every opcode used."""
    entry = text[text.index("ENTRY") :]
    fusions = len(re.findall(r"\bfusion\(", entry))
    return fusions, set(OPCODE.findall(text))


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("convention", ["sutskever", "pytorch"])
def test_the_step_compiles_to_fused_multiply_adds_as_optax_does(convention, nesterov):
    mine = momentax.momentum(0.01, 0.9, nesterov=nesterov, convention=convention)
    theirs = optax.sgd(0.01, momentum=0.9, nesterov=nesterov)
    text = _compiled(mine)
    fusions, opcodes = _shape(text)
    optax_fusions, _ = _shape(_compiled(theirs))
    assert "wrapped_" not in text  # a lone op compiled outside a fusion
    assert opcodes <= ARITHMETIC | PLUMBING, opcodes - ARITHMETIC - PLUMBING
    assert fusions == optax_fusions

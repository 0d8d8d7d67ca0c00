"""The core gives bitwise the numbers pinned in tests/data/pinned.npz, on a grid.

The file holds the outputs of an independent implementation, the 0.1.0 core (one
closure with flags), computed by ``python -m tests.pinned_grid``. Bitwise:
both compute the same operations in the same order, so any difference is a
changed formula, not rounding.
"""

import numpy as np
import pytest

from tests import pinned_grid


def _pinned() -> dict[str, tuple[str, np.ndarray]]:
    data = np.load(pinned_grid.PATH)
    offsets = np.cumsum(np.concatenate([[0], data["sizes"]]))
    return {
        str(key): (str(dtype), data["values"][start:stop])
        for key, dtype, start, stop in zip(
            data["keys"], data["dtypes"], offsets[:-1], offsets[1:], strict=True
        )
    }


# Bits are what one compiler emits: the codegen tier, on the jaxlib it pins.
# The tolerance-based grids (torch, optax, float64 NumPy) check the numbers.
pytestmark = pytest.mark.codegen

PINNED = _pinned()
CASES = {name: (kwargs, dtype) for name, kwargs, dtype in pinned_grid.cases()}


def test_grid_is_the_pinned_grid():
    names = {key.split("|")[0] for key in PINNED}
    assert names == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_numbers_as_the_pinned_core(name):
    import momentax

    kwargs, dtype = CASES[name]
    opt = momentax.momentum(**kwargs)
    modes = ("eager", "jit") if pinned_grid.jitted(name) else ("eager",)
    for mode in modes:
        got = pinned_grid.run(opt, dtype, mode == "jit")
        for key, (got_dtype, value) in got.items():
            want_dtype, want = PINNED[f"{name}|{mode}|{key}"]
            assert got_dtype == want_dtype, (mode, key)
            np.testing.assert_array_equal(value.ravel(), want, err_msg=f"{mode} {key}")

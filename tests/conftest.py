"""Test configuration: 8 simulated CPU devices, strict dtype promotion, tiers.

The CPU device count is read when JAX starts its CPU backend, so it is set
here, before any test touches a device. Tests that do not build a mesh use one
device as before; the sharding tests split work over these eight. Only this
process is configured: child processes see the machine as a user would.

The tiers (markers registered in pyproject.toml): ``pytest`` runs the fast
tier, ``pytest -m slow`` the slow one (benchmarks, subprocesses, multi-process
runs), ``pytest -m codegen`` the tests of compiler output, and ``pytest -m ""``
all three. Codegen tests assert what XLA emits (opcodes, fusions, loops,
temporary bytes, bits): they hold for the jaxlib they were written for,
:data:`CODEGEN_JAXLIB`, and are skipped on any other.
"""

import jax
import jaxlib
import pytest

NUM_CPU_DEVICES = 8
jax.config.update("jax_num_cpu_devices", NUM_CPU_DEVICES)
jax.config.update("jax_numpy_dtype_promotion", "strict")

# The jaxlib whose compiler output the codegen tier asserts. On a new jaxlib,
# run `pytest -m codegen` under it, check each difference, and update this.
CODEGEN_JAXLIB = "0.10.2"


def pytest_collection_modifyitems(config, items):
    if jaxlib.__version__ == CODEGEN_JAXLIB:
        return
    skip = pytest.mark.skip(
        reason=(
            f"asserts the compiler output of jaxlib {CODEGEN_JAXLIB}; this is "
            f"jaxlib {jaxlib.__version__} (see CODEGEN_JAXLIB in tests/conftest.py)"
        )
    )
    for item in items:
        if item.get_closest_marker("codegen"):
            item.add_marker(skip)

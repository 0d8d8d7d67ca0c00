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

import pathlib
import re

import jax
import jaxlib
import pytest

NUM_CPU_DEVICES = 8
jax.config.update("jax_num_cpu_devices", NUM_CPU_DEVICES)
jax.config.update("jax_numpy_dtype_promotion", "strict")

# The jaxlib whose compiler output the codegen tier asserts. On a new jaxlib,
# run `pytest -m codegen` under it, check each difference, and update this.
CODEGEN_JAXLIB = "0.10.2"


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject.toml's addopts) for a selection with slow tests: none.

    The slow tier starts processes of its own (children, multi-process
    training, timed benchmarks), so it runs one test at a time, in this
    process. A mark expression selects slow tests when it is empty or names
    ``slow`` other than as ``not slow``. So does a run of one file: under
    ``--dist loadfile`` one worker would run it all. Otherwise (None)
    pytest-xdist's own count, one worker per core.
    """
    expression = config.getoption("markexpr") or ""
    if not expression.strip() or re.search(r"(?<!not )\bslow\b", expression):
        return 0
    files = {arg.split("::")[0] for arg in config.args}
    if len(files) == 1 and pathlib.Path(config.invocation_params.dir, *files).is_file():
        return 0
    return None


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

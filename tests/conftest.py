"""Test configuration: 8 simulated CPU devices and strict dtype promotion.

The device count must be set before JAX starts its CPU backend, so it is set
here, before anything imports JAX. Tests that do not build a mesh use one
device as before; the sharding tests split work over these eight.
"""

import os

NUM_CPU_DEVICES = 8
_FLAG = f"--xla_force_host_platform_device_count={NUM_CPU_DEVICES}"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}".strip()

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")

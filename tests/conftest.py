"""Test configuration: 8 simulated CPU devices and strict dtype promotion.

The CPU device count is read when JAX starts its CPU backend, so it is set
here, before any test touches a device. Tests that do not build a mesh use one
device as before; the sharding tests split work over these eight. Only this
process is configured: child processes see the machine as a user would.
"""

import jax

NUM_CPU_DEVICES = 8
jax.config.update("jax_num_cpu_devices", NUM_CPU_DEVICES)
jax.config.update("jax_numpy_dtype_promotion", "strict")

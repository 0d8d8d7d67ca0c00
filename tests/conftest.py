"""Test configuration: strict dtype promotion, so no silent upcasts hide."""

import jax

jax.config.update("jax_numpy_dtype_promotion", "strict")

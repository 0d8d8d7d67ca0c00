"""How momentax reads XLA_FLAGS for the fusion option, and what a failed probe does.

XLA splits ``XLA_FLAGS`` into arguments (whitespace-separated, values quoted
with ' or "), reads a file of flags when the value does not start with ``-``,
and merges the comma-separated options of every
``--xla_backend_extra_options`` into one map, keyed by the text before ``=``.
"""

import warnings

import jax
import jax.numpy as jnp
import pytest

import momentax
from momentax import _codegen

OPTION = "xla_cpu_use_multi_output_fusion"


@pytest.mark.parametrize(
    ("xla_flags", "names"),
    [
        ("", set()),
        ("   ", set()),
        (f"--xla_backend_extra_options={OPTION}", {OPTION}),
        (f"--xla_backend_extra_options=a,{OPTION},b=1", {"a", OPTION, "b"}),
        (f"--xla_backend_extra_options={OPTION}=1", {OPTION}),
        (f"--xla_backend_extra_options={OPTION}=", {OPTION}),
        (f"--xla_backend_extra_options='x=a b,{OPTION}'", {"x", OPTION}),
        (f'--xla_backend_extra_options="x=a b,{OPTION}"', {"x", OPTION}),
        (f'--xla_backend_extra_options="a\\"b,{OPTION}"', {'a"b', OPTION}),
        ("--xla_backend_extra_options='a\\'", {"a\\"}),  # Literal in ' quotes.
        (
            f"\t--xla_cpu_enable_fast_math=false\n--xla_backend_extra_options={OPTION}",
            {OPTION},
        ),
        # Every occurrence adds to the map.
        (
            f"--xla_backend_extra_options=a --xla_backend_extra_options={OPTION}",
            {"a", OPTION},
        ),
        # Another flag whose value names the option does not set it.
        (f"--xla_dump_to=/tmp/{OPTION}", set()),
        (f"--xla_dump_to='/tmp/x --xla_backend_extra_options={OPTION}'", set()),
        (f"--xla_backend_extra_options={OPTION}_other", {f"{OPTION}_other"}),
        (f"--{OPTION}", set()),
        (f"-xla_backend_extra_options={OPTION}", set()),  # Only -- flags parse.
        # XLA stops at the first argument that is not a flag, and at "--".
        (f"--xla_dump_to=x stray --xla_backend_extra_options={OPTION}", set()),
        (f"-- --xla_backend_extra_options={OPTION}", set()),
    ],
)
def test_extra_options_are_read_as_xla_reads_them(xla_flags, names):
    assert _codegen._backend_extra_options(xla_flags) == names


def test_extra_options_come_from_the_file_that_xla_flags_names(tmp_path):
    flags = tmp_path / "flags.txt"
    flags.write_text(
        f"--xla_cpu_enable_fast_math=false\n--xla_backend_extra_options={OPTION}\n"
    )
    assert _codegen._backend_extra_options(str(flags)) == {OPTION}
    assert _codegen._backend_extra_options(str(tmp_path / "missing")) == set()


@pytest.fixture
def fresh_probe():
    """A probe not yet run in this process; the next test probes afresh too."""
    _codegen._merges_loops.cache_clear()
    yield
    _codegen._merges_loops.cache_clear()


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the probe is XLA:CPU's")
def test_the_probe_runs_only_where_the_option_is_set(monkeypatch, fresh_probe):
    probed = []
    monkeypatch.setattr(_codegen, "_compile_probe", lambda: probed.append(1) or "")
    monkeypatch.setenv("XLA_FLAGS", f"--xla_dump_to=/tmp/{OPTION}")
    assert momentax.uses_single_sweep() is False
    assert probed == []
    monkeypatch.setenv("XLA_FLAGS", f"--xla_backend_extra_options='a=1 2,{OPTION}'")
    assert momentax.uses_single_sweep() is False  # The probe's text has no fusion.
    assert probed == [1]


def _failing_probe() -> str:
    raise RuntimeError("no backend for the probe")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the probe is XLA:CPU's")
def test_a_failing_probe_warns_once_and_the_usual_form_is_used(
    monkeypatch, fresh_probe
):
    monkeypatch.setattr(_codegen, "_compile_probe", _failing_probe)
    monkeypatch.setenv("XLA_FLAGS", f"--xla_backend_extra_options={OPTION}")
    optimizer = momentax.momentum(0.1, 0.9, convention="pytorch")
    params = {"w": jnp.ones(5)}
    state = optimizer.init(params)

    def jaxpr() -> str:
        return str(jax.make_jaxpr(optimizer.update)(params, state, params))

    message = "RuntimeError: no backend for the probe.*usual two-loop form"
    with pytest.warns(RuntimeWarning, match=message):
        traced = jaxpr()
    assert "optimization_barrier" not in traced  # The usual form, not the sweep.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # A second warning would raise here.
        assert momentax.uses_single_sweep() is False
        assert jaxpr() == traced

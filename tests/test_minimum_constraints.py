"""The pins of `.ci/run minimum`, read from pyproject.toml's lower bounds."""

import importlib.util
import pathlib
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location(
    "minimum_constraints", ROOT / ".ci" / "minimum_constraints.py"
)
assert _SPEC is not None and _SPEC.loader is not None
minimum = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(minimum)


def project(dependencies, **extras):
    extras = {"checkpoint": ["orbax-checkpoint>=0.11.17"], "plots": [], **extras}
    return {"project": {"dependencies": dependencies, "optional-dependencies": extras}}


def test_every_runtime_dependency_and_checked_extra_is_pinned_at_its_bound():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = minimum.constraints(pyproject)
    names = [
        minimum._name(r)
        for r in pyproject["project"]["dependencies"]
        + [
            r
            for extra in minimum.CHECKED_EXTRAS
            for r in pyproject["project"]["optional-dependencies"][extra]
        ]
    ]
    assert sorted(pins) == sorted(names)
    assert {"jax", "jaxlib", "numpy", "optax"} <= pins.keys()
    for requirement in pyproject["project"]["dependencies"]:
        assert f">={pins[minimum._name(requirement)]}" in requirement


def test_names_are_normalised_and_markers_and_upper_bounds_ignored():
    pins = minimum.constraints(
        project(["Jax[cpu] >= 0.8.1, <0.11 ; python_version >= '3.11'"])
    )
    assert pins == {"jax": "0.8.1", "orbax-checkpoint": "0.11.17"}


def test_a_checked_requirement_without_a_lower_bound_is_refused():
    with pytest.raises(SystemExit, match="'numpy' has no '>=' lower bound"):
        minimum.constraints(project(["jax>=0.8.1", "numpy"]))


def test_another_group_must_not_claim_a_different_bound():
    with pytest.raises(SystemExit, match=r"in test disagrees .* orbax-checkpoint>="):
        minimum.constraints(project(["jax>=0.8.1"], test=["orbax_checkpoint>=0.11"]))


def test_a_missing_checked_extra_is_named():
    pyproject = project(["jax>=0.8.1"])
    del pyproject["project"]["optional-dependencies"]["plots"]
    with pytest.raises(SystemExit, match=r"no extras \['plots'\]"):
        minimum.constraints(pyproject)

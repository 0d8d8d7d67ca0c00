"""Prints pip constraints that pin momentax's dependencies to their lower bounds.

`.ci/run minimum` installs with these constraints and runs the fast test tier,
so that each `>=X` in pyproject.toml is a version the tests have passed on.
Checked at their minimum: the runtime dependencies and the extras named in
CHECKED_EXTRAS. Every requirement there must carry a `>=X` lower bound, and a
package named in several places of pyproject.toml must have the same lower
bound everywhere, so that the bounds and this check cannot drift apart.

Usage: python .ci/minimum_constraints.py [pyproject.toml] > constraints.txt
"""

import re
import sys
import tomllib
from pathlib import Path

# The extras whose lower bounds are installed exactly; the other extras (test
# and docs tools) resolve to what pip chooses next to these pins.
CHECKED_EXTRAS = ("checkpoint", "plots")

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")
_LOWER = re.compile(r">=\s*([^,;\s]+)")


def _name(requirement: str) -> str:
    match = _REQUIREMENT.match(requirement)
    if match is None:
        raise SystemExit(f"cannot parse the requirement {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _lower_bound(requirement: str) -> str | None:
    match = _LOWER.search(requirement.split(";")[0])
    return None if match is None else match.group(1)


def constraints(pyproject: dict) -> dict[str, str]:
    """Returns {package: lowest version} for the checked requirements.

    Raises:
        SystemExit: a checked requirement has no `>=` bound, a checked extra
            is missing, or one package has two different lower bounds.
    """
    project = pyproject["project"]
    extras = project.get("optional-dependencies", {})
    missing = [extra for extra in CHECKED_EXTRAS if extra not in extras]
    if missing:
        raise SystemExit(f"pyproject.toml has no extras {missing}: fix CHECKED_EXTRAS")
    checked = list(project["dependencies"])
    for extra in CHECKED_EXTRAS:
        checked += extras[extra]
    pins: dict[str, str] = {}
    for requirement in checked:
        bound = _lower_bound(requirement)
        if bound is None:
            raise SystemExit(
                f"{requirement!r} has no '>=' lower bound: give it one, since "
                "the minimum run installs each checked package at its bound"
            )
        pins[_name(requirement)] = bound
    # The same package in another group (test, docs) must not claim a lower floor.
    groups = {"dependencies": project["dependencies"], **extras}
    for group, requirements in groups.items():
        for requirement in requirements:
            name, bound = _name(requirement), _lower_bound(requirement)
            if name in pins and bound != pins[name]:
                raise SystemExit(
                    f"{requirement!r} in {group} disagrees with the checked lower "
                    f"bound {name}>={pins[name]}: use the same bound everywhere"
                )
    return pins


def main() -> None:
    """Prints one `name==version` line per checked package."""
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")
    for name, version in constraints(tomllib.loads(path.read_text())).items():
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()

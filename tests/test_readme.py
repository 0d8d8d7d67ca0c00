"""The README's runnable code blocks run and print what the README says."""

import contextlib
import io
import pathlib
import re

import jax
import pytest

README = pathlib.Path(__file__).parent.parent / "README.md"
BLOCKS = [
    block
    for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    if "import momentax" in block
]


def test_readme_has_a_runnable_quick_start():
    assert BLOCKS


@pytest.mark.parametrize("block", BLOCKS)
def test_readme_block_runs(block):
    # "# prints: TEXT" states a printed line; "..." in TEXT stands for anything.
    expected = [
        re.escape(line.removeprefix("# prints: ")).replace(r"\.\.\.", ".*")
        for line in block.splitlines()
        if line.startswith("# prints: ")
    ]
    assert expected, "a README example must say what it prints"
    out = io.StringIO()
    # README code is user code: standard dtype promotion, as users run it.
    with jax.numpy_dtype_promotion("standard"), contextlib.redirect_stdout(out):
        exec(compile(block, str(README), "exec"), {})
    printed = out.getvalue().splitlines()
    for pattern in expected:
        assert any(re.fullmatch(pattern, line) for line in printed), (pattern, printed)

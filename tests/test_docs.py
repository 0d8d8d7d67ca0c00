"""Every ```python block of the docs site and the README runs and prints what it says.

A block is a complete program. A line ``# prints: TEXT`` states a line the block
prints; ``...`` in TEXT stands for anything. Blocks run in this process, one after
another, with the eight CPU devices of conftest.py (the scaling page uses them).
"""

import contextlib
import io
import pathlib
import re

import jax
import pytest

ROOT = pathlib.Path(__file__).parent.parent
DOCS = ROOT / "docs"
# The built site (docs/_build) holds generated copies, not pages.
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(page: pathlib.Path) -> list[tuple[str, int, str]]:
    text = page.read_text()
    return [
        (str(page.relative_to(ROOT)), text.count("\n", 0, match.start()) + 2, match[1])
        for match in FENCE.finditer(text)
    ]


BLOCKS = [block for page in [ROOT / "README.md", *PAGES] for block in _blocks(page)]

# Blocks that run in the slow tier (`pytest -m slow`), each with why: seconds each,
# for what another fast test already runs. Named by page and first line of code:
# test_slow_blocks_exist fails when an edit of the page moves one.
SLOW_BLOCKS = {
    "docs/main-job.md:144": "runs the main job's comparison, every contender for "
    "450 epochs (tests/test_cli.py runs the main job)",
    "docs/tuning.md:17": "compiles estimate_curvature's Lanczos loop and a training "
    "step (its doctest and tests/test_curvature.py run it)",
    "docs/tuning.md:64": "compiles autotune with value_fn, Lanczos on Hessian-vector "
    "products (tests/test_autotune.py runs it)",
    "docs/training.md:207": "compiles a loss of 100 leaves, packed, for 300 steps "
    "(tests/test_packing.py trains packed params)",
    "docs/scaling.md:33": "compiles fit for each of three layouts "
    "(tests/test_sharding.py fits on each)",
    "docs/scaling.md:122": "compiles fit with a checkpoint manager three times "
    "(tests/test_fit_checkpoint.py resumes a killed fit)",
    # Flax and Equinox: importing them and tracing their models takes seconds
    # (tests/test_checkpoint_flax.py trains a Linen TrainState).
    "docs/frameworks.md:123": "trains a Flax Linen model with a TrainState",
    "docs/frameworks.md:170": "trains a Flax Linen model with fit",
    "docs/frameworks.md:28": "trains a Flax NNX model",
    "docs/frameworks.md:73": "trains a Flax NNX model with fit",
    "docs/frameworks.md:215": "trains an Equinox model",
    "docs/frameworks.md:252": "trains an Equinox model with fit",
    "docs/scaling.md:233": "checkpoints a Flax TrainState "
    "(tests/test_checkpoint_flax.py resumes one)",
    # torch's import alone takes seconds.
    "docs/conventions.md:111": "steps torch.optim.SGD beside momentax "
    "(tests/test_torch_parity.py compares them on every option)",
}


def _block_param(where, line, code):
    name = f"{where}:{line}"
    marks = [pytest.mark.slow] if name in SLOW_BLOCKS else []
    return pytest.param(where, line, code, id=name, marks=marks)


def _expected(code: str) -> list[str]:
    return [
        re.escape(line.removeprefix("# prints: ")).replace(r"\.\.\.", ".*")
        for line in code.splitlines()
        if line.startswith("# prints: ")
    ]


def test_every_page_and_the_readme_have_examples():
    with_blocks = {where for where, _, _ in BLOCKS}
    assert "README.md" in with_blocks
    assert len(PAGES) >= 9, PAGES  # the guide's pages and the API index
    assert len(with_blocks) >= 8, with_blocks


def test_slow_blocks_exist():
    assert set(SLOW_BLOCKS) <= {f"{where}:{line}" for where, line, _ in BLOCKS}


@pytest.mark.parametrize(
    "where, line, code", [_block_param(*block) for block in BLOCKS]
)
def test_block_runs_and_prints_what_it_says(where, line, code):
    # A block is a whole program, imports included, never a fragment.
    assert "import " in code, "a block must import what it uses"
    statements = [line.split("#")[0] for line in code.splitlines()]
    assert not any("..." in line for line in statements), (
        "a block must not elide code with '...'"
    )
    expected = _expected(code)
    assert expected, "a block must say what it prints, with '# prints: ' lines"
    out = io.StringIO()
    # Docs code is user code: standard dtype promotion, as users run it.
    with jax.numpy_dtype_promotion("standard"), contextlib.redirect_stdout(out):
        exec(compile(code, f"{where}:{line}", "exec"), {"__name__": "__docs__"})
    printed = out.getvalue().splitlines()
    for pattern in expected:
        assert any(re.fullmatch(pattern, text) for text in printed), (pattern, printed)


@pytest.mark.parametrize(
    "code, problem",
    [
        ("print(1)\n# prints: 1\n", "import"),
        ("import math\nf(...)\n# prints: 1\n", "elide"),
        ("import math\nprint(math.pi)\n", "say what it prints"),
    ],
)
def test_incomplete_blocks_are_refused(code, problem):
    # The checks above must be able to fail: a fragment, an elision, no stated output.
    with pytest.raises(AssertionError, match=problem):
        test_block_runs_and_prints_what_it_says("example.md", 1, code)


# The widest code line furo's code box shows unscrolled at a 1280-pixel window
# (measured in chromium: 88 characters fit, 91 scroll).
CODE_COLUMNS = 88
CODE = re.compile(r"^```(?:python|bash)\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_code_fits_the_page_unscrolled(page):
    wide = [
        line
        for block in CODE.findall(page.read_text())
        for line in block.splitlines()
        if len(line) > CODE_COLUMNS
    ]
    assert not wide, wide


README_LINKS = re.findall(r"\]\(([^)#]+)\)", (ROOT / "README.md").read_text())


@pytest.mark.parametrize("target", [t for t in README_LINKS if "://" not in t])
def test_readme_links_and_images_exist(target):
    # The README is the front door: its links into the site must not be dead.
    assert (ROOT / target).is_file(), target


def test_readme_is_a_front_page():
    # A front page: the manual lives on the site; the README keeps the commands,
    # the quick start (with the porting note), one result and the links.
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200

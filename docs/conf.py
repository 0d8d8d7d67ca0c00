"""Sphinx configuration of the momentax documentation site.

Build it with ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
# The repository root (for ``momentax`` and ``benchmarks``) and the local extension.
sys.path[:0] = [str(DOCS.parent), str(DOCS / "_ext")]

import momentax  # noqa: E402

project = "momentax"
author = "The momentax authors"
copyright = "the momentax authors"
release = momentax.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax served from the site itself, so that formulas render offline.
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "generated",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]

# Markdown pages: $...$ and $$...$$ maths, ::: fences, and anchors for headings.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Google-style docstrings; the types go into the argument list, not the signature,
# so that a signature stays one readable line.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"members": True}
python_use_unqualified_type_names = True


html_theme = "furo"
html_title = f"momentax {release}"
html_static_path = ["_static"]
# The main job's tables are 100 columns wide: small enough type to show them unscrolled.
html_css_files = ["custom.css"]

"""Sphinx configuration: Markdown pages through MyST, API reference from docstrings."""

project = "hefl"
author = "the hefl authors"
copyright = "2026, the hefl authors"

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
source_suffix = {".md": "markdown"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = "hefl"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"  # no bare type lists for dataclass fields
napoleon_google_docstring = True
napoleon_numpy_docstring = False
nitpicky = False

"""Sphinx configuration of the API reference (``tox -e docs``)."""

import snntorch_localzo

project = "snntorch-localzo"
author = "snntorch-localzo developers"
release = snntorch_localzo.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
autodoc_typehints = "none"
# snnTorch and torch are documented elsewhere: inherited members would pull
# their docstrings (and their formatting) into this reference
autodoc_default_options = {"members": True, "inherited-members": False, "show-inheritance": True}
nitpicky = False
html_theme = "alabaster"
exclude_patterns = ["_build"]

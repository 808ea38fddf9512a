"""Sphinx configuration: ``sphinx-build -W -b html docs docs/_build/html`` (see README.md).

The API reference is generated from the docstrings of the names in ``curiojax.__all__``
(``docs/api/``), with a summary table per page and ``[source]`` links; guides are Markdown
(MyST); the notebooks are copied from ``notebooks/`` (where they are committed without outputs)
and executed at build time in their fast mode (``CURIOJAX_FAST=1``, unless already set), so the
site shows their printed results and figures. ``tests/test_docs.py`` builds the site once with
``-W`` and checks the executed notebooks' figures and printed accuracies.
"""

import importlib
import os
import shutil
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

import curiojax  # noqa: E402

project = "curiojax"
author = "the curiojax authors"
copyright = "2026, the curiojax authors"
version = release = curiojax.__version__  # the one definition of the version

extensions = [
  "sphinx.ext.autodoc",
  "sphinx.ext.autosummary",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
  "sphinx.ext.viewcode",
  "myst_nb",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# Docstrings: Google style; signatures without annotations (the docstrings give the types).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_typehints = "none"
autodoc_member_order = "bysource"
autosummary_generate = False  # the summary tables link to the entries on the same page (no stub pages)

# Every cross-reference must resolve (with -W a broken one fails the build).
nitpicky = True
nitpick_ignore_regex = [
  ("py:.*", r"(jax|jnp|np|numpy|optax|flax|nnx|chex|ml_collections|collections|typing)(\..*)?"),
]
suppress_warnings = ["misc.highlighting_failure"]  # the notebooks' "!pip install" lines

myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
# The notebooks are executed at every build, in fast mode (the kernel inherits this environment);
# a failing cell fails the build. Cells tagged "skip-execution" (the Colab install line) are not run.
os.environ.setdefault("CURIOJAX_FAST", "1")
nb_execution_mode = "force"
nb_execution_timeout = 300  # seconds per cell
nb_execution_raise_on_error = True
nb_execution_show_tb = True

html_theme = "sphinx_book_theme"
html_title = f"curiojax {release}"
html_theme_options = {"show_toc_level": 2}
html_static_path = ["_static"]
html_css_files = ["custom.css"]  # long code lines scroll instead of being cut off

# The notebooks live in notebooks/ (where users open them); the site renders copies.
_NOTEBOOKS = os.path.join(os.path.dirname(__file__), "_notebooks")
shutil.rmtree(_NOTEBOOKS, ignore_errors=True)
shutil.copytree(os.path.join(ROOT, "notebooks"), _NOTEBOOKS, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))


_LAYERS = ("tangent", "scoring", "strategies", "active", "extensions")


def _public_target(target: str) -> str | None:
  """Where a public name is documented.

  ``curiojax.active.learner.Learner.ask`` or ``Learner.ask`` -> ``curiojax.Learner.ask``;
  ``Needs`` -> ``curiojax.strategies.Needs`` (documented with its layer).
  """
  parts = target.split(".")
  if parts[0] == "curiojax":
    parts = parts[1:]
  for i in range(len(parts) - 1, -1, -1):
    if parts[i] in curiojax.__all__:
      return ".".join(["curiojax", *parts[i:]])
    for layer in _LAYERS:
      if parts[i] in getattr(curiojax, layer).__all__:
        return ".".join(["curiojax", layer, *parts[i:]])
  return None


def _module_target(target: str) -> str | None:
  """A submodule reference (``curiojax.active.training``) -> its layer (``curiojax.active``)."""
  parts = target.split(".")
  if parts[0] == "curiojax" and len(parts) > 2 and parts[1] in curiojax.__all__:
    importlib.import_module(target)  # a misspelt module still fails
    return ".".join(parts[:2])
  return None


def _resolve(app, env, node, contnode):
  """Resolve references to internal paths of public names; anything else stays broken."""
  if node.get("refdomain") != "py":
    return None
  target = node["reftarget"]
  new = _module_target(target) if node["reftype"] == "mod" else _public_target(target)
  if new is None or new == target:
    return None
  domain = env.get_domain("py")
  builder = app.builder
  for reftype in ("obj", "mod"):
    found = domain.resolve_xref(env, node["refdoc"], builder, reftype, new, node, contnode)
    if found is not None:
      return found
  return None


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
  """A NamedTuple's fields are described by its "Attributes:" section, not a second time."""
  if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
    return True
  return None


def setup(app):
  app.connect("missing-reference", _resolve)
  app.connect("autodoc-skip-member", _skip_namedtuple_fields)

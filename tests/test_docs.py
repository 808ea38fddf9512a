"""The documentation site.

Every public name in the reference once, with a summary table per page; no tracker words in
what users read; and one build with warnings as errors, which executes the notebooks in their
fast mode (``CURIOJAX_FAST=1``, see ``docs/conf.py``): the notebooks' printed accuracies,
saved figures and clean source tree are checked on that build's executed copies, so the suite
runs each notebook once (``tests/test_notebooks.py`` checks the committed files).
"""

import importlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import curiojax

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
LAYERS = ("tangent", "scoring", "strategies", "active", "extensions")
# ".. autoclass:: Name" (indented inside an autoclass: ".. automethod:: name"), on one line
DIRECTIVE = re.compile(r"^( *)\.\. (auto\w+|py:data|py:function|py:class|currentmodule)::[ \t]*(\S+)", re.M)
SUMMARY = re.compile(r"^\.\. autosummary::\n((?:[ \t]+:\w+:.*\n)*)\n((?:[ \t]+\S+\n?)+)", re.M)


def _entries(text: str) -> list[tuple[str, str]]:
  """``(directive, full name)`` of each object one API page documents, in order.

  A directive indented inside an ``autoclass`` (``.. automethod:: ask``) is a member of it.
  """
  entries, module, cls = [], "curiojax", None
  for match in DIRECTIVE.finditer(text):
    indent, directive, name = match.groups()
    if directive == "currentmodule":
      module, cls = name, None
    elif directive == "autosummary":
      continue  # a table of entries documented on the page, not an entry
    elif directive == "automodule":
      entries.append((directive, name))
    elif indent and cls is not None:
      entries.append((directive, f"{cls}.{name}"))
    else:
      full = name if name.startswith("curiojax.") else f"{module}.{name}"
      entries.append((directive, full))
      cls = full if directive in ("autoclass", "autoexception", "py:class") else None
  return entries


def _page_names(text: str) -> list[str]:
  """Full names of the objects one API page documents, in order, with repeats."""
  return [name for _, name in _entries(text)]


def _pages() -> list[Path]:
  return sorted((ROOT / "docs" / "api").glob("*.rst"))


def _documented() -> list[str]:
  """Full names of the objects the API pages document, in order, with repeats."""
  return [name for page in _pages() for name in _page_names(page.read_text())]


def _summarised(text: str) -> list[str]:
  """Full names listed in a page's autosummary tables."""
  names = []
  for table in SUMMARY.finditer(text):
    module = "curiojax"
    for match in DIRECTIVE.finditer(text[: table.start()]):
      if match.group(2) == "currentmodule":
        module = match.group(3)
    names += [f"{module}.{entry.strip()}" for entry in table.group(2).split()]
  return names


def test_every_public_name_is_documented_exactly_once():
  documented = _documented()
  public = [f"curiojax.{n}" for n in curiojax.__all__]
  counts = {name: documented.count(name) for name in public}
  assert not [n for n, c in counts.items() if c == 0], "missing from docs/api/"
  assert not [n for n, c in counts.items() if c > 1], "documented more than once"
  # each layer's own extra names (not re-exported at the top level) are documented with the layer
  for layer in LAYERS:
    module = getattr(curiojax, layer)
    extra = [f"curiojax.{layer}.{n}" for n in module.__all__ if n not in curiojax.__all__]
    assert all(documented.count(n) == 1 for n in extra), [n for n in extra if documented.count(n) != 1]
  # and nothing is documented that does not exist
  for name in documented:
    _lookup(name)


def _lookup(name: str):
  """The object a full name documents (``curiojax.plotting`` is imported on demand)."""
  parts = name.split(".")
  for i in range(len(parts), 0, -1):
    try:
      obj = importlib.import_module(".".join(parts[:i]))
    except ModuleNotFoundError:
      continue
    for part in parts[i:]:
      obj = getattr(obj, part)
    return obj
  raise AssertionError(name)


def test_the_parser_reads_members_and_skips_summary_tables():
  page = """
.. currentmodule:: curiojax

.. autosummary::
   :nosignatures:

   Learner

.. autoclass:: Learner

   .. automethod:: ask

.. autofunction:: suggest
"""
  assert _page_names(page) == ["curiojax.Learner", "curiojax.Learner.ask", "curiojax.suggest"]
  assert _summarised(page) == ["curiojax.Learner"]


def test_each_api_page_has_a_summary_table_of_what_it_documents():
  for page in _pages():
    text = page.read_text()
    summarised = _summarised(text)
    documented = _page_names(text)
    assert not [n for n in summarised if n not in documented], f"{page.name}: a table entry documented elsewhere"
    # every class, exception and function of the page is in a table (the data are described inline)
    listed = [name for directive, name in _entries(text) if directive in ("autoclass", "autoexception", "autofunction")]
    assert not listed or summarised, f"{page.name} has no summary table"
    missing = [name for name in listed if name not in summarised]
    assert not missing, f"{page.name}: not in a summary table: {missing}"
  assert len([page for page in _pages() if _summarised(page.read_text())]) >= 6


def test_learner_methods_come_in_the_order_of_a_session():
  names = [n.split(".")[-1] for n in _documented() if n.startswith("curiojax.Learner.")]
  assert names[:4] == ["init", "ask", "tell", "predict"], names  # a session's methods first
  internal = ("rows", "standardise", "training_set", "round_key", "padded_size", "problem", "choose_strength")
  assert min(names.index(n) for n in internal) > max(names.index("save"), names.index("load")), names
  methods = vars(curiojax.Learner).items()
  public = [n for n, v in methods if not n.startswith("_") and (callable(v) or isinstance(v, classmethod))]
  assert not [n for n in public if n not in names], "a Learner method is missing from docs/api/active.rst"


# "issue 13", "Issue #6", "PR 12", "(#14)": words of the project's tracker, not of its users
TRACKER = re.compile(r"\b(?:issues?|PR|pull request|ticket)\s*#?\s*\d+|\(#\d+\)|\bthis issue\b", re.I)


def _user_facing_text() -> dict[str, str]:
  """The docs' own pages and the notebooks' markdown cells, by path."""
  texts = {}
  for path in sorted((ROOT / "docs").rglob("*")):
    parts = path.relative_to(ROOT / "docs").parts
    if path.suffix in (".md", ".rst", ".py", ".css") and parts[0] not in ("_build", "_notebooks"):
      texts[str(path.relative_to(ROOT))] = path.read_text()
  for path in sorted(NOTEBOOKS.glob("*.ipynb")):
    cells = json.loads(path.read_text())["cells"]
    texts[str(path.relative_to(ROOT))] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
  return texts


def test_no_tracker_words_in_the_docs_or_the_notebooks():
  found = {path: TRACKER.findall(text) for path, text in _user_facing_text().items() if TRACKER.search(text)}
  assert not found, f"tracker words in user-facing docs: {found}"


def test_the_tracker_check_notices_one():
  assert TRACKER.search("# Benchmark (issue 6)") and TRACKER.search("## Issue 13: speed")
  assert TRACKER.search("fixed in #12 (#12)") and not TRACKER.search("Friedman #1, the issue of scale")


def test_the_checker_notices_a_missing_name(tmp_path, monkeypatch):
  monkeypatch.setattr(curiojax, "__all__", [*curiojax.__all__, "not_documented_anywhere"])
  with pytest.raises(AssertionError, match="missing"):
    test_every_public_name_is_documented_exactly_once()


def test_version_is_defined_once_and_types_ship():
  assert importlib.metadata.version("curiojax") == curiojax.__version__
  assert not re.search(r'^version\s*=\s*"', (ROOT / "pyproject.toml").read_text(), re.M)  # dynamic: read from curiojax
  assert (Path(curiojax.__file__).parent / "py.typed").is_file()


# The figures each notebook saves, and its printed accuracies (a regular expression with one
# number -> upper bound); fast mode on CPU printed 4e-8, 5e-4, 3e-7 and 6e-7 (2026-11-23).
EXPECTED_PLOTS = {
  "01_polynomial_curiosity": [
    "01_loocv",
    "01_fits",
    "01_signed_curiosity",
    "01_unlabelled_scores",
    "01_active_learning",
  ],
  "02_quickstart": ["02_learner_rounds", "02_training", "02_pool_selection"],
  "03_tuning_regularization": ["03_hypergradient_vs_fd", "03_online_tuning"],
  "04_multi_user": ["04_user_curiosity", "04_forward_vs_adjoint"],
}
PRINTED_BOUNDS = {
  "01_polynomial_curiosity": {r"max relative gap tangent vs finite differences: (\S+)": 1e-4},
  "03_tuning_regularization": {r"max relative error of the hypergradient: (\S+)": 5e-3},
  "04_multi_user": {
    r"relative difference forward vs adjoint = (\S+)": 1e-5,
    r"carried tangents vs adjoint: (\S+)": 1e-4,
  },
}


def _listing() -> set[Path]:
  """Everything under the notebooks' folder, and the repository's top-level entries."""
  return set(NOTEBOOKS.rglob("*")) | set(ROOT.iterdir())


@pytest.fixture(scope="module")
def site(tmp_path_factory):
  """The site, built once with ``-W``: the notebooks executed in fast mode in fresh kernels.

  As Jupyter and Colab run them: from their own folder (the copies in ``docs/_notebooks``),
  with ``CURIOJAX_PLOT_DIR`` unset and ``TMPDIR`` a test folder, so the figures must go to
  the default ``<tempdir>/curiojax_plots``. Returns ``(html folder, temp folder, stderr,
  what the build wrote into the source tree)``.
  """
  base = tmp_path_factory.mktemp("site")
  tmp = base / "tmp"
  tmp.mkdir()
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "CURIOJAX_FAST": "1", "TMPDIR": str(tmp)}
  env.pop("CURIOJAX_PLOT_DIR", None)  # the default must keep the source tree clean
  env.pop("XLA_FLAGS", None)  # one CPU device is enough (conftest asks for 8)
  before = _listing()
  proc = subprocess.run(
    [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(ROOT / "docs"), str(base / "html")],
    capture_output=True,
    text=True,
    timeout=1200,
    env=env,
  )
  written = sorted(_listing() - before)
  for path in written:  # remove the notebooks' own, or the next run would count them as there before
    if path.is_relative_to(NOTEBOOKS) and path.is_dir():
      shutil.rmtree(path)
    elif path.is_relative_to(NOTEBOOKS):
      path.unlink(missing_ok=True)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return base / "html", tmp, proc.stderr, written


@pytest.mark.slow
def test_site_builds_with_warnings_as_errors(site):
  out, _, _, _ = site
  index = (out / "index.html").read_text()
  assert f"curiojax {curiojax.__version__}" in index  # the version, from its one definition
  sections = [index.index(f'<section id="{s}"') for s in ("install", "in-30-seconds", "the-idea")]
  assert sections == sorted(sections)  # install and an example first, the maths after
  active = (out / "api" / "active.html").read_text()
  assert 'id="curiojax.Learner.ask"' in active  # methods rendered from the docstrings
  assert active.index('id="curiojax.Learner.init"') < active.index('id="curiojax.Learner.padded_size"')
  assert 'id="module-curiojax.active.learner"' in active  # the module docstring the Learner refers to
  assert 'class="autosummary longtable' in active  # the summary table
  assert "_modules/curiojax/active/learner.html" in active  # [source] links
  assert (out / "_modules" / "curiojax" / "active" / "learner.html").is_file()
  assert 'id="curiojax.plotting.plot_pool"' in (out / "api" / "plotting.html").read_text()
  assert (out / "guides" / "predictions_and_history.html").is_file()
  assert "custom.css" in index and (out / "_static" / "custom.css").is_file()  # code blocks scroll


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_PLOTS))
def test_notebook_executes_renders_and_keeps_the_tree_clean(site, name):
  from matplotlib import image

  out, tmp, _, written = site
  assert not written, f"the build wrote into the source tree: {[str(p.relative_to(ROOT)) for p in written]}"
  copies = {p.name for p in (ROOT / "docs" / "_notebooks").iterdir()}
  assert copies == {p.name for p in NOTEBOOKS.iterdir() if p.name != ".ipynb_checkpoints"}, "written next to the copy"
  page = (out / "_notebooks" / f"{name}.html").read_text()
  assert page.count("<img") >= len(EXPECTED_PLOTS[name]), f"{name}: its figures are not on its page"
  executed = json.loads(next((out.parent / "jupyter_execute").rglob(f"{name}.ipynb")).read_text())
  outputs = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
  assert not [o for o in outputs if o.get("output_type") == "error"], f"{name} raised"
  printed = "".join("".join(o.get("text", "")) for o in outputs if o.get("name") == "stdout")
  for pattern, bound in PRINTED_BOUNDS.get(name, {}).items():
    values = [float(v) for v in re.findall(pattern, printed)]
    assert values and max(values) <= bound, f"{name}: {pattern} gave {values}, bound {bound}"
  for plot in EXPECTED_PLOTS[name]:
    path = tmp / "curiojax_plots" / f"{plot}.png"
    assert path.exists(), f"{name} did not save {path.name} in the default plot folder"
    assert path.stat().st_size > 5_000, f"{path.name} is suspiciously small"
    pixels = image.imread(path)
    assert pixels.std() > 0.01, f"{path.name} is a single colour"


def test_every_notebook_is_on_the_site_and_checked():
  names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
  assert names == sorted(EXPECTED_PLOTS)
  index = (ROOT / "docs" / "index.md").read_text()
  assert all(f"_notebooks/{n}" in index for n in names)


@pytest.mark.slow
def test_a_broken_cross_reference_fails_the_build(tmp_path):
  src = tmp_path / "docs"
  src.mkdir()
  conf = (
    (ROOT / "docs" / "conf.py").read_text().replace('os.path.join(os.path.dirname(__file__), "..")', repr(str(ROOT)))
  )
  conf += '\nexclude_patterns.append("_notebooks")\nhtml_static_path = []\n'  # no notebooks run here
  (src / "conf.py").write_text(conf)
  (src / "index.md").write_text("# t\n\n{func}`curiojax.Learner` exists; {func}`curiojax.no_such_function` does not.\n")
  proc = subprocess.run(
    [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(src), str(tmp_path / "html")],
    capture_output=True,
    text=True,
    timeout=300,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert proc.returncode != 0 and "curiojax.no_such_function" in proc.stderr

"""The documentation site: every public name in the reference once, and a build with warnings as errors (issue 14)."""

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import curiojax

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("tangent", "scoring", "strategies", "active", "extensions")
DIRECTIVE = re.compile(r"^\.\. (?:auto\w+|py:data|py:function|py:class|currentmodule)::\s*(\S+)", re.M)


def _documented() -> list[str]:
  """Full names of the objects the API pages document, in order, with repeats."""
  names = []
  for page in sorted((ROOT / "docs" / "api").glob("*.rst")):
    module = "curiojax"
    for match in DIRECTIVE.finditer(page.read_text()):
      directive, name = match.group(0).split("::")[0], match.group(1)
      if "currentmodule" in directive:
        module = name
      elif "automodule" in directive:
        names.append(name)
      else:
        names.append(name if name.startswith("curiojax.") else f"{module}.{name}")
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
    obj = curiojax
    for part in name.split(".")[1:]:
      obj = getattr(obj, part)


def test_the_checker_notices_a_missing_name(tmp_path, monkeypatch):
  monkeypatch.setattr(curiojax, "__all__", [*curiojax.__all__, "not_documented_anywhere"])
  with pytest.raises(AssertionError, match="missing"):
    test_every_public_name_is_documented_exactly_once()


def test_version_is_defined_once_and_types_ship():
  assert importlib.metadata.version("curiojax") == curiojax.__version__
  assert not re.search(r'^version\s*=\s*"', (ROOT / "pyproject.toml").read_text(), re.M)  # dynamic: read from curiojax
  assert (Path(curiojax.__file__).parent / "py.typed").is_file()


@pytest.mark.slow
def test_site_builds_with_warnings_as_errors(tmp_path):
  out = tmp_path / "html"
  proc = subprocess.run(
    [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(ROOT / "docs"), str(out)],
    capture_output=True,
    text=True,
    timeout=600,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  index = (out / "index.html").read_text()
  assert f"curiojax {curiojax.__version__}" in index  # the version, from its one definition
  active = (out / "api" / "active.html").read_text()
  assert 'id="curiojax.Learner.ask"' in active  # methods rendered from the docstrings
  assert (out / "_notebooks" / "02_quickstart.html").is_file()


@pytest.mark.slow
def test_a_broken_cross_reference_fails_the_build(tmp_path):
  src = tmp_path / "docs"
  src.mkdir()
  (src / "conf.py").write_text(
    (ROOT / "docs" / "conf.py").read_text().replace('os.path.join(os.path.dirname(__file__), "..")', repr(str(ROOT)))
  )
  (src / "index.md").write_text("# t\n\n{func}`curiojax.Learner` exists; {func}`curiojax.no_such_function` does not.\n")
  proc = subprocess.run(
    [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(src), str(tmp_path / "html")],
    capture_output=True,
    text=True,
    timeout=300,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert proc.returncode != 0 and "curiojax.no_such_function" in proc.stderr

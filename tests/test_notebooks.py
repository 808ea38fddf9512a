"""The notebooks run top to bottom in fast mode, their plots render, and they leave the source tree clean.

Executed with nbclient in a fresh ``python3`` kernel with ``CURIOJAX_FAST=1``, from the
notebooks' own folder (as Jupyter and Colab do) with ``CURIOJAX_PLOT_DIR`` unset and
``TMPDIR`` a test folder, so the figures must go to the default, ``<tempdir>/curiojax_plots``;
cells tagged ``skip-execution`` (the Colab install cell) are dropped, as ``pytest --nbmake``
would. Nothing may appear in the notebooks' folder or the repository's top level. Each saved
PNG must be non-trivial: over 5 kB and not a single colour. The accuracy figures the notebooks
print (tangent vs finite differences, hypergradient vs finite differences, forward vs adjoint)
must stay within ``PRINTED_BOUNDS``.
"""

import re
import shutil
import tempfile
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
REPO = NOTEBOOKS.parent
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


# printed line (regular expression with one number) -> upper bound, per notebook; fast mode on
# CPU printed 4e-8, 5e-4, 3e-7 and 6e-7 (2026-11-23)
PRINTED_BOUNDS = {
  "01_polynomial_curiosity": {r"max relative gap tangent vs finite differences: (\S+)": 1e-4},
  "03_tuning_regularization": {r"max relative error of the hypergradient: (\S+)": 5e-3},
  "04_multi_user": {
    r"relative difference forward vs adjoint = (\S+)": 1e-5,
    r"carried tangents vs adjoint: (\S+)": 1e-4,
  },
}


def _load(name):
  return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


@pytest.mark.parametrize("name", sorted(EXPECTED_PLOTS))
def test_notebook_is_colab_ready_and_clean(name):
  nb = _load(name)
  first = nb.cells[0]
  assert first.cell_type == "markdown"
  badge = f"colab.research.google.com/github/curiojax/curiojax/blob/main/notebooks/{name}.ipynb"
  assert badge in first.source
  install = nb.cells[1]
  assert install.cell_type == "code" and "pip install" in install.source
  assert "skip-execution" in install.metadata.get("tags", [])
  code = [c for c in nb.cells if c.cell_type == "code"]
  for cell in code:
    assert not cell.get("outputs"), f"{name}: committed outputs"
    assert cell.get("execution_count") is None, f"{name}: committed execution counts"
  source = "\n".join(c.source for c in code)
  assert 'os.environ.get("CURIOJAX_FAST", "0") == "1"' in source
  assert "import curiojax" in source


def _listing() -> set[Path]:
  """Everything under the notebooks' folder, and the repository's top-level entries."""
  return set(NOTEBOOKS.rglob("*")) | set(REPO.iterdir())


def test_plot_dir_defaults_to_a_temporary_folder_and_follows_the_environment(tmp_path, monkeypatch):
  plotting = pytest.importorskip("curiojax.plotting")
  monkeypatch.delenv("CURIOJAX_PLOT_DIR", raising=False)
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
  assert plotting.plot_dir() == tmp_path / "tmp" / "curiojax_plots"
  assert plotting.plot_dir().is_dir()
  monkeypatch.setenv("CURIOJAX_PLOT_DIR", str(tmp_path / "mine"))
  fig, _ = plotting.subplots(1)
  assert plotting.save(fig, "x", show=False) == tmp_path / "mine" / "x.png"
  assert (tmp_path / "mine" / "x.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_PLOTS))
def test_notebook_executes_and_plots_render(name, tmp_path, monkeypatch):
  from matplotlib import image

  nb = _load(name)
  nb.cells = [c for c in nb.cells if "skip-execution" not in c.metadata.get("tags", [])]
  monkeypatch.setenv("CURIOJAX_FAST", "1")
  monkeypatch.delenv("CURIOJAX_PLOT_DIR", raising=False)  # the default must keep the source tree clean
  monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel's tempfile.gettempdir()
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.delenv("XLA_FLAGS", raising=False)  # one CPU device is enough (conftest asks for 8)
  client = nbclient.NotebookClient(
    nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
  )
  before = _listing()
  try:
    client.execute()
  finally:
    written = sorted(_listing() - before)
    for path in written:  # remove the notebooks' own, or the next run would count them as there before
      if path.is_relative_to(NOTEBOOKS) and path.is_dir():
        shutil.rmtree(path)
      elif path.is_relative_to(NOTEBOOKS):
        path.unlink(missing_ok=True)
  assert not written, f"{name} wrote into the source tree: {[str(p.relative_to(REPO)) for p in written]}"
  printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout")
  for pattern, bound in PRINTED_BOUNDS.get(name, {}).items():
    values = [float(v) for v in re.findall(pattern, printed)]
    assert values and max(values) <= bound, f"{name}: {pattern} gave {values}, bound {bound}"
  for plot in EXPECTED_PLOTS[name]:
    path = tmp_path / "curiojax_plots" / f"{plot}.png"
    assert path.exists(), f"{name} did not save {path.name} in the default plot folder"
    assert path.stat().st_size > 5_000, f"{path.name} is suspiciously small"
    pixels = image.imread(path)
    assert pixels.std() > 0.01, f"{path.name} is a single colour"

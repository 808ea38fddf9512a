"""The committed notebooks: Colab-ready, without outputs, with a fast mode, and their plot folder.

They are executed once per test run, by the documentation build in ``tests/test_docs.py``
(``docs/conf.py`` runs them with ``CURIOJAX_FAST=1`` in fresh kernels, from their own folder,
dropping the ``skip-execution`` Colab install cell as ``pytest --nbmake`` would). That test
checks what the run printed (accuracy bounds), the figures each saved in the default plot
folder, and that nothing was written into the source tree.
"""

import tempfile
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))


def _load(name):
  return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


@pytest.mark.parametrize("name", NAMES)
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

"""The notebooks run top to bottom in fast mode and their plots render.

Executed with nbclient in a fresh ``python3`` kernel, ``CURIOJAX_FAST=1`` and a temporary
``CURIOJAX_PLOT_DIR``; cells tagged ``skip-execution`` (the Colab install cell) are dropped,
as ``pytest --nbmake`` would. Each saved PNG must be non-trivial: over 5 kB and not a single
colour. The accuracy figures the notebooks print (tangent vs finite differences, hypergradient
vs finite differences, forward vs adjoint) must stay within ``PRINTED_BOUNDS``.
"""

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED_PLOTS = {
  "01_polynomial_curiosity": [
    "01_loocv",
    "01_fits",
    "01_signed_curiosity",
    "01_unlabelled_scores",
    "01_active_learning",
  ],
  "02_quickstart": ["02_training", "02_pool_selection"],
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


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_PLOTS))
def test_notebook_executes_and_plots_render(name, tmp_path, monkeypatch):
  from matplotlib import image

  nb = _load(name)
  nb.cells = [c for c in nb.cells if "skip-execution" not in c.metadata.get("tags", [])]
  monkeypatch.setenv("CURIOJAX_FAST", "1")
  monkeypatch.setenv("CURIOJAX_PLOT_DIR", str(tmp_path / "plots"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.delenv("XLA_FLAGS", raising=False)  # one CPU device is enough (conftest asks for 8)
  client = nbclient.NotebookClient(
    nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
  )
  client.execute()
  printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout")
  for pattern, bound in PRINTED_BOUNDS.get(name, {}).items():
    values = [float(v) for v in re.findall(pattern, printed)]
    assert values and max(values) <= bound, f"{name}: {pattern} gave {values}, bound {bound}"
  for plot in EXPECTED_PLOTS[name]:
    path = tmp_path / "plots" / f"{plot}.png"
    assert path.exists(), f"{name} did not save {path.name}"
    assert path.stat().st_size > 5_000, f"{path.name} is suspiciously small"
    pixels = image.imread(path)
    assert pixels.std() > 0.01, f"{path.name} is a single colour"

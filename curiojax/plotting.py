"""Matplotlib helpers for the notebooks (imported on demand: ``import curiojax`` never loads matplotlib).

Figures are saved as PNG under :func:`plot_dir`: ``$CURIOJAX_PLOT_DIR`` if set, else a
``curiojax_plots`` folder in the system's temporary directory (never the source tree), and
shown. Each helper draws on a given ``Axes`` and returns it, so notebooks compose panels.

Example:
  >>> import numpy as np
  >>> from curiojax import plotting
  >>> fig, ax = plotting.subplots(1)
  >>> _ = plotting.plot_curves(ax[0], np.linspace(0, 1, 5), {"y": np.arange(5.0)})
  >>> import os, tempfile
  >>> if "CURIOJAX_PLOT_DIR" not in os.environ:
  ...   assert plotting.plot_dir() == Path(tempfile.gettempdir()) / "curiojax_plots"
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import TwoSlopeNorm


def plot_dir() -> Path:
  """Where :func:`save` writes: ``$CURIOJAX_PLOT_DIR``, else ``<tempdir>/curiojax_plots`` (created if missing).

  The default is outside the working directory, so running a notebook from a checkout writes
  nothing into the source tree; set ``CURIOJAX_PLOT_DIR`` to keep the figures somewhere.
  """
  path = Path(os.environ.get("CURIOJAX_PLOT_DIR") or Path(tempfile.gettempdir()) / "curiojax_plots")
  path.mkdir(parents=True, exist_ok=True)
  return path


def subplots(ncols: int, nrows: int = 1, *, size: tuple[float, float] = (4.5, 3.6)):
  """``fig, axes`` (axes flattened to a 1-D array) with a per-panel ``size`` in inches."""
  fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
  return fig, axes.ravel()


def save(fig, name: str, *, show: bool = True, dpi: int = 110) -> Path:
  """Save ``fig`` as ``plot_dir()/name`` (``.png`` added if missing), then show it."""
  if not name.endswith(".png"):
    name += ".png"
  path = plot_dir() / name
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  if show:
    plt.show()
  plt.close(fig)
  return path


def plot_curves(
  ax,
  x,
  curves: Mapping[str, np.ndarray],
  *,
  normalize: bool = False,
  logx: bool = False,
  styles: Mapping[str, str] | None = None,
  xlabel: str = "",
  ylabel: str = "",
  title: str = "",
):
  """Several named curves over ``x`` (``normalize``: each divided by its largest absolute value)."""
  styles = styles or {}
  for label, y in curves.items():
    y = np.asarray(y, float)
    if normalize:
      y = y / max(np.max(np.abs(y)), 1e-300)
    ax.plot(np.asarray(x), y, styles.get(label, "-"), label=label, lw=1.6)
  if logx:
    ax.set_xscale("log")
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  ax.legend(fontsize=8)
  return ax


def plot_points(ax, x, y, *, label: str = "data", color: str = "k", marker: str = "o", size: float = 18):
  """Points ``(x, y)`` drawn over the curves (e.g. the labelled data), with a legend entry."""
  ax.scatter(np.asarray(x), np.asarray(y), s=size, c=color, marker=marker, label=label, zorder=3)
  ax.legend(fontsize=8)
  return ax


def plot_signed_heatmap(
  ax,
  xs,
  ys,
  values,
  *,
  curve=None,
  title: str = "",
  cmap: str = "RdBu_r",
  xlabel: str = "x",
  ylabel: str = "y",
  colorbar_label: str = "c(x, y)",
  clip_quantile: float = 0.98,
):
  """A signed field ``values[len(ys), len(xs)]`` on a diverging scale centred at zero.

  The colour scale saturates at the ``clip_quantile`` of ``|values|`` so a few extreme cells
  (e.g. at the edge of the data) do not wash out the rest.
  """
  values = np.asarray(values, float)
  vmax = max(float(np.quantile(np.abs(values), clip_quantile)), 1e-300)
  mesh = ax.pcolormesh(
    np.asarray(xs), np.asarray(ys), values, shading="auto", cmap=cmap, norm=TwoSlopeNorm(0.0, -vmax, vmax)
  )
  ax.figure.colorbar(mesh, ax=ax, label=colorbar_label)
  if curve is not None:
    ax.plot(np.asarray(curve[0]), np.asarray(curve[1]), "k-", lw=1.2, label="fit")
    ax.legend(fontsize=8, loc="lower left")
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  return ax


# marker, face colour, size of each selected batch drawn by plot_pool (in order)
_PICK_STYLES = (("o", "red", 110), ("D", "orange", 90), ("s", "magenta", 90), ("^", "cyan", 100))


def plot_pool(
  ax,
  x_pool,
  scores,
  *,
  selected=None,
  labelled=None,
  title: str = "",
  cmap: str = "viridis",
  colorbar_label: str = "score",
  selected_label: str = "selected",
):
  """A 2-D pool coloured by score, the labelled points (white o) and the selected batch drawn on top.

  ``selected``: indices into ``x_pool``, or a mapping ``{legend label: indices}`` for several
  batches (each its own marker). Picks are large markers with a black edge, drawn above the
  pool and the labelled points; the legend sits outside the axes, to the right, and the
  colour bar below them, so neither hides a pick.
  """
  x_pool = np.asarray(x_pool)
  sc = ax.scatter(x_pool[:, 0], x_pool[:, 1], c=np.asarray(scores), s=8, cmap=cmap, zorder=1)
  ax.figure.colorbar(sc, ax=ax, label=colorbar_label, location="bottom", shrink=0.8, pad=0.12)
  if labelled is not None:
    labelled = np.asarray(labelled)
    ax.scatter(
      labelled[:, 0],
      labelled[:, 1],
      s=22,
      facecolors="white",
      edgecolors="k",
      linewidths=0.6,
      label="labelled",
      zorder=3,
    )
  if selected is not None:
    batches = selected if isinstance(selected, Mapping) else {selected_label: selected}
    for j, (label, idx) in enumerate(batches.items()):
      marker, color, size = _PICK_STYLES[j % len(_PICK_STYLES)]
      chosen = x_pool[np.asarray(idx, int).reshape(-1)]
      ax.scatter(
        chosen[:, 0],
        chosen[:, 1],
        s=size,
        c=color,
        marker=marker,
        edgecolors="k",
        linewidths=1.2,
        label=f"{label} ({len(chosen)})",
        zorder=10 + j,
      )
  ax.set(title=title)
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0.0)
  return ax


def plot_bars(ax, labels, values: Mapping[str, np.ndarray], *, title: str = "", ylabel: str = ""):
  """Grouped bars: one group per label, one bar per named series."""
  labels = list(labels)
  width = 0.8 / max(len(values), 1)
  pos = np.arange(len(labels))
  for j, (name, v) in enumerate(values.items()):
    ax.bar(pos + (j - (len(values) - 1) / 2) * width, np.asarray(v, float), width, label=name)
  ax.set_xticks(pos, labels)
  ax.set(title=title, ylabel=ylabel)
  ax.legend(fontsize=8)
  return ax


def plot_learning_curve(records) -> bytes:
  """PNG bytes: test RMSE against labels, mean over splits with a min–max band, per strategy.

  ``records``: the rows of ``curiojax run``'s ``results.csv`` (``strategy``, ``labels``,
  ``test_rmse``); its ``learning_curve.png``.
  """
  fig, ax = plt.subplots(figsize=(6, 4))
  for name in dict.fromkeys(r["strategy"] for r in records):
    rows = [r for r in records if r["strategy"] == name and "test_rmse" in r]
    labels = sorted({r["labels"] for r in rows})
    vals = [[r["test_rmse"] for r in rows if r["labels"] == n] for n in labels]
    mean = np.array([np.mean(v) for v in vals])
    ax.plot(labels, mean, marker="o", label=name)
    ax.fill_between(labels, [min(v) for v in vals], [max(v) for v in vals], alpha=0.2)
  ax.set_xlabel("labels")
  ax.set_ylabel("test RMSE (original units)")
  ax.set_title("Active learning: test RMSE (mean, min-max over splits)")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=120)
  plt.close(fig)
  return buf.getvalue()

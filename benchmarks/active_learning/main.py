"""The batch active-learning benchmark for regression (issue 6; protocol of Holzmüller et al. 2023).

Protocol, per dataset and split ``k`` (seeds 0-4):

- a random permutation of the rows; the first 20% are the test set, the next 256 the
  validation set, the next 64 the initial labelled set, the rest the pool (capped at 20,000);
- inputs standardised with the mean and standard deviation of the initial-labelled + pool rows
  (constant columns dropped), then soft-clipped ``x ↦ 5·tanh(x/5)``; the target standardised
  the same way (RMSE is reported on that scale);
- 12 rounds of 32 acquisitions; the model is re-initialised and retrained from scratch each
  round: a 2×512 ReLU MLP in NTK parameterisation (weights ``N(0, 1)`` times ``σ_w/√fan_in``,
  zero biases times ``σ_b``, ``σ_w = σ_b = 0.2``), Adam with learning rate 0.375 decaying
  linearly to 0, 256 epochs of minibatches of ``min(256, n)`` with the incomplete last batch
  dropped (as ``bmdal_reg``'s data loader does), squared loss; validation RMSE after every
  epoch and the best parameters restored;
- metric: the mean over the 12 post-acquisition rounds of ``log`` test RMSE; per dataset the
  mean and standard error over the splits and the paired difference to ``random``. The same for
  the tail errors ``q99`` (99th percentile of the absolute test error) and ``max_error``, and
  the verdict rule against LCMD (``verdict.py``).

Datasets too small for the protocol (``N − test < 256 + 64 + 12·32``, e.g. yacht and energy)
fall back to: validation ``min(256, ⌊0.2N⌋)``, initial ``min(64, ⌊0.2N⌋)``, and acquisition batch
``min(32, ⌊pool / 24⌋)`` so that at most half the pool is ever labelled; the report flags them.

The harness lives outside the installed package and drives the library's
:class:`curiojax.Learner` with the held-back labels as oracle: the model is the registered
``"ntk_mlp"`` (:class:`curiojax.active.models.NTKMLP`), the protocol's training is a set of
:class:`curiojax.LearnerOptions` mirrored one to one by the config (:func:`protocol_options`:
``cfg.train`` is its ``TrainOptions``; no input scaling by the learner,
unregularised training with a linear decay, ``bmdal_reg``'s minibatches, the best-validation
restore, the tangent solved afterwards), and each batch is chosen by the same registered
strategy objects :meth:`curiojax.Learner.ask` runs. Only the splits, the shared round-0 fit
(paired comparisons) and the report are its own. The labelled set is padded to its final size,
so one compilation serves every round of a dataset.

Run from the repository root: ``python benchmarks/active_learning/main.py --config
benchmarks/active_learning/configs/benchmark.py`` (``--config.fast=True`` for the CI smoke run). Example (library use):
  >>> import numpy as np
  >>> x, y = friedman1(400, seed=0)
  >>> split = make_split(x, y, seed=0, n_valid=40, n_initial=20, rounds=2, batch_size=8)
  >>> split.x_pool.shape[1] == 10
  True
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np

# run as a script, this folder is on the path and the repository root is not: the configs and the modules beside it
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from benchmarks.active_learning.summary import mean_over_datasets, metric, summarise  # noqa: E402
from benchmarks.active_learning.verdict import verdict_lines  # noqa: E402
from curiojax.active import data
from curiojax.active.learner import Fit, Learner, LearnerOptions, LearnerState, options_from_dict
from curiojax.active.models import ModelSpec, make_model
from curiojax.active.persistence import atomic_write_text
from curiojax.active.progress import Progress
from curiojax.strategies import STRATEGIES, get_strategy

# --------------------------------------------------------------------------------------------
# Data


def load_uci_folder(path: str) -> tuple[np.ndarray, np.ndarray]:
  """``(x, y)`` as float64 from a folder in the UCI layout, via the validated :mod:`curiojax.active.data` loader."""
  ds = data.load_uci_folder(path)
  return ds.x.astype(np.float64), ds.y.astype(np.float64)


def friedman1(n: int, seed: int = 0, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """Friedman #1: ``x ~ U[0,1]^10``, ``y = 10 sin(πx₁x₂) + 20(x₃−½)² + 10x₄ + 5x₅ + N(0, noise²)``.

  Five of the ten inputs are irrelevant (Friedman 1991, "Multivariate adaptive regression splines").
  """
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=(n, 10))
  y = (
    10 * np.sin(np.pi * x[:, 0] * x[:, 1])
    + 20 * (x[:, 2] - 0.5) ** 2
    + 10 * x[:, 3]
    + 5 * x[:, 4]
    + noise * rng.normal(size=n)
  )
  return x, y


def write_friedman1(folder: str, n: int = 25_000, seed: int = 0) -> str:
  """Write Friedman #1 to ``folder`` in the UCI layout (so the same loader path is used)."""
  os.makedirs(folder, exist_ok=True)
  x, y = friedman1(n, seed)
  np.savetxt(os.path.join(folder, "data.txt"), np.column_stack([x, y]), fmt="%.6f")
  np.savetxt(os.path.join(folder, "index_features.txt"), np.arange(10), fmt="%d")
  np.savetxt(os.path.join(folder, "index_target.txt"), [10], fmt="%d")
  with open(os.path.join(folder, "n_splits.txt"), "w") as f:
    f.write("5\n")
  return folder


@dataclasses.dataclass
class Split:
  """One benchmark split, already standardised and soft-clipped (float32 arrays)."""

  x_test: np.ndarray
  y_test: np.ndarray
  x_valid: np.ndarray
  y_valid: np.ndarray
  x_initial: np.ndarray
  y_initial: np.ndarray
  x_pool: np.ndarray
  y_pool: np.ndarray
  batch_size: int
  rounds: int
  standard: bool  # the exact protocol (False: the small-data fallback was used)


def make_split(
  x,
  y,
  seed: int,
  *,
  test_fraction: float = 0.2,
  n_valid: int = 256,
  n_initial: int = 64,
  max_pool: int = 20_000,
  rounds: int = 12,
  batch_size: int = 32,
  clip: float = 5.0,
) -> Split:
  """Split, standardise and soft-clip as in the protocol (module docstring)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 2 or y.shape != (len(x),):
    raise ValueError(f"x must be (N, d) and y (N,), got {x.shape} and {y.shape}.")
  n = len(x)
  n_test = int(test_fraction * n)
  standard = n - n_test - n_valid - n_initial >= rounds * batch_size
  if not standard:
    n_valid = min(n_valid, int(0.2 * n))
    n_initial = min(n_initial, int(0.2 * n))
    n_pool_avail = n - n_test - n_valid - n_initial
    batch_size = max(1, min(batch_size, n_pool_avail // (2 * rounds)))
    if n_pool_avail < rounds * batch_size or n_initial < 2:
      raise ValueError(f"{n} rows are too few for {rounds} rounds of active learning.")
  perm = np.random.default_rng(seed).permutation(n)
  i_test = perm[:n_test]
  i_valid = perm[n_test : n_test + n_valid]
  i_init = perm[n_test + n_valid : n_test + n_valid + n_initial]
  i_pool = perm[n_test + n_valid + n_initial :][:max_pool]
  ref = np.concatenate([i_init, i_pool])
  mean, std = x[ref].mean(0), x[ref].std(0)
  keep = std > 0
  xs = (x[:, keep] - mean[keep]) / std[keep]
  xs = clip * np.tanh(xs / clip)
  ys = (y - y[ref].mean()) / y[ref].std()
  f = lambda a: np.asarray(a, np.float32)
  return Split(
    f(xs[i_test]),
    f(ys[i_test]),
    f(xs[i_valid]),
    f(ys[i_valid]),
    f(xs[i_init]),
    f(ys[i_init]),
    f(xs[i_pool]),
    f(ys[i_pool]),
    batch_size,
    rounds,
    standard,
  )


# --------------------------------------------------------------------------------------------
# The protocol as learner options


def protocol_options(cfg) -> LearnerOptions:
  """The protocol's model fit as :class:`curiojax.LearnerOptions`: ``cfg.strength``, ``cfg.model``, ``cfg.train``.

  The config mirrors the options one to one (``cfg.train.epochs`` is ``TrainOptions.epochs``).
  The data are already standardised by :func:`make_split` (``standardise=False``). The
  protocol's training (``configs/benchmark.py``) is unregularised (``regularised_training=False``)
  with a linear learning-rate decay, ``bmdal_reg``'s minibatches (``drop_last``) and the
  best-validation restore; ``strength`` only defines the tangent ``τ = −(G + sI)⁻¹θ*``, solved
  after training at the restored parameters by at most ``train.finish_maxiter``
  conjugate-gradient products, and only for strategies that read it.
  """
  values = {"seed": 0, "strength": float(cfg.strength), "standardise": False, "model": cfg.model, "train": cfg.train}
  return options_from_dict(LearnerOptions, values, "config")


def protocol_model(cfg, d: int) -> ModelSpec:
  """The config's model (the registered ``"ntk_mlp"``) with ``σ_w``, ``σ_b`` (equal settings compare equal)."""
  model = protocol_options(cfg).model
  return make_model(model.name, d, hidden_sizes=model.hidden_sizes, sigma_w=cfg.sigma_w, sigma_b=cfg.sigma_b)


# --------------------------------------------------------------------------------------------
# Active-learning runs: the library's Learner, the held-back labels as oracle


def split_learner(cfg, split: Split, strategy: str, strategy_options: dict | None = None) -> Learner:
  """A :class:`curiojax.Learner` on ``split``'s pool with the protocol's options and one compilation per dataset."""
  n_max = len(split.x_initial) + split.rounds * split.batch_size
  return Learner(
    split.x_pool,
    options=protocol_options(cfg),
    strategy=strategy,
    strategy_options=strategy_options,
    model=protocol_model(cfg, split.x_pool.shape[1]),
    capacity=n_max,
    validation=(split.x_valid, split.y_valid),
  )


def initial_fit(learner: Learner, split: Split, *, seed: int) -> Fit:
  """Round 0, shared by all strategies of a split (paired comparisons): the fit on the initial set."""
  state = learner.init(jax.random.key(seed), x_labelled=split.x_initial, y_labelled=split.y_initial)
  return learner.fit(state)[1]


# The recorded test errors (each a curve over rounds 0..R, in the target's standardised units) and their names
METRICS = {"rmse": "RMSE", "q99": "q99 (99th percentile of the absolute error)", "max_error": "max error"}


def error_metrics(prediction, target) -> dict[str, float]:
  """``rmse``, ``q99`` (the 99th percentile of ``|prediction − target|``, ``np.quantile``'s linear
  interpolation) and ``max_error`` (its maximum) of one prediction of the test set."""
  err = np.asarray(prediction) - np.asarray(target)
  abs_err = np.abs(err)
  return dict(
    rmse=float(np.sqrt(np.mean(np.square(err)))), q99=float(np.quantile(abs_err, 0.99)), max_error=float(abs_err.max())
  )


def heldout_errors(learner: Learner, state: LearnerState, fit: Fit, split: Split) -> dict[str, float]:
  """:func:`error_metrics` of the fit on the split's test set (one prediction for all three)."""
  return error_metrics(learner.predict(state, fit, split.x_test), split.y_test)


def run_strategy(learner: Learner, split: Split, *, seed: int, fit0: Fit) -> dict:
  """One strategy on one split: ``rounds`` of ask (select) / tell (the oracle) / fit.

  ``fit0`` is the shared round-0 fit (it must carry a tangent if the strategy reads one).

  Returns:
    dict with ``rmse``, ``q99`` and ``max_error`` (the test errors after rounds 0..R,
    :func:`error_metrics`), ``select_s`` (seconds per selection
    step: features and batch choice; the tangent is solved with the fit), ``train_s`` (fit,
    tangent included), ``tangent_residual`` (each round's tangent's relative residual;
    empty for strategies without a tangent) and ``direction_residual`` (the same for the
    directions a strategy solves itself, :mod:`curiojax.strategies.directions`; empty for the
    others).
  """
  b = split.batch_size
  state = learner.init(jax.random.key(seed), x_labelled=split.x_initial, y_labelled=split.y_initial)
  fit = fit0
  curves = {name: [value] for name, value in heldout_errors(learner, state, fit, split).items()}
  select_s, train_s, residuals, direction_residuals = [], [], [], []
  for _ in range(split.rounds):
    if learner.needs_tangent:
      residuals.append(fit.tangent_residual)
    t0 = time.perf_counter()
    suggestion = learner.select(state, fit, b)
    select_s.append(time.perf_counter() - t0)
    if not np.isnan(suggestion.direction_residual):
      direction_residuals.append(suggestion.direction_residual)
    state = learner.tell(state, suggestion.indices, split.y_pool[suggestion.indices])
    t0 = time.perf_counter()
    state, fit = learner.fit(state)
    for name, value in heldout_errors(learner, state, fit, split).items():
      curves[name].append(value)
    train_s.append(time.perf_counter() - t0)
  return dict(
    **curves,  # rmse, q99, max_error
    select_s=select_s,
    train_s=train_s,
    tangent_residual=residuals,  # empty for strategies without a tangent
    direction_residual=direction_residuals,  # the solved directions' (validation adjoint, per-layer tangents)
    batch_size=b,
    n_initial=len(split.x_initial),
    standard=split.standard,
  )


# --------------------------------------------------------------------------------------------
# Report


def markdown_table(rows: list[dict], strategies: Sequence[str], reference: str = "random") -> str:
  """Per dataset: mean ± se of the metric for ``reference``, Δ to it ± paired se (wins/splits) for
  the others; then the means over datasets (and over those on the exact protocol), the Δs ± the
  se of a mean of independent dataset means (:func:`mean_over_datasets`). ``rows`` come from
  :func:`summarise` with the same reference; a ``missing`` row's cell (and its means) say so."""
  lines = ["| dataset | splits | " + " | ".join(strategies) + " |", "|---|---|" + "---|" * len(strategies)]
  datasets = list(dict.fromkeys(r["dataset"] for r in rows))
  for ds in datasets:
    cells, n = [], 0
    flag = ""
    for s in strategies:
      r = next((r for r in rows if r["dataset"] == ds and r["strategy"] == s), None)
      if r is None:
        cells.append("—")
        continue
      n = max(n, r["n"])
      flag = "" if r["standard"] else f" (fallback, batch {r['batch_size']})"
      if r["missing"]:
        cells.append(f"missing (no {r['metric']})")
      elif s == reference:
        cells.append(f"{r['mean']:.3f} ± {r['se']:.3f}")
      else:
        cells.append(f"{r['delta']:+.3f} ± {r['delta_se']:.3f} ({r['wins']}/{r['n']})")
    lines.append(f"| {ds}{flag} | {n} | " + " | ".join(cells) + " |")
  standard = [ds for ds in datasets if all(r["standard"] for r in rows if r["dataset"] == ds)]
  for label, subset in (("mean over datasets", datasets), ("mean, exact protocol only", standard)):
    if len(subset) < 2 or (label != "mean over datasets" and subset == datasets):
      continue
    cells = []
    for s in strategies:
      rs = [r for r in rows if r["dataset"] in subset and r["strategy"] == s]
      if len(rs) != len(subset):
        cells.append("—")
      elif any(r["missing"] for r in rs):
        cells.append("missing")
      elif s == reference:
        cells.append(f"{np.mean([r['mean'] for r in rs]):+.3f}")
      else:
        cells.append("{:+.3f} ± {:.3f}".format(*mean_over_datasets(rs)))
    lines.append(f"| *{label}* | {len(subset)} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def timing_table(rows: list[dict], strategies: Sequence[str]) -> str:
  """Seconds per selection step per dataset and strategy (median over rounds, mean over splits)."""
  lines = ["| dataset | " + " | ".join(strategies) + " |", "|---|" + "---|" * len(strategies)]
  for ds in dict.fromkeys(r["dataset"] for r in rows):
    cells = []
    for s in strategies:
      r = next((r for r in rows if r["dataset"] == ds and r["strategy"] == s), None)
      cells.append("—" if r is None else f"{r['select_s']:.2f}")
    lines.append(f"| {ds} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def report_tables(results: dict, strategies: Sequence[str], reference: str) -> tuple[str, list[dict]]:
  """The report's tables: each metric of :data:`METRICS` against ``reference`` (and against lcmd too,
  the bar a new method must clear, when ``reference`` is random), the verdict of each strategy
  against lcmd when it ran (:mod:`benchmarks.active_learning.verdict`), and the seconds per
  selection step. Returns the text and the RMSE rows against ``reference``."""

  refs = [reference, *(["lcmd"] if "lcmd" in strategies and reference == "random" else [])]
  rows = summarise(results, reference=reference)
  parts = [markdown_table(rows, strategies, reference=reference)]  # the report's first line introduces it
  for name, label in METRICS.items():
    for ref in refs:
      if (name, ref) == ("rmse", reference):
        continue
      intro = "The same against LCMD" if name == "rmse" else f"Mean over rounds of log test {label} against {ref}"
      parts.append(
        f"{intro} (mean ± se of {ref}; the others as the paired difference to {ref} ± se):\n\n"
        + markdown_table(summarise(results, ref, name), strategies, reference=ref)
      )
  if "lcmd" in strategies:
    parts.append(verdict_lines(results, strategies))
  parts.append(
    "Seconds per selection step (median over rounds, mean over splits; features and batch choice, "
    "the tangent is solved with the fit):\n\n" + timing_table(rows, strategies)
  )
  return "\n\n".join(parts), rows


def plot(results, rows, strategies, out_dir: str, reference: str = "random") -> list[str]:
  """Learning curves (mean log test RMSE vs labels) per dataset and a bar chart of the Δ to ``reference``
  (``rows`` from :func:`summarise` with the same reference)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  paths = []
  datasets = list(results)
  fig, axes = plt.subplots(1, len(datasets), figsize=(4 * len(datasets), 3.2), squeeze=False)
  for ax, ds in zip(axes[0], datasets, strict=False):
    for s in strategies:
      by_split = results[ds].get(s)
      if not by_split:
        continue
      curves = np.log(np.array([by_split[k]["rmse"] for k in sorted(by_split)]))
      first = by_split[sorted(by_split)[0]]
      labels = first["n_initial"] + first["batch_size"] * np.arange(curves.shape[1])
      ax.plot(labels, curves.mean(0), label=s, lw=1.2)
    ax.set_title(ds)
    ax.set_xlabel("labelled points")
  axes[0][0].set_ylabel("mean log test RMSE")
  axes[0][-1].legend(fontsize=7)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "learning_curves.png"))
  fig.savefig(paths[-1], dpi=110)
  plt.close(fig)

  others = [s for s in strategies if s != reference]
  if not others:  # nothing to compare with the reference
    return paths
  fig, ax = plt.subplots(figsize=(1.2 + 1.3 * len(datasets), 3.2))
  width = 0.8 / max(1, len(others))
  for i, s in enumerate(others):
    vals = [next((r["delta"] for r in rows if r["dataset"] == ds and r["strategy"] == s), np.nan) for ds in datasets]
    errs = [next((r["delta_se"] for r in rows if r["dataset"] == ds and r["strategy"] == s), np.nan) for ds in datasets]
    ax.bar(np.arange(len(datasets)) + i * width, vals, width, yerr=errs, label=s)
  ax.axhline(0, color="k", lw=0.8)
  ax.set_xticks(np.arange(len(datasets)) + 0.4 - width / 2, datasets, fontsize=8)
  ax.set_ylabel(f"Δ mean log RMSE vs {reference}")
  ax.legend(fontsize=7)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, f"delta_to_{reference}.png"))
  fig.savefig(paths[-1], dpi=110)
  plt.close(fig)
  return paths


# --------------------------------------------------------------------------------------------
# Entry point


def _dataset_folders(cfg) -> list[tuple[str, str]]:
  out = []
  for path in cfg.datasets:
    if path == "friedman1":
      folder = cfg.friedman_dir
      if not os.path.isfile(os.path.join(folder, "data.txt")):
        write_friedman1(folder, n=cfg.friedman_rows, seed=0)
      out.append(("friedman1", folder))
    else:
      out.append((os.path.basename(os.path.normpath(path)), path))
  return out


def fast_config(cfg):
  """The CI smoke settings: one split of concrete, a tiny pool and network, 2 rounds, 8 epochs."""
  cfg = cfg.copy_and_resolve_references()
  cfg.unlock()
  cfg.datasets = [cfg.datasets[0]]
  cfg.splits = [0]
  cfg.rounds, cfg.batch_size, cfg.n_valid, cfg.n_initial = 2, 8, 64, 16
  cfg.max_pool, cfg.train.epochs, cfg.model.hidden_sizes, cfg.train.finish_maxiter = 256, 8, (32, 32), 10
  for name in cfg.strategies:
    if name in STRATEGIES and "sketch" in inspect.signature(STRATEGIES[name]).parameters:  # sketched features
      options = dict(cfg.strategy_options.get(name) or {})
      options.pop("dim", None)  # the flat spelling of sketch.dim
      options["sketch"] = {**dict(options.get("sketch") or {}), "dim": 64}
      cfg.strategy_options[name] = options
  return cfg


def run(cfg, log=print) -> dict:
  """Run the benchmark described by ``cfg`` (``benchmarks/active_learning/configs/benchmark.py``); resumable.

  Each (dataset, split, strategy) result is a JSON file under ``cfg.results_dir``; existing
  files are reused (``cfg.report_only``: only those, nothing is computed). Writes
  ``report.md``, ``results.json`` and two plots there.
  """
  if cfg.get("fast", False):
    cfg = fast_config(cfg)
  strategies = list(cfg.strategies)
  kwargs = {k: v.to_dict() if hasattr(v, "to_dict") else dict(v) for k, v in cfg.strategy_options.items()}
  protocol_options(cfg)  # unknown fields, bad values, names or options fail now, not hours into the run
  for s in strategies:
    get_strategy(s, **kwargs.get(s, {}))
  os.makedirs(cfg.results_dir, exist_ok=True)
  results: dict = {}
  folders = _dataset_folders(cfg)
  unit_path = lambda ds, k, s: os.path.join(cfg.results_dir, ds, f"split{k}_{s}.json")
  units = [(ds, k, s) for ds, _ in folders for k in cfg.splits for s in strategies]
  done = sum(os.path.isfile(unit_path(*u)) for u in units)
  with Progress(len(units), "units (datasets x splits x strategies)", initial=done) as bar:
    for ds, folder in folders:
      x, y = load_uci_folder(folder)
      x, y = x[: cfg.max_rows] if cfg.max_rows else x, y[: cfg.max_rows] if cfg.max_rows else y
      results[ds] = {s: {} for s in strategies}
      for k in cfg.splits:
        split = make_split(
          x,
          y,
          k,
          n_valid=cfg.n_valid,
          n_initial=cfg.n_initial,
          max_pool=cfg.max_pool,
          rounds=cfg.rounds,
          batch_size=cfg.batch_size,
        )
        learners = {s: split_learner(cfg, split, s, kwargs.get(s)) for s in strategies}
        fit0 = None
        for s in strategies:
          path = unit_path(ds, k, s)
          if os.path.isfile(path):
            with open(path) as f:
              results[ds][s][k] = json.load(f)
            continue
          if cfg.get("report_only", False):
            continue
          if fit0 is None:  # round 0 is shared; it carries a tangent if any strategy reads one
            fit0 = initial_fit(next((a for a in learners.values() if a.needs_tangent), learners[s]), split, seed=k)
          t0 = time.perf_counter()
          res = run_strategy(learners[s], split, seed=k, fit0=fit0)
          os.makedirs(os.path.dirname(path), exist_ok=True)
          atomic_write_text(path, json.dumps(res))  # a kill mid-write must not break resuming
          results[ds][s][k] = res
          bar.update(
            f"{ds} split {k} {s}: metric {metric(res['rmse']):+.4f}, "
            f"select {np.mean(res['select_s']):.2f}s/step, {time.perf_counter() - t0:.0f}s"
          )
      results[ds] = {s: v for s, v in results[ds].items() if v}
      if not results[ds]:
        del results[ds]
  # The first table's reference: random, or (a run without it, e.g. extra splits of a few strategies) lcmd or the first
  reference = next((s for s in ("random", "lcmd") if s in strategies), strategies[0])
  table, rows = report_tables(results, strategies, reference)
  paths = plot(results, rows, strategies, cfg.results_dir, reference)
  atomic_write_text(os.path.join(cfg.results_dir, "results.json"), json.dumps(dict(rows=rows, results=results)))
  atomic_write_text(
    os.path.join(cfg.results_dir, "report.md"),
    (
      f"Mean over rounds of log test RMSE: {reference} as mean ± se over splits; the others as the "
      f"paired difference to {reference} ± se (negative is better).\n\n"
      + table
      + "\n\n"
      + "\n".join(f"![]({os.path.basename(p)})" for p in paths)
      + "\n"
    ),
  )
  log(table)
  return dict(rows=rows, results=results, table=table, plots=paths)


def main(argv=None):
  from absl import app, flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", "benchmarks/active_learning/configs/benchmark.py", "benchmark config file")

  def _main(_):
    run(flags.FLAGS.config)

  app.run(_main, argv=argv)


if __name__ == "__main__":
  main()

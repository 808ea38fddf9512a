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
  mean and standard error over the splits and the paired difference to ``random``.

Datasets too small for the protocol (``N − test < 256 + 64 + 12·32``, e.g. yacht and energy)
fall back to: validation ``min(256, ⌊0.2N⌋)``, initial ``min(64, ⌊0.2N⌋)``, and acquisition batch
``min(32, ⌊pool / 24⌋)`` so that at most half the pool is ever labelled; the report flags them.

Training is one jitted ``lax.scan`` over epochs with a fixed number of padded, masked minibatch
steps per epoch, so one compilation serves every round of a dataset.

The harness lives outside the installed package and is built from its parts: the model is
the registered ``"ntk_mlp"`` (:class:`curiojax.active.models.NTKMLP`), the tangent is
:func:`curiojax.exact_tangent`, and each batch is chosen by :func:`curiojax.select_batch`
with the same registered strategy objects :meth:`curiojax.Learner.ask` runs. Only the protocol's training (no weight
decay, linear decay, best-validation restore) is its own.

Run from the repository root: ``python benchmarks/active_learning.py --config
configs/benchmark.py`` (``--config.fast=True`` for the CI smoke run). Example (library use):
  >>> import numpy as np
  >>> x, y = friedman1(400, seed=0)
  >>> split = make_split(x, y, seed=0, n_valid=40, n_initial=20, rounds=2, batch_size=8)
  >>> split.x_pool.shape[1] == 10
  True
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import os
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from curiojax.active import data
from curiojax.active.models import make_model
from curiojax.active.persistence import atomic_write_text
from curiojax.active.progress import Progress
from curiojax.strategies import STRATEGIES, get_strategy, select_batch

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
# Training


def _rmse(model, params, x, y):
  return jnp.sqrt(jnp.mean(jnp.square(model(params, x) - y)))


@functools.partial(jax.jit, static_argnames=("model", "epochs", "batch_size", "lr"))
def train(
  model, key, x_lab, y_lab, n_lab, x_valid, y_valid, *, epochs: int = 256, batch_size: int = 256, lr: float = 0.375
):
  """Train from scratch on the first ``n_lab`` rows of the padded labelled arrays.

  One jitted ``lax.scan`` over epochs; each epoch takes ``⌊n/b⌋`` minibatches of ``b =
  min(batch_size, n)`` rows of a fresh permutation (incomplete last batch dropped), padded to a
  fixed number of masked steps so shapes do not depend on ``n``. Adam, learning rate
  ``lr·(1 − step/steps)``. Validation RMSE after each epoch; the best parameters are returned.

  Returns:
    ``(best_params, best_valid_rmse)``.
  """
  n_max = x_lab.shape[0]
  b_max = min(batch_size, n_max)
  steps_max = max(1, n_max // b_max)
  b = jnp.minimum(batch_size, n_lab)
  n_batches = n_lab // b
  total = (epochs * n_batches).astype(jnp.float32)
  k_init, k_perm = jax.random.split(key)
  params = model.init(k_init, x_lab.shape[1])
  adam = optax.scale_by_adam()
  loss_fn = lambda p, xb, yb, wb: jnp.sum(wb * jnp.square(model(p, xb) - yb)) / jnp.sum(wb)
  grad_fn = jax.grad(loss_fn)
  rows = jnp.arange(n_max)

  def epoch(carry, k):
    params, state, step, best, best_rmse = carry
    # valid rows first in a random order, padding rows last
    order = jnp.argsort(jnp.where(rows < n_lab, jax.random.uniform(k, (n_max,)), 2.0))

    def one(carry, j):
      params, state, step = carry
      idx = jax.lax.dynamic_slice(order, (j * b_max,), (b_max,)) if steps_max > 1 else order[:b_max]
      wb = (jnp.arange(b_max) < b).astype(jnp.float32)
      g = grad_fn(params, x_lab[idx], y_lab[idx], wb)
      upd, new_state = adam.update(g, state)
      rate = lr * (1.0 - step / total)
      new_params = jax.tree.map(lambda p, u: p - rate * u, params, upd)
      active = j < n_batches
      pick = lambda a, c: jax.tree.map(lambda u, v: jnp.where(active, u, v), a, c)
      return (pick(new_params, params), pick(new_state, state), step + active), None

    (params, state, step), _ = jax.lax.scan(one, (params, state, step), jnp.arange(steps_max))
    rmse = _rmse(model, params, x_valid, y_valid)
    better = rmse < best_rmse
    best = jax.tree.map(lambda u, v: jnp.where(better, u, v), params, best)
    return (params, state, step, best, jnp.where(better, rmse, best_rmse)), None

  carry = (params, adam.init(params), jnp.float32(0.0), params, jnp.float32(jnp.inf))
  carry, _ = jax.lax.scan(epoch, carry, jax.random.split(k_perm, epochs))
  return carry[3], carry[4]


@functools.partial(jax.jit, static_argnames=("model",))
def heldout_rmse(model, params, x, y):
  return _rmse(model, params, x, y)


# --------------------------------------------------------------------------------------------
# Tangent (post hoc, at the restored best parameters)


@functools.partial(jax.jit, static_argnames=("model", "maxiter"))
def posthoc_tangent(model, params, x_lab, y_lab, n_lab, strength, *, maxiter: int = 50):
  """``τ = −(G + sI)⁻¹θ*`` on the labelled rows (Gauss-Newton, L2 strength ``s``), by CG.

  Our choice: the reference trains without weight decay and restores the best-validation
  parameters, so a tangent carried during training would belong to the last, not the restored,
  parameters. We train exactly as the reference and compute the tangent afterwards with
  :func:`curiojax.exact_tangent` (``solver="cg"``) at the restored parameters; ``s`` only
  defines the tangent (it makes ``G + sI`` invertible) and never touches training.
  """
  from curiojax import exact_tangent, l2, prediction_loss

  loss = prediction_loss(model)
  weights = (jnp.arange(x_lab.shape[0]) < n_lab).astype(x_lab.dtype)
  return exact_tangent(
    loss,
    params,
    dict(x=x_lab, y=y_lab, weights=weights),
    regularizer=l2(),
    strength=strength,
    curvature="gauss_newton",
    solver="cg",
    tol=1e-5,
    maxiter=maxiter,
  )


@functools.partial(jax.jit, static_argnames=("model",))
def tangent_residual(model, params, tangent, x_lab, y_lab, n_lab, strength):
  """The post-hoc tangent's full relative residual ``‖(G + sI)τ + ρ‖/‖ρ‖`` on the labelled rows.

  Recorded with each round's result: the CG budget (``tangent_maxiter``) does not certify the
  tangent, so the figures say how far from the exact solve it was.
  """
  from curiojax import l2, prediction_loss, relative_residual

  weights = (jnp.arange(x_lab.shape[0]) < n_lab).astype(x_lab.dtype)
  batch = dict(x=x_lab, y=y_lab, weights=weights)
  return relative_residual(
    prediction_loss(model), params, tangent, batch, regularizer=l2(), strength=strength, curvature="gauss_newton"
  )


@functools.partial(jax.jit, static_argnames=("model",))
def _noise_variance(model, params, x_lab, y_lab, n_lab):
  w = (jnp.arange(x_lab.shape[0]) < n_lab).astype(x_lab.dtype)
  return jnp.sum(w * jnp.square(model(params, x_lab) - y_lab)) / jnp.sum(w)


# --------------------------------------------------------------------------------------------
# Active-learning runs


def run_strategy(
  model,
  split: Split,
  name: str,
  *,
  seed: int,
  initial_params,
  epochs: int,
  train_batch: int,
  lr: float,
  tangent_strength: float,
  tangent_maxiter: int,
  strategy_kwargs: dict | None = None,
) -> dict:
  """One strategy on one split: ``rounds`` acquisitions, retraining from scratch after each.

  Returns:
    dict with ``rmse`` (test RMSE after rounds 0..R), ``select_s`` (seconds per selection
    step, tangent included for curiosity strategies), ``train_s`` and ``tangent_residual``
    (the post-hoc tangent's relative residual each round; empty without a tangent).
  """
  strategy = get_strategy(name, **(strategy_kwargs or {}))
  needs_tangent = getattr(strategy, "needs_tangent", False)
  n0, b, rounds = len(split.x_initial), split.batch_size, split.rounds
  n_max = n0 + rounds * b
  d = split.x_initial.shape[1]
  x_lab = np.zeros((n_max, d), np.float32)
  y_lab = np.zeros(n_max, np.float32)
  x_lab[:n0], y_lab[:n0] = split.x_initial, split.y_initial
  remaining = np.arange(len(split.x_pool))
  key = jax.random.key(seed)
  params = initial_params
  rmse = [float(heldout_rmse(model, params, split.x_test, split.y_test))]
  select_s, train_s, residuals = [], [], []
  for r in range(1, rounds + 1):
    n = n0 + (r - 1) * b
    t0 = time.perf_counter()
    tangent = None
    if needs_tangent:
      strength = jnp.float32(tangent_strength)
      tangent = posthoc_tangent(model, params, x_lab, y_lab, n, strength, maxiter=tangent_maxiter)
      residuals.append(float(tangent_residual(model, params, tangent, x_lab, y_lab, n, strength)))
    picked = select_batch(
      model,
      params,
      tangent,
      split.x_pool[remaining],
      b,
      strategy=strategy,
      x_labelled=x_lab[:n],
      y_labelled=y_lab[:n],
      noise_variance=float(_noise_variance(model, params, x_lab, y_lab, n)),
      key=jax.random.fold_in(jax.random.key(seed + 7919), r),
    )
    select_s.append(time.perf_counter() - t0)
    chosen = remaining[picked]
    x_lab[n : n + b], y_lab[n : n + b] = split.x_pool[chosen], split.y_pool[chosen]
    remaining = np.delete(remaining, picked)
    t0 = time.perf_counter()
    params, _ = train(
      model,
      jax.random.fold_in(key, r),
      x_lab,
      y_lab,
      n + b,
      split.x_valid,
      split.y_valid,
      epochs=epochs,
      batch_size=train_batch,
      lr=lr,
    )
    rmse.append(float(heldout_rmse(model, params, split.x_test, split.y_test)))
    train_s.append(time.perf_counter() - t0)
  return dict(
    rmse=rmse,
    select_s=select_s,
    train_s=train_s,
    tangent_residual=residuals,  # empty for strategies without a tangent
    batch_size=b,
    n_initial=n0,
    standard=split.standard,
  )


def initial_model(model, split: Split, *, seed: int, epochs: int, train_batch: int, lr: float):
  """Round 0 (shared by all strategies of a split): train on the initial labelled set."""
  n0, n_max = len(split.x_initial), len(split.x_initial) + split.rounds * split.batch_size
  x_lab = np.zeros((n_max, split.x_initial.shape[1]), np.float32)
  y_lab = np.zeros(n_max, np.float32)
  x_lab[:n0], y_lab[:n0] = split.x_initial, split.y_initial
  params, _ = train(
    model,
    jax.random.fold_in(jax.random.key(seed), 0),
    x_lab,
    y_lab,
    n0,
    split.x_valid,
    split.y_valid,
    epochs=epochs,
    batch_size=train_batch,
    lr=lr,
  )
  return params


def metric(rmse: Sequence[float]) -> float:
  """Mean over the post-acquisition rounds of ``log`` test RMSE."""
  return float(np.mean(np.log(np.asarray(rmse[1:]))))


# --------------------------------------------------------------------------------------------
# Report


def summarise(results: dict[str, dict[str, dict[int, dict]]], reference: str = "random") -> list[dict]:
  """Rows ``dataset, strategy, n, mean, se, delta, delta_se, wins, select_s`` from nested results."""
  rows = []
  for ds, by_strategy in results.items():
    ref = by_strategy.get(reference, {})
    for name, by_split in by_strategy.items():
      splits = sorted(by_split)
      m = np.array([metric(by_split[k]["rmse"]) for k in splits])
      se = lambda a: float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")
      paired = [k for k in splits if k in ref]
      diff = np.array([metric(by_split[k]["rmse"]) - metric(ref[k]["rmse"]) for k in paired])
      rows.append(
        dict(
          dataset=ds,
          strategy=name,
          n=len(splits),
          mean=float(m.mean()),
          se=se(m),
          delta=float(diff.mean()) if len(diff) else float("nan"),
          delta_se=se(diff) if len(diff) else float("nan"),
          wins=int(np.sum(diff < 0)),  # splits on which this strategy beat random (paired)
          # median over rounds (round 1 includes compilation), then mean over splits
          select_s=float(np.mean([np.median(by_split[k]["select_s"]) for k in splits])),
          standard=all(by_split[k].get("standard", True) for k in splits),
          batch_size=by_split[splits[0]].get("batch_size"),
        )
      )
  return rows


def markdown_table(rows: list[dict], strategies: Sequence[str]) -> str:
  """Per dataset: mean ± se of the metric for random, Δ to random ± paired se (wins/splits) for
  the others; then the means over datasets (and over those on the exact protocol)."""
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
      if s == "random":
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
      key = "mean" if s == "random" else "delta"
      cells.append(f"{np.mean([r[key] for r in rs]):+.3f}" if len(rs) == len(subset) else "—")
    lines.append(f"| *{label}* | {len(subset)} | " + " | ".join(cells) + " |")
  lines += [
    "",
    "Seconds per selection step (median over rounds, mean over splits; tangent included):",
    "",
    "| dataset | " + " | ".join(strategies) + " |",
    "|---|" + "---|" * len(strategies),
  ]
  for ds in datasets:
    cells = []
    for s in strategies:
      r = next((r for r in rows if r["dataset"] == ds and r["strategy"] == s), None)
      cells.append("—" if r is None else f"{r['select_s']:.2f}")
    lines.append(f"| {ds} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot(results, rows, strategies, out_dir: str) -> list[str]:
  """Learning curves (mean log test RMSE vs labels) per dataset and a Δ-to-random bar chart."""
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

  others = [s for s in strategies if s != "random"]
  fig, ax = plt.subplots(figsize=(1.2 + 1.3 * len(datasets), 3.2))
  width = 0.8 / max(1, len(others))
  for i, s in enumerate(others):
    vals = [next((r["delta"] for r in rows if r["dataset"] == ds and r["strategy"] == s), np.nan) for ds in datasets]
    errs = [next((r["delta_se"] for r in rows if r["dataset"] == ds and r["strategy"] == s), np.nan) for ds in datasets]
    ax.bar(np.arange(len(datasets)) + i * width, vals, width, yerr=errs, label=s)
  ax.axhline(0, color="k", lw=0.8)
  ax.set_xticks(np.arange(len(datasets)) + 0.4 - width / 2, datasets, fontsize=8)
  ax.set_ylabel("Δ mean log RMSE vs random")
  ax.legend(fontsize=7)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "delta_to_random.png"))
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
  cfg.max_pool, cfg.epochs, cfg.hidden, cfg.tangent_maxiter = 256, 8, (32, 32), 10
  for name in cfg.strategies:
    if name in STRATEGIES and "dim" in inspect.signature(STRATEGIES[name]).parameters:  # sketched features
      if name not in cfg.strategy_kwargs:
        cfg.strategy_kwargs[name] = {}
      cfg.strategy_kwargs[name]["dim"] = 64
  return cfg


def run(cfg, log=print) -> dict:
  """Run the benchmark described by ``cfg`` (``configs/benchmark.py``); resumable.

  Each (dataset, split, strategy) result is a JSON file under ``cfg.results_dir``; existing
  files are reused (``cfg.report_only``: only those, nothing is computed). Writes
  ``report.md``, ``results.json`` and two plots there.
  """
  if cfg.get("fast", False):
    cfg = fast_config(cfg)
  strategies = list(cfg.strategies)
  kwargs = {k: dict(v) for k, v in cfg.strategy_kwargs.items()}
  for s in strategies:  # unknown names or options fail now, not hours into the run
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
        # the library's registered model (equal settings compare equal: one compilation per dataset)
        model = make_model(
          "ntk_mlp", split.x_pool.shape[1], hidden_sizes=tuple(cfg.hidden), sigma_w=cfg.sigma_w, sigma_b=cfg.sigma_b
        ).model_fn
        p0 = None
        for s in strategies:
          path = unit_path(ds, k, s)
          if os.path.isfile(path):
            with open(path) as f:
              results[ds][s][k] = json.load(f)
            continue
          if cfg.get("report_only", False):
            continue
          if p0 is None:
            p0 = initial_model(model, split, seed=k, epochs=cfg.epochs, train_batch=cfg.train_batch, lr=cfg.lr)
          t0 = time.perf_counter()
          res = run_strategy(
            model,
            split,
            s,
            seed=k,
            initial_params=p0,
            epochs=cfg.epochs,
            train_batch=cfg.train_batch,
            lr=cfg.lr,
            tangent_strength=cfg.tangent_strength,
            tangent_maxiter=cfg.tangent_maxiter,
            strategy_kwargs=kwargs.get(s),
          )
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
  rows = summarise(results)
  table = markdown_table(rows, strategies)
  paths = plot(results, rows, strategies, cfg.results_dir)
  atomic_write_text(os.path.join(cfg.results_dir, "results.json"), json.dumps(dict(rows=rows, results=results)))
  atomic_write_text(
    os.path.join(cfg.results_dir, "report.md"),
    (
      "Mean over rounds of log test RMSE: random as mean ± se over splits; the others as the "
      "paired difference to random ± se (negative is better).\n\n"
      + table
      + "\n\n"
      + "\n".join(f"![]({os.path.basename(p)})" for p in paths)
      + "\n"
    ),
  )
  log(table)
  return dict(rows=rows, results=results, table=table, plots=paths)


def main(argv=None):
  import sys

  from absl import app, flags
  from ml_collections import config_flags

  sys.path.insert(0, os.getcwd())  # configs/ import each other from the repository root
  config_flags.DEFINE_config_file("config", "configs/benchmark.py", "benchmark config file")

  def _main(_):
    run(flags.FLAGS.config)

  app.run(_main, argv=argv)


if __name__ == "__main__":
  main()

"""Baseline batch strategies from the literature, on sketched gradient features.

- ``variance`` — top-k predictive variance of the linearised network (Laplace / Gauss-Newton
  posterior in the sketched gradient space, kernel scaled to mean labelled diagonal 1):
  ``v(x) = σ² φ(x)ᵀ(Φ_LᵀΦ_L + σ²I)⁻¹φ(x)``, ``σ² = noise`` (0.01). MacKay (1992) / "BALD-like"
  MaxDiag of Holzmüller et al. (JMLR 2023, §4).
- ``badge`` — k-means++ seeding on ``φ`` in TP mode (labelled points act as centres first):
  BADGE (Ash et al., ICLR 2020) as adapted to regression by Holzmüller et al. (``kmeanspp-tp``).
- ``lcmd`` — Largest Cluster Maximum Distance (Holzmüller et al., JMLR 2023, Alg. 2, TP
  mode): each pool point belongs to its nearest centre (labelled or selected); take the
  cluster with the largest sum of squared distances and add its point farthest from its
  centre. Follows ``bmdal_reg``'s ``LargestClusterMaxDistSelectionMethod``.
- ``emcm`` — expected model change (Cai, Zhang & Zhou, ICDM 2013): ``E_y‖∇_θℓ‖ =
  E|f − y|·‖∇_θf‖``; one network instead of their bootstrap ensemble, so
  ``E|f − y| ∝ √v(x)`` (the ``variance`` posterior): score ``√v(x)·‖φ(x)‖``, top-k.

Example:
  >>> import numpy as np, jax, jax.numpy as jnp
  >>> from curiojax.strategies import SelectionContext, get_strategy
  >>> f = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
  >>> params = {"w1": jnp.ones((2, 4)), "w2": jnp.ones(4)}
  >>> ctx = SelectionContext(f, params, None, np.zeros((3, 2)), np.zeros(3),
  ...                        np.random.default_rng(0).normal(size=(20, 2)), jax.random.key(0))
  >>> len(set(get_strategy("lcmd", dim=16).select(ctx, 5).tolist()))
  5
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from curiojax.strategies.base import SelectionContext, check_batch_size
from curiojax.strategies.kernels import (
  SKETCH_CHUNK,
  SKETCH_COMPUTE_DTYPE,
  SKETCH_DIM,
  Sketched,
  checked_indices,
  kmeanspp,
  lcmd,
  posterior_variance,
  sketched_features,
  top_k,
)


def _with_scores(ctx: SelectionContext, scores, idx: np.ndarray) -> np.ndarray:
  """Record the chosen points' scores (k values to the host) and return the indices."""
  ctx.info["scores"] = np.asarray(jnp.asarray(scores)[idx])
  return idx


class VarianceStrategy(Sketched):
  """Top-k Laplace / Gauss-Newton predictive variance in the sketched gradient space."""

  criterion = "predictive variance of the linearised network (top k)"

  def __init__(
    self,
    dim: int = SKETCH_DIM,
    noise: float = 0.01,
    chunk_size: int = SKETCH_CHUNK,
    compute_dtype: str = SKETCH_COMPUTE_DTYPE,
  ):
    super().__init__(dim, chunk_size, compute_dtype)
    if not noise > 0:
      raise ValueError(f"noise must be > 0, got {noise}.")
    self.noise = float(noise)

  def select(self, ctx: SelectionContext, batch_size: int) -> np.ndarray:
    check_batch_size(ctx, batch_size)
    fp, mp, fl, ml = sketched_features(ctx, self)
    var, _ = posterior_variance(fp, mp, fl, ml, self.noise)
    return _with_scores(ctx, var, checked_indices(top_k(var, mp, batch_size), ctx, batch_size))


class EMCMStrategy(VarianceStrategy):
  """Expected gradient norm ``√v(x)·‖∇f(x)‖`` (single-network EMCM), top-k."""

  criterion = "expected model change √v(x)·‖∇f(x)‖ (top k)"

  def select(self, ctx: SelectionContext, batch_size: int) -> np.ndarray:
    check_batch_size(ctx, batch_size)
    fp, mp, fl, ml = sketched_features(ctx, self)
    var, diag = posterior_variance(fp, mp, fl, ml, self.noise)
    score = jnp.sqrt(var * diag)
    return _with_scores(ctx, score, checked_indices(top_k(score, mp, batch_size), ctx, batch_size))


class BadgeStrategy(Sketched):
  """k-means++ seeding on sketched gradients, labelled points as initial centres."""

  criterion = "k-means++ sampling on gradient features (diversity; no score)"

  def select(self, ctx: SelectionContext, batch_size: int) -> np.ndarray:
    check_batch_size(ctx, batch_size)
    fp, mp, fl, ml = sketched_features(ctx, self)
    idx = kmeanspp(fp, mp, fl, ml, jax.random.fold_in(ctx.key, 2), batch_size)
    return checked_indices(idx, ctx, batch_size)


class LCMDStrategy(Sketched):
  """Largest Cluster Maximum Distance on sketched gradients (TP mode)."""

  criterion = (
    "coverage: the farthest point of the largest cluster in gradient features; score its squared distance "
    "to the nearest labelled or already chosen point"
  )

  def select(self, ctx: SelectionContext, batch_size: int) -> np.ndarray:
    check_batch_size(ctx, batch_size)
    fp, mp, fl, ml = sketched_features(ctx, self)
    idx, distances = lcmd(fp, mp, fl, ml, batch_size, with_distances=True)
    ctx.info["scores"] = np.asarray(distances)
    return checked_indices(idx, ctx, batch_size)

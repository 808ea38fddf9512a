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
  >>> len(set(get_strategy("lcmd", sketch={"dim": 16}).select(ctx, 5).indices.tolist()))
  5
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from curiojax.strategies.base import Selection, SelectionContext
from curiojax.strategies.kernels import (
  OnPosterior,
  OnSketch,
  checked_indices,
  kmeanspp,
  lcmd,
  posterior_variance,
  top_k,
)


def _top_k_selection(ctx: SelectionContext, scores, mp, k: int) -> Selection:
  """The ``k`` best unmasked ``scores`` and their values (k values to the host)."""
  idx = checked_indices(top_k(scores, mp, k), ctx, k)
  return Selection.of(idx, jnp.asarray(scores)[idx])


@dataclasses.dataclass(frozen=True)
class VarianceStrategy(OnPosterior):
  """Top-k Laplace / Gauss-Newton predictive variance in the sketched gradient space.

  Args:
    noise: ``σ²`` of the posterior (> 0).
    sketch: :class:`~curiojax.strategies.base.SketchOptions` (or a dict of them).
  """

  criterion = "predictive variance of the linearised network (top k)"

  def score(self, variance, diagonal):
    """The score from the posterior variance ``v(x)`` and the prior diagonal ``‖φ(x)‖²``."""
    return variance

  def select(self, ctx: SelectionContext, batch_size: int) -> Selection:
    fp, mp, fl, ml = self.features(ctx, batch_size)
    variance, diagonal = posterior_variance(fp, mp, fl, ml, self.noise)
    return _top_k_selection(ctx, self.score(variance, diagonal), mp, batch_size)


@dataclasses.dataclass(frozen=True)
class EMCMStrategy(VarianceStrategy):
  """Expected gradient norm ``√v(x)·‖∇f(x)‖`` (single-network EMCM), top-k."""

  criterion = "expected model change √v(x)·‖∇f(x)‖ (top k)"

  def score(self, variance, diagonal):
    return jnp.sqrt(variance * diagonal)


@dataclasses.dataclass(frozen=True)
class BadgeStrategy(OnSketch):
  """k-means++ seeding on sketched gradients, labelled points as initial centres (no score)."""

  criterion = "k-means++ sampling on gradient features (diversity; no score)"

  def select(self, ctx: SelectionContext, batch_size: int) -> Selection:
    fp, mp, fl, ml = self.features(ctx, batch_size)
    idx = kmeanspp(fp, mp, fl, ml, jax.random.fold_in(ctx.key, 2), batch_size)
    return Selection.of(checked_indices(idx, ctx, batch_size))


@dataclasses.dataclass(frozen=True)
class LCMDStrategy(OnSketch):
  """Largest Cluster Maximum Distance on sketched gradients (TP mode); each pick's score is its
  squared distance to the nearest labelled or earlier pick."""

  criterion = (
    "coverage: the farthest point of the largest cluster in gradient features; score its squared distance "
    "to the nearest labelled or already chosen point"
  )

  def select(self, ctx: SelectionContext, batch_size: int) -> Selection:
    fp, mp, fl, ml = self.features(ctx, batch_size)
    idx, distances = lcmd(fp, mp, fl, ml, batch_size, with_distances=True)
    return Selection.of(checked_indices(idx, ctx, batch_size), distances)

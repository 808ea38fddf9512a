"""``curiosity_diverse``: curiosity-weighted LCMD, curiojax's tangent-based batch strategy.

Each pool point's squared distance to its nearest centre (labelled or already chosen), in
sketched gradient features, is weighted by ``w(x) = (c(x)/c̄)^γ``, ``c(x) = (J_xτ)²`` (one JVP
along the regularity tangent, :func:`curiojax.curiosity_scores`), ``c̄`` its pool mean; LCMD
(Holzmüller et al., JMLR 2023, Alg. 2) then takes the cluster with the largest weighted spread
and its point of largest weighted distance. Coverage chooses the region, curiosity the point
within it; ``γ = 0`` is LCMD, ``γ → ∞`` tends to top-k curiosity. ``docs/benchmark.md`` has
the comparison with the baselines: it beats random and trails LCMD slightly.

Example:
  >>> import numpy as np, jax, jax.numpy as jnp
  >>> from curiojax.strategies import CuriosityDiverseStrategy, SelectionContext
  >>> f = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
  >>> params = {"w1": jnp.ones((2, 4)), "w2": jnp.ones(4)}
  >>> tangent = jax.tree.map(lambda p: -p, params)
  >>> pool = np.random.default_rng(0).normal(size=(50, 2))
  >>> ctx = SelectionContext(f, params, tangent, np.zeros((3, 2)), np.zeros(3), pool, jax.random.key(0))
  >>> picked = CuriosityDiverseStrategy(sketch={"dim": 16}).select(ctx, 5)
  >>> len(set(picked.indices.tolist())), picked.scores.shape
  (5, (5,))
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from curiojax.strategies.base import Needs, Selection, SelectionContext, check_batch_size
from curiojax.strategies.directions import check_direction, needs_along, selection_directions
from curiojax.strategies.kernels import OnSketch, checked_indices, curiosity_weights, lcmd, sketched_features


def check_jvp_finite(jvp, mask, direction: str) -> None:
  """``ValueError`` if ``J_x v`` is not finite on the (unmasked) pool: the direction diverged."""
  if not bool(jnp.all(jnp.isfinite(jnp.where(mask[:, None], jvp, 0.0)))):
    raise ValueError(
      f"J_x·{direction} is not finite on the pool: the {direction} diverged (see curiojax.check_tangent)."
    )


def check_exponent(name: str, value) -> float:
  """``value`` as a float, finite and ``>= 0``; else a ``ValueError`` naming it."""
  if not (value >= 0 and np.isfinite(value)):
    raise ValueError(f"{name} must be finite and >= 0, got {value}.")
  return float(value)


def features_along(ctx: SelectionContext, sketch, direction: str, batch_size: int):
  """``((fp, mp, fl, ml, jp, jl), residual)``: the padded sketch and ``J_xv`` of pool and labelled
  rows in one pass (:func:`~curiojax.strategies.kernels.sketched_features`), after checking the
  batch size and that ``J_xv`` is finite; ``residual`` is the direction's solve's."""
  check_batch_size(ctx, batch_size)
  directions, residual = selection_directions(ctx, direction)
  features = sketched_features(ctx, sketch, directions)
  check_jvp_finite(features[4], features[1], direction)
  return features, residual


@dataclasses.dataclass(frozen=True)
class AlongDirection(OnSketch):
  """Base of the sketch strategies that also read ``J_xv`` along one ``direction`` (``"tangent"``,
  ``"validation"`` or ``"groups"``; :mod:`curiojax.strategies.directions`): their needs follow it."""

  direction: str = dataclasses.field(default="tangent", kw_only=True)

  def __post_init__(self):
    super().__post_init__()
    check_direction(self.direction)

  @property
  def needs(self) -> Needs:
    return needs_along(self.direction)

  def features_along(self, ctx: SelectionContext, batch_size: int):
    """:func:`features_along` this strategy's direction."""
    return features_along(ctx, self.sketch, self.direction, batch_size)


@dataclasses.dataclass(frozen=True)
class CuriosityDiverseStrategy(AlongDirection):
  """LCMD whose scored squared distances are weighted by normalised curiosity ``(c/c̄)^γ``.

  Coverage picks the region (the labelled-or-selected centre whose cluster has the largest
  weighted spread), curiosity picks the point within it. ``γ = 0`` is LCMD; ``γ → ∞`` tends to
  top-k curiosity. The default ``γ = 0.25`` was chosen on splits 100-101 (docs/benchmark.md).
  ``c = (J_xv)²`` along ``direction`` (:mod:`curiojax.strategies.directions`; for ``"groups"``
  the mean of the layers' normalised scores), from the same pass over the pool as the features.
  Each pick's score is ``σ²·c``.

  Args:
    gamma: exponent of the normalised curiosity weight.
    direction: ``"tangent"`` (default), ``"validation"`` or ``"groups"``.
    sketch: :class:`~curiojax.strategies.base.SketchOptions` (or a dict of them).
  """

  gamma: float = 0.25
  criterion = (
    "coverage weighted by curiosity: the farthest point, in gradient features with squared distances "
    "weighted by (c/c̄)^γ, of the largest weighted cluster; score σ²(J_xτ)²"
  )

  def __post_init__(self):
    super().__post_init__()
    object.__setattr__(self, "gamma", check_exponent("gamma", self.gamma))

  def select(self, ctx: SelectionContext, batch_size: int) -> Selection:
    # Features and J_xv in one pass, at the features' padded size (a size class of the pool),
    # so nothing here compiles again as the pool shrinks by a batch each round.
    (fp, mp, fl, ml, jvp, _), residual = self.features_along(ctx, batch_size)
    scores = jnp.square(jvp)  # σ² is one constant per round, so it cancels in c/c̄
    idx = checked_indices(lcmd(fp, mp, fl, ml, batch_size, curiosity_weights(scores, mp, self.gamma)), ctx, batch_size)
    sigma2 = 1.0 if ctx.noise_variance is None else ctx.noise_variance
    return Selection.of(idx, sigma2 * np.asarray(jnp.sum(scores[idx], 1)), direction_residual=residual)


@dataclasses.dataclass(frozen=True)
class ValidationDiverseStrategy(CuriosityDiverseStrategy):
  """LCMD weighted by the normalised validation influence ``(c_a/c̄_a)^γ``, ``c_a = (J_x a)²``."""

  direction: ClassVar[str] = "validation"
  criterion = (
    "coverage weighted by validation influence: LCMD with squared distances weighted by (c_a/c̄_a)^γ, "
    "c_a = (J_x a)²; score σ²(J_x a)²"
  )

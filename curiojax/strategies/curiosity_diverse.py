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
  >>> picked = CuriosityDiverseStrategy(dim=16).select(ctx, 5)
  >>> len(set(picked.tolist())), ctx.info["scores"].shape
  (5, (5,))
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from curiojax.scoring.scores import curiosity_scores
from curiojax.strategies.base import SelectionContext, check_batch_size
from curiojax.strategies.kernels import (
  POOL_BUCKET,
  Sketched,
  checked_indices,
  curiosity_weights,
  lcmd,
  pad_rows_to,
  sketched_features,
)


class CuriosityDiverseStrategy(Sketched):
  """LCMD whose scored squared distances are weighted by normalised curiosity ``(c/c̄)^γ``.

  Coverage picks the region (the labelled-or-selected centre whose cluster has the largest
  weighted spread), curiosity picks the point within it. ``γ = 0`` is LCMD; ``γ → ∞`` tends to
  top-k curiosity. The default ``γ = 0.25`` was chosen on splits 100-101 (docs/benchmark.md).

  Args:
    gamma: exponent of the normalised curiosity weight.
    dim, chunk_size: as for the sketch.
  """

  criterion = (
    "coverage weighted by curiosity: the farthest point, in gradient features with squared distances "
    "weighted by (c/c̄)^γ, of the largest weighted cluster; score σ²(J_xτ)²"
  )
  needs_tangent = True

  def __init__(self, gamma: float = 0.25, dim: int = 512, chunk_size: int = 2048):
    super().__init__(dim, chunk_size)
    if not gamma >= 0:
      raise ValueError(f"gamma must be >= 0, got {gamma}.")
    self.gamma = float(gamma)

  def select(self, ctx: SelectionContext, batch_size: int) -> np.ndarray:
    check_batch_size(ctx, batch_size)
    if ctx.tangent is None:
      raise ValueError("curiosity_diverse needs ctx.tangent (carry or compute the regularity tangent).")
    fp, mp, fl, ml = sketched_features(ctx, self.dim, self.chunk_size)
    # Scored at the features' padded size (a multiple of POOL_BUCKET), so nothing here compiles
    # again as the pool shrinks by a batch each round.
    xp, _ = pad_rows_to(ctx.x_pool, POOL_BUCKET)
    jvp = curiosity_scores(ctx.model_fn, ctx.params, ctx.tangent, xp, heuristic="jvp").reshape(-1)
    # σ² is one constant per round, so it cancels in c/c̄.
    if not bool(jnp.all(jnp.isfinite(jnp.where(mp, jvp, 0.0)))):
      raise ValueError("J_x·tangent is not finite on the pool: the tangent diverged (see curiojax.check_tangent).")
    weights = curiosity_weights(jvp, mp, self.gamma)
    idx = checked_indices(lcmd(fp, mp, fl, ml, batch_size, weights), ctx, batch_size)
    sigma2 = 1.0 if ctx.noise_variance is None else ctx.noise_variance
    ctx.info["scores"] = sigma2 * np.square(np.asarray(jvp[idx]))  # k values to the host
    return idx

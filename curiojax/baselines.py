"""Baseline and diversity-aware batch selection strategies (issue 6), registered on import.

All kernel methods use sketched gradient features ``φ(x)`` (:mod:`curiojax.features`,
``grad → rp(512)`` in Holzmüller et al.'s terms); ``φ_L`` are the labelled points' features.
Pool and labelled arrays are padded to buckets (multiples of 512 rows) and
masked, and every selection loop is a jitted ``lax.fori_loop``, so rounds seldom recompile.

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
- ``curiosity_diverse`` — ours: curiosity-weighted LCMD. Each pool point's squared distance to
  its nearest centre is weighted by ``w(x) = (c(x)/c̄)^γ``, ``c(x) = (J_xτ)²`` (one JVP along
  the tangent, :func:`curiojax.curiosity_scores`), ``c̄`` its pool mean; LCMD then takes the
  cluster with the largest weighted spread and its point of largest weighted distance. Coverage
  chooses the region, curiosity the point within it; ``γ = 0`` is LCMD.

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

import functools

import jax
import jax.numpy as jnp
import numpy as np

from curiojax.features import gradient_sketch
from curiojax.scores import curiosity_scores
from curiojax.strategies import SelectionContext, check_batch_size, register_strategy

POOL_BUCKET = 512
LABELLED_BUCKET = 512


def _pad(a, bucket):
  a = np.asarray(a, np.float32)
  n = len(a)
  m = max(bucket, -(-n // bucket) * bucket)
  out = np.zeros((m, *a.shape[1:]), np.float32)
  out[:n] = a
  return out, np.arange(m) < n


def _features(ctx: SelectionContext, dim: int, chunk_size: int):
  """Padded sketched features and masks of pool and labelled points (same projection)."""
  if ctx.model_fn is None:
    raise ValueError("This strategy needs ctx.model_fn and ctx.params (a trained model).")
  xp, mp = _pad(ctx.x_pool, POOL_BUCKET)
  key = jax.random.fold_in(ctx.key, 1)
  fp = gradient_sketch(ctx.model_fn, ctx.params, xp, key, dim=dim, chunk_size=chunk_size)
  if len(ctx.x_labelled):
    xl, ml = _pad(ctx.x_labelled, LABELLED_BUCKET)
    fl = gradient_sketch(ctx.model_fn, ctx.params, xl, key, dim=dim, chunk_size=chunk_size)
  else:
    fl, ml = jnp.zeros((LABELLED_BUCKET, dim), fp.dtype), np.zeros(LABELLED_BUCKET, bool)
  return fp, jnp.asarray(mp), fl, jnp.asarray(ml)


def _finish(idx, ctx, batch_size):
  idx = np.asarray(idx)[:batch_size]
  n = len(ctx.x_pool)
  if len(set(idx.tolist())) != batch_size or idx.max(initial=0) >= n:  # pragma: no cover
    raise RuntimeError("selection produced duplicate or padded indices; please report this.")
  return idx


# ---------------------------------------------------------------------------------------------
# Shared jitted kernels


def _sq_dists(a, b):
  return jnp.maximum(jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2 * a @ b.T, 0.0)


def _min_dist_to_labelled(fp, fl, ml):
  d = jnp.where(ml[None, :], _sq_dists(fp, fl), jnp.inf)
  min_d, closest = jnp.min(d, 1), jnp.argmin(d, 1)
  # no labelled point: a virtual centre at the origin (largest norm first, as bmdal's P mode)
  none = ~jnp.any(ml)
  return jnp.where(none, jnp.sum(fp * fp, 1), min_d), jnp.where(none, 0, closest)


@functools.partial(jax.jit, static_argnames=("k",))
def _lcmd(fp, mp, fl, ml, k, weights=None):
  """LCMD; ``weights`` (pool-sized, default 1) multiply the squared distances that are scored."""
  n_lab = fl.shape[0]
  w = jnp.ones(fp.shape[0], fp.dtype) if weights is None else weights
  min_d, closest = _min_dist_to_labelled(fp, fl, ml)
  sel = jnp.zeros(fp.shape[0], bool)
  out = jnp.zeros(k, jnp.int32)

  def body(i, carry):
    min_d, closest, sel, out = carry
    free = mp & ~sel
    wd = w * min_d
    sums = jax.ops.segment_sum(jnp.where(free, wd, 0.0), closest, num_segments=n_lab + k)
    in_max = sums[closest] == jnp.max(sums)
    score = jnp.where(free & in_max, wd, -jnp.inf)
    score = jnp.where(jnp.any(free & in_max), score, jnp.where(free, wd, -jnp.inf))
    j = jnp.argmax(score)
    d = _sq_dists(fp, fp[j][None])[:, 0]
    new = d < min_d
    closest = jnp.where(new, n_lab + i, closest)
    min_d = jnp.where(new, d, min_d).at[j].set(0.0)
    return min_d, closest, sel.at[j].set(True), out.at[i].set(j)

  return jax.lax.fori_loop(0, k, body, (min_d, closest, sel, out))[3]


@functools.partial(jax.jit, static_argnames=("k",))
def _kmeanspp(fp, mp, fl, ml, key, k, weights=None):
  """k-means++ seeding; ``weights`` (pool-sized, default 1) multiply the sampling probabilities."""
  w0 = jnp.ones(fp.shape[0], fp.dtype) if weights is None else weights
  min_d, _ = _min_dist_to_labelled(fp, fl, ml)
  sel = jnp.zeros(fp.shape[0], bool)
  out = jnp.zeros(k, jnp.int32)

  def body(i, carry):
    min_d, sel, out = carry
    free = mp & ~sel
    w = jnp.where(free, w0 * jnp.maximum(min_d, 0.0), 0.0)
    w = jnp.where(jnp.sum(w) > 0, w, free.astype(w.dtype))  # all at zero distance: uniform
    j = jax.random.categorical(jax.random.fold_in(key, i), jnp.where(w > 0, jnp.log(w), -jnp.inf))
    d = _sq_dists(fp, fp[j][None])[:, 0]
    return jnp.minimum(min_d, d).at[j].set(0.0), sel.at[j].set(True), out.at[i].set(j)

  return jax.lax.fori_loop(0, k, body, (min_d, sel, out))[2]


def _scale(fp, mp, fl, ml):
  """Scale features so the labelled points' mean kernel diagonal is 1 (bmdal's ``scale``)."""
  diag_l = jnp.sum(fl * fl, 1)
  diag_p = jnp.sum(fp * fp, 1)
  mean = jnp.where(
    jnp.any(ml),
    jnp.sum(jnp.where(ml, diag_l, 0)) / jnp.maximum(jnp.sum(ml), 1),
    jnp.sum(jnp.where(mp, diag_p, 0)) / jnp.maximum(jnp.sum(mp), 1),
  )
  s = 1.0 / jnp.sqrt(jnp.maximum(mean, 1e-30))
  return fp * s, fl * s


@jax.jit
def _posterior_variance(fp, mp, fl, ml, noise):
  fp, fl = _scale(fp, mp, fl, ml)
  fl = jnp.where(ml[:, None], fl, 0.0)
  a = fl.T @ fl + noise * jnp.eye(fp.shape[1], dtype=fp.dtype)
  chol = jax.scipy.linalg.cho_factor(a)
  sol = jax.scipy.linalg.cho_solve(chol, fp.T)
  return noise * jnp.sum(fp.T * sol, 0), jnp.sum(fp * fp, 1)


@functools.partial(jax.jit, static_argnames=("k",))
def _top_k(scores, mp, k):
  return jax.lax.top_k(jnp.where(mp, scores, -jnp.inf), k)[1]


@jax.jit
def _curiosity_weights(jvp, mp, gamma):
  """``w(x) = (c(x)/mean_pool c)^γ`` with ``c = (J_xτ)²``; all ones if every ``c`` is 0."""
  c = jnp.square(jvp)
  mean = jnp.sum(jnp.where(mp, c, 0.0)) / jnp.maximum(jnp.sum(mp), 1)
  w = jnp.where(mean > 0, c / jnp.where(mean > 0, mean, 1.0), 1.0) ** gamma
  return jnp.where(mp, w, 0.0)


# ---------------------------------------------------------------------------------------------
# Strategies


class _Sketched:
  def __init__(self, dim: int = 512, chunk_size: int = 2048):
    if dim < 1:
      raise ValueError(f"dim must be >= 1, got {dim}.")
    self.dim, self.chunk_size = int(dim), int(chunk_size)


@register_strategy("variance")
class VarianceStrategy(_Sketched):
  """Top-k Laplace / Gauss-Newton predictive variance in the sketched gradient space."""

  def __init__(self, dim: int = 512, noise: float = 0.01, chunk_size: int = 2048):
    super().__init__(dim, chunk_size)
    if not noise > 0:
      raise ValueError(f"noise must be > 0, got {noise}.")
    self.noise = float(noise)

  def select(self, ctx: SelectionContext, batch_size: int) -> np.ndarray:
    check_batch_size(ctx, batch_size)
    fp, mp, fl, ml = _features(ctx, self.dim, self.chunk_size)
    var, _ = _posterior_variance(fp, mp, fl, ml, self.noise)
    return _finish(_top_k(var, mp, batch_size), ctx, batch_size)


@register_strategy("emcm")
class EMCMStrategy(VarianceStrategy):
  """Expected gradient norm ``√v(x)·‖∇f(x)‖`` (single-network EMCM), top-k."""

  def select(self, ctx: SelectionContext, batch_size: int) -> np.ndarray:
    check_batch_size(ctx, batch_size)
    fp, mp, fl, ml = _features(ctx, self.dim, self.chunk_size)
    var, diag = _posterior_variance(fp, mp, fl, ml, self.noise)
    return _finish(_top_k(jnp.sqrt(var * diag), mp, batch_size), ctx, batch_size)


@register_strategy("badge")
class BadgeStrategy(_Sketched):
  """k-means++ seeding on sketched gradients, labelled points as initial centres."""

  def select(self, ctx: SelectionContext, batch_size: int) -> np.ndarray:
    check_batch_size(ctx, batch_size)
    fp, mp, fl, ml = _features(ctx, self.dim, self.chunk_size)
    idx = _kmeanspp(fp, mp, fl, ml, jax.random.fold_in(ctx.key, 2), batch_size)
    return _finish(idx, ctx, batch_size)


@register_strategy("lcmd")
class LCMDStrategy(_Sketched):
  """Largest Cluster Maximum Distance on sketched gradients (TP mode)."""

  def select(self, ctx: SelectionContext, batch_size: int) -> np.ndarray:
    check_batch_size(ctx, batch_size)
    fp, mp, fl, ml = _features(ctx, self.dim, self.chunk_size)
    return _finish(_lcmd(fp, mp, fl, ml, batch_size), ctx, batch_size)


@register_strategy("curiosity_diverse")
class CuriosityDiverseStrategy(_Sketched):
  """LCMD whose scored squared distances are weighted by normalised curiosity ``(c/c̄)^γ``.

  Coverage picks the region (the labelled-or-selected centre whose cluster has the largest
  weighted spread), curiosity picks the point within it. ``γ = 0`` is LCMD; ``γ → ∞`` tends to
  top-k curiosity. The default ``γ = 0.25`` was chosen on splits 100-101 (docs/benchmark.md).

  Args:
    gamma: exponent of the normalised curiosity weight.
    dim, chunk_size: as for the sketch.
  """

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
    fp, mp, fl, ml = _features(ctx, self.dim, self.chunk_size)
    # Scored at the features' padded size (a multiple of POOL_BUCKET), so nothing here compiles
    # again as the pool shrinks by a batch each round.
    xp, _ = _pad(ctx.x_pool, POOL_BUCKET)
    jvp = curiosity_scores(ctx.model_fn, ctx.params, ctx.tangent, xp, heuristic="jvp").reshape(-1)
    # σ² is one constant per round, so it cancels in c/c̄.
    if not bool(jnp.all(jnp.isfinite(jnp.where(mp, jvp, 0.0)))):
      raise ValueError("J_x·tangent is not finite on the pool: the tangent diverged (see curiojax.check_tangent).")
    weights = _curiosity_weights(jvp, mp, self.gamma)
    return _finish(_lcmd(fp, mp, fl, ml, batch_size, weights), ctx, batch_size)


__all__ = ["BadgeStrategy", "CuriosityDiverseStrategy", "EMCMStrategy", "LCMDStrategy", "VarianceStrategy"]

"""Jitted kernels shared by the batch strategies: sketched gradient features, LCMD, k-means++, posterior variance.

Features are sketched gradients ``φ(x)`` (:mod:`curiojax.scoring.features`, ``grad → rp(512)``
in Holzmüller et al.'s terms; :class:`~curiojax.strategies.base.SketchOptions`). Pool and
labelled arrays are padded to their size class (``curiojax.padding.size_class``, in
multiples of 512 rows) and masked, and every selection loop is a jitted ``lax.fori_loop``, so
rounds compile once per size class.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from curiojax.padding import pad_rows, size_class
from curiojax.scoring.features import gradient_sketch, sketch_and_jvp
from curiojax.strategies.base import (  # noqa: F401  (the sketch defaults, importable from here as before)
  SKETCH_CHUNK,
  SKETCH_COMPUTE_DTYPE,
  SKETCH_DIM,
  Needs,
  SelectionContext,
  SketchOptions,
  check_batch_size,
)
from curiojax.strategies.directions import normalised_sum

POOL_BUCKET = 512  # the size classes' multiple for pool rows
LABELLED_BUCKET = 512  # and for labelled rows


@dataclasses.dataclass(frozen=True)
class OnSketch:
  """Base of the strategies on sketched gradient features: their ``sketch`` option (keyword only;
  a dict of :class:`SketchOptions` fields is converted). They read the model, not the tangent."""

  sketch: SketchOptions = dataclasses.field(default_factory=SketchOptions, kw_only=True)
  needs: ClassVar[Needs] = Needs()

  def __post_init__(self):
    object.__setattr__(self, "sketch", SketchOptions.of(self.sketch))

  def features(self, ctx: SelectionContext, batch_size: int):
    """The batch size checked against the pool, then :func:`sketched_features` ``(fp, mp, fl, ml)``."""
    check_batch_size(ctx, batch_size)
    return sketched_features(ctx, self.sketch)


@dataclasses.dataclass(frozen=True)
class OnPosterior(OnSketch):
  """Base of the strategies on the linearised posterior in the sketched features: its ``noise``
  option ``σ²`` (finite, > 0; ``ValueError`` otherwise)."""

  noise: float = 0.01

  def __post_init__(self):
    super().__post_init__()
    if not (self.noise > 0 and np.isfinite(self.noise)):
      raise ValueError(f"noise must be finite and > 0, got {self.noise}.")
    object.__setattr__(self, "noise", float(self.noise))


def pad_rows_to(a, multiple):
  """``a`` padded with zero rows to its size class (``curiojax.padding.size_class``, a multiple
  of ``multiple`` rows, at least one), and the mask of its rows."""
  a = np.asarray(a, np.float32)
  m = size_class(len(a), multiple=multiple)
  return pad_rows(a, m), np.arange(m) < len(a)


def sketched_features(ctx: SelectionContext, sketch: SketchOptions, directions=None):
  """Padded sketched features and masks of pool and labelled points (same projection).

  Returns ``(fp, mp, fl, ml)``; with ``directions`` (leaves with a leading axis ``k``) also
  ``J_x v_k`` of pool and labelled points, shapes ``(padded pool, k)`` and ``(padded labelled,
  k)``, from the same passes.
  """
  if ctx.model_fn is None:
    raise ValueError("This strategy needs ctx.model_fn and ctx.params (a trained model).")
  xp, mp = pad_rows_to(ctx.x_pool, POOL_BUCKET)
  xl, ml = pad_rows_to(ctx.x_labelled, LABELLED_BUCKET)  # no labelled point: one bucket of masked zeros
  (fp, jvp), (fl, jl) = round_sketch(ctx, sketch, xp, directions), round_sketch(ctx, sketch, xl, directions)
  features = (fp, jnp.asarray(mp), fl, jnp.asarray(ml))
  return features if directions is None else (*features, jvp, jl)


def round_sketch(ctx: SelectionContext, sketch: SketchOptions, x, directions=None):
  """``(φ(x), J_x v or None)`` of padded rows ``x`` with this round's projection (the same for every call with
  ``ctx``, so features of other rows, e.g. validation inputs, live in the pool's feature space)."""
  key = jax.random.fold_in(ctx.key, 1)
  options = dict(dim=sketch.dim, chunk_size=sketch.chunk_size, compute_dtype=sketch.compute_dtype)
  if directions is None:
    return gradient_sketch(ctx.model_fn, ctx.params, x, key, **options), None
  return sketch_and_jvp(ctx.model_fn, ctx.params, x, key, directions, **options)


def checked_indices(idx, ctx, batch_size):
  """The first ``batch_size`` selected indices, checked distinct and inside the real (unpadded) pool."""
  idx = np.asarray(idx)[:batch_size]
  n = len(ctx.x_pool)
  if len(set(idx.tolist())) != batch_size or idx.max(initial=0) >= n:  # pragma: no cover
    raise RuntimeError("selection produced duplicate or padded indices; please report this.")
  return idx


def sq_dists(a, b):
  return jnp.maximum(jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2 * a @ b.T, 0.0)


def min_dist_to_labelled(fp, fl, ml):
  d = jnp.where(ml[None, :], sq_dists(fp, fl), jnp.inf)
  min_d, closest = jnp.min(d, 1), jnp.argmin(d, 1)
  # no labelled point: a virtual centre at the origin (largest norm first, as bmdal's P mode)
  none = ~jnp.any(ml)
  return jnp.where(none, jnp.sum(fp * fp, 1), min_d), jnp.where(none, 0, closest)


@functools.partial(jax.jit, static_argnames=("k", "with_distances"))
def lcmd(fp, mp, fl, ml, k, weights=None, with_distances=False):
  """LCMD; ``weights`` (pool-sized, default 1) multiply the squared distances that are scored.

  Returns the ``k`` picks, and with ``with_distances`` also each pick's squared distance to the
  nearest labelled or earlier pick (the quantity it maximised within its cluster, unweighted).
  """
  n_lab = fl.shape[0]
  w = jnp.ones(fp.shape[0], fp.dtype) if weights is None else weights
  min_d, closest = min_dist_to_labelled(fp, fl, ml)
  sel = jnp.zeros(fp.shape[0], bool)
  out = jnp.zeros(k, jnp.int32)
  picked_d = jnp.zeros(k, fp.dtype)

  def body(i, carry):
    min_d, closest, sel, out, picked_d = carry
    free = mp & ~sel
    wd = w * min_d
    sums = jax.ops.segment_sum(jnp.where(free, wd, 0.0), closest, num_segments=n_lab + k)
    in_max = sums[closest] == jnp.max(sums)
    score = jnp.where(free & in_max, wd, -jnp.inf)
    score = jnp.where(jnp.any(free & in_max), score, jnp.where(free, wd, -jnp.inf))
    j = jnp.argmax(score)
    picked_d = picked_d.at[i].set(min_d[j])
    d = sq_dists(fp, fp[j][None])[:, 0]
    new = d < min_d
    closest = jnp.where(new, n_lab + i, closest)
    min_d = jnp.where(new, d, min_d).at[j].set(0.0)
    return min_d, closest, sel.at[j].set(True), out.at[i].set(j), picked_d

  out, picked_d = jax.lax.fori_loop(0, k, body, (min_d, closest, sel, out, picked_d))[3:]
  return (out, picked_d) if with_distances else out


@functools.partial(jax.jit, static_argnames=("k",))
def kmeanspp(fp, mp, fl, ml, key, k, weights=None):
  """k-means++ seeding; ``weights`` (pool-sized, default 1) multiply the sampling probabilities."""
  w0 = jnp.ones(fp.shape[0], fp.dtype) if weights is None else weights
  min_d, _ = min_dist_to_labelled(fp, fl, ml)
  sel = jnp.zeros(fp.shape[0], bool)
  out = jnp.zeros(k, jnp.int32)

  def body(i, carry):
    min_d, sel, out = carry
    free = mp & ~sel
    w = jnp.where(free, w0 * jnp.maximum(min_d, 0.0), 0.0)
    w = jnp.where(jnp.sum(w) > 0, w, free.astype(w.dtype))  # all at zero distance: uniform
    j = jax.random.categorical(jax.random.fold_in(key, i), jnp.where(w > 0, jnp.log(w), -jnp.inf))
    d = sq_dists(fp, fp[j][None])[:, 0]
    return jnp.minimum(min_d, d).at[j].set(0.0), sel.at[j].set(True), out.at[i].set(j)

  return jax.lax.fori_loop(0, k, body, (min_d, sel, out))[2]


def scale_features(fp, mp, fl, ml):
  """Scale features so the labelled points' mean kernel diagonal is 1 (bmdal's ``scale``)."""
  s = feature_scale(fp, mp, fl, ml)
  return fp * s, fl * s


def feature_scale(fp, mp, fl, ml):
  """The factor of :func:`scale_features`: ``1/√mean‖φ‖²`` over the labelled rows (the pool's if none, or if
  every labelled row's features are zero)."""
  diag_l = jnp.sum(fl * fl, 1)
  diag_p = jnp.sum(fp * fp, 1)
  mean_l = jnp.sum(jnp.where(ml, diag_l, 0)) / jnp.maximum(jnp.sum(ml), 1)
  mean = jnp.where(mean_l > 0, mean_l, jnp.sum(jnp.where(mp, diag_p, 0)) / jnp.maximum(jnp.sum(mp), 1))
  return 1.0 / jnp.sqrt(jnp.maximum(mean, 1e-30))


@jax.jit
def posterior_variance(fp, mp, fl, ml, noise):
  fp, fl = scale_features(fp, mp, fl, ml)
  fl = jnp.where(ml[:, None], fl, 0.0)
  a = fl.T @ fl + noise * jnp.eye(fp.shape[1], dtype=fp.dtype)
  chol = jax.scipy.linalg.cho_factor(a)
  sol = jax.scipy.linalg.cho_solve(chol, fp.T)
  return noise * jnp.sum(fp.T * sol, 0), jnp.sum(fp * fp, 1)


@functools.partial(jax.jit, static_argnames=("k",))
def top_k(scores, mp, k):
  return jax.lax.top_k(jnp.where(mp, scores, -jnp.inf), k)[1]


@jax.jit
def curiosity_weights(scores, mp, gamma):
  """``w(x) = (c(x)/c̄)^γ`` with ``c/c̄`` the mean over the ``k`` columns of the normalised ``scores``
  (:func:`~curiojax.strategies.directions.normalised_sum`; ``(J_xτ)²`` for one); all ones if
  every score is 0."""
  c = normalised_sum(scores, mp) / scores.shape[1]
  w = jnp.where(jnp.any(c > 0), c, 1.0) ** gamma
  return jnp.where(mp, w, 0.0)


@jax.jit
def stretched_features(fp, mp, fl, jp, jl, beta):
  """Features with ``β·J_xv_k``, scaled to the pool's mean ``‖φ‖``, appended: the metric stretched along ``v``.

  ``‖φ'(x) − φ'(x')‖² = ‖φ(x) − φ(x')‖² + β²·r_k²·(J_xv_k − J_x'v_k)²`` with ``r_k² =
  mean‖φ‖²/mean(J_xv_k)²`` over the pool, so a difference along ``v`` of typical size counts as
  much as a typical feature norm times ``β``.
  """
  norm2 = jnp.sum(jnp.where(mp, jnp.sum(fp * fp, 1), 0.0)) / jnp.maximum(jnp.sum(mp), 1)
  jv2 = jnp.sum(jnp.where(mp[:, None], jp * jp, 0.0), 0) / jnp.maximum(jnp.sum(mp), 1)
  r = jnp.where(jv2 > 0, jnp.sqrt(norm2 / jnp.where(jv2 > 0, jv2, 1.0)), 0.0)
  stretch = lambda f, j: jnp.concatenate([f, beta * r * j], axis=1)
  return stretch(fp, jp), stretch(fl, jl)

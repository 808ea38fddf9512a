"""The other methods of Holzmüller et al.'s framework (JMLR 2023, ``bmdal_reg``), and BAIT aimed at the validation set.

All run on the sketched gradient features ``φ(x)`` of ``lcmd``
(:func:`~curiojax.strategies.kernels.sketched_features`) as jitted greedy loops over padded,
masked arrays, so rounds compile once per size class.

- ``maxdist`` — MaxDist / Core-set (Sener & Savarese, ICLR 2018), TP mode: add the pool point
  farthest from its nearest labelled or already chosen point, ``argmax_x min_c ‖φ(x) − φ(c)‖²``;
  its score is that squared distance. With no labelled point the first pick is the largest
  ``‖φ‖`` and the origin is no centre after it (``bmdal_reg``'s ``MaxDistSelectionMethod``;
  ``lcmd`` keeps the origin as a centre).
- ``maxdet`` — MaxDet, P mode: greedy maximisation of the determinant of the posterior kernel,
  i.e. add the point of largest posterior variance ``k_S(x, x)`` given the labelled and the
  already chosen points; its score is ``k_S(x, x)`` when chosen.
- ``bait`` — BAIT (Ash et al., NeurIPS 2021) in Holzmüller et al.'s kernel form with the
  posterior transformation (BAIT-F-P, and BAIT-FB-P with ``backward``): make the total
  posterior variance over a target set ``T``, ``V(S) = Σ_{t∈T} k_S(t, t)``, small. Adding ``x``
  lowers it by ``Δ_S(x) = Σ_t k_S(t, x)² / (k_S(x, x) + σ²)``; the forward steps add the largest
  ``Δ``. With ``backward``, ``2k`` points are added that way, then the one whose removal raises
  ``V`` least, by ``Σ_t k_S(t, x)² / (σ² − k_S(x, x))``, is dropped, ``k`` times (these steps
  update the ``2k`` chosen rows only, the only ones they read). ``T`` is the pool and the
  labelled points (``bmdal_reg``'s P mode).
- ``bait_validation`` (ours) — BAIT with ``T`` the validation inputs: variance reduction where
  the model is judged, i.e. transductive experimental design on the held-out inputs.
- ``bait_adjoint`` (ours) — ``bait_validation`` whose candidate reductions (and the removals'
  increases) are weighted by the normalised validation influence, ``w(x)Δ(x)``, ``w =
  ((J_x a)²/mean)^γ`` with the validation adjoint ``a = −(C + λI)⁻¹∇L_val`` (as
  ``validation_diverse`` weights LCMD; :mod:`curiojax.strategies.directions`).

The kernel is the GP posterior in scaled features (the labelled points' mean ``‖φ‖²`` is 1, the
pool's without labelled points; bmdal's ``scale`` then ``train``): ``k_S(x, x') = φ(x)ᵀM_Sφ(x')``,
``M_S = (I + Σ_{c∈L∪S} φ_cφ_cᵀ/σ²)⁻¹``, every labelled and chosen point observed with noise
``σ²`` (``noise``, 0.01 as bmdal's ``σ = 0.1``). Everything is kept in feature space: ``M``
(``d × d``) takes one rank-one update per step, ``M ← M ∓ uuᵀ/D`` with ``u = Mφ_j`` and ``D =
σ² ± k_S(j, j)``, and the pool's ``k_S(x, x)`` and ``Σ_t k_S(t, x)² = φᵀMΣ_TMφ`` (``Σ_T =
Φ_TᵀΦ_T``) follow from one pass ``Φ[u, MΣ_Tu]``: ``O(n·d)`` per step after ``O((n + |T|)·d²)``
once. This is ``bmdal_reg``'s ``BaitFeatureSpaceSelectionMethod`` and
``MaxDetFeatureSpaceSelectionMethod`` with ``M`` updated instead of the feature matrix (the same
numbers, one pass over the pool per step instead of three).

Scores: ``maxdist`` the squared distance, ``maxdet`` ``k_S(x, x)``, forward-only BAIT the
(weighted) reduction ``w(x)Δ_S(x)`` when chosen. Forward-backward BAIT reports each kept pick's
(weighted) share of the final batch, ``w(x)·(V(B ∖ x) − V(B))``, the variance its removal alone
would add back, since a reduction at pick time was computed against points later dropped.

Deviations from ``bmdal_reg``: float32 (bmdal allows float64 for BAIT and MaxDet); no random
fill-up when a score is not positive (the largest free score is taken whatever its sign, so ``k``
distinct points always come back); the backward steps always remove ``k`` (bmdal stops and keeps the
first ``k`` added when the best removal would not raise ``V``, which in exact arithmetic needs a
pick with ``Δ = 0``); a removal's ``σ² − k_S(x, x)`` is floored at ``1e-12·σ²`` (bmdal: ``1e-15``); the
overselection is ``min(2k, n)``, as bmdal's factor 2; ``bait``'s target set is unweighted
(``bait_adjoint``'s weights are ours).

Example:
  >>> import numpy as np, jax, jax.numpy as jnp
  >>> from curiojax.strategies import SelectionContext, get_strategy
  >>> f = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
  >>> params = {"w1": jnp.ones((2, 4)), "w2": jnp.ones(4)}
  >>> rng = np.random.default_rng(0)
  >>> x_valid = rng.normal(size=(10, 2))
  >>> ctx = SelectionContext(f, params, None, rng.normal(size=(3, 2)), np.zeros(3), rng.normal(size=(40, 2)),
  ...                        jax.random.key(0), validation=(x_valid, np.zeros(10)))
  >>> for name in ("maxdist", "maxdet", "bait", "bait_validation"):
  ...   picked = get_strategy(name, sketch={"dim": 16}).select(ctx, 5)
  ...   print(name, len(set(picked.indices.tolist())), picked.scores.shape)
  maxdist 5 (5,)
  maxdet 5 (5,)
  bait 5 (5,)
  bait_validation 5 (5,)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from curiojax.strategies.base import Needs, Selection, SelectionContext
from curiojax.strategies.curiosity_diverse import check_exponent, features_along
from curiojax.strategies.directions import needs_along
from curiojax.strategies.kernels import (
  LABELLED_BUCKET,
  OnPosterior,
  OnSketch,
  checked_indices,
  curiosity_weights,
  feature_scale,
  min_dist_to_labelled,
  pad_rows_to,
  round_sketch,
  sq_dists,
)

REMOVAL_FLOOR = 1e-12  # σ² − k_S(x, x) of a removal, relative to σ²


def _best(free, score, largest=True):
  """The free row of largest (or smallest) ``score``; NaN and infinite scores rank last but still above taken
  rows, so a free row always comes back."""
  worst = -jnp.finfo(score.dtype).max
  score = jnp.nan_to_num(score if largest else -score, nan=worst, posinf=-worst, neginf=worst)
  return jnp.argmax(jnp.where(free, score, -jnp.inf))


@functools.partial(jax.jit, static_argnames=("k",))
def maxdist(fp, mp, fl, ml, k):
  """MaxDist (TP mode): the ``k`` picks and each one's squared distance to its nearest labelled or earlier pick."""
  min_d, _ = min_dist_to_labelled(fp, fl, ml)  # no labelled point: ‖φ‖², for the first pick only
  none = ~jnp.any(ml)

  def body(i, carry):
    min_d, sel, out, scores = carry
    j = _best(mp & ~sel, min_d)
    d = sq_dists(fp, fp[j][None])[:, 0]
    first = none & (i == 0)  # bmdal: after the largest norm, distances to the picks only
    min_d_new = jnp.where(first, d, jnp.minimum(min_d, d)).at[j].set(0.0)
    return min_d_new, sel.at[j].set(True), out.at[i].set(j), scores.at[i].set(min_d[j])

  start = (min_d, jnp.zeros(fp.shape[0], bool), jnp.zeros(k, jnp.int32), jnp.zeros(k, fp.dtype))
  return jax.lax.fori_loop(0, k, body, start)[2:]


def _prior(fp, mp, fl, ml, noise):
  """Scaled pool features, the scale, and ``M_L = (I + Φ_LᵀΦ_L/σ²)⁻¹`` (the posterior given the labelled rows)."""
  s = feature_scale(fp, mp, fl, ml)
  fp, fl = fp * s, jnp.where(ml[:, None], fl * s, 0.0)
  eye = jnp.eye(fp.shape[1], dtype=fp.dtype)
  precision = eye + fl.T @ fl / noise
  m = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(precision), eye)
  return fp, s, 0.5 * (m + m.T)


def _rows_dot(fp, b):
  """``φ_iᵀBφ_i`` for every row."""
  return jnp.sum(fp * (fp @ b), 1)


@functools.partial(jax.jit, static_argnames=("k",))
def maxdet(fp, mp, fl, ml, noise, k):
  """MaxDet (P mode): the ``k`` picks and each one's posterior variance ``k_S(x, x)`` when chosen."""
  fp, _, m = _prior(fp, mp, fl, ml, noise)
  var = _rows_dot(fp, m)

  def body(i, carry):
    m, var, sel, out, scores = carry
    j = _best(mp & ~sel, var)
    u = m @ fp[j]
    d = jnp.dot(fp[j], u) + noise
    c = fp @ u
    m = m - jnp.outer(u, u) / d
    return m, var - c * c / d, sel.at[j].set(True), out.at[i].set(j), scores.at[i].set(var[j])

  start = (m, var, jnp.zeros(fp.shape[0], bool), jnp.zeros(k, jnp.int32), jnp.zeros(k, fp.dtype))
  return jax.lax.fori_loop(0, k, body, start)[3:]


def _bait_step(state, fp, target, j, sign, noise):
  """Condition on pool row ``j`` (``sign = −1``) or undo it (``+1``): ``M ← M + sign·uuᵀ/D``, with the pool's
  ``k_S(x, x)`` and ``Σ_t k_S(t, x)²`` updated from one pass ``Φ[u, MΣ_Tu]``."""
  m, var, num = state
  u = m @ fp[j]
  h = target @ u
  g = m @ h
  var_j, num_j = jnp.dot(fp[j], u), jnp.dot(u, h)
  d = jnp.where(sign < 0, noise + var_j, jnp.maximum(noise - var_j, REMOVAL_FLOOR * noise))
  ce = fp @ jnp.stack([u, g], 1)
  c, e = ce[:, 0], ce[:, 1]
  m = m + sign * jnp.outer(u, u) / d
  return 0.5 * (m + m.T), var + sign * c * c / d, num + sign * 2 * c * e / d + c * c * num_j / (d * d)


def _removal_cost(var, num, w, noise):
  """``w·(V(S ∖ x) − V(S))`` for chosen ``x``: the target variance its removal would add back."""
  return w * num / jnp.maximum(noise - var, REMOVAL_FLOOR * noise)


@functools.partial(jax.jit, static_argnames=("k", "backward"))
def bait(fp, mp, fl, ml, ft, mt, weights, noise, k, backward=True):
  """BAIT on targets ``ft`` (masked by ``mt``, same projection, unscaled); ``weights`` (pool-sized) multiply the
  candidates' reductions. Returns the ``k`` picks (in the order added) and their scores (module docstring)."""
  fp, s, m = _prior(fp, mp, fl, ml, noise)
  ft = jnp.where(mt[:, None], ft * s, 0.0)
  target = ft.T @ ft
  both = fp @ jnp.concatenate([m, m @ target @ m], 1)
  dim = fp.shape[1]
  state = (m, jnp.sum(fp * both[:, :dim], 1), jnp.sum(fp * both[:, dim:], 1))
  w = jnp.where(mp, weights, 0.0)
  n_forward = 2 * k if backward else k
  steps = jnp.minimum(n_forward, jnp.sum(mp))

  def forward(i, carry):
    state, sel, out, scores = carry
    _, var, num = state
    gain = w * num / (var + noise)
    j = _best(mp & ~sel, gain)
    state = _bait_step(state, fp, target, j, -1.0, noise)
    return state, sel.at[j].set(True), out.at[i].set(j), scores.at[i].set(gain[j])

  start = (state, jnp.zeros(fp.shape[0], bool), jnp.zeros(n_forward, jnp.int32), jnp.zeros(n_forward, fp.dtype))
  state, _, out, scores = jax.lax.fori_loop(0, steps, forward, start)
  if not backward:
    return out, scores

  # Removals only need k_S and Σ_t k_S(t, ·)² at the chosen rows: the backward steps run on those 2k rows alone.
  chosen, w_chosen = fp[out], w[out]

  def remove(_, carry):
    state, alive = carry
    j = _best(alive, _removal_cost(state[1], state[2], w_chosen, noise), largest=False)
    return _bait_step(state, chosen, target, j, 1.0, noise), alive.at[j].set(False)

  start = ((state[0], state[1][out], state[2][out]), jnp.arange(n_forward) < steps)
  state, alive = jax.lax.fori_loop(0, steps - k, remove, start)
  kept = jnp.nonzero(alive, size=k)[0]
  return out[kept], _removal_cost(state[1], state[2], w_chosen, noise)[kept]


def _check_validation(ctx: SelectionContext, strategy) -> None:
  if ctx.validation is None or len(ctx.validation[0]) == 0:
    raise ValueError(
      f"{type(strategy).__name__} needs ctx.validation = (x_valid, y_valid), a non-empty held-out labelled set."
    )


@dataclasses.dataclass(frozen=True)
class MaxDistStrategy(OnSketch):
  """MaxDist / Core-set on sketched gradients (TP mode); each pick's score is its squared distance to
  the nearest labelled or earlier pick.

  Args:
    sketch: :class:`~curiojax.strategies.base.SketchOptions` (or a dict of them).
  """

  criterion = "coverage: the point farthest from its nearest labelled or chosen point; score that squared distance"

  def select(self, ctx: SelectionContext, batch_size: int) -> Selection:
    fp, mp, fl, ml = self.features(ctx, batch_size)
    idx, distances = maxdist(fp, mp, fl, ml, batch_size)
    return Selection.of(checked_indices(idx, ctx, batch_size), distances)


@dataclasses.dataclass(frozen=True)
class MaxDetStrategy(OnPosterior):
  """MaxDet on sketched gradients (P mode): greedy determinant maximisation of the posterior kernel;
  each pick's score is its posterior variance given the labelled and earlier picks.

  Args:
    noise: ``σ²`` of the posterior (> 0).
    sketch: :class:`~curiojax.strategies.base.SketchOptions` (or a dict of them).
  """

  criterion = "determinant: the largest posterior variance given the labelled and chosen points; score that variance"

  def select(self, ctx: SelectionContext, batch_size: int) -> Selection:
    fp, mp, fl, ml = self.features(ctx, batch_size)
    idx, variances = maxdet(fp, mp, fl, ml, self.noise, batch_size)
    return Selection.of(checked_indices(idx, ctx, batch_size), variances)


@dataclasses.dataclass(frozen=True)
class BaitStrategy(OnPosterior):
  """BAIT on sketched gradients (P mode): greedy reduction of the total posterior variance over the
  pool and labelled points, forward to ``2k`` then backward to ``k`` (module docstring).

  Args:
    noise: ``σ²`` of the posterior (> 0).
    backward: forward to ``2k`` then remove ``k`` (BAIT-FB); ``False``: forward only (BAIT-F).
    sketch: :class:`~curiojax.strategies.base.SketchOptions` (or a dict of them).
  """

  backward: bool = True
  criterion = "variance reduction: the largest drop of the total posterior variance over the pool; score that drop"

  def __post_init__(self):
    super().__post_init__()
    if not isinstance(self.backward, bool | np.bool_):
      raise ValueError(f"backward must be True or False, got {self.backward!r}.")
    object.__setattr__(self, "backward", bool(self.backward))

  def targets(self, ctx: SelectionContext, fp, mp, fl, ml):
    """The target rows and their mask: the pool and the labelled points."""
    return jnp.concatenate([fp, fl]), jnp.concatenate([mp, ml])

  def select(self, ctx: SelectionContext, batch_size: int) -> Selection:
    fp, mp, fl, ml = self.features(ctx, batch_size)
    return self.chosen(ctx, batch_size, (fp, mp, fl, ml), jnp.ones(fp.shape[0], fp.dtype))

  def chosen(self, ctx: SelectionContext, batch_size: int, features, weights, residual=float("nan")) -> Selection:
    ft, mt = self.targets(ctx, *features)
    idx, scores = bait(*features, ft, mt, weights, self.noise, batch_size, self.backward)
    return Selection.of(checked_indices(idx, ctx, batch_size), scores, direction_residual=residual)


@dataclasses.dataclass(frozen=True)
class BaitValidationStrategy(BaitStrategy):
  """BAIT whose target set is the validation inputs ``ctx.validation[0]`` (transductive; ours)."""

  needs: ClassVar[Needs] = Needs(validation=True)
  criterion = (
    "variance reduction at the validation inputs: the largest drop of their total posterior variance; score that drop"
  )

  def targets(self, ctx: SelectionContext, fp, mp, fl, ml):
    """The validation inputs, sketched with the pool's projection, and their mask."""
    _check_validation(ctx, self)
    xv, mv = pad_rows_to(ctx.validation[0], LABELLED_BUCKET)
    if xv.shape[1:] != np.shape(ctx.x_pool)[1:]:
      raise ValueError(f"validation inputs of shape {xv.shape[1:]} per row, the pool's {np.shape(ctx.x_pool)[1:]}.")
    return round_sketch(ctx, self.sketch, xv)[0], jnp.asarray(mv)


@dataclasses.dataclass(frozen=True)
class BaitAdjointStrategy(BaitValidationStrategy):
  """``bait_validation`` with each candidate's reduction weighted by ``((J_x a)²/mean)^γ`` (ours).

  Args:
    gamma: exponent of the normalised validation influence (``0``: ``bait_validation``).
    noise: ``σ²`` of the posterior (> 0).
    backward: forward to ``2k`` then remove ``k``; ``False``: forward only.
    sketch: :class:`~curiojax.strategies.base.SketchOptions` (or a dict of them).
  """

  gamma: float = 0.25
  needs: ClassVar[Needs] = needs_along("validation")
  criterion = (
    "variance reduction at the validation inputs weighted by the validation influence ((J_x a)²/mean)^γ; "
    "score the weighted drop"
  )

  def __post_init__(self):
    super().__post_init__()
    object.__setattr__(self, "gamma", check_exponent("gamma", self.gamma))

  def select(self, ctx: SelectionContext, batch_size: int) -> Selection:
    _check_validation(ctx, self)
    (fp, mp, fl, ml, jvp, _), residual = features_along(ctx, self.sketch, "validation", batch_size)
    weights = curiosity_weights(jnp.square(jvp), mp, self.gamma)
    return self.chosen(ctx, batch_size, (fp, mp, fl, ml), weights, residual)

"""The online recursion's maths as pure functions on pytrees (``docs/method.md``, "The online recursion").

    r_t = (C_B + λI) v_t + ρ                                  the residual on the minibatch
    τ̄ ← τ̄ + w_t (v_t − τ̄),   w_t = max(1/t, 1/W)             :func:`average`
    m_t = β m_{t−1} + r_t,   v_{t+1} = v_t − α m_t            :func:`heavy_ball`

``α = b/λ̂_max(C + λI)`` from :func:`power_iteration`, with the back-off ``b = 2^−restarts`` and
``β^(2^restarts)`` (:func:`backoff`). A tangent leaf is shaped like its parameter, or carries a
leading axis ``k`` for ``k`` strengths (``stacked``).

Stability tests (:func:`instability`): a non-finite value; the backward error
``φ = ‖r‖/(‖ρ‖ + λ̂‖v‖)`` grown tenfold above its best; a negative curvature along the iterate;
and, where the curvature is bounded below, an iterate beyond the bound the exact tangent obeys
(:func:`curvature_floor`, :func:`beyond_bound`): with ``C + λI ⪰ μI``,
``‖τ‖ = ‖(C + λI)⁻¹ρ‖ ≤ ‖ρ‖/μ``. ``φ`` is normalised by the iterate's size, so a growing mode
keeps it flat; the bound is not, so growth cannot hide from it.

Example:
  >>> import jax.numpy as jnp
  >>> v, r, rho = {"w": jnp.ones(2)}, {"w": jnp.full(2, 2.0)}, {"w": jnp.ones(2)}
  >>> [float(x) for x in moments(v, r, rho, stacked=False)]   # ‖r‖², ‖ρ‖², ‖v‖², ⟨v, r − ρ⟩
  [8.0, 2.0, 2.0, 2.0]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from curiojax.tangent.regularizers import L2

ITERATE_WINDOW = 10  # refreshes over which the iterate's backward error and curvature are averaged
GROWTH_LIMIT = 10.0  # the backward error growing this far above its best means instability
BOUND_MARGIN = 4.0  # an iterate beyond this multiple of ‖ρ‖/μ is wrong (momentum overshoots a little)

# Why a refresh was unstable (codes carried to the host for the message; 0: stable).
STABLE, NONFINITE, BEYOND_BOUND, GROWING, INDEFINITE = range(5)


def tree_norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def tangent_norms(tree, stacked: bool) -> jax.Array:
  """``‖·‖`` of one tangent (scalar), or of each of ``k`` stacked tangents (shape ``(k,)``)."""
  if not stacked:
    return tree_norm(tree)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x).reshape(x.shape[0], -1), axis=1) for x in jax.tree.leaves(tree)))


def moments(v, r, rho, stacked: bool):
  """``(‖r‖², ‖ρ‖², ‖v‖², ⟨v, r − ρ⟩)`` per tangent, reading each leaf once."""

  def leaf(v, r, p):
    axes = tuple(range(1, v.ndim)) if stacked else None
    return jnp.stack([jnp.sum(r * r, axes), jnp.sum(p * p, axes), jnp.sum(v * v, axes), jnp.sum(v * (r - p), axes)])

  leaves = zip(jax.tree.leaves(v), jax.tree.leaves(r), jax.tree.leaves(rho), strict=True)
  return tuple(sum(leaf(*x) for x in leaves))


def ratio(num, den):
  """``num/den`` with ``0/0 = 0`` and ``x/0 = inf``."""
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.where(num > 0, jnp.inf, 0.0))


def all_finite(tree) -> jax.Array:
  return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def relative_norm(residual, rho, stacked: bool) -> jax.Array:
  """``max_k ‖r_k‖/‖ρ_k‖``, with ``0/0 = 0`` (a zero ``ρ`` has the zero tangent)."""
  return jnp.max(ratio(tangent_norms(residual, stacked), tangent_norms(rho, stacked)))


def tangent_step(tangent, product, step_size):
  """One SGDF / LiSSA step ``v − η ((C + λI)v + ρ)`` (shared with :func:`curiojax.lissa`)."""
  return jax.tree.map(lambda v, p: v - step_size * p, tangent, product)


def power_iteration(matvec, like, key, num_iterations: int) -> jax.Array:
  """``|λ|_max`` of a symmetric operator by power iteration from a random start (a lower bound)."""
  u = optax.tree.random_like(key, like, jax.random.normal)

  def body(_, carry):
    u, _ = carry
    w = matvec(u)
    rayleigh = optax.tree.vdot(u, w) / optax.tree.vdot(u, u)
    return optax.tree.scale(1.0 / (tree_norm(w) + 1e-30), w), rayleigh

  _, rayleigh = jax.lax.fori_loop(0, num_iterations, body, (u, jnp.zeros((), tree_norm(u).dtype)))
  return jnp.abs(rayleigh)


def backoff(restarts, momentum, dtype):
  """``(2^−restarts, β^(2^restarts))``: each restart halves the step and squares the momentum."""
  return jnp.asarray(0.5, dtype) ** restarts, jnp.asarray(momentum, dtype) ** (2.0**restarts)


def average(tangent, iterate, refreshes, window, dtype):
  """``τ̄ + w (v − τ̄)`` with ``w = max(1/t, 1/W)``: the running mean, then a window of ``W`` refreshes."""
  w = jnp.maximum(1.0 / refreshes.astype(dtype), jnp.asarray(1.0 / window, dtype))
  return jax.tree.map(lambda a, v: a + w * (v - a), tangent, iterate)


def heavy_ball(iterate, velocity, residual, step_size, momentum):
  """``(v − α m, m)`` with ``m = β m + r``."""
  velocity = jax.tree.map(lambda m, r: momentum * m + r, velocity, residual)
  return jax.tree.map(lambda v, m: v - step_size * m, iterate, velocity), velocity


def running_mean(old, new, window, restart):
  """``old + (new − old)/window``, or ``new`` on the first refresh since a (re)start."""
  return jnp.where(restart, new, old + (new - old) / window)


def backward_error(r_sq, rho_sq, v_sq, lmax, step_size, dtype):
  """``φ² = max_k ‖r‖²/(‖ρ‖ + λ̂‖v‖)²`` (``1/α`` for ``λ̂`` when no estimate exists)."""
  scale = jnp.sqrt(rho_sq) + jnp.where(lmax > 0, lmax, 1.0 / step_size) * jnp.sqrt(v_sq)
  return jnp.max(r_sq / jnp.maximum(jnp.square(scale), jnp.finfo(dtype).tiny))


def rayleigh_quotient(v_sq, v_curv):
  """``min_k vᵀ(C_B + λI)v/‖v‖²`` (0 for a zero iterate), from ``⟨v, r − ρ⟩ = vᵀ(C_B + λI)v``."""
  return jnp.min(jnp.where(v_sq > 0, v_curv / jnp.where(v_sq > 0, v_sq, 1.0), 0.0))


def curvature_floor(regularizer, curvature: str, strength, damping, dtype) -> jax.Array:
  """``μ`` with ``C + λI ⪰ μI`` where the structure guarantees one, else 0 (no bound).

  Gauss-Newton with a convex loss is ``JᵀHJ + ∇²R ⪰ ∇²R``; for :func:`curiojax.l2`,
  ``∇²R = s·diag(w)``, so ``μ = s·min w + λ`` (``eˢ`` for a log strength). Otherwise only a
  Gauss-Newton matrix's damping ``λ`` bounds it; a Hessian may be indefinite: 0.
  """
  if curvature != "gauss_newton":
    return jnp.zeros((), dtype)
  floor = jnp.asarray(damping, dtype)
  if isinstance(regularizer, L2) and jnp.ndim(strength) == 0:
    scale = jnp.exp(strength) if regularizer.log_strength else strength
    weights = [1.0] if regularizer.weights is None else jax.tree.leaves(regularizer.weights)
    smallest = jnp.min(jnp.array([jnp.min(jnp.asarray(w, dtype)) for w in weights]))
    floor = floor + jnp.maximum(jnp.asarray(scale, dtype) * smallest, 0.0)
  return floor


def beyond_bound(norm_sq, rho_sq, floor) -> jax.Array:
  """``‖v_k‖ > BOUND_MARGIN · ‖ρ_k‖/μ`` for some ``k`` (never when ``μ = 0``)."""
  limit = jnp.square(BOUND_MARGIN / jnp.where(floor > 0, floor, 1.0)) * rho_sq
  return (floor > 0) & jnp.any(norm_sq > limit)


def instability(finite, beyond, level, best, rayleigh) -> jax.Array:
  """The first reason a refresh is unstable, as a code (:data:`STABLE` if none)."""
  return jnp.select(
    [~finite, beyond, level > GROWTH_LIMIT * best, rayleigh < 0],
    [NONFINITE, BEYOND_BOUND, GROWING, INDEFINITE],
    STABLE,
  ).astype(jnp.int32)


def restart_point(average, rho, floor, stacked: bool):
  """Where a restart resumes: the average if it is finite and within the bound, else zero.

  Returns ``(start, kept)``.
  """
  norm_sq = jnp.square(tangent_norms(average, stacked))
  rho_sq = jnp.square(tangent_norms(rho, stacked))
  kept = all_finite(average) & ~beyond_bound(norm_sq, rho_sq, floor)
  return jax.tree.map(lambda a: jnp.where(kept, a, jnp.zeros_like(a)), average), kept

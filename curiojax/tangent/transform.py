"""``regularity_tangent``: an optax transformation carrying ``τ = dθ*/ds`` in its state.

Differentiating a gradient step ``θ ← θ − η∇_θF(θ, s)`` with respect to ``s`` gives the SGDF
recursion (LiSSA run online; ``docs/method.md``) for ``τ = −(C + λI)⁻¹ρ``, with ``C`` the
Hessian or Gauss-Newton matrix of ``F`` on the current batch and ``ρ = ∂_s∇_θR``. Its plain
form needs about ``κ(C + λI)`` steps and carries the minibatch noise into ``τ``; this
transformation adds heavy-ball momentum and iterate averaging, and bounds the residual of
what it hands out (``docs/method.md``, "The online recursion"). On every refresh:

    r_t = (C_B + λI) v_t + ρ               one forward-over-reverse pass, which also gives ∇_θF
    τ̄ ← τ̄ + w_t (v_t − τ̄),   w_t = max(1/t, 1/W)                  the average, handed out
    m_t = β m_{t−1} + r_t,   v_{t+1} = v_t − α m_t,   α = 1/λ̂_max(C + λI),  β = 0.9

Every 20 refreshes one extra product measures the average's relative residual on that
minibatch, paired with the iterate's: the iterate is handed out instead where it is clearly
better (no noise to average away, or drifting parameters). The state's ``residual`` is a
running mean of the handed-out vector's measured residuals, minibatch noise included: an upper
estimate in expectation, exact with full batches and pessimistic with minibatches, where only
:func:`curiojax.finish_tangent` (a solve on the training set) certifies a tangent; an online
estimate certifies only below half the tolerance. ``λ̂_max`` comes from power iteration on
the first refresh and once every ``step_size_every`` steps. The recursion is unstable when the
iterate's backward error ``‖r_t‖/(‖ρ‖ + λ̂‖v_t‖)`` grows tenfold above its best, when the
curvature along the iterate ``vᵀ(C_B + λI)v`` turns negative, or when a value is not finite;
it then restarts from ``τ̄`` with a fresh ``λ̂_max``, half the step and ``β²``, and
after ``max_restarts`` it is marked diverged and frozen. :func:`tangent_diagnostics` reports
all this; :func:`tangent_of` warns and :func:`check_tangent` raises above the tolerance.

Example:
  >>> import jax, jax.numpy as jnp, optax, curiojax
  >>> x = jax.random.normal(jax.random.key(0), (64, 3)); y = x @ jnp.array([1.0, -2.0, 0.5])
  >>> loss = curiojax.prediction_loss(lambda p, x: x @ p["w"])
  >>> tx = optax.chain(curiojax.regularity_tangent(curiojax.l2(), strength=0.1), optax.sgd(0.5))
  >>> params = {"w": jnp.zeros(3)}; state = tx.init(params)
  >>> @jax.jit
  ... def step(params, state):
  ...   updates, state = tx.update(None, state, params, value_fn=loss, x=x, y=y)
  ...   return optax.apply_updates(params, updates), state
  >>> for _ in range(200):
  ...   params, state = step(params, state)
  >>> tau = curiojax.check_tangent(state)   # dθ*/ds, shaped like params; raises if not certified
  >>> h = x.T @ x / 64 + 0.1 * jnp.eye(3)   # ridge closed form: τ = −(XᵀX/n + sI)⁻¹θ*
  >>> bool(jnp.allclose(tau["w"], -jnp.linalg.solve(h, params["w"]), rtol=1e-3, atol=1e-4))
  True
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from curiojax.tangent.curvature import TangentSystem, check_curvature, split_value_fn_kwargs
from curiojax.tangent.access import (
  _tangent_state,
  find_tangent_state,
  finished_state,
  replace_tangent_state,
  strength_of,
)
from curiojax.tangent.regularizers import Regularizer, get_regularizer
from curiojax.tangent.state import (
  RegularityTangentState,
  TangentSettings,
  _pure,
  _pure_tree,
  align_tangent,
  handed_out,
  restructure,
)

DEFAULT_TOLERANCE = 0.1  # relative residual above which a tangent is flagged (documented accuracy)
ONLINE_MARGIN = 0.5  # an online estimate certifies only below this share of the tolerance (lag, drift)
ITERATE_WINDOW = 10  # refreshes over which the iterate's backward error and curvature are averaged
EVALUATE_EVERY = 20  # refreshes between evaluations of the average's residual (one extra product)
RESIDUAL_WINDOW = 3  # evaluations over which the residual estimate is averaged
GROWTH_LIMIT = 10.0  # the backward error growing this far above its best means instability


class TangentMisplacedWarning(UserWarning):
  """Warned when :func:`regularity_tangent` receives optimizer steps instead of gradients."""


class TangentDivergedWarning(RuntimeWarning):
  """The carried tangent stopped converging (non-finite, or unstable after every back-off)."""


class TangentInaccurateWarning(RuntimeWarning):
  """A tangent was handed out whose relative residual exceeds its tolerance."""


class TangentDivergedError(ValueError):
  """Raised by :func:`check_tangent` for a state whose tangent diverged."""


class TangentInaccurateError(ValueError):
  """Raised by :func:`check_tangent` for a tangent whose relative residual exceeds the tolerance."""


def _tree_norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def _tangent_norms(tree, stacked: bool) -> jax.Array:
  """``‖·‖`` of one tangent (scalar), or of each of ``k`` stacked tangents (shape ``(k,)``)."""
  if not stacked:
    return _tree_norm(tree)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x).reshape(x.shape[0], -1), axis=1) for x in jax.tree.leaves(tree)))


def _moments(v, r, rho, stacked: bool):
  """``(‖r‖², ‖ρ‖², ‖v‖², ⟨v, r − ρ⟩)`` per tangent, reading each leaf once."""

  def leaf(v, r, p):
    axes = tuple(range(1, v.ndim)) if stacked else None
    return jnp.stack([jnp.sum(r * r, axes), jnp.sum(p * p, axes), jnp.sum(v * v, axes), jnp.sum(v * (r - p), axes)])

  leaves = zip(jax.tree.leaves(v), jax.tree.leaves(r), jax.tree.leaves(rho), strict=True)
  return tuple(sum(leaf(*x) for x in leaves))


def _ratio(num, den):
  """``num/den`` with ``0/0 = 0`` and ``x/0 = inf``."""
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.where(num > 0, jnp.inf, 0.0))


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def relative_norm(residual, rho, stacked: bool) -> jax.Array:
  """``max_k ‖r_k‖/‖ρ_k‖``, with ``0/0 = 0`` (a zero ``ρ`` has the zero tangent)."""
  return jnp.max(_ratio(_tangent_norms(residual, stacked), _tangent_norms(rho, stacked)))


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


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
    return optax.tree.scale(1.0 / (_tree_norm(w) + 1e-30), w), rayleigh

  _, rayleigh = jax.lax.fori_loop(0, num_iterations, body, (u, jnp.zeros((), _tree_norm(u).dtype)))
  return jnp.abs(rayleigh)


def _warn_diverged(count, residual, params_finite, *, dtype: str = "float32"):
  if not params_finite:
    cause = "Cause: the parameters themselves are no longer finite, so the training diverged, not the tangent. " + (
      f"They are {dtype}: in half precision Adam's eps (1e-8) underflows to 0 and its updates blow "
      "up. Fix: train in float32 (mixed precision with float32 master weights), or a larger eps."
      if dtype in ("float16", "bfloat16")
      else "Fix: a smaller learning rate, gradient clipping, or scaled inputs and targets."
    )
  else:
    cause = (
      "Likely cause: an indefinite curvature (curvature='hessian' on a non-convex model, damping 0). "
      "Fix: curvature='gauss_newton' with damping > 0; or a smaller learning rate."
    )
  warnings.warn(
    f"curiojax: the regularity tangent diverged at update {int(count)} (relative residual "
    f"{float(residual):.3g}) and stayed unstable after every back-off of its step; it is frozen at "
    f"its last average. {cause}",
    TangentDivergedWarning,
    stacklevel=2,
  )


def _warn_misplaced():
  warnings.warn(
    "curiojax: regularity_tangent received updates that point against the loss gradient: it is placed "
    "after the optimizer in the chain (or given negated gradients). It must come first, so that it sees "
    "raw gradients and adds the regularizer's: optax.chain(curiojax.regularity_tangent(...), optax.adam(...)). "
    "As placed, the regularizer term is added unscaled to the optimizer's step.",
    TangentMisplacedWarning,
    stacklevel=2,
  )


def regularity_tangent(
  regularizer: str | Regularizer = "l2",
  strength: float | jax.Array = 1e-2,
  *,
  curvature: str = "hessian",
  damping: float | jax.Array = 0.0,
  tangent_learning_rate: float | None = None,
  momentum: float = 0.9,
  averaging: int = 100,
  refresh_every: int = 1,
  power_iterations: int = 10,
  step_size_every: int = 250,
  tolerance: float = DEFAULT_TOLERANCE,
  max_restarts: int = 6,
  seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  """Add ``∇_θR(θ, s)`` to the updates and carry the regularity tangent ``τ = dθ*/ds``.

  Put it first in an ``optax.chain``; call ``update(updates, state, params, value_fn=loss,
  **batch)`` with ``loss(params, **batch)`` the mean data loss (optax's ``value_fn``
  contract; extra args it does not accept are ignored). With ``updates=None`` the data
  gradient comes out of the same pass as the tangent product (the fast path).

  Args:
    regularizer: ``R(params, s)``, or ``"l2"`` / ``"log_l2"``.
    strength: ``s``, a scalar or a vector of ``k`` strengths (``k`` tangents). May be
      injected with ``optax.inject_hyperparams``.
    curvature: ``"hessian"`` (exact, for convex models) or ``"gauss_newton"`` (PSD, for
      neural networks; needs ``value_fn=curiojax.prediction_loss(...)``).
    damping: ``λ`` added to the curvature.
    tangent_learning_rate: fixed ``α``; default ``None`` estimates ``1/λ_max(C + λI)``.
    momentum: heavy-ball ``β`` of the recursion (0: plain SGDF / LiSSA).
    averaging: window ``W`` of the iterates' average, in refreshes (1: none).
    refresh_every: update the tangent every ``k`` steps (the others cost a plain gradient).
    power_iterations: products per estimate of ``λ_max``.
    step_size_every: re-estimate ``λ_max`` every this many steps (curvature sharpens in training).
    tolerance: relative residual ``‖(C + λI)τ + ρ‖/‖ρ‖`` above which the tangent is flagged
      (:func:`check_tangent` raises, :func:`tangent_of` warns).
    max_restarts: back-offs (restart, half the step, ``β²``) before the tangent counts as diverged.
    seed: seeds the power iteration's start vectors.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`RegularityTangentState`.
  """
  regularizer = get_regularizer(regularizer)
  check_curvature(curvature)
  # Under optax.inject_hyperparams every numeric argument may arrive traced: check the
  # concrete ones here, and keep the traced ones working (lax.cond, traced loop bounds).
  if _is_concrete(refresh_every) and (refresh_every < 1 or int(refresh_every) != refresh_every):
    raise ValueError(f"refresh_every must be a positive integer, got {refresh_every!r}.")
  every_step = _is_concrete(refresh_every) and refresh_every == 1
  if _is_concrete(tangent_learning_rate) and tangent_learning_rate is not None and not tangent_learning_rate > 0:
    raise ValueError(f"tangent_learning_rate must be positive, got {tangent_learning_rate!r}.")
  if _is_concrete(momentum) and not 0 <= momentum < 1:
    raise ValueError(f"momentum must be in [0, 1), got {momentum!r}.")
  if _is_concrete(averaging) and (isinstance(averaging, bool) or not averaging >= 1 or int(averaging) != averaging):
    raise ValueError(f"averaging must be an integer >= 1 (refreshes), got {averaging!r}.")
  if _is_concrete(tolerance) and not 0 < tolerance < np.inf:
    raise ValueError(f"tolerance must be positive and finite, got {tolerance!r}.")
  if _is_concrete(max_restarts) and (isinstance(max_restarts, bool) or not max_restarts >= 0):
    raise ValueError(f"max_restarts must be an integer >= 0, got {max_restarts!r}.")
  for name, value in (("strength", strength), ("damping", damping)):
    if _is_concrete(value):
      arr = np.asarray(value)
      if arr.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a 1-D vector, got shape {arr.shape}.")
      if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}.")
  if _is_concrete(strength) and getattr(regularizer, "requires_nonnegative_strength", False):
    if np.any(np.asarray(strength) < 0):
      raise ValueError(
        f"strength must be >= 0 for this regularizer, got {strength!r}; use "
        "curiojax.l2(log_strength=True) to put the strength on the log scale."
      )
  if _is_concrete(damping) and np.any(np.asarray(damping) < 0):
    raise ValueError(f"damping must be >= 0, got {damping!r}.")
  settings = TangentSettings(regularizer, curvature)
  stacked = np.ndim(strength) == 1

  def init_fn(params):
    if params is None:
      raise ValueError("regularity_tangent.init needs the params pytree, got None.")
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
      if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
        raise TypeError(
          f"params{jax.tree_util.keystr(path)} has dtype {jnp.result_type(leaf)}: the tangent dθ*/ds needs "
          "floating-point parameters. Keep integer state (step counters, indices) out of the params the "
          "optimizer sees (e.g. nnx.state(model, nnx.Param))."
        )
    k = np.shape(strength)
    zeros = jax.tree.map(lambda p: jnp.zeros(k + jnp.shape(p), jnp.result_type(p)), params)
    dtype = jnp.result_type(*jax.tree.leaves(params)) if jax.tree.leaves(params) else jnp.float32
    scalar = lambda v, t=dtype: jnp.asarray(v, t)
    return RegularityTangentState(
      tangent=zeros,
      iterate=zeros,
      velocity=zeros,
      count=scalar(0, jnp.int32),
      refreshes=scalar(0, jnp.int32),
      step_size=scalar(0),
      curvature_max=scalar(0),
      residual=scalar(1),  # the zero tangent's relative residual
      backward_error=scalar(1),
      best_backward_error=scalar(np.inf),
      rayleigh=scalar(0),
      follow_iterate=scalar(False, bool),
      exact=scalar(False, bool),
      restarts=scalar(0, jnp.int32),
      diverged=scalar(False, bool),
      strength=jnp.asarray(strength, dtype),
      damping=scalar(damping),
      tolerance=scalar(tolerance),
      averaging=scalar(averaging, jnp.int32),
      settings=settings,
    )

  def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
    if params is None:
      raise ValueError("regularity_tangent.update needs params (the current parameters), got None.")
    if value_fn is None:
      raise TypeError(
        "regularity_tangent.update needs the data loss as value_fn: "
        "tx.update(updates, state, params, value_fn=loss, **batch), with loss(params, **batch)."
      )
    if not callable(value_fn):
      raise TypeError(f"value_fn must be callable, got {type(value_fn).__name__}.")
    params_def = jax.tree.structure(params)
    if updates is not None and jax.tree.structure(updates) != params_def:
      raise ValueError(
        "updates and params have different tree structures:\n"
        f"  updates: {jax.tree.structure(updates)}\n  params:  {params_def}"
      )
    if jax.tree.structure(state.tangent) != params_def:
      raise ValueError(
        "params do not match the tree structure the optimizer state was initialised with:\n"
        f"  state: {jax.tree.structure(state.tangent)}\n  params: {params_def}"
      )
    batch = split_value_fn_kwargs(value_fn, extra_args)
    system = TangentSystem(value_fn, regularizer, curvature)
    dtype = state.step_size.dtype
    s = jnp.asarray(strength, dtype)
    lam = jnp.asarray(damping, dtype)
    fused = updates is None

    def refresh(_):
      """One step of the averaged heavy-ball recursion, with its stability check."""
      grad, r = system.gradient_and_product(params, s, lam, state.iterate, batch)
      rho = system.rho(params, s)
      backoff = jnp.asarray(0.5, dtype) ** state.restarts
      beta = jnp.asarray(momentum, dtype) ** (2.0**state.restarts)
      if tangent_learning_rate is None:
        # On the first refresh, after a restart, and on the refresh in each window of step_size_every steps.
        due = (state.curvature_max == 0) | (state.count % step_size_every < refresh_every)
        # One minibatch's λ_max varies: keep the larger of a fresh estimate and half the last one.
        fresh_lmax = lambda _: jnp.maximum(estimate_curvature_max(None), 0.5 * state.curvature_max)
        lmax = jax.lax.cond(due, fresh_lmax, lambda _: state.curvature_max, None)
        alpha = backoff / jnp.maximum(lmax, jnp.finfo(dtype).tiny)
      else:
        lmax, alpha = state.curvature_max, backoff * jnp.asarray(tangent_learning_rate, dtype)
      t = state.refreshes + 1
      first = jnp.isinf(state.best_backward_error)  # the first refresh since the (re)start
      w = jnp.maximum(1.0 / t.astype(dtype), jnp.asarray(1.0 / averaging, dtype))
      tangent = jax.tree.map(lambda a, v: a + w * (v - a), state.tangent, state.iterate)
      # One pass over the leaves: ‖r‖², ‖ρ‖², ‖v‖², ⟨v, r − ρ⟩ per tangent.
      r_sq, rho_sq, v_sq, v_curv = _moments(state.iterate, r, rho, stacked)
      psi2 = jnp.max(_ratio(r_sq, rho_sq))  # the iterate's ψ² on this minibatch

      def evaluate(_):
        """Every few refreshes: the average's ψ̄² on this minibatch, at these parameters.

        Paired with the iterate's ψ² on the same minibatch, so their noise mostly cancels in the
        comparison: where the iterate is clearly better (no noise to average away, or parameters
        that drift) the iterate is handed out until the next evaluation.
        """
        product = lambda v: system.curvature_product(params, s, lam, v, batch)
        product = jax.vmap(product)(tangent) if stacked else product(tangent)
        psi_bar2 = jnp.square(relative_norm(jax.tree.map(jnp.add, product, rho), rho, stacked))
        follow = psi2 < 0.5 * psi_bar2
        return follow, jnp.where(follow, psi2, psi_bar2)

      due_evaluation = (state.count // refresh_every) % EVALUATE_EVERY == 0
      follow, measured = jax.lax.cond(due_evaluation, evaluate, lambda _: (state.follow_iterate, psi2), None)
      # The estimate of the handed-out tangent's ψ²: a running mean of its measurements (noise included:
      # an upper estimate in expectation), over evaluations for the average, refreshes for the iterate.
      old = jnp.square(state.residual)
      window = jnp.where(due_evaluation, RESIDUAL_WINDOW, ITERATE_WINDOW)
      updated = jnp.where(state.count < refresh_every, measured, old + (measured - old) / window)
      estimate = jnp.sqrt(jnp.where(due_evaluation | follow, updated, old)).astype(dtype)
      velocity = jax.tree.map(lambda m, x: beta * m + x, state.velocity, r)
      iterate = jax.tree.map(lambda v, m: v - alpha * m, state.iterate, velocity)
      # Stability: the iterate's backward error φ = ‖r‖/(‖ρ‖ + λ̂‖v‖) stays small while the
      # recursion converges, whatever the noise or the size of τ; an unstable mode drives it to O(1).
      scale = jnp.sqrt(rho_sq) + jnp.where(lmax > 0, lmax, 1.0 / alpha) * jnp.sqrt(v_sq)
      phi2 = jnp.max(r_sq / jnp.maximum(jnp.square(scale), jnp.finfo(dtype).tiny))
      backward_error = jnp.where(first, phi2, state.backward_error + (phi2 - state.backward_error) / ITERATE_WINDOW)
      level = jnp.sqrt(backward_error)
      # Indefiniteness: the Rayleigh quotient vᵀ(C_B + λI)v/‖v‖² = vᵀ(r − ρ)/‖v‖², negative on average
      # over a few minibatches, means the iterate grows along a direction of negative curvature.
      rayleigh = jnp.min(jnp.where(v_sq > 0, v_curv / jnp.where(v_sq > 0, v_sq, 1.0), 0.0))
      rayleigh = jnp.where(first, rayleigh, state.rayleigh + (rayleigh - state.rayleigh) / ITERATE_WINDOW)
      finite = jnp.all(jnp.isfinite(r_sq)) & jnp.all(jnp.isfinite(v_sq)) & jnp.isfinite(level)
      unstable = ~finite | (level > GROWTH_LIMIT * state.best_backward_error) | (rayleigh < 0)
      best = jnp.minimum(state.best_backward_error * (1.0 + 1.0 / averaging), level)
      as_state = lambda new, old: jax.tree.map(lambda n, o: n.astype(o.dtype), new, old)  # half precision stays
      fresh = state._replace(
        tangent=as_state(tangent, state.tangent),
        iterate=as_state(iterate, state.iterate),
        velocity=as_state(velocity, state.velocity),
        refreshes=t,
        step_size=alpha.astype(dtype),
        curvature_max=lmax,
        residual=estimate,
        backward_error=backward_error,
        best_backward_error=best,
        rayleigh=rayleigh,
        follow_iterate=follow,
        exact=jnp.asarray(False),
        strength=s,
        damping=lam,
      )
      grad = grad if fused else params  # unused when the caller gave gradients: let XLA drop it
      return grad, jax.lax.cond(unstable, restart, lambda st: st, fresh)

    def estimate_curvature_max(_):
      key = jax.random.fold_in(jax.random.key(seed), state.count)
      matvec = lambda u: system.curvature_product(params, s, lam, u, batch)
      return power_iteration(matvec, params, key, power_iterations).astype(dtype)

    def restart(st):
      """Back off: restart from the last average (zero if it is not finite) with a fresh λ̂_max, α/2, β²."""
      keep_average = _all_finite(state.tangent)
      start = jax.tree.map(lambda a: jnp.where(keep_average, a, jnp.zeros_like(a)), state.tangent)
      zeros = jax.tree.map(jnp.zeros_like, start)
      restarts = st.restarts + 1
      return st._replace(
        tangent=start,
        iterate=start,
        velocity=zeros,
        refreshes=jnp.zeros_like(st.refreshes),
        curvature_max=jnp.zeros_like(st.curvature_max),
        residual=jnp.where(keep_average, state.residual, jnp.ones_like(state.residual)),
        best_backward_error=jnp.full_like(st.best_backward_error, jnp.inf),
        follow_iterate=jnp.zeros_like(st.follow_iterate),
        restarts=restarts,
        diverged=restarts > max_restarts,
      )

    def keep(_):
      grad = system.gradient(params, s, batch) if fused else params  # unused when not fused
      return grad, state

    if every_step:
      grad, new_state = refresh(None)
    else:
      grad, new_state = jax.lax.cond(state.count % refresh_every == 0, refresh, keep, None)
    # A diverged tangent stays frozen at its last average (the iterate is no longer used); training goes on.
    frozen = new_state._replace(iterate=state.iterate, velocity=state.velocity)
    frozen = jax.tree.map(lambda old, new: jnp.where(state.diverged, old, new), state, frozen)
    new_state = frozen._replace(iterate=new_state.iterate, velocity=new_state.velocity)
    warn = functools.partial(_warn_diverged, dtype=str(jnp.result_type(*jax.tree.leaves(params))))
    jax.lax.cond(  # the parameters' finiteness is checked only in the step that diverges
      new_state.diverged & ~state.diverged,
      lambda: jax.debug.callback(warn, state.count, new_state.residual, _all_finite(params)),
      lambda: None,
    )
    new_state = new_state._replace(
      count=optax.safe_increment(state.count),
      strength=s,
      damping=lam,
      tolerance=jnp.asarray(tolerance, dtype),
      averaging=jnp.asarray(averaging, jnp.int32),
    )
    if fused:
      new_updates = grad
    else:
      # Once, on the first update: updates should be gradients (this transform first in the chain).
      def check_order():
        data_grad = jax.grad(lambda p: value_fn(p, **batch))(params)
        agreement = optax.tree.vdot(updates, data_grad)
        jax.lax.cond(agreement < 0, lambda: jax.debug.callback(_warn_misplaced), lambda: None)

      jax.lax.cond(state.count == 0, check_order, lambda: None)
      new_updates = optax.tree.add(updates, jax.grad(regularizer)(params, s))
    return new_updates, optax.tree.cast_like(new_state, other_tree=state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class TangentDiagnostics(NamedTuple):
  """Host-side summary of a carried tangent (:func:`tangent_diagnostics`).

  Attributes:
    count: updates seen.
    step_size: ``α`` in use.
    residual: relative residual ``‖(C + λI)τ + ρ‖/‖ρ‖`` of the handed-out tangent: the
      online estimate over the last ``averaging`` minibatches, or the full-data value after
      :func:`curiojax.finish_tangent` (``exact``).
    diverged: unstable after every back-off; the tangent is frozen.
    tolerance: the documented accuracy: residuals above it are flagged.
    accurate: certified: ``residual <= tolerance`` (exact) or ``<= tolerance / 2`` (an online
      estimate, which lags and does not see the parameters move between its evaluations), and
      not diverged.
    exact: ``residual`` is a full-data residual, not an estimate.
    restarts: back-offs of the recursion so far.
    curvature_max: ``λ̂_max(C + λI)`` of the last power iteration.
    strength, damping: ``s`` and ``λ`` in use.
  """

  count: int
  step_size: float
  residual: float
  diverged: bool
  tolerance: float
  accurate: bool
  exact: bool
  restarts: int
  curvature_max: float
  strength: Any
  damping: float


def _certifies(residual: float, exact: bool, tol: float) -> bool:
  """A full-data residual certifies up to ``tol``; an online estimate (it lags and the parameters
  drift between its evaluations) only up to ``ONLINE_MARGIN · tol``."""
  return residual <= (tol if exact else ONLINE_MARGIN * tol)


def tangent_diagnostics(opt_state) -> TangentDiagnostics:
  """How good the carried tangent is: its relative residual, tolerance, restarts (host-side)."""
  s = _tangent_state(opt_state)
  residual, diverged = float(_pure(s.residual)), bool(_pure(s.diverged))
  tol = float(_pure(s.tolerance))
  strength = np.asarray(_pure(s.strength))
  return TangentDiagnostics(
    count=int(_pure(s.count)),
    step_size=float(_pure(s.step_size)),
    residual=residual,
    diverged=diverged,
    tolerance=tol,
    accurate=_certifies(residual, bool(_pure(s.exact)), tol) and not diverged,
    exact=bool(_pure(s.exact)),
    restarts=int(_pure(s.restarts)),
    curvature_max=float(_pure(s.curvature_max)),
    strength=float(strength) if strength.ndim == 0 else strength,
    damping=float(_pure(s.damping)),
  )


def _inaccuracy_message(d: TangentDiagnostics, tol: float) -> str:
  kind = "full-data" if d.exact else "estimated (online, last minibatches)"
  limit = f"the tolerance {tol:.3g}" if d.exact else f"half the tolerance {tol:.3g} (an online estimate)"
  if d.exact:
    cause = (
      "the finishing solve stopped before its tolerance (too few iterations, or an indefinite or "
      "near-singular curvature)"
    )
    fix = "raise maxiter, use curvature='gauss_newton' with damping > 0, or train closer to a minimum"
  else:
    cause = (
      f"the online recursion has not converged: {d.count} updates, λ̂_max(C+λI) = {d.curvature_max:.3g} "
      f"against s + λ = {np.max(d.strength) + d.damping:.3g}, so κ is large, and minibatch noise "
      "sets a floor on the online estimate"
    )
    fix = (
      "call curiojax.finish_tangent(opt_state, params, loss, training_batch) after training (a "
      "Krylov or dense solve on the training set), or raise damping / strength"
    )
  return (
    f"The regularity tangent's {kind} relative residual is {d.residual:.3g}, above {limit}. "
    f"Likely cause: {cause}. Fix: {fix}."
  )


def carried_tangent(opt_state):
  """The tangent in ``opt_state`` as it stands, with no accuracy check (for online use: tuning ``s``)."""
  return handed_out(_tangent_state(opt_state))


def tangent_of(opt_state):
  """The tangent ``τ`` (shaped like params) from any optimizer state containing one.

  Works on a plain optax state, a chain's or ``inject_hyperparams``' state, or an
  ``nnx.Optimizer`` (or its ``opt_state``). Pure and jit-safe. Called on a concrete state
  whose tangent is not certified (residual above its tolerance, or diverged) it warns
  (:class:`TangentInaccurateWarning` / :class:`TangentDivergedWarning`); inside ``jit`` read
  ``residual`` from the state instead.
  """
  state = _tangent_state(opt_state)
  tangent = carried_tangent(opt_state)
  leaves = jax.tree.leaves((_pure(state.residual), _pure(state.diverged)))
  if all(_is_concrete(x) for x in leaves):
    d = tangent_diagnostics(opt_state)
    if d.diverged:
      warnings.warn(
        "curiojax: this regularity tangent diverged and is frozen; see curiojax.check_tangent.",
        TangentDivergedWarning,
        stacklevel=2,
      )
    elif not d.accurate:
      warnings.warn(_inaccuracy_message(d, d.tolerance), TangentInaccurateWarning, stacklevel=2)
  return tangent


def check_tangent(opt_state, tol: float | None = None):
  """Return the tangent if it is certified, else raise.

  Args:
    opt_state: any optimizer state containing a :func:`regularity_tangent` (or an ``nnx.Optimizer``).
    tol: relative residual allowed (default: the transformation's ``tolerance``).

  Raises:
    TangentDivergedError: the recursion diverged.
    TangentInaccurateError: the relative residual exceeds ``tol``; the message names the
      likely cause and the fix (usually :func:`curiojax.finish_tangent`).
  """
  d = tangent_diagnostics(opt_state)
  tol = d.tolerance if tol is None else float(tol)
  if not tol > 0:
    raise ValueError(f"tol must be positive, got {tol!r}.")
  if d.diverged:
    raise TangentDivergedError(
      f"The regularity tangent diverged (relative residual {d.residual:.3g} after {d.count} updates and "
      f"{d.restarts} back-offs). Use curvature='gauss_newton' with damping > 0 for non-convex models."
    )
  if not _certifies(d.residual, d.exact, tol):
    raise TangentInaccurateError(_inaccuracy_message(d, tol))
  return carried_tangent(opt_state)

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
curvature along the iterate ``vᵀ(C_B + λI)v`` turns negative, when a value is not finite, or
(Gauss-Newton, whose ``C + λI ⪰ (s + λ)I`` with :func:`curiojax.l2`) when the iterate leaves
the bound ``‖τ‖ ≤ ‖ρ‖/(s + λ)`` the exact tangent obeys, which no normalisation hides; it then
restarts from ``τ̄`` (zero if ``τ̄`` is not finite or out of bound) with a fresh ``λ̂_max``, half
the step and ``β²``, and after ``max_restarts`` it is marked diverged and frozen. Non-finite
parameters mark it diverged at once (the training diverged, not the tangent). :func:`tangent_diagnostics` reports
all this; :func:`tangent_of` warns and :func:`check_tangent` raises above the tolerance.

The pieces: :mod:`~curiojax.tangent.recursion` (the maths, pure functions),
:mod:`~curiojax.tangent.diagnostics` (certification and messages),
:mod:`~curiojax.tangent.access` (the state inside any optimizer state),
:mod:`~curiojax.tangent.state` (the state type). Here: checking the options, the tangent carrier
(:func:`carry`) and the regularizer's gradient (:func:`add_regularizer_gradient`).

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
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from curiojax.tangent import recursion
from curiojax.tangent.curvature import TangentSystem, check_curvature, split_value_fn_kwargs
from curiojax.tangent.diagnostics import warn_diverged, warn_misplaced
from curiojax.tangent.operator import TangentOperator
from curiojax.tangent.recursion import ITERATE_WINDOW, power_iteration, relative_norm
from curiojax.tangent.regularizers import Regularizer, get_regularizer
from curiojax.tangent.state import RegularityTangentState, TangentSettings

__all__ = ["DEFAULT_TOLERANCE", "EVALUATE_EVERY", "RESIDUAL_WINDOW", "check_strength_sign", "regularity_tangent"]

DEFAULT_TOLERANCE = 0.1  # relative residual above which a tangent is flagged (documented accuracy)
EVALUATE_EVERY = 20  # refreshes between evaluations of the average's residual (one extra product)
RESIDUAL_WINDOW = 3  # evaluations over which the residual estimate is averaged


class _Options(NamedTuple):
  """The transformation's arguments after checking (numbers may be traced under inject_hyperparams)."""

  settings: TangentSettings
  stacked: bool  # k strengths, k tangents
  tangent_learning_rate: Any
  momentum: Any
  averaging: Any
  refresh_every: Any
  power_iterations: Any
  step_size_every: Any
  tolerance: Any
  max_restarts: Any
  seed: Any


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _check_options(regularizer, strength, damping, opts: _Options) -> None:
  """Check the concrete arguments (under ``optax.inject_hyperparams`` any of them may be traced)."""
  o = opts
  if _is_concrete(o.refresh_every) and (o.refresh_every < 1 or int(o.refresh_every) != o.refresh_every):
    raise ValueError(f"refresh_every must be a positive integer, got {o.refresh_every!r}.")
  lr = o.tangent_learning_rate
  if _is_concrete(lr) and lr is not None and not lr > 0:
    raise ValueError(f"tangent_learning_rate must be positive, got {lr!r}.")
  if _is_concrete(o.momentum) and not 0 <= o.momentum < 1:
    raise ValueError(f"momentum must be in [0, 1), got {o.momentum!r}.")
  w = o.averaging
  if _is_concrete(w) and (isinstance(w, bool) or not w >= 1 or int(w) != w):
    raise ValueError(f"averaging must be an integer >= 1 (refreshes), got {w!r}.")
  if _is_concrete(o.tolerance) and not 0 < o.tolerance < np.inf:
    raise ValueError(f"tolerance must be positive and finite, got {o.tolerance!r}.")
  if _is_concrete(o.max_restarts) and (isinstance(o.max_restarts, bool) or not o.max_restarts >= 0):
    raise ValueError(f"max_restarts must be an integer >= 0, got {o.max_restarts!r}.")
  for name, value in (("strength", strength), ("damping", damping)):
    if _is_concrete(value):
      arr = np.asarray(value)
      if arr.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a 1-D vector, got shape {arr.shape}.")
      if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}.")
  check_strength_sign(regularizer, strength)
  if _is_concrete(damping) and np.any(np.asarray(damping) < 0):
    raise ValueError(f"damping must be >= 0, got {damping!r}.")


def check_strength_sign(regularizer, strength) -> None:
  """A regularizer that needs ``s ≥ 0`` (a plain ``l2``) refuses a concrete negative strength."""
  if _is_concrete(strength) and getattr(regularizer, "requires_nonnegative_strength", False):
    if np.any(np.asarray(strength) < 0):
      raise ValueError(
        f"strength must be >= 0 for this regularizer, got {strength!r}; use "
        "curiojax.l2(log_strength=True) to put the strength on the log scale."
      )


def _init(params, strength, damping, opts: _Options) -> RegularityTangentState:
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
    tolerance=scalar(opts.tolerance),
    averaging=scalar(opts.averaging, jnp.int32),
    settings=opts.settings,
  )


def _step_size(state: RegularityTangentState, at: TangentOperator, opts: _Options):
  """``(λ̂_max, α, β)``: ``α = 2^−restarts/λ̂_max``, ``λ̂_max`` re-estimated when due (or a fixed ``α``)."""
  dtype = state.step_size.dtype
  scale, beta = recursion.backoff(state.restarts, opts.momentum, dtype)
  if opts.tangent_learning_rate is not None:
    return state.curvature_max, scale * jnp.asarray(opts.tangent_learning_rate, dtype), beta
  # On the first refresh, after a restart, and on the refresh in each window of step_size_every steps.
  due = (state.curvature_max == 0) | (state.count % opts.step_size_every < opts.refresh_every)

  def estimate(_):  # one minibatch's λ_max varies: keep the larger of a fresh estimate and half the last one
    key = jax.random.fold_in(jax.random.key(opts.seed), state.count)
    fresh = power_iteration(at.mv, at.params, key, opts.power_iterations).astype(dtype)
    return jnp.maximum(fresh, 0.5 * state.curvature_max)

  lmax = jax.lax.cond(due, estimate, lambda _: state.curvature_max, None)
  return lmax, scale / jnp.maximum(lmax, jnp.finfo(dtype).tiny), beta


def _residual_estimate(state: RegularityTangentState, at: TangentOperator, opts: _Options, average, rho, psi2):
  """``(follow_iterate, estimate)``: the handed-out tangent's relative residual, a running mean.

  Every few refreshes one extra product measures the average's ψ̄² on this minibatch, paired with
  the iterate's ψ² on the same one so that their noise mostly cancels: where the iterate is
  clearly better it is handed out until the next evaluation. The estimate is a running mean of the
  handed-out vector's measurements (noise included: an upper estimate in expectation).
  """
  dtype = state.step_size.dtype
  due = (state.count // opts.refresh_every) % EVALUATE_EVERY == 0

  def evaluate(_):
    product = jax.vmap(at.mv)(average) if opts.stacked else at.mv(average)
    psi_bar2 = jnp.square(relative_norm(jax.tree.map(jnp.add, product, rho), rho, opts.stacked))
    follow = psi2 < 0.5 * psi_bar2
    return follow, jnp.where(follow, psi2, psi_bar2)

  follow, measured = jax.lax.cond(due, evaluate, lambda _: (state.follow_iterate, psi2), None)
  old = jnp.square(state.residual)
  window = jnp.where(due, RESIDUAL_WINDOW, ITERATE_WINDOW)
  updated = jnp.where(state.count < opts.refresh_every, measured, old + (measured - old) / window)
  return follow, jnp.sqrt(jnp.where(due | follow, updated, old)).astype(dtype)


def _refresh(state: RegularityTangentState, at: TangentOperator, opts: _Options):
  """One step of the averaged heavy-ball recursion with its stability tests.

  Returns ``(∇_θF, state, (cause, λ̂_max))``: why it restarted (a :mod:`recursion` code) and the
  ``λ̂_max`` it used, for the divergence message (a restart resets the state's).
  """
  grad, r = at.gradient_and_residual(state.iterate)
  rho = at.rho()
  dtype = state.step_size.dtype
  lmax, alpha, beta = _step_size(state, at, opts)
  first = jnp.isinf(state.best_backward_error)  # the first refresh since the (re)start
  t = state.refreshes + 1
  average = recursion.average(state.tangent, state.iterate, t, opts.averaging, dtype)
  r_sq, rho_sq, v_sq, v_curv = recursion.moments(state.iterate, r, rho, opts.stacked)
  psi2 = jnp.max(recursion.ratio(r_sq, rho_sq))  # the iterate's ψ² on this minibatch
  follow, estimate = _residual_estimate(state, at, opts, average, rho, psi2)
  iterate, velocity = recursion.heavy_ball(state.iterate, state.velocity, r, alpha, beta)
  phi2 = recursion.backward_error(r_sq, rho_sq, v_sq, lmax, alpha, dtype)
  backward_error = recursion.running_mean(state.backward_error, phi2, ITERATE_WINDOW, first)
  level = jnp.sqrt(backward_error)
  rayleigh = recursion.rayleigh_quotient(v_sq, v_curv)
  rayleigh = recursion.running_mean(state.rayleigh, rayleigh, ITERATE_WINDOW, first)
  floor = recursion.curvature_floor(opts.settings.regularizer, opts.settings.curvature, at.strength, at.damping, dtype)
  finite = jnp.all(jnp.isfinite(r_sq)) & jnp.all(jnp.isfinite(v_sq)) & jnp.isfinite(level)
  beyond = recursion.beyond_bound(v_sq, rho_sq, floor)
  cause = recursion.instability(finite, beyond, level, state.best_backward_error, rayleigh)
  like = lambda new, old: jax.tree.map(lambda n, o: n.astype(o.dtype), new, old)  # half precision stays
  fresh = state._replace(
    tangent=like(average, state.tangent),
    iterate=like(iterate, state.iterate),
    velocity=like(velocity, state.velocity),
    refreshes=t,
    step_size=alpha.astype(dtype),
    curvature_max=lmax,
    residual=estimate,
    backward_error=backward_error,
    best_backward_error=jnp.minimum(state.best_backward_error * (1.0 + 1.0 / opts.averaging), level),
    rayleigh=rayleigh,
    follow_iterate=follow,
    exact=jnp.asarray(False),
  )
  restart = functools.partial(_restart, start=state, rho=rho, floor=floor, opts=opts)
  return grad, jax.lax.cond(cause != recursion.STABLE, restart, lambda st: st, fresh), (cause, lmax)


def _restart(st, *, start: RegularityTangentState, rho, floor, opts: _Options) -> RegularityTangentState:
  """Back off from the last average (zero if it is not finite or out of bound): fresh λ̂_max, α/2, β²."""
  point, kept = recursion.restart_point(start.tangent, rho, floor, opts.stacked)
  restarts = st.restarts + 1
  return st._replace(
    tangent=point,
    iterate=point,
    velocity=jax.tree.map(jnp.zeros_like, point),
    refreshes=jnp.zeros_like(st.refreshes),
    curvature_max=jnp.zeros_like(st.curvature_max),
    residual=jnp.where(kept, start.residual, jnp.ones_like(start.residual)),
    best_backward_error=jnp.full_like(st.best_backward_error, jnp.inf),
    follow_iterate=jnp.zeros_like(st.follow_iterate),
    restarts=restarts,
    diverged=restarts > opts.max_restarts,
  )


def carry(state: RegularityTangentState, at: TangentOperator, opts: _Options, fused: bool):
  """The tangent carrier: ``(∇_θF or None, new state)``.

  Refreshes the tangent every ``refresh_every`` steps (the others cost a plain gradient, or
  nothing when the caller gave gradients). A diverged tangent stays frozen at its last average;
  non-finite parameters freeze it at once and mark it diverged (the training diverged, not the
  tangent). The step that diverges warns (:class:`TangentDivergedWarning`) with the causes the
  state shows.
  """

  def refresh(_):
    grad, new, why = _refresh(state, at, opts)
    return grad if fused else at.params, new, why  # unused when the caller gave gradients: XLA drops it

  def keep(_):
    why = (jnp.asarray(recursion.STABLE, jnp.int32), state.curvature_max)
    return at.gradient() if fused else at.params, state, why

  if _is_concrete(opts.refresh_every) and opts.refresh_every == 1:
    grad, new, why = refresh(None)
  else:
    grad, new, why = jax.lax.cond(state.count % opts.refresh_every == 0, refresh, keep, None)
  params_finite = recursion.all_finite(at.params)
  frozen = state.diverged | ~params_finite
  new = jax.tree.map(lambda old, n: jnp.where(frozen, old, n), state, new)
  new = new._replace(diverged=new.diverged | ~params_finite)
  _warn_if_diverged(state, new, at, why, params_finite)
  new = new._replace(
    count=optax.safe_increment(state.count),
    strength=at.strength,
    damping=at.damping,
    tolerance=jnp.asarray(opts.tolerance, state.tolerance.dtype),
    averaging=jnp.asarray(opts.averaging, jnp.int32),
  )
  return (grad if fused else None), new


def _warn_if_diverged(
  old: RegularityTangentState, new: RegularityTangentState, at: TangentOperator, why, params_finite
):
  """Warn on the step that diverges, with the facts the state shows (host callback)."""
  leaves = jax.tree.leaves(at.params)
  warn = functools.partial(
    warn_diverged, curvature=old.settings.curvature, dtype=str(jnp.result_type(*leaves)) if leaves else "float32"
  )

  def callback():
    scale = jnp.max(jnp.array([jnp.max(jnp.where(jnp.isfinite(x), jnp.abs(x), 0), initial=0) for x in leaves]))
    jax.debug.callback(warn, old.count, new.residual, why[0], params_finite, scale, why[1], at.strength, at.damping)

  jax.lax.cond(new.diverged & ~old.diverged, callback, lambda: None)


def add_regularizer_gradient(updates, state: RegularityTangentState, at: TangentOperator):
  """``updates + ∇_θR(θ, s)``; on the first update, warn if the updates are not gradients (misplaced)."""

  def check_order():
    data_grad = jax.grad(lambda p: at.system.value_fn(p, **at.batch))(at.params)
    agreement = optax.tree.vdot(updates, data_grad)
    jax.lax.cond(agreement < 0, lambda: jax.debug.callback(warn_misplaced), lambda: None)

  jax.lax.cond(state.count == 0, check_order, lambda: None)
  return optax.tree.add(updates, jax.grad(at.system.regularizer)(at.params, at.strength))


_NEEDS_UPDATES = {  # optax wrappers that build zeros shaped like the updates they were given
  ("_conditionality.py", "do_update"): "optax.apply_if_finite",
  ("_accumulation.py", "_do_update"): "optax.MultiSteps",
}


def _check_fused_caller() -> None:
  """``updates=None`` (the fused path) inside a wrapper that needs the updates: say so, not a pytree error."""
  frame = sys._getframe(2)
  for _ in range(40):
    if frame is None:
      return
    wrapper = _NEEDS_UPDATES.get((frame.f_code.co_filename.rsplit("/", 1)[-1], frame.f_code.co_name))
    if wrapper is not None and "optax" in frame.f_code.co_filename:
      raise TypeError(
        f"regularity_tangent was given updates=None (the fused path) inside {wrapper}, which needs the "
        "updates themselves (it builds zeros shaped like them, or accumulates them). Pass the gradients "
        "instead: tx.update(grads, state, params, value_fn=loss, **batch), with grads = jax.grad(loss)(params, "
        "**batch); the tangent is carried the same way."
      )
    frame = frame.f_back


def _check_update_args(updates, state, params, value_fn) -> None:
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
  if updates is None:
    _check_fused_caller()
  elif jax.tree.structure(updates) != params_def:
    raise ValueError(
      "updates and params have different tree structures:\n"
      f"  updates: {jax.tree.structure(updates)}\n  params:  {params_def}"
    )
  if jax.tree.structure(state.tangent) != params_def:
    raise ValueError(
      "params do not match the tree structure the optimizer state was initialised with:\n"
      f"  state: {jax.tree.structure(state.tangent)}\n  params: {params_def}"
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
  opts = _Options(
    settings=TangentSettings(regularizer, curvature),
    stacked=np.ndim(strength) == 1,
    tangent_learning_rate=tangent_learning_rate,
    momentum=momentum,
    averaging=averaging,
    refresh_every=refresh_every,
    power_iterations=power_iterations,
    step_size_every=step_size_every,
    tolerance=tolerance,
    max_restarts=max_restarts,
    seed=seed,
  )
  _check_options(regularizer, strength, damping, opts)

  def init_fn(params):
    return _init(params, strength, damping, opts)

  def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
    _check_update_args(updates, state, params, value_fn)
    dtype = state.step_size.dtype
    batch = split_value_fn_kwargs(value_fn, extra_args)
    system = TangentSystem(value_fn, regularizer, curvature)
    at = TangentOperator(system, params, jnp.asarray(strength, dtype), jnp.asarray(damping, dtype), batch)
    grad, new_state = carry(state, at, opts, fused=updates is None)
    new_updates = grad if updates is None else add_regularizer_gradient(updates, state, at)
    return new_updates, optax.tree.cast_like(new_state, other_tree=state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)

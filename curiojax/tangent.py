"""``regularity_tangent``: an optax transformation carrying ``τ = dθ*/ds`` in its state.

Differentiating one gradient step ``θ ← θ − η∇_θF(θ, s)`` with respect to ``s`` gives the
SGDF recursion (LiSSA run online; ``method.md``):

    v ← v − η_τ ((C + λI) v + ρ),      fixed point  v = τ = −(C + λI)⁻¹ ρ,

with ``C`` the Hessian or Gauss-Newton matrix of ``F`` on the current batch and
``ρ = ∂_s∇_θR``. ``(C + λI)v + ρ`` is one forward-over-reverse product whose primal output is
``∇_θF`` itself: pass ``updates=None`` and the transformation returns that gradient, so a
training step costs one fused pass instead of a gradient plus an HVP.

The tangent's step size ``η_τ`` defaults to ``1/λ̂_max(C + λI)``, estimated by power
iteration on the first update and every ``step_size_every`` refreshes: the recursion then
converges whatever the inner optimizer (SGD, momentum,
Adam) and whatever the data's scale, at a rate set by ``κ(C + λI)``.

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
  >>> tau = curiojax.tangent_of(state)   # dθ*/ds, shaped like params
  >>> h = x.T @ x / 64 + 0.1 * jnp.eye(3)   # ridge closed form: τ = −(XᵀX/n + sI)⁻¹θ*
  >>> bool(jnp.allclose(tau["w"], -jnp.linalg.solve(h, params["w"]), rtol=1e-3, atol=1e-4))
  True
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from curiojax.curvature import TangentSystem, check_curvature, split_value_fn_kwargs
from curiojax.regularizers import Regularizer, get_regularizer


class TangentDivergedWarning(RuntimeWarning):
  """The carried tangent stopped converging (non-finite, or its residual blew up)."""


class TangentDivergedError(ValueError):
  """Raised by :func:`check_tangent` for a state whose tangent diverged."""


class RegularityTangentState(NamedTuple):
  """State of :func:`regularity_tangent`."""

  tangent: Any  # like params; leaves (k, *shape) for k strengths. dθ*/ds.
  count: jax.Array  # int32 scalar, updates seen.
  step_size: jax.Array  # float scalar, η_τ in use (0 before the first estimate).
  residual: jax.Array  # float scalar, ‖(C+λI)v + ρ‖/‖ρ‖ on the last refreshing batch.
  diverged: jax.Array  # bool scalar, sticky: the tangent stopped converging.


def _tree_norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


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


def _warn_diverged(count, residual):
  warnings.warn(
    f"curiojax: the regularity tangent diverged at update {int(count)} (relative residual "
    f"{float(residual):.3g}); it is frozen at its last finite value. Try curvature='gauss_newton', "
    "a damping > 0, or a smaller tangent_learning_rate.",
    TangentDivergedWarning,
    stacklevel=2,
  )


def regularity_tangent(
  regularizer: str | Regularizer = "l2",
  strength: float | jax.Array = 1e-2,
  *,
  curvature: str = "hessian",
  damping: float | jax.Array = 0.0,
  tangent_learning_rate: float | None = None,
  refresh_every: int = 1,
  power_iterations: int = 20,
  step_size_every: int = 250,
  divergence_threshold: float = 1e3,
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
    tangent_learning_rate: fixed ``η_τ``; default ``None`` estimates ``1/λ_max(C + λI)``.
    refresh_every: update the tangent every ``k`` steps (the others cost a plain gradient).
    power_iterations: HVPs per estimate of ``λ_max``.
    step_size_every: re-estimate ``λ_max`` every this many refreshes.
    divergence_threshold: relative residual beyond which the tangent counts as diverged.
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

  def init_fn(params):
    if params is None:
      raise ValueError("regularity_tangent.init needs the params pytree, got None.")
    k = np.shape(strength)
    tangent = jax.tree.map(lambda p: jnp.zeros(k + jnp.shape(p), jnp.result_type(p)), params)
    dtype = jnp.result_type(*jax.tree.leaves(params)) if jax.tree.leaves(params) else jnp.float32
    return RegularityTangentState(
      tangent=tangent,
      count=jnp.zeros([], jnp.int32),
      step_size=jnp.zeros([], dtype),
      residual=jnp.ones([], dtype),
      diverged=jnp.zeros([], bool),
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

    def estimate_step_size(_):
      key = jax.random.fold_in(jax.random.key(seed), state.count)
      lmax = power_iteration(
        lambda u: system.curvature_product(params, s, lam, u, batch), params, key, power_iterations
      )
      return (1.0 / jnp.maximum(lmax, jnp.finfo(dtype).tiny)).astype(dtype)

    refreshes = state.count // refresh_every
    if tangent_learning_rate is not None:
      step_size = jnp.asarray(tangent_learning_rate, dtype)
    else:
      due = (state.step_size == 0) | (refreshes % step_size_every == 0)
      if not every_step:
        due = due & (state.count % refresh_every == 0)
      step_size = jax.lax.cond(due, estimate_step_size, lambda _: state.step_size, None)

    def refresh(_):
      grad, product = system.gradient_and_product(params, s, lam, state.tangent, batch)
      rho_norm = _tree_norm(system.rho(params, s))
      residual = _tree_norm(product) / jnp.maximum(rho_norm, jnp.finfo(dtype).tiny)
      return grad, tangent_step(state.tangent, product, step_size), residual.astype(dtype)

    def keep(_):
      grad = system.gradient(params, s, batch) if fused else params  # unused when not fused
      return grad, state.tangent, state.residual

    if every_step:
      grad, tangent, residual = refresh(None)
    else:
      grad, tangent, residual = jax.lax.cond(state.count % refresh_every == 0, refresh, keep, None)

    finite = jnp.isfinite(residual) & jnp.all(jnp.array([jnp.all(jnp.isfinite(t)) for t in jax.tree.leaves(tangent)]))
    healthy = finite & (residual <= divergence_threshold)
    newly_diverged = (~healthy) & (~state.diverged)
    jax.lax.cond(
      newly_diverged,
      lambda: jax.debug.callback(_warn_diverged, state.count, residual),
      lambda: None,
    )
    tangent = jax.tree.map(lambda new, old: jnp.where(healthy, new, old), tangent, state.tangent)

    if fused:
      new_updates = grad
    else:
      new_updates = optax.tree.add(updates, jax.grad(regularizer)(params, s))
    new_state = RegularityTangentState(
      tangent=tangent,
      count=optax.safe_increment(state.count),
      step_size=step_size,
      residual=residual,
      diverged=state.diverged | ~healthy,
    )
    return new_updates, optax.tree.cast_like(new_state, other_tree=state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _tangent_state(opt_state) -> RegularityTangentState:
  """The (unique) :class:`RegularityTangentState` inside any optimizer state, however nested."""
  if hasattr(opt_state, "opt_state") and not isinstance(opt_state, tuple):  # nnx.Optimizer
    opt_state = opt_state.opt_state
  found = []

  def visit(node):
    if isinstance(node, RegularityTangentState):
      found.append(node)
      return
    if isinstance(node, (tuple, list)):
      for child in node:
        visit(child)
    elif isinstance(node, dict):
      for child in node.values():
        visit(child)
    elif hasattr(node, "__dict__") and not isinstance(node, jax.Array):
      for child in vars(node).values():
        visit(child)

  visit(opt_state)
  if not found:
    raise ValueError(
      "No regularity tangent in this optimizer state: build the optimizer with "
      "optax.chain(curiojax.regularity_tangent(...), ...)."
    )
  if len(found) > 1:
    raise ValueError(f"Found {len(found)} regularity tangents in this optimizer state; expected one.")
  return found[0]


def _pure(x):
  """Unwrap flax NNX variables (``nnx.Optimizer.opt_state``) into plain arrays."""
  if hasattr(x, "get_value"):
    return x.get_value()
  if hasattr(x, "value") and not isinstance(x, jax.Array):
    return x.value
  return x


def tangent_of(opt_state):
  """The tangent ``τ`` (shaped like params) from any optimizer state containing one.

  Works on a plain optax state, a chain's or ``inject_hyperparams``' state, or an
  ``nnx.Optimizer`` (or its ``opt_state``). Pure and jit-safe.
  """
  state = _tangent_state(opt_state)
  return jax.tree.map(_pure, state.tangent, is_leaf=lambda x: hasattr(x, "get_value"))


class TangentDiagnostics(NamedTuple):
  count: int
  step_size: float
  residual: float
  diverged: bool


def tangent_diagnostics(opt_state) -> TangentDiagnostics:
  """Host-side summary: updates seen, ``η_τ``, last relative residual, divergence flag."""
  s = _tangent_state(opt_state)
  return TangentDiagnostics(
    int(_pure(s.count)), float(_pure(s.step_size)), float(_pure(s.residual)), bool(_pure(s.diverged))
  )


def check_tangent(opt_state):
  """Return the tangent, or raise :class:`TangentDivergedError` if it diverged."""
  d = tangent_diagnostics(opt_state)
  if d.diverged:
    raise TangentDivergedError(
      f"The regularity tangent diverged (relative residual {d.residual:.3g} after {d.count} updates). "
      "Use curvature='gauss_newton' or damping > 0 for non-convex models."
    )
  return tangent_of(opt_state)

"""How good a carried tangent is, and the warnings and errors that say so (host-side).

:func:`tangent_diagnostics` summarises the state; :func:`tangent_of` hands the tangent out
(warning when it is not certified); :func:`check_tangent` raises instead. A tangent is
certified when its full-data residual (after :func:`curiojax.finish_tangent`) is within the
tolerance, or its online estimate within :data:`ONLINE_MARGIN` of it. Messages name what the
state shows (curvature, damping, ``κ``, parameter scale, dtype), never a guess it cannot see.

Example:
  >>> import jax.numpy as jnp, optax, curiojax
  >>> state = optax.chain(curiojax.regularity_tangent("l2", 0.1), optax.sgd(0.1)).init({"w": jnp.ones(2)})
  >>> d = curiojax.tangent_diagnostics(state)
  >>> d.residual, d.accurate   # the zero tangent, before any update
  (1.0, False)
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import numpy as np

from curiojax.tangent import recursion
from curiojax.tangent.access import find_tangent_state
from curiojax.tangent.state import _pure, handed_out

ONLINE_MARGIN = 0.5  # an online estimate certifies only below this share of the tolerance (lag, drift)
KAPPA_LIMIT = {"float64": 1e12, "float32": 1e5, "bfloat16": 1e2, "float16": 1e2}  # κ beyond what a dtype resolves
HALF_PRECISION = ("float16", "bfloat16")


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


class TangentDiagnostics(NamedTuple):
  """Host-side summary of a carried tangent (:func:`tangent_diagnostics`).

  Attributes:
    count: updates seen.
    step_size: ``α`` in use.
    residual: relative residual ``‖(C + λI)τ + ρ‖/‖ρ‖`` of the handed-out tangent: the
      online estimate over the last ``averaging`` minibatches, or the full-data value after
      :func:`curiojax.finish_tangent` (``exact``).
    diverged: unstable after every back-off, or the parameters stopped being finite; frozen.
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


def _host_side(state, name: str):
  """Raise a clear error when a host-side function is traced (inside ``jax.jit``, ``vmap``, ...)."""
  if any(isinstance(_pure(x), jax.core.Tracer) for x in (state.residual, state.diverged, state.exact)):
    raise TypeError(
      f"curiojax.{name} is host-side: it reads the residual to decide what to return, which a traced "
      "state (inside jax.jit, vmap or a scan) cannot give. Call it outside the jitted function, on the "
      "state it returns; inside jit use curiojax.tangent_of(opt_state) (no check) and read "
      "find_tangent_state(opt_state).residual and .diverged."
    )


def tangent_diagnostics(opt_state) -> TangentDiagnostics:
  """How good the carried tangent is: its relative residual, tolerance, restarts (host-side)."""
  s = find_tangent_state(opt_state)
  _host_side(s, "tangent_diagnostics")
  residual, diverged, exact = float(_pure(s.residual)), bool(_pure(s.diverged)), bool(_pure(s.exact))
  tol = float(_pure(s.tolerance))
  strength = np.asarray(_pure(s.strength))
  return TangentDiagnostics(
    count=int(_pure(s.count)),
    step_size=float(_pure(s.step_size)),
    residual=residual,
    diverged=diverged,
    tolerance=tol,
    accurate=_certifies(residual, exact, tol) and not diverged,
    exact=exact,
    restarts=int(_pure(s.restarts)),
    curvature_max=float(_pure(s.curvature_max)),
    strength=float(strength) if strength.ndim == 0 else strength,
    damping=float(_pure(s.damping)),
  )


def inaccuracy_message(d: TangentDiagnostics, tol: float) -> str:
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


class DivergenceFacts(NamedTuple):
  """What the state shows when the tangent diverges (the material of :func:`divergence_message`)."""

  count: int  # the update that diverged
  residual: float  # the online relative residual estimate
  cause: int  # a recursion code: NONFINITE, BEYOND_BOUND, GROWING or INDEFINITE
  params_finite: bool
  param_scale: float  # max |θ| over the finite parameters
  curvature_max: float  # λ̂_max(C + λI)
  strength: float  # the largest s
  damping: float
  curvature: str
  dtype: str


_TRIGGERS = {
  recursion.NONFINITE: "its products became non-finite",
  recursion.BEYOND_BOUND: "its iterate grew beyond ‖ρ‖/(s + λ), a bound the exact tangent obeys under Gauss-Newton",
  recursion.GROWING: "its backward error grew tenfold above its best",
  recursion.INDEFINITE: "the curvature along its iterate turned negative",
}


def _training_diverged(f: DivergenceFacts) -> str:
  if f.dtype in HALF_PRECISION:
    return (
      f"Cause: the parameters themselves are no longer finite, so the training diverged, not the tangent. "
      f"They are {f.dtype}: in half precision Adam's eps (1e-8) underflows to 0 and its updates blow up. "
      "Fix: train in float32 (mixed precision with float32 master weights), or a larger eps."
    )
  return (
    "Cause: the parameters themselves are no longer finite, so the training diverged, not the tangent. "
    "Fix: a smaller learning rate, gradient clipping, or scaled inputs and targets."
  )


def _tangent_causes(f: DivergenceFacts) -> list[str]:
  """The causes the facts support, each with its fix."""
  mu = f.strength + f.damping
  kappa = f.curvature_max / mu if mu > 0 else np.inf
  causes = []
  if f.cause == recursion.INDEFINITE and f.curvature == "hessian":
    damped = "damping 0" if f.damping == 0 else f"damping {f.damping:.3g}, too small to make it positive"
    causes.append(
      f"an indefinite curvature (curvature='hessian' on a non-convex model, {damped}). "
      "Fix: curvature='gauss_newton' with damping > 0"
    )
  elif f.cause == recursion.INDEFINITE:
    causes.append(
      "a loss whose Hessian in the predictions is not positive semi-definite (Gauss-Newton assumes a convex "
      "loss). Fix: a convex loss (squared error, Huber), or more damping"
    )
  if kappa > KAPPA_LIMIT.get(f.dtype, 1e5):
    causes.append(
      f"κ = λ̂_max/(s + λ) ≈ {kappa:.2g} is beyond what {f.dtype} resolves; a large λ̂_max comes from unscaled "
      f"inputs or large parameters (here up to |θ| = {f.param_scale:.3g}). Fix: standardise the inputs "
      "(and targets), or raise the damping"
    )
  if not causes:
    causes.append(
      "a step α = 1/λ̂_max too large for some minibatches (λ̂_max is estimated on one). Fix: larger "
      "minibatches, a fixed smaller tangent_learning_rate, or momentum=0"
    )
  return causes


def divergence_message(f: DivergenceFacts) -> str:
  """The diverged warning: what happened, the facts the state shows, and the causes they support."""
  head = (
    f"curiojax: the regularity tangent diverged at update {f.count} (relative residual {f.residual:.3g}) "
    "and is frozen at its last average."
  )
  if not f.params_finite:
    return f"{head} {_training_diverged(f)}"
  mu = f.strength + f.damping
  facts = (
    f"The state shows: curvature={f.curvature!r}, damping {f.damping:.3g}, s + λ = {mu:.3g}, "
    f"λ̂_max(C + λI) = {f.curvature_max:.3g} (κ ≈ {f.curvature_max / mu if mu > 0 else np.inf:.3g}), "
    f"parameters up to |θ| = {f.param_scale:.3g}, {f.dtype}."
  )
  trigger = _TRIGGERS.get(f.cause, "it was unstable")
  causes = " Or ".join(c + "." for c in _tangent_causes(f))
  return f"{head} After every back-off of its step, {trigger}. {facts} Likely cause: {causes}"


def warn_diverged(
  count, residual, cause, params_finite, param_scale, curvature_max, strength, damping, *, curvature: str, dtype: str
):
  """Host callback from the jitted update: warn with :func:`divergence_message`."""
  facts = DivergenceFacts(
    int(count),
    float(residual),
    int(cause),
    bool(params_finite),
    float(param_scale),
    float(curvature_max),
    float(np.max(strength)),
    float(damping),
    curvature,
    dtype,
  )
  warnings.warn(divergence_message(facts), TangentDivergedWarning, stacklevel=2)


def warn_misplaced():
  warnings.warn(
    "curiojax: regularity_tangent received updates that point against the loss gradient: it is placed "
    "after the optimizer in the chain (or given negated gradients). It must come first, so that it sees "
    "raw gradients and adds the regularizer's: optax.chain(curiojax.regularity_tangent(...), optax.adam(...)). "
    "As placed, the regularizer term is added unscaled to the optimizer's step.",
    TangentMisplacedWarning,
    stacklevel=2,
  )


def carried_tangent(opt_state):
  """The tangent in ``opt_state`` as it stands, with no accuracy check (for online use: tuning ``s``)."""
  return handed_out(find_tangent_state(opt_state))


def tangent_of(opt_state):
  """The tangent ``τ`` (shaped like params) from any optimizer state containing one.

  Works on a plain optax state, a chain's or ``inject_hyperparams``' state, or an
  ``nnx.Optimizer`` (or its ``opt_state``). Pure and jit-safe. Called on a concrete state
  whose tangent is not certified (residual above its tolerance, or diverged) it warns
  (:class:`TangentInaccurateWarning` / :class:`TangentDivergedWarning`); inside ``jit`` read
  ``residual`` from the state instead.
  """
  state = find_tangent_state(opt_state)
  tangent = handed_out(state)
  if not any(isinstance(_pure(x), jax.core.Tracer) for x in (state.residual, state.diverged)):
    d = tangent_diagnostics(opt_state)
    if d.diverged:
      warnings.warn(
        "curiojax: this regularity tangent diverged and is frozen; see curiojax.check_tangent.",
        TangentDivergedWarning,
        stacklevel=2,
      )
    elif not d.accurate:
      warnings.warn(inaccuracy_message(d, d.tolerance), TangentInaccurateWarning, stacklevel=2)
  return tangent


def check_tangent(opt_state, tol: float | None = None):
  """Return the tangent if it is certified, else raise (host-side: call it outside ``jax.jit``).

  Args:
    opt_state: any optimizer state containing a :func:`regularity_tangent` (or an ``nnx.Optimizer``).
    tol: relative residual allowed (default: the transformation's ``tolerance``).

  Raises:
    TangentDivergedError: the recursion diverged.
    TangentInaccurateError: the relative residual exceeds ``tol``; the message names the
      likely cause and the fix (usually :func:`curiojax.finish_tangent`).
    TypeError: called on a traced state (inside ``jax.jit``).
  """
  _host_side(find_tangent_state(opt_state), "check_tangent")
  d = tangent_diagnostics(opt_state)
  tol = d.tolerance if tol is None else float(tol)
  if not tol > 0:
    raise ValueError(f"tol must be positive, got {tol!r}.")
  if d.diverged:
    raise TangentDivergedError(
      f"The regularity tangent diverged (relative residual {d.residual:.3g} after {d.count} updates and "
      f"{d.restarts} back-offs); see the TangentDivergedWarning for the cause. Finish it from zero with "
      "curiojax.finish_tangent, or use curvature='gauss_newton' with damping > 0 for non-convex models."
    )
  if not _certifies(d.residual, d.exact, tol):
    raise TangentInaccurateError(inaccuracy_message(d, tol))
  return carried_tangent(opt_state)

"""Leave-one-out cross-validation for choosing the strength ``s``.

Convention (``method.md``): ``F(θ, s) = (1/n) Σᵢ ℓ(zᵢ, θ) + R(θ, s)``. Leaving ``zᵢ`` out means
dropping its term from the sum, ``F₋ᵢ = F − ℓ(zᵢ, θ)/n``, with the ``1/n`` and ``s`` unchanged:
the classical ridge LOO, and the influence-function convention (up-weighting ``zᵢ`` by
``ε = −1/n``). (Refitting the mean over the other ``n − 1`` points at strength ``s`` is the
same as ours at strength ``s·(n − 1)/n``.)

Linear in the parameters (``f = φ(x)ᵀθ``, ``R = s·½‖θ‖²``, squared loss): with features ``Φ``,
``θ* = (ΦᵀΦ + nsI)⁻¹Φᵀy``, the hat matrix is ``Φ(ΦᵀΦ + nsI)⁻¹Φᵀ`` and the leave-one-out
residual is exactly

    eᵢ = (yᵢ − ŷᵢ) / (1 − hᵢᵢ).

One thin SVD of ``Φ`` serves a whole grid of strengths (:func:`loocv_grid`).

Other models (:func:`loocv_influence`): one Newton step from ``θ*`` on ``F₋ᵢ``,

    θ₋ᵢ ≈ θ* + H₋ᵢ⁻¹ ∇ℓᵢ / n,     H₋ᵢ = H − Jᵢᵀ Λᵢ Jᵢ / n,

with ``H`` the curvature of ``F`` (Hessian or Gauss-Newton, plus damping), ``Jᵢ`` the model's
Jacobian at ``xᵢ`` and ``Λᵢ = ∇²_f ℓᵢ``. Woodbury turns the downdate into an ``m × m`` solve
(``m`` outputs): ``H₋ᵢ⁻¹Jᵢᵀ = H⁻¹Jᵢᵀ (I − ΛᵢKᵢ)⁻¹`` with ``Kᵢ = JᵢH⁻¹Jᵢᵀ/n``; for squared loss
and one output that is the familiar ``1/(1 − hᵢ)``. Exact for models linear in their parameters
with squared loss; ``correction="none"`` gives the plain influence function ``H⁻¹∇ℓᵢ/n``.

Example:
  >>> import jax.numpy as jnp
  >>> x = jnp.linspace(-1, 1, 12); phi = jnp.stack([x**k for k in range(4)], 1)
  >>> y = jnp.sin(3 * x)
  >>> best, errors = loocv_grid(phi, y, jnp.logspace(-6, 0, 13))
  >>> errors.shape
  (13,)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from curiojax.tangent.losses import PredictionLoss, check_prediction_loss, check_xy
from curiojax.tangent.regularizers import Regularizer, get_regularizer
from curiojax.tangent.solvers import dense_curvature

CORRECTIONS = ("newton", "none")


class LeaveOneOut(NamedTuple):
  """Leave-one-out predictions at the training points."""

  predictions: jax.Array  # (n, *out): f(θ₋ᵢ, xᵢ).
  residuals: jax.Array  # (n, *out): yᵢ − f(θ₋ᵢ, xᵢ).
  leverages: jax.Array  # (n,): hᵢᵢ (linear), tr(ΛᵢKᵢ) (influence).
  mse: jax.Array  # scalar: mean over i of ‖yᵢ − f(θ₋ᵢ, xᵢ)‖².


def _check_features(features, y):
  features, y = jnp.asarray(features), jnp.asarray(y)
  if features.ndim != 2 or features.shape[0] == 0:
    raise ValueError(f"features must be a non-empty (n, p) matrix, got shape {features.shape}.")
  if y.ndim not in (1, 2) or y.shape[0] != features.shape[0]:
    raise ValueError(f"y must have shape (n,) or (n, m) with n = {features.shape[0]}, got {y.shape}.")
  if not jnp.issubdtype(features.dtype, jnp.floating):
    features = features.astype(jnp.result_type(float))
  for name, a in (("features", features), ("y", y)):
    if not bool(jnp.all(jnp.isfinite(a))):
      raise ValueError(f"{name} contains NaN or Inf.")
  return features, y.astype(features.dtype)


def _alphas(strengths, n, log_strength, dtype):
  s = jnp.asarray(strengths, dtype)
  if not bool(jnp.all(jnp.isfinite(s))):
    raise ValueError(f"strengths must be finite, got {strengths!r}.")
  if not log_strength and bool(jnp.any(s < 0)):
    raise ValueError(f"strengths must be >= 0 (or pass log_strength=True), got {strengths!r}.")
  return n * (jnp.exp(s) if log_strength else s)


@jax.jit
def _loo_svd(u, sv, uty, y, alpha):
  shrink = sv**2 / (sv**2 + alpha)  # (r,)
  fitted = u @ (shrink[:, None] * uty)  # (n, m)
  h = jnp.sum(u**2 * shrink, axis=1)  # (n,)
  residuals = (y - fitted) / (1.0 - h)[:, None]
  return fitted, residuals, h


def _svd(features, y):
  u, sv, _ = jnp.linalg.svd(features, full_matrices=False)
  y2 = y.reshape(y.shape[0], -1)
  return u, sv, u.T @ y2, y2


def polynomial_features(x, degree: int) -> jax.Array:
  """``[1, x, x², …, x^degree]`` for a 1-D ``x`` (or ``(n, 1)``), shape ``(n, degree + 1)``."""
  x = jnp.asarray(x)
  if x.ndim == 2 and x.shape[1] == 1:
    x = x[:, 0]
  if x.ndim != 1:
    raise ValueError(f"x must be 1-D (or (n, 1)), got shape {x.shape}.")
  if int(degree) != degree or degree < 0:
    raise ValueError(f"degree must be a non-negative integer, got {degree!r}.")
  return jnp.stack([x**k for k in range(int(degree) + 1)], axis=1)


def ridge_fit(features, y, strength, *, log_strength: bool = False) -> jax.Array:
  """``θ*(s) = (ΦᵀΦ + nsI)⁻¹Φᵀy``: the minimiser of ``mean ½(φᵀθ − y)² + s·½‖θ‖²`` (via SVD)."""
  features, y = _check_features(features, y)
  alpha = _alphas(strength, features.shape[0], log_strength, features.dtype)
  u, sv, vt = jnp.linalg.svd(features, full_matrices=False)
  coef = (sv / (sv**2 + alpha))[:, None] * (u.T @ y.reshape(y.shape[0], -1))
  return (vt.T @ coef).reshape((features.shape[1],) + y.shape[1:])


def loocv_linear(features, y, strength, *, log_strength: bool = False) -> LeaveOneOut:
  """Closed-form leave-one-out for ridge on features ``Φ`` (mean convention).

  Args:
    features: ``Φ``, shape ``(n, p)`` (include a constant column for an intercept; every
      coefficient is penalised, as with ``curiojax.l2()``).
    y: targets, ``(n,)`` or ``(n, m)``.
    strength: ``s`` in ``R = s·½‖θ‖²`` (``eˢ`` with ``log_strength=True``).

  Returns:
    :class:`LeaveOneOut` with ``eᵢ = (yᵢ − ŷᵢ)/(1 − hᵢᵢ)``, ``hᵢᵢ`` the diagonal of
    ``Φ(ΦᵀΦ + nsI)⁻¹Φᵀ``.
  """
  features, y = _check_features(features, y)
  alpha = _alphas(strength, features.shape[0], log_strength, features.dtype)
  if alpha.ndim != 0:
    raise ValueError(f"strength must be a scalar here (use loocv_grid for several), got shape {alpha.shape}.")
  u, sv, uty, y2 = _svd(features, y)
  _, res, h = _loo_svd(u, sv, uty, y2, alpha)
  res = res.reshape(y.shape)
  return LeaveOneOut(y - res, res, h, jnp.mean(jnp.sum(res.reshape(y.shape[0], -1) ** 2, axis=1)))


def loocv_grid(features, y, strengths, *, log_strength: bool = False) -> tuple[jax.Array, jax.Array]:
  """Leave-one-out error of ridge over a grid of strengths; one SVD for the whole grid.

  Args:
    features, y: as in :func:`loocv_linear`.
    strengths: 1-D grid of ``s`` (log strengths with ``log_strength=True``).

  Returns:
    ``(best, errors)``: the grid value with the smallest mean squared LOO residual, and that
    error for every grid value, shape ``(len(strengths),)``.
  """
  features, y = _check_features(features, y)
  strengths = jnp.asarray(strengths, features.dtype)
  if strengths.ndim != 1 or strengths.shape[0] == 0:
    raise ValueError(f"strengths must be a non-empty 1-D grid, got shape {strengths.shape}.")
  alphas = _alphas(strengths, features.shape[0], log_strength, features.dtype)
  u, sv, uty, y2 = _svd(features, y)
  errors = jax.vmap(lambda a: jnp.mean(jnp.sum(_loo_svd(u, sv, uty, y2, a)[1] ** 2, axis=1)))(alphas)
  return strengths[jnp.argmin(errors)], errors


def loocv_influence(
  loss: PredictionLoss,
  params,
  x,
  y,
  *,
  regularizer: str | Regularizer = "l2",
  strength=1e-2,
  curvature: str = "hessian",
  damping=0.0,
  correction: str = "newton",
) -> LeaveOneOut:
  """Approximate leave-one-out by one Newton step per point from the trained ``θ*``.

  ``θ₋ᵢ = θ* + H⁻¹Jᵢᵀ(I − ΛᵢKᵢ)⁻¹γᵢ/n`` with ``γᵢ = ∇_f ℓ(f(θ*, xᵢ), yᵢ)``,
  ``Λᵢ = ∇²_f ℓ``, ``Kᵢ = JᵢH⁻¹Jᵢᵀ/n`` and ``H`` the dense curvature (``d × d``; small models).
  Exact for linear-in-parameter models with squared loss; a good approximation near a
  well-converged minimum otherwise. Predictions are the model evaluated at each ``θ₋ᵢ``.

  Args:
    loss: :func:`curiojax.prediction_loss` of the model (unweighted mean).
    params: trained parameters ``θ*(s)`` (converged: the step assumes ``∇F(θ*) = 0``).
    x, y: the training set (the ``n`` points to leave out).
    regularizer, strength, curvature, damping: as in :func:`curiojax.exact_tangent`.
    correction: ``"newton"`` (downdate ``H`` by the point's Gauss-Newton term) or ``"none"``
      (influence function ``H⁻¹∇ℓᵢ/n``).

  Returns:
    :class:`LeaveOneOut`.
  """
  check_prediction_loss(loss)
  if correction not in CORRECTIONS:
    raise ValueError(f"Unknown correction {correction!r}; choose one of {CORRECTIONS}.")
  x, y = check_xy(x, y)
  regularizer = get_regularizer(regularizer)
  return _loocv_influence(
    loss, regularizer, curvature, correction, params, x, y, jnp.asarray(strength), jnp.asarray(damping)
  )


def _loocv_influence_impl(loss, regularizer, curvature, correction, params, x, y, strength, damping):
  n = x.shape[0]
  batch = dict(x=x, y=y)
  h = dense_curvature(
    loss, params, batch, regularizer=regularizer, strength=strength, curvature=curvature, damping=damping
  )
  flat, unravel = ravel_pytree(params)
  one = lambda v, xi: loss.model_fn(unravel(v), xi[None])[0]
  preds = loss.model_fn(params, x)
  out_shape = preds.shape[1:]
  m = int(np.prod(out_shape))
  jac = jax.vmap(lambda xi: jax.jacrev(one)(flat, xi).reshape(m, -1))(x)  # (n, m, d)
  flat_loss = lambda f, yi: loss.loss(f.reshape(out_shape), yi)
  gam = jax.vmap(jax.grad(flat_loss))(preds.reshape(n, m), y)  # (n, m)
  lam = jax.vmap(jax.hessian(flat_loss))(preds.reshape(n, m), y)  # (n, m, m)
  a = jnp.linalg.solve(h, jac.reshape(n * m, -1).T).T.reshape(n, m, -1)  # rows of H⁻¹Jᵢᵀ
  k = jnp.einsum("imd,ind->imn", jac, a) / n  # (n, m, m)
  lk = lam @ k
  if correction == "newton":
    coef = jnp.linalg.solve(jnp.eye(m, dtype=k.dtype) - lk, gam[..., None])[..., 0]
  else:
    coef = gam
  delta = jnp.einsum("imd,im->id", a, coef) / n
  loo = jax.vmap(one)(flat + delta, x).reshape(preds.shape)
  res = y.reshape(preds.shape) - loo
  lev = jnp.trace(lk, axis1=1, axis2=2)
  return LeaveOneOut(loo, res, lev, jnp.mean(jnp.sum(res.reshape(n, -1) ** 2, axis=1)))


_loocv_influence = jax.jit(_loocv_influence_impl, static_argnums=(0, 1, 2, 3))

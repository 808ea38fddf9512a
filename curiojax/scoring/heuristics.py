"""The score heuristics as pure functions of one chunk's predictions and JVPs.

Every heuristic takes ``jt = J_x τ`` of shape ``(c, k, *out)`` (``c`` rows, ``k`` tangents)
and the predictions ``f`` of shape ``(c, *out)``, and returns ``(c, k)`` scores (``"jvp"``:
``jt`` itself). With ``g = ∇_fℓ(f, y)`` (output space only, no per-example parameter gradient):

- ``jvp``: ``J_x τ``;
- ``signed``: ``c = g · J_x τ``; ``squared``: ``c²``; ``magnitude``: ``|c|``;
- ``expected_squared``: ``E_y[c²] = (J_xτ)ᵀ E[g gᵀ] (J_xτ)``, by the closed form the loss
  declares (:func:`curiojax.tangent.losses.closed_form`; ``CLOSED_FORMS`` here), by a given
  ``gradient_covariance`` ``M(f) = E[g gᵀ]``, or else by Gauss-Hermite quadrature over
  ``y ~ N(f, σ²)`` per output.

They dispatch on what the loss declares, never on which function it is: a user loss with
``closed_form = "squared_error"`` gets ``σ²‖J_xτ‖²``; one without gets quadrature.

Example:
  >>> import jax.numpy as jnp
  >>> from curiojax.tangent.losses import squared_error
  >>> f, jt = jnp.zeros((2, 1)), jnp.array([[[1.0]], [[2.0]]])
  >>> expected_squared(jt, f, loss=squared_error, sigma2=jnp.ones((2, 1)))[:, 0].tolist()
  [1.0, 4.0]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from curiojax.tangent.losses import closed_form


def _out_axes(jt) -> tuple[int, ...]:
  return tuple(range(2, jt.ndim))


def jvp(jt, preds=None, **_):
  """``J_x τ`` unchanged: how fast the prediction at ``x`` moves with the strength ``s``."""
  return jt


def signed(jt, preds, *, loss: Callable, y, **_):
  """``c = ∇_fℓ(f, y) · J_x τ``, one per row and tangent."""
  g = jax.vmap(jax.grad(loss))(preds, y)
  return jnp.sum(g[:, None] * jt, axis=_out_axes(jt))


def squared(jt, preds, **kw):
  """``c²``."""
  return jnp.square(signed(jt, preds, **kw))


def magnitude(jt, preds, **kw):
  """``|c|``."""
  return jnp.abs(signed(jt, preds, **kw))


def _squared_error_form(jt, preds, *, sigma2, **_):
  """``σ² ‖J_x τ‖²`` (``σ²`` broadcast to the predictions' shape)."""
  return jnp.sum(sigma2[:, None] * jnp.square(jt), axis=_out_axes(jt))


def _gaussian_nll_form(jt, preds, **_):
  """The Fisher information of ``(μ, log v)``: ``(J_xτ)_μ² / v + ½ (J_xτ)_{log v}²``."""
  fisher = jnp.square(jt[..., 0]) * jnp.exp(-preds[..., 1])[:, None] + 0.5 * jnp.square(jt[..., 1])
  return jnp.sum(fisher, axis=tuple(range(2, fisher.ndim)))


CLOSED_FORMS: dict[str, Callable] = {"squared_error": _squared_error_form, "gaussian_nll": _gaussian_nll_form}


def hermite_rule(points: int) -> tuple[np.ndarray, np.ndarray]:
  """Nodes/weights for ``E[g(f + σZ)]``, ``Z ~ N(0,1)``: ``Σ w_q g(f + σ√2 t_q)``."""
  t, w = np.polynomial.hermite.hermgauss(points)
  return np.sqrt(2.0) * t, w / np.sqrt(np.pi)


def _quadrature_form(jt, preds, *, loss, sigma2, quadrature, **_):
  """``E[(g·j)²] = Σ_o Var(g_o) j_o² + (Σ_o E[g_o] j_o)²`` over ``y ~ N(f, σ²)`` per output."""
  nodes, weights = quadrature
  sigma, grad = jnp.sqrt(sigma2), jax.vmap(jax.grad(loss))
  gs = jnp.stack([grad(preds, preds + sigma * t) for t in nodes])
  w = jnp.asarray(weights, preds.dtype).reshape((-1,) + (1,) * preds.ndim)
  mean, second = jnp.sum(w * gs, 0), jnp.sum(w * jnp.square(gs), 0)
  var = jnp.maximum(second - jnp.square(mean), 0.0)
  axes = _out_axes(jt)
  return jnp.sum(var[:, None] * jnp.square(jt), axis=axes) + jnp.square(jnp.sum(mean[:, None] * jt, axis=axes))


def expected_squared(jt, preds, *, loss, sigma2, gradient_covariance=None, quadrature=None, **_):
  """``E_y[c²] = (J_xτ)ᵀ E[∇_fℓ∇_fℓᵀ] (J_xτ)`` under the model's predictive distribution of ``y``.

  ``gradient_covariance`` (``M(f) -> (p, p)``) first, then the loss's declared closed form
  (``CLOSED_FORMS``), then quadrature (``quadrature``: :func:`hermite_rule`'s pair, default 32 points).
  """
  if gradient_covariance is not None:
    cov = jax.vmap(gradient_covariance)(preds)
    flat = jt.reshape(jt.shape[:2] + (-1,))
    return jnp.einsum("ckp,cpq,ckq->ck", flat, cov.reshape(cov.shape[0], flat.shape[2], flat.shape[2]), flat)
  form = CLOSED_FORMS.get(closed_form(loss))
  if form is not None:
    return form(jt, preds, sigma2=sigma2)
  quadrature = hermite_rule(32) if quadrature is None else quadrature
  return _quadrature_form(jt, preds, loss=loss, sigma2=sigma2, quadrature=quadrature)


HEURISTIC_FNS: dict[str, Callable] = {
  "jvp": jvp,
  "signed": signed,
  "squared": squared,
  "magnitude": magnitude,
  "expected_squared": expected_squared,
}
HEURISTICS = tuple(HEURISTIC_FNS)
LABELLED_HEURISTICS = ("signed", "squared", "magnitude")


def jvp_along(model_fn: Callable, params, tangent, x, k: int | None):
  """Predictions ``f(θ, x)`` ``(c, *out)`` and ``J_x τ`` ``(c, k', *out)`` (``k' = 1`` for one tangent).

  One forward-mode JVP of the batched model; ``k`` stacked tangents are a ``vmap`` over it.
  """
  f = lambda p: model_fn(p, x)
  if k is None:
    preds, jt = jax.jvp(f, (params,), (tangent,))
    return preds, jt[:, None]
  preds, jt = jax.vmap(lambda t: jax.jvp(f, (params,), (t,)), out_axes=(None, 0))(tangent)
  return preds, jnp.moveaxis(jt, 0, 1)

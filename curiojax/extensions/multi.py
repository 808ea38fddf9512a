"""Several hyperparameters at once: ``k`` forward tangents, or one adjoint solve per query.

With strengths ``s = (s₁ … s_k)`` (per-layer strengths with :func:`curiojax.group_l2`, or the
shared/per-user strengths of :mod:`curiojax.extensions.hierarchical`) there is one tangent per strength,
``τ_k = −(C + λI)⁻¹ρ_k`` with ``ρ_k = ∂_{s_k}∇_θR``; :func:`curiojax.regularity_tangent`
carries all ``k`` when ``strength`` is a vector (storage ``(1 + k)`` copies of θ). The
curiosity of a labelled point ``z`` for hyperparameter ``k`` is

    c_k(z) = ∇_θℓ(z)ᵀ τ_k                        (forward: k tangents, any number of queries)
           = −λ(z)ᵀ ρ_k,   λ(z) = (C + λI)⁻¹∇_θℓ(z)   (adjoint: one solve per query, any k).

The forward form wins when queries outnumber hyperparameters (pools); the adjoint form when
hyperparameters outnumber queries (``method.md``). Both give the same numbers.

Example:
  >>> import jax, jax.numpy as jnp, curiojax
  >>> x = jax.random.normal(jax.random.key(0), (32, 4)); y = x.sum(1)
  >>> loss = curiojax.prediction_loss(lambda p, x: x[:, :2] @ p["a"] + x[:, 2:] @ p["b"])
  >>> params = {"a": jnp.ones(2), "b": jnp.ones(2)}
  >>> reg = curiojax.group_l2(layer_groups(params)); s = jnp.array([0.1, 0.2])
  >>> batch = dict(x=x, y=y)
  >>> tau = curiojax.exact_tangent(loss, params, batch, regularizer=reg, strength=s)
  >>> fwd = signed_curiosities(loss, params, tau, x[:5], y[:5] + 1.0)
  >>> adj = adjoint_curiosities(loss, params, batch, x[:5], y[:5] + 1.0, regularizer=reg, strength=s)
  >>> bool(jnp.allclose(fwd, adj, rtol=1e-4, atol=1e-6)), fwd.shape
  (True, (5, 2))
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
from jax.flatten_util import ravel_pytree

from curiojax.tangent.losses import PredictionLoss, check_prediction_loss, check_xy
from curiojax.tangent.operator import TangentOperator
from curiojax.tangent.solvers import solve
from curiojax.tangent.state import align_tangent

ADJOINT_SOLVERS = ("dense", "data_space", "cg")


def layer_groups(params) -> dict[str, int]:
  """``{key: index}`` over the top-level keys of a dict of params: one strength per layer.

  Pass it to :func:`curiojax.group_l2`; the strength vector then has ``len(params)`` entries,
  in the (sorted) key order of the returned dict.
  """
  if not isinstance(params, Mapping) or not params:
    raise TypeError(f"layer_groups needs a non-empty dict of params, got {type(params).__name__}.")
  return {key: i for i, key in enumerate(sorted(params))}


def signed_curiosities(loss: PredictionLoss, params, tangent, x, y) -> jax.Array:
  """Forward form ``c_k(zᵢ) = ∇_θℓ(zᵢ)ᵀτ_k``: one JVP of the per-example losses per tangent.

  Args:
    loss: :func:`curiojax.prediction_loss` of the model.
    params: trained parameters.
    tangent: one tangent shaped like params, or ``k`` stacked on a leading axis.
    x, y: labelled queries.

  Returns:
    ``(n,)`` for one tangent, ``(n, k)`` for ``k``.
  """
  check_prediction_loss(loss)
  x, y = check_xy(x, y)
  params, tangent, k = align_tangent(params, tangent)
  per_example = lambda p: loss.per_example(loss.model_fn(p, x), y)
  one = lambda t: jax.jvp(per_example, (params,), (t,))[1]
  return one(tangent) if k is None else jax.vmap(one, out_axes=1)(tangent)


def per_example_gradients(loss: PredictionLoss, params, x, y):
  """``∇_θℓ(zᵢ)`` for each query, as a pytree with a leading axis ``n`` (small query sets)."""
  check_prediction_loss(loss)
  x, y = check_xy(x, y)
  one = lambda xi, yi: jax.grad(lambda p: loss.loss(loss.model_fn(p, xi[None])[0], yi))(params)
  return jax.vmap(one)(x, y)


def adjoint_curiosities(
  loss: PredictionLoss,
  params,
  batch: Mapping[str, Any],
  x,
  y,
  *,
  solver: str = "dense",
  tol: float = 1e-6,
  maxiter: int | None = None,
  **system,
) -> jax.Array:
  """Adjoint form ``c_k(zᵢ) = −λ(zᵢ)ᵀρ_k`` with ``λ(zᵢ) = (C + λI)⁻¹∇_θℓ(zᵢ)``.

  No tangent is needed: one linear solve per query (``solver="cg"``, matrix-free) or one
  factorisation for all (``"dense"``, small models), then a dot product per hyperparameter.

  Args:
    loss: :func:`curiojax.prediction_loss` of the model (the training data loss).
    params: trained parameters ``θ*``.
    batch: the training set as ``loss``'s keyword arguments (defines ``C``).
    x, y: labelled queries.
    solver, tol, maxiter: ``"dense"`` or ``"cg"`` and the CG settings.
    system: ``regularizer``, ``strength``, ``curvature``, ``damping``, as in
      :func:`curiojax.exact_tangent`; ``strength`` scalar or a vector of ``k``.

  Returns:
    ``(n,)`` for a scalar strength, ``(n, k)`` for ``k`` strengths; equal to
    :func:`signed_curiosities` with the exact tangents.
  """
  check_prediction_loss(loss)
  if solver not in ADJOINT_SOLVERS:
    raise ValueError(f"Unknown solver {solver!r}; choose one of {ADJOINT_SOLVERS}.")
  op = TangentOperator.build(loss, params, batch, **system)
  x, y = check_xy(x, y)
  return _adjoint(solver, tol, maxiter, op, x, y)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _adjoint(solver, tol, maxiter, op: TangentOperator, x, y):
  rho, many = op.rho(), op.stacked
  grads = per_example_gradients(op.system.value_fn, op.params, x, y)
  ravel = lambda t: ravel_pytree(t)[0]
  r_mat = jax.vmap(ravel)(rho) if many else ravel(rho)[None]  # (k, d)
  # λ(zᵢ) = (C + λI)⁻¹∇ℓ(zᵢ): one preconditioner (a factorisation) for all queries, CG per query
  maxiter = 10 * op.size if maxiter is None else maxiter
  lam, _ = solve(op, grads, method=solver, tol=tol, maxiter=maxiter, stacked=True)
  c = -jax.vmap(ravel)(lam) @ r_mat.T  # (n, k)
  return c if many else c[:, 0]

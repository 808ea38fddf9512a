"""Reference solvers for ``τ = −(C + λI)⁻¹ρ``: dense, conjugate gradients, LiSSA; diagnostics.

These are post-hoc counterparts of the carried tangent: oracles in tests, a check on a
tangent's accuracy (:func:`relative_residual`), and a way to finish it after training
(:func:`polish_tangent`, CG warm-started from the carried tangent).

Example:
  >>> import jax, jax.numpy as jnp, curiojax
  >>> x = jax.random.normal(jax.random.key(0), (50, 3)); y = x.sum(1)
  >>> loss = curiojax.prediction_loss(lambda p, x: x @ p)
  >>> theta = jnp.ones(3)
  >>> tau = curiojax.exact_tangent(loss, theta, dict(x=x, y=y), regularizer=curiojax.l2(), strength=0.1)
  >>> H = x.T @ x / 50 + 0.1 * jnp.eye(3)
  >>> bool(jnp.allclose(tau, -jnp.linalg.solve(H, theta), rtol=1e-4))
  True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from curiojax.curvature import TangentSystem
from curiojax.regularizers import Regularizer, get_regularizer
from curiojax.tangent import _tree_norm, tangent_step

SOLVERS = ("auto", "dense", "cg")
DENSE_LIMIT = 4096  # parameters; above this "auto" uses conjugate gradients


def _system(value_fn, regularizer, curvature) -> TangentSystem:
  if not callable(value_fn):
    raise TypeError(f"value_fn must be callable value_fn(params, **batch), got {type(value_fn).__name__}.")
  return TangentSystem(value_fn, get_regularizer(regularizer), curvature)


def _check_batch(batch):
  if not isinstance(batch, Mapping):
    raise TypeError(f"batch must be a dict of value_fn's keyword arguments, got {type(batch).__name__}.")
  return dict(batch)


def dense_curvature(
  value_fn: Callable,
  params,
  batch: Mapping[str, Any],
  *,
  regularizer: str | Regularizer = "l2",
  strength=1e-2,
  curvature: str = "hessian",
  damping=0.0,
  chunk_size: int = 256,
) -> jax.Array:
  """The matrix ``C + λI`` (``d × d`` over the ravelled params), column by column from HVPs."""
  system, batch = _system(value_fn, regularizer, curvature), _check_batch(batch)
  return _dense_matrix(system, params, strength, damping, batch, chunk_size)


def _dense_matrix(system: TangentSystem, params, strength, damping, batch, chunk_size: int = 256) -> jax.Array:
  flat, unravel = ravel_pytree(params)
  matvec = lambda e: ravel_pytree(system.curvature_product(params, strength, damping, unravel(e), batch))[0]
  return jax.lax.map(matvec, jnp.eye(flat.size, dtype=flat.dtype), batch_size=chunk_size).T


def solve_curvature(
  system: TangentSystem,
  params,
  strength,
  damping,
  batch,
  rhs,
  *,
  stacked: bool,
  solver: str,
  x0=None,
  tol: float = 1e-6,
  maxiter: int | None = None,
  sequential: bool = False,
):
  """``(C + λI)⁻¹b`` for ``rhs`` shaped like params, or a stack of them (``stacked``, leading axis).

  ``solver="dense"`` factorises the matrix once for every right-hand side; ``"cg"`` runs one
  matrix-free CG per right-hand side, vmapped, or one after another with ``sequential``.
  """
  ravel = lambda t: ravel_pytree(t)[0]
  _, unravel = ravel_pytree(params)
  if solver == "dense":
    a = _dense_matrix(system, params, strength, damping, batch)
    if stacked:
      return jax.vmap(unravel)(jnp.linalg.solve(a, jax.vmap(ravel)(rhs).T).T)
    return unravel(jnp.linalg.solve(a, ravel(rhs)))
  matvec = lambda v: system.curvature_product(params, strength, damping, v, batch)
  one = lambda b, start: jax.scipy.sparse.linalg.cg(matvec, b, x0=start, tol=tol, maxiter=maxiter)[0]
  if x0 is None:
    x0 = jax.tree.map(jnp.zeros_like, rhs)
  if not stacked:
    return one(rhs, x0)
  return jax.lax.map(lambda pair: one(*pair), (rhs, x0)) if sequential else jax.vmap(one)(rhs, x0)


def exact_tangent(
  value_fn: Callable,
  params,
  batch: Mapping[str, Any],
  *,
  regularizer: str | Regularizer = "l2",
  strength=1e-2,
  curvature: str = "hessian",
  damping=0.0,
  solver: str = "auto",
  x0=None,
  tol: float = 1e-6,
  maxiter: int | None = None,
):
  """``τ = −(C + λI)⁻¹ρ`` at ``params`` on the full ``batch``, by dense solve or CG.

  Args:
    value_fn: mean data loss ``value_fn(params, **batch)``.
    params: where to linearise (normally trained parameters ``θ*``).
    batch: the whole training set as ``value_fn``'s keyword arguments.
    regularizer, strength, curvature, damping: as in :func:`curiojax.regularity_tangent`.
    solver: ``"dense"`` (forms the matrix; small models), ``"cg"`` (matrix-free), or
      ``"auto"`` (dense up to 4096 parameters).
    x0, tol, maxiter: CG start (e.g. a carried tangent), relative tolerance, iterations.

  Returns:
    The tangent, shaped like params (leading axis ``k`` for ``k`` strengths).
  """
  if solver not in SOLVERS:
    raise ValueError(f"Unknown solver {solver!r}; choose one of {SOLVERS}.")
  system, batch = _system(value_fn, regularizer, curvature), _check_batch(batch)
  if solver == "auto":
    solver = "dense" if ravel_pytree(params)[0].size <= DENSE_LIMIT else "cg"
  minus_rho = jax.tree.map(jnp.negative, system.rho(params, strength))
  return solve_curvature(
    system,
    params,
    strength,
    damping,
    batch,
    minus_rho,
    stacked=jnp.ndim(strength) == 1,
    solver=solver,
    x0=x0,
    tol=tol,
    maxiter=maxiter,
  )


def polish_tangent(
  value_fn: Callable,
  params,
  tangent,
  batch: Mapping[str, Any],
  *,
  regularizer: str | Regularizer = "l2",
  strength=1e-2,
  curvature: str = "hessian",
  damping=0.0,
  tol: float = 1e-6,
  maxiter: int = 100,
):
  """Finish a carried tangent after training: CG on ``(C + λI)v = −ρ`` started from it.

  Put the result back into an optimizer state with ``optax.tree.set(state, tangent=...)``.
  """
  return exact_tangent(
    value_fn,
    params,
    batch,
    regularizer=regularizer,
    strength=strength,
    curvature=curvature,
    damping=damping,
    solver="cg",
    x0=tangent,
    tol=tol,
    maxiter=maxiter,
  )


def relative_residual(
  value_fn: Callable,
  params,
  tangent,
  batch: Mapping[str, Any],
  *,
  regularizer: str | Regularizer = "l2",
  strength=1e-2,
  curvature: str = "hessian",
  damping=0.0,
) -> jax.Array:
  """``‖(C + λI)v + ρ‖ / ‖ρ‖``: zero for the exact tangent; the accuracy check users need."""
  system, batch = _system(value_fn, regularizer, curvature), _check_batch(batch)
  product = system.product(params, strength, damping, tangent, batch)
  return _tree_norm(product) / _tree_norm(system.rho(params, strength))


def lissa(
  value_fn: Callable,
  params,
  batches: Mapping[str, Any],
  *,
  scale: float,
  regularizer: str | Regularizer = "l2",
  strength=1e-2,
  curvature: str = "hessian",
  damping=0.0,
  init=None,
  return_iterates: bool = False,
):
  """LiSSA for ``−(C + λI)⁻¹ρ``: ``v ← v − (1/scale)((C_B + λI)v + ρ)`` over a stream of batches.

  With the parameters frozen this is exactly the tangent recursion of
  :func:`curiojax.regularity_tangent` with ``tangent_learning_rate = 1/scale``.

  Args:
    batches: ``value_fn``'s keyword arguments stacked on a leading axis, one entry per step.
    scale: must exceed ``λ_max(C + λI)/2`` for convergence.
    init: starting vector (default zeros).
    return_iterates: also return every iterate (stacked).
  """
  system, batches = _system(value_fn, regularizer, curvature), _check_batch(batches)
  if not scale > 0:
    raise ValueError(f"scale must be positive, got {scale!r}.")
  if init is None:
    rho = system.rho(params, strength)
    init = jax.tree.map(jnp.zeros_like, rho)

  def step(v, batch):
    v = tangent_step(v, system.product(params, strength, damping, v, batch), 1.0 / scale)
    return v, (v if return_iterates else None)

  final, iterates = jax.lax.scan(step, init, batches)
  return (final, iterates) if return_iterates else final

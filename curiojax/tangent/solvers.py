"""Solvers for ``τ = −(C + λI)⁻¹ρ``: dense, conjugate gradients, LiSSA; finishing; diagnostics.

These are post-hoc counterparts of the carried tangent: oracles in tests, a check on a
tangent's accuracy (:func:`relative_residual`), and the finishing step
(:func:`finish_tangent`): after training, the carried tangent is solved to a tolerance on the
training set, by a dense factorisation for small models or by conjugate gradients started
from the carried tangent. For Gauss-Newton on ``n`` points ``C + λI`` is ``λ``-shifted rank
``≤ n`` (times the outputs), so CG needs at most about ``n`` products.

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

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from curiojax.tangent.curvature import TangentSystem
from curiojax.tangent.regularizers import Regularizer, get_regularizer
from curiojax.tangent.transform import (
  RegularityTangentState,
  _pure,
  _tangent_state,
  handed_out,
  relative_norm,
  restructure,
  tangent_step,
)

SOLVERS = ("auto", "dense", "cg")
DENSE_LIMIT = 4096  # parameters; above this exact_tangent's "auto" uses conjugate gradients
FINISH_DENSE_LIMIT = 1024  # parameters; finish_tangent factorises up to here (p products, batched)
FINISH_TOLERANCE = 1e-3  # relative residual finish_tangent solves to (well inside the tolerance)
FINISH_MAXITER = 1000  # CG products finish_tangent may spend


def _system(value_fn, regularizer, curvature) -> TangentSystem:
  if not callable(value_fn):
    raise TypeError(f"value_fn must be callable value_fn(params, **batch), got {type(value_fn).__name__}.")
  return TangentSystem(value_fn, get_regularizer(regularizer), curvature)


def _check_batch(batch):
  if not isinstance(batch, Mapping):
    raise TypeError(f"batch must be a dict of value_fn's keyword arguments, got {type(batch).__name__}.")
  return dict(batch)


def _check_solver(solver: str) -> str:
  if solver not in SOLVERS:
    raise ValueError(f"Unknown solver {solver!r}; choose one of {SOLVERS}.")
  return solver


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
  return system.dense(params, strength, damping, batch, chunk_size)


def conjugate_gradients(matvec, b, x0, *, tol: float, maxiter: int, restarts: int = 2):
  """CG on ``A x = b`` (``A`` symmetric positive definite) to ``‖b − Ax‖ ≤ tol‖b‖``.

  Restarts from the true residual ``b − Ax`` (``restarts`` times) when the recursive one has
  drifted below the tolerance in floating point. On an indefinite ``A`` it runs on without
  guarantees (it stops only on ``pᵀAp = 0``); check the residual. Returns ``(x, products)``.
  """
  vdot = lambda u, v: optax.tree.vdot(u, v).real
  goal = jnp.square(tol) * vdot(b, b)

  def run(x, budget):
    r = optax.tree.sub(b, matvec(x))
    rs = vdot(r, r)

    def cond(c):
      _, _, _, rs, k, ok = c
      return (rs > goal) & (k < budget) & ok

    def body(c):
      x, r, p, rs, k, _ = c
      ap = matvec(p)
      curv = vdot(p, ap)
      ok = curv != 0
      a = jnp.where(ok, rs / jnp.where(ok, curv, 1.0), 0.0)
      x = optax.tree.add_scale(x, a, p)
      r = optax.tree.add_scale(r, -a, ap)
      rs_new = vdot(r, r)
      p = optax.tree.add_scale(r, rs_new / jnp.maximum(rs, jnp.finfo(rs.dtype).tiny), p)
      return x, r, p, rs_new, k + 1, ok

    x, *_, k, _ = jax.lax.while_loop(cond, body, (x, r, r, rs, jnp.zeros([], jnp.int32), jnp.asarray(True)))
    return x, k + 1  # + the product for the starting residual

  x, used = run(x0, maxiter)
  for _ in range(restarts):
    x, more = run(x, jnp.maximum(maxiter - used, 0))
    used = used + more
  return x, used


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

  ``solver="dense"`` factorises the matrix once for every right-hand side (and refines the
  solution once against the matrix-free product); ``"cg"`` runs :func:`conjugate_gradients`
  per right-hand side, vmapped, or one after another with ``sequential``.
  """
  ravel = lambda t: ravel_pytree(t)[0]
  flat, unravel = ravel_pytree(params)
  matvec = lambda v: system.curvature_product(params, strength, damping, v, batch)
  if solver == "dense":
    lu = jax.scipy.linalg.lu_factor(_dense_matrix(system, params, strength, damping, batch))
    solve = lambda b: unravel(jax.scipy.linalg.lu_solve(lu, ravel(b)))

    def refined(b):
      x = solve(b)
      return optax.tree.add(x, solve(optax.tree.sub(b, matvec(x))))

    return jax.vmap(refined)(rhs) if stacked else refined(rhs)
  maxiter = 10 * flat.size if maxiter is None else int(maxiter)
  one = lambda b, start: conjugate_gradients(matvec, b, start, tol=tol, maxiter=maxiter)[0]
  if x0 is None:
    x0 = jax.tree.map(jnp.zeros_like, rhs)
  if not stacked:
    return one(rhs, x0)
  return jax.lax.map(lambda pair: one(*pair), (rhs, x0)) if sequential else jax.vmap(one)(rhs, x0)


@dataclasses.dataclass(frozen=True)
class TangentProblem:
  """A fit's linear system ``C + λI`` at ``θ*`` on its training set, to solve for any direction.

  The regularity tangent is one solve, ``τ = −(C + λI)⁻¹ρ``; selection strategies solve the
  same system for other right-hand sides: the validation adjoint ``a = −(C + λI)⁻¹∇_θL_val``
  (``dL_val/dε`` for a point added with weight ``ε`` is ``(f − y)·J_xa``), or the tangents of
  several strengths at once. :class:`curiojax.Learner` hands one to its strategy in
  :class:`curiojax.strategies.SelectionContext`.

  Attributes:
    system: the loss, regularizer and curvature (:class:`~curiojax.tangent.curvature.TangentSystem`).
    params: the trained parameters ``θ*``.
    strength, damping: ``s`` and ``λ`` of the fit.
    batch: the training set as the loss's keyword arguments (``weights`` marks padding rows).

  Example:
    >>> import jax, jax.numpy as jnp, curiojax
    >>> from curiojax.tangent.curvature import TangentSystem
    >>> x = jax.random.normal(jax.random.key(0), (40, 3)); y = x.sum(1)
    >>> loss = curiojax.prediction_loss(lambda p, x: x @ p)
    >>> problem = TangentProblem(TangentSystem(loss, curiojax.l2()), jnp.ones(3), 0.1, 0.0, dict(x=x, y=y))
    >>> tau, residual = problem.solve(jax.tree.map(jnp.negative, problem.rho())[None])
    >>> exact = curiojax.exact_tangent(loss, jnp.ones(3), dict(x=x, y=y), regularizer=curiojax.l2(), strength=0.1)
    >>> bool(jnp.allclose(tau[0], exact, rtol=1e-3)), bool(residual < 1e-3)
    (True, True)
  """

  system: TangentSystem
  params: Any
  strength: Any
  damping: Any
  batch: Mapping[str, Any]

  def rho(self):
    """``ρ = ∂_s∇_θR`` at ``θ*``."""
    return self.system.rho(self.params, self.strength)

  def loss_gradient(self, x, y):
    """``∇_θ`` of the fit's data loss (its mean) on another set ``(x, y)``, e.g. a validation set."""
    return _loss_gradient(self.system.value_fn, self.params, jnp.asarray(x), jnp.asarray(y))

  def solve(self, rhs, *, tol: float = FINISH_TOLERANCE, maxiter: int = 50):
    """``(C + λI)⁻¹b`` for right-hand sides stacked on a leading axis, and the largest relative residual.

    Conjugate gradients per right-hand side (at most ``maxiter`` products each, as the
    benchmark's tangent), or a dense factorisation up to 1024 parameters.

    Returns:
      ``(x, residual)``: solutions shaped like ``rhs`` and ``max_k ‖(C + λI)x_k − b_k‖/‖b_k‖``.
    """
    want = jax.tree.structure(self.params)
    if jax.tree.structure(rhs) != want or any(
      jnp.ndim(b) != jnp.ndim(p) + 1 or jnp.shape(b)[1:] != jnp.shape(p)
      for b, p in zip(jax.tree.leaves(rhs), jax.tree.leaves(self.params), strict=True)
    ):
      raise ValueError(
        "rhs must be shaped like the parameters with a leading axis (one right-hand side per row), got "
        f"{jax.tree.map(jnp.shape, rhs)} for parameters {jax.tree.map(jnp.shape, self.params)}."
      )
    return _solve_problem(
      self.system, self.params, self.strength, self.damping, dict(self.batch), rhs, float(tol), int(maxiter)
    )


@functools.partial(jax.jit, static_argnums=0)
def _loss_gradient(value_fn, params, x, y):
  return jax.grad(value_fn)(params, x=x, y=y)


@functools.partial(jax.jit, static_argnums=(0, 6, 7))
def _solve_problem(system, params, strength, damping, batch, rhs, tol, maxiter):
  solver = "dense" if ravel_pytree(params)[0].size <= FINISH_DENSE_LIMIT else "cg"
  x = solve_curvature(
    system, params, strength, damping, batch, rhs, stacked=True, solver=solver, tol=tol, maxiter=maxiter
  )
  product = jax.vmap(lambda v: system.curvature_product(params, strength, damping, v, batch))(x)
  return x, relative_norm(optax.tree.sub(product, rhs), rhs, stacked=True)


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
    x0, tol, maxiter: CG start (e.g. a carried tangent), relative tolerance, products.

  Returns:
    The tangent, shaped like params (leading axis ``k`` for ``k`` strengths).
  """
  _check_solver(solver)
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
  """``‖(C + λI)v + ρ‖ / ‖ρ‖`` (the largest over ``k`` tangents): zero for the exact tangent."""
  system, batch = _system(value_fn, regularizer, curvature), _check_batch(batch)
  product = system.product(params, strength, damping, tangent, batch)
  return relative_norm(product, system.rho(params, strength), jnp.ndim(strength) == 1)


def _finish(system, params, strength, damping, batch, x0, tol, maxiter, solver):
  """``(τ, ‖(C + λI)τ + ρ‖/‖ρ‖)``: the tangent solved on ``batch`` and its full-data residual."""
  stacked = jnp.ndim(strength) == 1
  if solver == "auto":
    solver = "dense" if ravel_pytree(params)[0].size <= FINISH_DENSE_LIMIT else "cg"
  rho = system.rho(params, strength)
  minus_rho = jax.tree.map(jnp.negative, rho)
  tangent = solve_curvature(
    system, params, strength, damping, batch, minus_rho, stacked=stacked, solver=solver, x0=x0, tol=tol, maxiter=maxiter
  )
  return tangent, relative_norm(system.product(params, strength, damping, tangent, batch), rho, stacked)


def finish_tangent(
  opt_state,
  params,
  value_fn: Callable,
  batch: Mapping[str, Any],
  *,
  tol: float = FINISH_TOLERANCE,
  maxiter: int = FINISH_MAXITER,
  solver: str = "auto",
):
  """Solve the carried tangent to ``tol`` on the training set; the state then certifies it.

  Solves ``(C + λI)τ = −ρ`` at ``params`` on ``batch`` with the system the transformation
  carried (its regularizer, curvature, strength and damping, read from the state, so the
  finishing step cannot disagree with training): by a dense factorisation with one
  refinement step (``solver="dense"``; ``"auto"`` up to 1024 parameters) or by conjugate
  gradients started from the carried tangent (``"cg"``; at most ``maxiter`` products). The
  state's tangent, iterate and averages are replaced by the solution, and its residual by
  the full-data relative residual reached (``tangent_diagnostics(state).exact`` is True), so
  :func:`curiojax.check_tangent` certifies it and training can continue from it. Pure and
  jit-safe for optax states.

  Args:
    opt_state: an optimizer state containing a :func:`curiojax.regularity_tangent` (a chain,
      ``inject_hyperparams``), or an ``nnx.Optimizer`` (updated in place).
    params: the trained parameters (the tangent's linearisation point).
    value_fn: the data loss ``value_fn(params, **batch)`` used in training.
    batch: the whole training set as ``value_fn``'s keyword arguments (e.g. ``dict(x=x, y=y)``,
      with ``weights`` for a padded set).
    tol: relative residual ``‖(C + λI)τ + ρ‖/‖ρ‖`` to reach.
    maxiter: CG products allowed.
    solver: ``"auto"``, ``"dense"`` or ``"cg"``.

  Returns:
    The optimizer state with the finished tangent (for an ``nnx.Optimizer``, the optimizer).

  Example:
    >>> import jax, jax.numpy as jnp, optax, curiojax
    >>> x = jax.random.normal(jax.random.key(0), (32, 3)); y = x[:, 0]
    >>> loss = curiojax.prediction_loss(lambda p, x: x @ p)
    >>> tx = optax.chain(curiojax.regularity_tangent("l2", 1e-3), optax.adam(1e-2))
    >>> params = jnp.zeros(3); state = tx.init(params)
    >>> state = curiojax.finish_tangent(state, params, loss, dict(x=x, y=y))
    >>> curiojax.tangent_diagnostics(state).residual < 1e-3
    True
  """
  _check_solver(solver)
  if not tol > 0:
    raise ValueError(f"tol must be positive, got {tol!r}.")
  if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1:
    raise ValueError(f"maxiter must be a positive integer, got {maxiter!r}.")
  batch = _check_batch(batch)
  old = _tangent_state(opt_state)
  state = jax.tree.map(_pure, old, is_leaf=lambda x: hasattr(x, "get_value"))
  params = jax.tree.map(_pure, params, is_leaf=lambda x: hasattr(x, "get_value"))
  settings = state.settings
  system = _system(value_fn, settings.regularizer, settings.curvature)
  start = restructure(handed_out(state), params, stacked=jnp.ndim(state.strength) == 1)
  tangent, residual = _finish(system, params, state.strength, state.damping, batch, start, tol, maxiter, solver)
  dtype = state.residual.dtype
  solution = restructure(tangent, state.tangent, stacked=False)
  finished = state._replace(
    tangent=solution,
    iterate=solution,
    velocity=jax.tree.map(jnp.zeros_like, solution),
    refreshes=state.averaging,  # the next refreshes average into the solution with weight 1/W
    residual=residual.astype(dtype),
    exact=jnp.asarray(True),
    restarts=jnp.zeros_like(state.restarts),
    follow_iterate=jnp.zeros_like(state.follow_iterate),
    diverged=~jnp.isfinite(residual),
  )
  finished = optax.tree.cast_like(finished, other_tree=state)
  return _put_tangent_state(opt_state, old, finished)


def _put_tangent_state(opt_state, old: RegularityTangentState, new: RegularityTangentState):
  """``opt_state`` with ``old`` replaced by ``new``: rebuilt for optax states, in place for NNX."""
  is_variable = lambda x: hasattr(x, "get_value")
  if any(is_variable(x) for x in jax.tree.leaves(old, is_leaf=is_variable)):  # nnx.Optimizer
    for var, value in zip(jax.tree.leaves(old, is_leaf=is_variable), jax.tree.leaves(new), strict=True):
      var.set_value(value)
    return opt_state

  def rebuild(node):
    if isinstance(node, RegularityTangentState):  # there is exactly one
      return new
    if isinstance(node, tuple) and hasattr(node, "_fields"):
      return type(node)(*(rebuild(c) for c in node))
    if isinstance(node, (tuple, list)):
      return type(node)(rebuild(c) for c in node)
    if isinstance(node, dict):
      return type(node)({k: rebuild(v) for k, v in node.items()})
    return node

  return rebuild(opt_state)


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
  :func:`curiojax.regularity_tangent` with ``tangent_learning_rate = 1/scale``,
  ``momentum=0`` and ``averaging=1``.

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

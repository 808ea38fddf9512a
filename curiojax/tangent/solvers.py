"""Solving ``(C + λI)x = b`` for the tangent and its kin, to a tolerance, with the cost reported.

One entry point, :func:`solve`, takes a :class:`~curiojax.tangent.operator.TangentOperator`
and chooses the method by shape (``choose_method``): a factorised matrix for small models,
conjugate gradients preconditioned by the Gauss-Newton matrix's data-space inverse
(:mod:`~curiojax.tangent.dataspace`) for scalar-output networks, plain CG otherwise. Every
solve returns the residual it reached and the products it used (:class:`SolveInfo`).
:func:`finish_tangent` certifies the tangent in an optimizer state; :func:`exact_tangent`,
:func:`relative_residual` and :func:`lissa` are the oracles and diagnostics of tests.

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

import functools
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optax
from jax.flatten_util import ravel_pytree

from curiojax.tangent import dataspace
from curiojax.tangent.access import find_tangent_state, finished_state, replace_tangent_state
from curiojax.tangent.operator import HALF_PRECISION, TangentOperator
from curiojax.tangent.recursion import relative_norm, tangent_step
from curiojax.tangent.state import _pure_tree, handed_out, restructure

SOLVERS = ("auto", "dense", "data_space", "cg")
DENSE_LIMIT = 1024  # parameters; "auto" factorises the d × d matrix up to here
FINISH_TOLERANCE = 1e-3  # relative residual finish_tangent solves to (well inside the tolerance)
FINISH_MAXITER = 1000  # products finish_tangent may spend
DIRECTION_MAXITER = 200  # products a strategy's solve of further directions may spend
STALL_LIMIT = 100  # CG stops after this many products without the residual falling by a tenth


def _check_solver(solver: str) -> str:
  if solver not in SOLVERS:
    raise ValueError(f"Unknown solver {solver!r}; choose one of {SOLVERS}.")
  return solver


def dense_curvature(value_fn: Callable, params, batch: Mapping, *, chunk_size: int = 256, **system) -> jax.Array:
  """The matrix ``C + λI`` (``d × d`` over the ravelled params), column by column from HVPs.

  ``system``: ``regularizer``, ``strength``, ``curvature``, ``damping``
  (:meth:`~curiojax.tangent.operator.TangentOperator.build`, which holds their defaults).
  """
  return TangentOperator.build(value_fn, params, batch, **system).dense(chunk_size)


class SolveInfo(eqx.Module):
  """What a solve of :class:`~curiojax.tangent.operator.TangentOperator` reached and cost.

  Attributes:
    residual: ``max_k ‖A x_k − b_k‖ / ‖b_k‖``, from a final product (float32 scalar).
    products: products ``A v`` used, the final check included (int32 scalar; per right-hand
      side, the largest).
    preconditioner_products: applications of the preconditioner (each about one product).
    method: ``"dense"``, ``"data_space"`` or ``"cg"`` (static).
    rows: rows the data-space preconditioner was built on (0 for the others; static).
  """

  residual: jax.Array
  products: jax.Array
  preconditioner_products: jax.Array
  method: str = eqx.field(static=True)
  rows: int = eqx.field(static=True)


def conjugate_gradients(matvec, b, x0, *, tol: float, maxiter: int, precondition=None, restarts: int = 2):
  """Preconditioned CG on ``A x = b`` (``A`` symmetric positive definite) to ``‖b − Ax‖ ≤ tol‖b‖``.

  When the recursive residual meets the tolerance, the true one ``b − Ax`` is computed (one
  product) and the iteration restarts from it if it does not (``restarts`` times: in floating
  point the recursive residual drifts below the true one). A start ``x0`` whose residual exceeds
  ``‖b‖`` (worse than zero) is dropped for zero. It stops early when the residual has not
  fallen by a tenth in ``STALL_LIMIT`` products (float32 cannot measure a residual below about
  ``κ(A)·eps``; the caller reports the one reached). On an indefinite ``A`` it runs on without
  guarantees (it stops on ``pᵀAp = 0``); check the residual.

  Hand-written rather than ``lineax.CG``: lineax stops on an elementwise test in both the
  residual and the iterate's step (``|Δx| ≤ atol + rtol|x|``), which, for ``‖b − Ax‖ ≤ tol‖b‖``
  with ``x ~ b/(s + λ)``, asks for ``s + λ`` times the accuracy and so many more products.

  Returns:
    ``(x, products, preconditioner applications)``.
  """
  vdot = lambda u, v: optax.tree.vdot(u, v).real
  precondition = precondition or (lambda r: r)
  bb = vdot(b, b)
  goal = jnp.square(tol) * bb
  r = optax.tree.sub(b, matvec(x0))
  rr = vdot(r, r)
  worse = rr > bb  # a warm start worse than zero is dropped
  x = jax.tree.map(lambda u: jnp.where(worse, jnp.zeros_like(u), u), x0)
  r = jax.tree.map(lambda u, v: jnp.where(worse, u, v), b, r)
  rr = jnp.where(worse, bb, rr)
  z = precondition(r)
  zero = jnp.zeros([], jnp.int32)

  def cond(c):
    _, _, _, _, rr, k, ok, _, stall, left, true = c
    unverified = (rr <= goal) & ~true & (left >= 0)
    return ((rr > goal) | unverified) & (k < maxiter) & ok & (stall < STALL_LIMIT)

  def body(c):
    x, r, p, rz, rr, k, ok, best, stall, left, _ = c

    def step(_):
      ap = matvec(p)
      curv = vdot(p, ap)
      fine = (curv != 0) & jnp.isfinite(curv)
      a = jnp.where(fine, rz / jnp.where(fine, curv, 1.0), 0.0)
      return optax.tree.add_scale(x, a, p), optax.tree.add_scale(r, -a, ap), fine, jnp.asarray(False)

    def true_residual(_):  # the recursive residual met the goal: check it, restart from the true one
      return x, optax.tree.sub(b, matvec(x)), jnp.asarray(True), jnp.asarray(True)

    check = (rr <= goal) & (left >= 0)
    x, r, fine, true = jax.lax.cond(check, true_residual, step, None)
    z = precondition(r)
    rz_new = vdot(r, z)
    beta = jnp.where(check, 0.0, rz_new / jnp.where(rz != 0, rz, jnp.finfo(rz.dtype).tiny))
    p = optax.tree.add_scale(z, beta, p)
    rr = vdot(r, r)
    better = rr < 0.9 * best  # progress: the residual fell by a tenth since the last best
    best, stall = jnp.where(better, rr, best), jnp.where(better, 0, stall + 1)
    return x, r, p, rz_new, rr, k + 1, ok & fine, best, stall, left - check, true

  start = (x, r, z, vdot(r, z), rr, zero, jnp.asarray(True), rr, zero, jnp.int32(restarts), jnp.asarray(True))
  x, *_, k, _, _, _, _, _ = jax.lax.while_loop(cond, body, start)
  return x, k + 1, k + 1  # + the product for the starting residual


def choose_method(op: TangentOperator, method: str = "auto") -> tuple[str, int]:
  """``(method, rows)`` for ``op`` by shape: the data-space preconditioner where it applies
  (Gauss-Newton, one output per row; on all rows or as many as its setup budget allows,
  :func:`~curiojax.tangent.dataspace.default_rows`); else the dense matrix up to 1024
  parameters (a Hessian); else plain CG."""
  _check_solver(method)
  if method == "auto":
    method = "data_space" if dataspace.applies(op) else "dense" if op.size <= DENSE_LIMIT else "cg"
  if method == "data_space":
    if not dataspace.applies(op):
      raise ValueError(
        "solver='data_space' needs curvature='gauss_newton', a curiojax.prediction_loss and a model with one "
        "output per row; use solver='cg'."
      )
    return method, dataspace.default_rows(op)
  return method, 0


def solve(
  op: TangentOperator,
  rhs,
  *,
  method: str = "auto",
  tol: float = FINISH_TOLERANCE,
  maxiter: int = 1000,
  x0=None,
  stacked: bool = False,
):
  """``x = A⁻¹b`` for ``A = op`` to ``‖Ax − b‖ ≤ tol‖b‖``, by the method its shape calls for.

  Every method is conjugate gradients with a preconditioner: ``"dense"`` the factorised matrix
  (lineax LU; the first product gives the solution, a second refines it), ``"data_space"`` the
  Woodbury inverse of the Gauss-Newton matrix on the batch's rows (:mod:`~curiojax.tangent.dataspace`),
  ``"cg"`` none. Half-precision operators are solved in float32 and cast back.

  Args:
    op: the operator.
    rhs: shaped like the parameters, or with a leading axis of right-hand sides (``stacked``).
    method: ``"auto"`` (``choose_method``), ``"dense"``, ``"data_space"`` or ``"cg"``.
    tol: relative residual to reach.
    maxiter: products allowed per right-hand side.
    x0: a start (e.g. a carried tangent), shaped like ``rhs``; dropped if worse than zero.
    stacked: ``rhs`` carries a leading axis.

  Returns:
    ``(x, info)``: the solution shaped like ``rhs`` and a :class:`SolveInfo`.

  Example:
    >>> import jax, jax.numpy as jnp, curiojax
    >>> from curiojax.tangent.operator import TangentOperator
    >>> from curiojax.tangent.curvature import TangentSystem
    >>> x = jax.random.normal(jax.random.key(0), (40, 3)); y = x.sum(1)
    >>> op = TangentOperator(TangentSystem(curiojax.prediction_loss(lambda p, x: x @ p), curiojax.l2()),
    ...                      jnp.ones(3), 0.1, 0.0, dict(x=x, y=y))
    >>> tau, info = solve(op, -op.rho())
    >>> info.method, bool(info.residual < 1e-3)
    ('dense', True)
  """
  method, rows = choose_method(op, method)
  _check_rhs(op, rhs, stacked, "rhs")
  if x0 is not None:
    _check_rhs(op, x0, stacked, "x0")
  dtypes = [jnp.result_type(x) for x in jax.tree.leaves(op.params)]
  half = any(d in HALF_PRECISION for d in dtypes)
  if half:
    op = op.in_float32()
    up = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), t)
    rhs, x0 = up(rhs), (None if x0 is None else up(x0))
  x, residual, products, applied = _solve(op, rhs, x0, method, rows, float(tol), int(maxiter), bool(stacked))
  if half:  # back to the parameters' dtypes, leaf by leaf
    x = jax.tree.unflatten(
      jax.tree.structure(x), [a.astype(d) for a, d in zip(jax.tree.leaves(x), dtypes, strict=True)]
    )
  return x, SolveInfo(residual, products, applied, method, rows)


def _check_rhs(op: TangentOperator, rhs, stacked: bool, name: str) -> None:
  """``ValueError`` unless ``rhs`` has the parameters' tree and shapes (plus one leading axis if stacked)."""
  params = op.params
  lead = 1 if stacked else 0
  same_tree = jax.tree.structure(rhs) == jax.tree.structure(params)
  if not same_tree or any(
    jnp.ndim(b) != jnp.ndim(p) + lead or jnp.shape(b)[lead:] != jnp.shape(p)
    for b, p in zip(jax.tree.leaves(rhs), jax.tree.leaves(params), strict=True)
  ):
    want = "with a leading axis (one right-hand side per row)" if stacked else "exactly (stacked=True for several)"
    raise ValueError(
      f"{name} must be shaped like the parameters {want}; got {jax.tree.map(jnp.shape, rhs)} for parameters "
      f"{jax.tree.map(jnp.shape, params)}."
    )


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7))
def _solve(op, rhs, x0, method, rows, tol, maxiter, stacked):
  if method == "dense":
    flat, unravel = ravel_pytree(op.params)
    matrix = lx.MatrixLinearOperator(op.dense())
    state = lx.LU().init(matrix, {})
    precondition = lambda r: unravel(
      lx.linear_solve(matrix, ravel_pytree(r)[0], lx.LU(), state=state, throw=False).value
    )
  elif method == "data_space":
    precondition = dataspace.data_space_inverse(op, rows)
  else:
    precondition = None
  x0 = jax.tree.map(jnp.zeros_like, rhs) if x0 is None else x0
  one = lambda b, start: conjugate_gradients(op.mv, b, start, tol=tol, maxiter=maxiter, precondition=precondition)
  if stacked:
    x, used, applied = jax.vmap(one)(rhs, x0)
    product = jax.vmap(op.mv)(x)
    used, applied = jnp.max(used), jnp.max(applied)
  else:
    x, used, applied = one(rhs, x0)
    product = op.mv(x)
  residual = relative_norm(optax.tree.sub(product, rhs), rhs, stacked).astype(jnp.float32)
  applied = applied if precondition is not None else jnp.zeros_like(applied)
  return x, residual, used + 1, applied


def exact_tangent(
  value_fn: Callable,
  params,
  batch: Mapping[str, Any],
  *,
  solver: str = "auto",
  x0=None,
  tol: float = 1e-6,
  maxiter: int | None = None,
  **system,
):
  """``τ = −(C + λI)⁻¹ρ`` at ``params`` on the full ``batch`` (:func:`solve`).

  Args:
    value_fn: mean data loss ``value_fn(params, **batch)``.
    params: where to linearise (normally trained parameters ``θ*``).
    batch: the whole training set as ``value_fn``'s keyword arguments.
    solver: ``"auto"``, ``"dense"``, ``"data_space"`` or ``"cg"`` (``choose_method``).
    x0, tol, maxiter: start (e.g. a carried tangent), relative tolerance, products (default ``10 d``).
    system: ``regularizer``, ``strength``, ``curvature``, ``damping``, as in
      :func:`curiojax.regularity_tangent` (:meth:`~curiojax.tangent.operator.TangentOperator.build`
      holds their defaults: ``"l2"``, ``1e-2``, ``"hessian"``, ``0``).

  Returns:
    The tangent, shaped like params (leading axis ``k`` for ``k`` strengths).
  """
  op = TangentOperator.build(value_fn, params, batch, **system)
  maxiter = 10 * op.size if maxiter is None else maxiter
  minus_rho = jax.tree.map(jnp.negative, op.rho())
  return solve(op, minus_rho, method=solver, tol=tol, maxiter=maxiter, x0=x0, stacked=op.stacked)[0]


def relative_residual(value_fn: Callable, params, tangent, batch: Mapping[str, Any], **system) -> jax.Array:
  """``‖(C + λI)v + ρ‖ / ‖ρ‖`` (the largest over ``k`` tangents): zero for the exact tangent.

  ``system``: as in :func:`exact_tangent`.
  """
  return TangentOperator.build(value_fn, params, batch, **system).relative_residual(tangent)


def finish_tangent(
  opt_state,
  params,
  value_fn: Callable,
  batch: Mapping[str, Any],
  *,
  tol: float = FINISH_TOLERANCE,
  maxiter: int = FINISH_MAXITER,
  solver: str = "auto",
  return_info: bool = False,
):
  """Solve the tangent to ``tol`` on the training set; the state then certifies it against ``tol``.

  Solves ``(C + λI)τ = −ρ`` at ``params`` on ``batch`` with the system the transformation
  carried (its regularizer, curvature, strength and damping, read from the state, so the
  finishing step cannot disagree with training), by :func:`solve` started from the carried
  tangent (dropped if worse than zero): the dense matrix up to 1024 parameters, the data-space
  inverse of the Gauss-Newton matrix for scalar-output models, else conjugate gradients. The
  state's tangent is replaced by the solution, its residual by the full-data relative residual
  reached (``tangent_diagnostics(state).exact``) and its tolerance by ``tol``: so
  :func:`curiojax.check_tangent` certifies the tangent only if the solve met its own
  tolerance, and training can continue from it. Pure and jit-safe for optax states.

  Args:
    opt_state: an optimizer state containing a :func:`curiojax.regularity_tangent` (a chain,
      ``inject_hyperparams``), or an ``nnx.Optimizer`` (updated in place).
    params: the trained parameters (the tangent's linearisation point).
    value_fn: the data loss ``value_fn(params, **batch)`` used in training.
    batch: the whole training set as ``value_fn``'s keyword arguments (e.g. ``dict(x=x, y=y)``,
      with ``weights`` for a padded set).
    tol: relative residual ``‖(C + λI)τ + ρ‖/‖ρ‖`` to reach.
    maxiter: products allowed.
    solver: ``"auto"``, ``"dense"``, ``"data_space"`` or ``"cg"``.
    return_info: also return the :class:`SolveInfo` (residual, products, method).

  Returns:
    The optimizer state with the finished tangent (for an ``nnx.Optimizer``, the optimizer), and
    the :class:`SolveInfo` with ``return_info``.

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
  if not 0 < tol < jnp.inf:
    raise ValueError(f"tol must be positive and finite, got {tol!r}.")
  if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1:
    raise ValueError(f"maxiter must be a positive integer, got {maxiter!r}.")
  old = find_tangent_state(opt_state)
  state, params = _pure_tree(old), _pure_tree(params)
  settings = state.settings
  system = dict(regularizer=settings.regularizer, curvature=settings.curvature)
  op = TangentOperator.build(value_fn, params, batch, strength=state.strength, damping=state.damping, **system)
  start = restructure(handed_out(state), params, stacked=op.stacked)
  minus_rho = jax.tree.map(jnp.negative, op.rho())
  tangent, info = solve(op, minus_rho, method=solver, tol=tol, maxiter=maxiter, x0=start, stacked=op.stacked)
  solution = restructure(tangent, state.tangent, stacked=False)
  finished = finished_state(state, solution, info.residual)._replace(tolerance=jnp.asarray(tol, state.tolerance.dtype))
  new_state = replace_tangent_state(opt_state, finished)
  return (new_state, info) if return_info else new_state


def lissa(
  value_fn: Callable,
  params,
  batches: Mapping[str, Any],
  *,
  scale: float,
  init=None,
  return_iterates: bool = False,
  **system,
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
    system: as in :func:`exact_tangent`.
  """
  stream = TangentOperator.build(value_fn, params, batches, **system)  # the system; batches stacked
  if not scale > 0:
    raise ValueError(f"scale must be positive, got {scale!r}.")
  if init is None:
    init = jax.tree.map(jnp.zeros_like, stream.rho())

  def step(v, batch):
    residual = TangentOperator(stream.system, params, stream.strength, stream.damping, batch).residual(v)
    v = tangent_step(v, residual, 1.0 / scale)
    return v, (v if return_iterates else None)

  final, iterates = jax.lax.scan(step, init, batches)
  return (final, iterates) if return_iterates else final

"""Directions in parameter space whose JVPs ``J_xv = ∇_θf(x)ᵀv`` the tangent strategies score.

- ``"tangent"``: the regularity tangent ``τ = dθ*/ds = −(C + λI)⁻¹ρ`` (``ctx.tangent``).
  ``σ²(J_xτ)²`` is the expected squared change of the model's complexity from labelling ``x``.
- ``"validation"``: the validation adjoint ``a = −(C + λI)⁻¹∇_θL_val(θ*)``, the vector behind
  the hypergradient ``dL_val/ds = ρᵀa``. Adding ``(x, y)`` with weight ``ε`` moves ``θ*`` by
  ``−ε(C + λI)⁻¹∇_θℓ(x, y)``, so the validation loss by ``ε·(f(x) − y)·J_xa`` (the influence
  function of Koh & Liang, ICML 2017, with the squared error); over ``y ~ N(f(x), σ²)`` its
  expected square is ``σ²(J_xa)²``. Needs ``ctx.validation`` and ``ctx.problem``.
- ``"groups"``: one tangent per layer (the leaves that share a parent node in the parameter
  tree, e.g. a layer's weights and bias), ``τ_k = −(C + λI)⁻¹ρ_k`` with ``ρ_k`` the part of
  ``ρ`` in group ``k``: the tangents of per-group strengths (``curiojax.group_l2``), which sum
  to ``τ``. Needs ``ctx.problem``.

Solved directions are certified like the tangent (:func:`curiojax.tangent.solvers.solve` to
the finishing tolerance, 1e-3): their relative residual comes back with them (and goes into the
strategy's ``Selection.direction_residual``), a :class:`curiojax.TangentInaccurateWarning` is
issued above it, and a non-finite solve is a ``ValueError``. What a strategy scoring some
directions reads follows from them: :func:`needs_along`.

Example:
  >>> import numpy as np, jax, jax.numpy as jnp, curiojax
  >>> from curiojax.strategies import SelectionContext
  >>> from curiojax.tangent.curvature import TangentSystem
  >>> from curiojax.tangent.operator import TangentOperator
  >>> f = lambda p, x: x @ p[0]["w"] + p[0]["b"] + p[1]["b"]
  >>> params = [{"b": jnp.ones(()), "w": jnp.ones(2)}, {"b": jnp.ones(())}]
  >>> x = np.random.default_rng(0).normal(size=(30, 2)).astype(np.float32); y = x.sum(1)
  >>> problem = TangentOperator(TangentSystem(curiojax.prediction_loss(f), curiojax.l2()), params, 0.1, 0.0,
  ...                          dict(x=x, y=y))
  >>> ctx = SelectionContext(f, params, None, x, y, x, jax.random.key(0), problem=problem, validation=(x, y))
  >>> [selection_directions(ctx, kind)[0][0]["w"].shape for kind in ("validation", "groups")]
  [(1, 2), (2, 2)]
  >>> needs_along("tangent", "validation")
  Needs(model=True, tangent=True, validation=True, problem=True)
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from curiojax.strategies.base import Needs, SelectionContext
from curiojax.tangent.diagnostics import TangentInaccurateWarning
from curiojax.tangent.solvers import DIRECTION_MAXITER, FINISH_TOLERANCE, solve

DIRECTIONS = ("tangent", "validation", "groups")


def check_direction(direction: str) -> str:
  if direction not in DIRECTIONS:
    raise ValueError(f"Unknown direction {direction!r}; choose one of {DIRECTIONS}.")
  return direction


def needs_along(*directions: str) -> Needs:
  """What a strategy scoring ``directions`` reads: the tangent for ``"tangent"``, the validation set
  for ``"validation"``, and the fit's system for every solved one (``"validation"``, ``"groups"``)."""
  kinds = {check_direction(d) for d in directions}
  return Needs(tangent="tangent" in kinds, validation="validation" in kinds, problem=bool(kinds - {"tangent"}))


def _group_masks(tree) -> list:
  """One 0/1 tree per layer of ``tree``: the leaves that share a parent node (a layer's weights and bias)."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
  group_of = [tuple(path[:-1]) for path, _ in flat]
  return [
    jax.tree.unflatten(treedef, [jnp.full_like(leaf, g == group) for (_, leaf), g in zip(flat, group_of, strict=True)])
    for group in dict.fromkeys(group_of)
  ]


def _solved(ctx: SelectionContext, rhs, kind: str):
  solution, info = solve(ctx.problem, rhs, tol=FINISH_TOLERANCE, maxiter=DIRECTION_MAXITER, stacked=True)
  residual = float(info.residual)
  if not np.isfinite(residual):
    raise ValueError(f"the {kind} direction's solve diverged (residual {residual}); check the fit.")
  if residual > FINISH_TOLERANCE:
    warnings.warn(
      f"the {kind} direction's relative residual {residual:.3g} exceeds {FINISH_TOLERANCE} after "
      f"{int(info.products)} products ({info.method}): its scores are approximate.",
      TangentInaccurateWarning,
      stacklevel=3,
    )
  return solution, residual


def selection_directions(ctx: SelectionContext, direction: str):
  """``(directions, residual)``: the directions of kind ``direction`` for this round, stacked on a
  leading axis ``k``, and the relative residual of their solve (NaN for the tangent, not solved here).

  ``k`` is 1 for ``"tangent"`` and ``"validation"``, and the number of parameter groups for
  ``"groups"``. Raises ``ValueError`` when the context lacks what the kind needs.
  """
  check_direction(direction)
  if direction == "tangent":
    if ctx.tangent is None:
      raise ValueError("this strategy needs ctx.tangent (carry or compute the regularity tangent).")
    return jax.tree.map(lambda t: jnp.asarray(t)[None], ctx.tangent), float("nan")
  if ctx.problem is None:
    raise ValueError(
      f"direction {direction!r} needs ctx.problem, the fit's linear system (curiojax.Learner provides it; "
      "or build a curiojax.tangent.operator.TangentOperator)."
    )
  if direction == "validation":
    if ctx.validation is None:
      raise ValueError("direction 'validation' needs ctx.validation = (x_valid, y_valid), a held-out labelled set.")
    gradient = ctx.problem.loss_gradient(*ctx.validation)
    return _solved(ctx, jax.tree.map(lambda g: -g[None], gradient), "validation")
  rho = ctx.problem.rho()
  rhs = [jax.tree.map(lambda r, m: -r * m, rho, mask) for mask in _group_masks(rho)]
  return _solved(ctx, jax.tree.map(lambda *parts: jnp.stack(parts), *rhs), "groups")


def normalised_sum(scores, mask):
  """``Σ_k c_k(x) / mean_pool c_k`` over the columns of non-negative ``scores`` (n, k); 0 off ``mask``.

  Each direction counts equally whatever its scale; with one column this is ``c/c̄``. A column
  that is zero on the whole pool contributes nothing.
  """
  mean = jnp.sum(jnp.where(mask[:, None], scores, 0.0), 0) / jnp.maximum(jnp.sum(mask), 1)
  ratio = jnp.where(mean > 0, scores / jnp.where(mean > 0, mean, 1.0), 0.0)
  return jnp.where(mask, jnp.sum(ratio, 1), 0.0)

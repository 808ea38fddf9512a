"""The Gauss-Newton system in data space: an exact inverse for few rows, a preconditioner for many.

For a scalar-output model with Gauss-Newton curvature and an ``l2``-type regularizer,
``C + λI = ĴᵀĴ + μI`` with ``Ĵ = diag(√b) J`` (``J`` the per-example Jacobian, ``n × d``;
``bᵢ = wᵢ ℓ''ᵢ / Σw``) and ``μ = s + λ``. By Woodbury

    (ĴᵀĴ + μI)⁻¹ v = (v − Ĵᵀ (ĴĴᵀ + μI)⁻¹ Ĵ v) / μ,

one ``n × n`` Cholesky factorisation and, per application, one JVP and one VJP over the rows.
When the rows are few against the parameters (the active-learning regime) this is the exact
inverse, and conjugate gradients preconditioned by it stop after one or two products (the
refinement float32 needs). With many rows it is built on ``m`` of them (real rows first, in a
fixed random order, reweighted to the mean): a subsampled Gauss-Newton preconditioner that
captures the large eigenvalues that slow plain CG down when ``s + λ`` is small.

The Gram matrix ``ĴĴᵀ`` comes from per-layer factors when the model has
``gradient_factors`` (an MLP layer's per-example gradient is ``u ⊗ δ``, so
``JJᵀ = Σ_l (U_lU_lᵀ) ⊙ (Δ_lΔ_lᵀ)``; :class:`curiojax.active.models.NTKMLP`), with no
per-example gradient formed; otherwise from per-example gradients (``m × d`` memory), which is
why the generic path uses fewer rows. ``μ`` is taken as the mean of ``∇²R`` plus ``λ``: exact for
``l2``, an approximation (still a valid preconditioner) for other regularizers.

Example:
  >>> import jax, jax.numpy as jnp, curiojax
  >>> from curiojax.tangent.curvature import TangentSystem
  >>> from curiojax.tangent.operator import TangentOperator
  >>> x = jax.random.normal(jax.random.key(0), (8, 30)); y = x[:, 0]
  >>> op = TangentOperator(TangentSystem(curiojax.prediction_loss(lambda p, x: x @ p), curiojax.l2(), "gauss_newton"),
  ...                      jnp.ones(30), 1e-3, 1e-3, dict(x=x, y=y))
  >>> inverse = data_space_inverse(op, rows=8)   # all rows: the exact inverse
  >>> v = jnp.arange(30.0)
  >>> bool(jnp.allclose(op.mv(inverse(v)), v, rtol=1e-3, atol=1e-3))
  True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from curiojax.tangent.losses import PredictionLoss
from curiojax.tangent.operator import TangentOperator

FACTORED_ROWS = 4096  # at most this many rows in the Gram matrix (m² memory)
GENERIC_ELEMENTS = 2**25  # at most this many per-example gradient entries (m × d) in memory
SETUP_PRODUCTS = 10  # the preconditioner's setup may cost this many products on the whole batch
SETUP_FLOPS = 2**27  # and at least this much (about a millisecond: fixed costs dominate below)
ROW_STEP = 32  # a subset's rows are a multiple of this


def applies(op: TangentOperator) -> bool:
  """Gauss-Newton curvature and a model with one output per row: the data-space form holds."""
  loss = op.system.value_fn
  if op.system.curvature != "gauss_newton" or not isinstance(loss, PredictionLoss) or "x" not in op.batch:
    return False
  out = jax.eval_shape(loss.model_fn, op.params, op.batch["x"])
  return out.shape == (op.rows,)


def default_rows(op: TangentOperator) -> int:
  """Rows the preconditioner is built on: as many as a setup budget allows, all where it can.

  Building on ``m`` rows costs the Gram matrix (``2m²w`` flops: ``w`` the summed layer widths
  with factors, ``d`` without) and its factorisation (``m³/3``). The budget is
  ``SETUP_PRODUCTS`` products of the operator on the whole batch (``8nd`` flops each), and at
  least ``SETUP_FLOPS`` (below it, fixed costs dominate). Real rows come first, so a padded
  batch with fewer real rows than ``m`` loses nothing.
  """
  n, d = op.rows, op.size
  model_fn = op.system.value_fn.model_fn
  if hasattr(model_fn, "gradient_factors"):
    shapes = jax.eval_shape(lambda p, x: model_fn.gradient_factors(p, x), op.params, op.batch["x"][:1])
    width = sum(u.shape[1] + g.shape[1] for u, g in shapes)
    limit = FACTORED_ROWS
  else:
    width, limit = d, max(1, GENERIC_ELEMENTS // max(d, 1))
  budget = max(SETUP_PRODUCTS * 8.0 * n * d, SETUP_FLOPS)
  cost = lambda m: 2.0 * m * m * width + m**3 / 3
  if n <= limit and cost(n) <= budget:
    return n
  m = ROW_STEP  # the largest multiple of ROW_STEP within the budget (one shape per budget, not per n)
  while m + ROW_STEP <= min(n, limit) and cost(m + ROW_STEP) <= budget:
    m += ROW_STEP
  return max(1, min(m, n, limit))


def _jacobian(model_fn: Callable, params, x) -> jax.Array:
  """Per-example gradients ``J`` of a scalar-output model, ``(n, d)``."""
  single = lambda p, xi: model_fn(p, xi[None])[0]
  grads = jax.vmap(jax.grad(single), in_axes=(None, 0))(params, x)
  return jax.vmap(lambda g: ravel_pytree(g)[0])(grads)


def cross_gram(model_fn: Callable, params, x_a, x_b=None) -> jax.Array:
  """``J_a J_bᵀ`` (the empirical NTK between the rows of ``x_a`` and ``x_b``; ``x_b=None``: ``x_a``).

  From per-layer factors when the model has ``gradient_factors``
  (``Σ_l (U_aU_bᵀ) ⊙ (Δ_aΔ_bᵀ)``), otherwise from per-example gradients.
  """
  if hasattr(model_fn, "gradient_factors"):
    fa = model_fn.gradient_factors(params, x_a, jnp.float32)
    fb = fa if x_b is None else model_fn.gradient_factors(params, x_b, jnp.float32)
    return sum((ua @ ub.T) * (da @ db.T) for (ua, da), (ub, db) in zip(fa, fb, strict=True))
  ja = _jacobian(model_fn, params, x_a)
  return ja @ (ja if x_b is None else _jacobian(model_fn, params, x_b)).T


def gram_diagonal(model_fn: Callable, params, x) -> jax.Array:
  """``‖∇_θf(xᵢ)‖²`` per row (the diagonal of :func:`cross_gram`) without the ``n × n`` matrix."""
  if hasattr(model_fn, "gradient_factors"):
    factors = model_fn.gradient_factors(params, x, jnp.float32)
    return sum(jnp.sum(u * u, 1) * jnp.sum(d * d, 1) for u, d in factors)
  return jnp.sum(_jacobian(model_fn, params, x) ** 2, 1)


class DataSpaceInverse(eqx.Module):
  """``v ↦ (Ĵ_SᵀĴ_S + μI)⁻¹ v`` on rows ``S`` (module docstring); callable on params-shaped trees."""

  model_fn: Callable = eqx.field(static=True)
  params: Any
  x: jax.Array  # (m, ...) the rows S
  sqrt_b: jax.Array  # (m,) √(wᵢ ℓ''ᵢ / Σ_S w)
  mu: jax.Array  # scalar, μ
  cholesky: jax.Array  # (m, m) lower factor of ĴĴᵀ + μI

  def __call__(self, v):
    model = lambda p: self.model_fn(p, self.x)
    out, jv = jax.jvp(model, (self.params,), (v,))
    w = jax.scipy.linalg.cho_solve((self.cholesky, True), self.sqrt_b * jv)
    (jtw,) = jax.vjp(model, self.params)[1]((self.sqrt_b * w).astype(out.dtype))
    return jax.tree.map(lambda a, b: (a - b) / self.mu, v, jtw)


def data_space_inverse(op: TangentOperator, rows: int | None = None, seed: int = 0) -> DataSpaceInverse:
  """The data-space inverse of ``op`` on ``rows`` of its batch (all: exact; fewer: a preconditioner).

  Args:
    op: a Gauss-Newton :class:`TangentOperator` of a scalar-output model (:func:`applies`).
    rows: rows to build it on (default :func:`default_rows`).
    seed: the fixed random order in which real rows (weight > 0) are taken when ``rows < n``.
  """
  loss: PredictionLoss = op.system.value_fn
  x, y = op.batch["x"], op.batch["y"]
  n = op.rows
  m = default_rows(op) if rows is None else int(rows)
  w = op.batch.get("weights")
  w = jnp.ones(n, jnp.float32) if w is None else jnp.asarray(w, jnp.float32)
  if m < n:  # real rows first, in a fixed random order
    idx = jnp.argsort(jnp.where(w > 0, jax.random.uniform(jax.random.key(seed), (n,)), 2.0))[:m]
    x, y, w = x[idx], y[idx], w[idx]
  preds = loss.model_fn(op.params, x)
  curvature = jax.vmap(jax.grad(jax.grad(loss.loss)))(preds, y).astype(jnp.float32)
  b = w * jnp.maximum(curvature, 0.0) / jnp.maximum(jnp.sum(w), 1e-12)
  sqrt_b = jnp.sqrt(b)
  mu = jnp.maximum(op.regularizer_scale().astype(jnp.float32), jnp.finfo(jnp.float32).tiny)
  gram = sqrt_b[:, None] * cross_gram(loss.model_fn, op.params, x).astype(jnp.float32) * sqrt_b[None, :]
  # the factor's shift stays above float32 rounding of the Gram matrix; any shift ≥ μ keeps it SPD
  shift = jnp.maximum(mu, 1e-6 * jnp.max(jnp.diag(gram)))
  cholesky = jnp.linalg.cholesky(gram + shift * jnp.eye(m, dtype=jnp.float32))
  return DataSpaceInverse(loss.model_fn, op.params, x, sqrt_b, mu, cholesky)

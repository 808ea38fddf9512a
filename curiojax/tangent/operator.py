"""``TangentOperator``: the linear system ``(C + λI)τ = −ρ`` at given parameters on a batch.

One frozen pytree holds what every solve needs: the objective (a
:class:`~curiojax.tangent.curvature.TangentSystem`, static), the parameters ``θ``, the strength
``s``, the damping ``λ`` and the batch. Its methods are the products a solver uses:

    A v = (C + λI) v          mv
    r(τ) = A τ + ρ            residual (zero exactly at the tangent)
    ‖r(τ)‖ / ‖ρ‖             relative_residual

so the arguments ``(system, params, strength, damping, batch)`` travel together instead of
through every signature. ``as_lineax()`` views it as a ``lineax`` operator (positive
semi-definite for Gauss-Newton). :func:`curiojax.tangent.solvers.solve` solves it.

Example:
  >>> import jax, jax.numpy as jnp, curiojax
  >>> from curiojax.tangent.curvature import TangentSystem
  >>> x = jax.random.normal(jax.random.key(0), (40, 3)); y = x.sum(1)
  >>> op = TangentOperator(TangentSystem(curiojax.prediction_loss(lambda p, x: x @ p), curiojax.l2()),
  ...                      jnp.ones(3), 0.1, 0.0, dict(x=x, y=y))
  >>> tau = -jnp.linalg.solve(x.T @ x / 40 + 0.1 * jnp.eye(3), jnp.ones(3))   # ridge closed form
  >>> bool(op.relative_residual(tau) < 1e-5)
  True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optax
from jax.flatten_util import ravel_pytree

from curiojax.tangent.curvature import TangentSystem
from curiojax.tangent.recursion import relative_norm
from curiojax.tangent.regularizers import Regularizer, get_regularizer

HALF_PRECISION = (jnp.float16, jnp.bfloat16)


class TangentOperator(eqx.Module):
  """``A = C + λI`` at ``params`` on ``batch``, with ``ρ = ∂_s∇_θR`` (module docstring).

  Attributes:
    system: the loss, regularizer and curvature (static).
    params: where ``C`` is taken (normally the trained ``θ*``).
    strength: ``s``, scalar (one tangent) or ``(k,)`` (``k`` tangents stacked on a leading axis).
    damping: ``λ``.
    batch: the data as the loss's keyword arguments (``weights`` masks padding rows).
  """

  system: TangentSystem = eqx.field(static=True)
  params: Any
  strength: jax.Array
  damping: jax.Array
  batch: Mapping[str, Any]

  def __init__(self, system: TangentSystem, params, strength, damping, batch):
    self.system = system
    self.params = params
    dtype = jnp.result_type(*jax.tree.leaves(params))
    self.strength = jnp.asarray(strength, dtype)
    self.damping = jnp.asarray(damping, dtype)
    self.batch = dict(batch)

  @classmethod
  def build(
    cls,
    value_fn,
    params,
    batch: Mapping[str, Any],
    *,
    regularizer: str | Regularizer = "l2",
    strength=1e-2,
    curvature: str = "hessian",
    damping=0.0,
  ) -> TangentOperator:
    """The operator of ``value_fn(params, **batch) + R(s, θ)``: the one place of the system's
    keywords and their defaults, which :func:`curiojax.exact_tangent`,
    :func:`curiojax.dense_curvature`, :func:`curiojax.relative_residual` and
    :func:`curiojax.adjoint_curiosities` take as ``**system``.

    Args:
      value_fn: mean data loss ``value_fn(params, **batch)``.
      params: where ``C`` is taken.
      batch: the data as ``value_fn``'s keyword arguments.
      regularizer: a registered name (``"l2"``, ``"group_l2"``) or a ``Regularizer``.
      strength: ``s``, scalar or ``(k,)``.
      curvature: ``"hessian"`` or ``"gauss_newton"``.
      damping: ``λ``.
    """
    if not callable(value_fn):
      raise TypeError(f"value_fn must be callable value_fn(params, **batch), got {type(value_fn).__name__}.")
    if not isinstance(batch, Mapping):
      raise TypeError(f"batch must be a dict of value_fn's keyword arguments, got {type(batch).__name__}.")
    return cls(TangentSystem(value_fn, get_regularizer(regularizer), curvature), params, strength, damping, batch)

  @property
  def stacked(self) -> bool:
    """``k`` strengths: right-hand sides and tangents carry a leading axis ``k``."""
    return jnp.ndim(self.strength) == 1

  @property
  def size(self) -> int:
    """Parameters ``d`` (the operator is ``d × d``)."""
    return int(sum(jnp.size(x) for x in jax.tree.leaves(self.params)))

  @property
  def rows(self) -> int:
    """Rows of the batch (padding included)."""
    return int(jnp.shape(self.batch["x"])[0]) if "x" in self.batch else 0

  def mv(self, v):
    """``(C + λI)v`` for one direction shaped like params."""
    return self.system.curvature_product(self.params, self.strength, self.damping, v, self.batch)

  def gradient(self):
    """``∇_θF`` on the batch (the steps between the carrier's refreshes)."""
    return self.system.gradient(self.params, self.strength, self.batch)

  def gradient_and_residual(self, tangent):
    """``(∇_θF, (C + λI)τ + ρ)`` from one forward-over-reverse pass (the carrier's fused step)."""
    return self.system.gradient_and_product(self.params, self.strength, self.damping, tangent, self.batch)

  def rho(self):
    """``ρ = ∂_s∇_θR`` (leading axis ``k`` for a strength vector)."""
    return self.system.rho(self.params, self.strength)

  def residual(self, tangent):
    """``(C + λI)τ + ρ`` (per tangent for ``k`` strengths)."""
    return self.system.product(self.params, self.strength, self.damping, tangent, self.batch)

  def relative_residual(self, tangent) -> jax.Array:
    """``max_k ‖(C + λI)τ_k + ρ_k‖ / ‖ρ_k‖``: zero for the exact tangent."""
    return relative_norm(self.residual(tangent), self.rho(), self.stacked)

  def loss_gradient(self, x, y):
    """``∇_θ`` of the data loss (its mean) on another set ``(x, y)``, e.g. a validation set."""
    return jax.grad(self.system.value_fn)(self.params, x=jnp.asarray(x), y=jnp.asarray(y))

  def dense(self, chunk_size: int = 256) -> jax.Array:
    """The matrix ``C + λI`` over the ravelled params (``d × d``; small models)."""
    return self.system.dense(self.params, self.strength, self.damping, self.batch, chunk_size)

  def as_lineax(self) -> lx.FunctionLinearOperator:
    """This operator for ``lineax`` (tagged positive semi-definite for Gauss-Newton)."""
    tags = lx.positive_semidefinite_tag if self.system.curvature == "gauss_newton" else lx.symmetric_tag
    return lx.FunctionLinearOperator(self.mv, jax.eval_shape(lambda: self.params), tags)

  def in_float32(self) -> TangentOperator:
    """The same system with half-precision parameters and batch arrays in float32 (LAPACK and
    the solvers' accumulations need at least float32); others unchanged."""
    up = lambda x: x.astype(jnp.float32) if jnp.result_type(x) in HALF_PRECISION else x
    return TangentOperator(
      self.system,
      jax.tree.map(up, self.params),
      self.strength.astype(jnp.float32),
      self.damping.astype(jnp.float32),
      jax.tree.map(up, self.batch),
    )

  def regularizer_scale(self) -> jax.Array:
    """``μ ≈ ∇²R + λ`` as one number: the Rayleigh quotient of ``∇²_θR`` along all-ones, plus ``λ``.

    Exact for ``l2`` (``∇²R = sI``; the mean weight for weighted groups): the data-space
    preconditioner's shift.
    """
    ones = jax.tree.map(jnp.ones_like, self.params)
    grad_r = jax.grad(lambda p: self.system.regularizer(p, self.strength))
    _, hv = jax.jvp(grad_r, (self.params,), (ones,))
    flat_ones = ravel_pytree(ones)[0]
    return optax.tree.vdot(ones, hv) / flat_ones.size + self.damping

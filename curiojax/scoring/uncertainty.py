"""Predictive uncertainty of a fit: the linearised Laplace posterior in data space, calibrated by leave-one-out.

Linearise the model at the fit, ``f(x; θ) ≈ f(x; θ̂) + J_x(θ − θ̂)``, and take the fit's own
system as the posterior precision: with ``C + λI = ĴᵀĴ + μI`` (``Ĵ = diag(√b)J``,
``bᵢ = wᵢℓ''ᵢ/N``, ``N = Σw`` real rows, ``μ = s + λ``; :mod:`curiojax.tangent.dataspace`) the
posterior covariance is ``σ²/N · (ĴᵀĴ + μI)⁻¹``, so the variance of ``f(x)`` is ``σ²·e(x)`` with

    e(x) = J_x(ĴᵀĴ + μI)⁻¹J_xᵀ / N = (k(x, x) − k̂ᵀ(ĴĴᵀ + μI)⁻¹k̂) / (μN),   k̂ = Ĵ J_xᵀ,

one Cholesky factorisation of the ``n × n`` Gram matrix of the labelled rows (the empirical NTK,
from per-layer factors where the model has them) and one cross-Gram per pool row.

**Calibration.** A network's training residuals underestimate its error, and an ``L2`` prior of
strength ``s`` is not a calibrated prior. So a measurement at ``x`` is predicted as
``f(x; θ̂) + √(a + b·e(x))·t_ν`` with ``(a, b, ν)`` fitted by maximum likelihood on the exact
leave-one-out residuals of the linearised fit: the hat matrix ``H = K̂(K̂ + μI)⁻¹`` gives
``rᵢ = (yᵢ − f(xᵢ))/(1 − Hᵢᵢ)`` and the left-out variance ``e₋ᵢ(xᵢ) = e(xᵢ)/(1 − Hᵢᵢ)``
(Sherman–Morrison), so ``rᵢ ~ √(a + b·e₋ᵢ(xᵢ))·t_ν``. ``a`` is the noise (what a measurement
adds), ``b/a`` how far the linearised posterior's shape is trusted (on a grid), and a Student-t
with ``ν`` degrees of freedom (on a grid, Gaussian included) lets the tails be heavier than a
Gaussian's: a network's errors are many small ones and a few large. The standard deviation is
``√(a + b·e(x))·√(ν/(ν−2))``; central intervals take the t quantiles. The linear algebra runs in
float64 on the host (``k(x, x)`` and ``k̂ᵀ(…)⁻¹k̂`` nearly cancel near the data).

Coverage of the central 68% and 95% intervals on held-out UCI rows:
``benchmarks/calibration/main.py`` (docs/benchmark.md, "Calibration").

Example:
  >>> import jax, jax.numpy as jnp, curiojax
  >>> from curiojax.tangent.curvature import TangentSystem
  >>> from curiojax.tangent.operator import TangentOperator
  >>> x = jax.random.normal(jax.random.key(0), (40, 3)); y = jnp.sin(x[:, 0])
  >>> model = lambda p, x: jnp.tanh(x @ p["w"]) @ p["v"]
  >>> params = {"w": jax.random.normal(jax.random.key(1), (3, 16)), "v": jnp.zeros(16)}
  >>> op = TangentOperator(TangentSystem(curiojax.prediction_loss(model), curiojax.l2(), "gauss_newton"),
  ...                      params, 1e-3, 1e-3, dict(x=x, y=y))
  >>> posterior = laplace_posterior(op)
  >>> std = posterior.std(jnp.array([[0.0, 0.0, 0.0], [9.0, 9.0, 9.0]]))
  >>> std.shape, bool(std[1] > std[0] > 0)
  ((2,), True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.special
import scipy.stats

from curiojax.padding import pad_rows, size_class
from curiojax.scoring.attached import jit_with_model
from curiojax.tangent.dataspace import applies, cross_gram, gram_diagonal
from curiojax.tangent.losses import PredictionLoss
from curiojax.tangent.operator import TangentOperator

CHUNK = 1024  # pool rows per kernel evaluation (one compilation per padded chunk size)
MAX_ROWS = 4096  # labelled rows in the posterior (an n × n factorisation); beyond, a random subset
MIN_ROWS = 3  # labelled rows the calibration needs (its leave-one-out residuals fit three numbers)
RATIOS = np.logspace(-3, 3, 61)  # the grid of b/a, the trust in the linearised posterior's shape
DEGREES = (3.0, 4.0, 6.0, 10.0, 20.0, np.inf)  # Student-t degrees of freedom tried (inf: Gaussian)


def _weights(model_fn, loss, params, x, y, w):
  """Predictions, ``bᵢ = wᵢℓ''ᵢ/N`` and the Gram matrix of the rows (float32)."""
  pred = model_fn(params, x)
  curvature = jax.vmap(jax.grad(jax.grad(loss)))(pred, y)
  b = w * jnp.maximum(curvature, 0.0) / jnp.maximum(jnp.sum(w), 1e-12)
  return pred, b, cross_gram(model_fn, params, x)


def _pool_kernels(model_fn, params, x, x_train):
  return cross_gram(model_fn, params, x, x_train), gram_diagonal(model_fn, params, x)


@dataclasses.dataclass(frozen=True)
class LaplacePosterior:
  """The calibrated linearised posterior of one fit (module docstring); :meth:`std` at any rows.

  Attributes:
    model_fn, params: the fitted model.
    x_train: the labelled rows it was built on (padded rows kept, with ``b = 0``: one shape per
      padded size).
    sqrt_b: ``√bᵢ`` of those rows.
    mu, rows: ``μ = s + λ`` and ``N = Σw``.
    cholesky: lower factor of ``K̂ + μI`` (float64).
    noise, scale: the calibrated ``a`` and ``b`` (squared scale ``a + b·e(x)``, model units).
    dof: the calibrated Student-t degrees of freedom (``inf``: Gaussian).
    loo_residuals: the leave-one-out residuals ``rᵢ`` of the real rows, which the calibration fitted.
  """

  model_fn: Callable
  params: Any
  x_train: jax.Array
  sqrt_b: np.ndarray
  mu: float
  rows: float
  cholesky: np.ndarray
  noise: float
  scale: float
  dof: float
  loo_residuals: np.ndarray

  def epistemic(self, x) -> np.ndarray:
    """``e(x)``: the linearised posterior variance of ``f(x)`` in units of ``σ²`` (float64, ≥ 0)."""
    x = np.asarray(x)  # padded on the host: no device program per row count
    x = x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)
    if x.ndim < 2 or len(x) == 0:
      raise ValueError(f"x must be a non-empty batch of rows, got shape {x.shape}.")
    out = []
    for start in range(0, len(x), CHUNK):
      chunk = x[start : start + CHUNK]
      size = min(size_class(len(chunk)), CHUNK)
      k_cross, k_diag = jit_with_model(_pool_kernels, self.model_fn)(self.params, pad_rows(chunk, size), self.x_train)
      out.append(self._from_kernels(k_cross[: len(chunk)], k_diag[: len(chunk)]))
    return np.concatenate(out)

  def _from_kernels(self, k_cross, k_diag) -> np.ndarray:
    """``e(x)`` from ``k(x, X)`` and ``k(x, x)``: ``(k(x,x) − ‖L⁻¹k̂‖²)/(μN)``, ``k̂ = √b ⊙ k(X, x)``."""
    k_hat = np.asarray(k_cross, np.float64) * self.sqrt_b[None, :]
    explained = np.sum(scipy.linalg.solve_triangular(self.cholesky, k_hat.T, lower=True) ** 2, 0)
    return np.maximum(np.asarray(k_diag, np.float64) - explained, 0.0) / (self.mu * self.rows)

  def spread(self, x) -> np.ndarray:
    """The predictive distribution's scale at each row of ``x``: ``√(a + b·e(x))`` (model units)."""
    return np.sqrt(self.noise + self.scale * self.epistemic(x))

  def std(self, x) -> np.ndarray:
    """Predictive standard deviation of a measurement at each row of ``x`` (model units, float32)."""
    inflation = 1.0 if np.isinf(self.dof) else np.sqrt(self.dof / (self.dof - 2.0))
    return (self.spread(x) * inflation).astype(np.float32)

  def half_width(self, x, level: float = 0.95) -> np.ndarray:
    """Half the width of the central ``level`` interval of a measurement at each row of ``x`` (float32)."""
    if not 0 < level < 1:
      raise ValueError(f"level must be in (0, 1), got {level!r}.")
    return (self.spread(x) * scipy.stats.t.ppf(0.5 + level / 2, self.dof)).astype(np.float32)


def calibrate(residuals, spread) -> tuple[float, float, float]:
  """``(a, b, ν)`` maximising the likelihood of ``rᵢ ~ √(a + b·gᵢ)·t_ν`` (``gᵢ`` = ``spread``).

  ``b/a`` on :data:`RATIOS`, ``ν`` on :data:`DEGREES` (a network's errors have heavier tails than
  a Gaussian's: few large ones among many small), ``a`` by the EM fixed point of the scale.

  Example:
    >>> rng = np.random.default_rng(0); g = rng.uniform(0, 4, 4000)
    >>> a, b, dof = calibrate(rng.normal(size=4000) * np.sqrt(0.5 + 2.0 * g), g)
    >>> bool(abs(a - 0.5) < 0.15 and abs(b - 2.0) < 0.4), dof >= 10
    (True, True)
  """
  r2, g = np.asarray(residuals, np.float64) ** 2, np.asarray(spread, np.float64)
  if r2.size == 0:
    raise ValueError("calibrate needs at least one residual.")
  shape = 1.0 + RATIOS[:, None] * g[None, :]  # (ratios, rows)
  u = r2[None, :] / shape
  best = (-np.inf, 1.0, 0.0, np.inf)
  for dof in DEGREES:
    a = np.maximum(np.mean(u, 1), 1e-12)  # the Gaussian's closed form; EM for a Student-t
    for _ in range(0 if np.isinf(dof) else 50):
      a = np.maximum(np.mean(u * (dof + 1) / (dof + u / a[:, None]), 1), 1e-12)
    z = u / a[:, None]
    if np.isinf(dof):
      loglik = -0.5 * np.sum(np.log(a[:, None] * shape) + z + np.log(2 * np.pi), 1)
    else:
      c = scipy.special.gammaln((dof + 1) / 2) - scipy.special.gammaln(dof / 2) - 0.5 * np.log(dof * np.pi)
      loglik = np.sum(c - 0.5 * np.log(a[:, None] * shape) - (dof + 1) / 2 * np.log1p(z / dof), 1)
    i = int(np.argmax(loglik))
    if loglik[i] > best[0]:
      best = (loglik[i], float(a[i]), float(a[i] * RATIOS[i]), float(dof))
  return best[1:]


def laplace_posterior(op: TangentOperator, *, seed: int = 0) -> LaplacePosterior:
  """The calibrated linearised posterior of the fit behind ``op`` (its parameters, rows and ``μ``).

  Args:
    op: a Gauss-Newton :class:`~curiojax.tangent.operator.TangentOperator` of a scalar-output
      model (as :meth:`curiojax.Learner.problem` gives); padded rows (weight 0) are dropped.
    seed: which rows are kept when there are more than :data:`MAX_ROWS`.

  Raises:
    ValueError: a Hessian system or a model with several outputs per row (the data-space form
      needs Gauss-Newton curvature and one output), or fewer than 3 labelled rows.
  """
  if not applies(op):
    raise ValueError(
      "laplace_posterior needs Gauss-Newton curvature and a model with one output per row "
      f"(got curvature {op.system.curvature!r})."
    )
  loss: PredictionLoss = op.system.value_fn
  w = op.batch.get("weights")
  w = np.ones(op.rows, np.float32) if w is None else np.asarray(w, np.float32)
  real = np.flatnonzero(w > 0)
  if len(real) < MIN_ROWS:
    raise ValueError(f"laplace_posterior needs at least {MIN_ROWS} labelled rows, got {len(real)}.")
  rows = np.arange(op.rows)  # padded rows stay (weight 0, no effect): one shape per padded size
  if len(real) > MAX_ROWS:
    rows = np.sort(np.random.default_rng(seed).choice(real, MAX_ROWS, replace=False))
  x, y, w_rows = jnp.asarray(op.batch["x"])[rows], jnp.asarray(op.batch["y"])[rows], w[rows]
  w_all = float(np.sum(w))
  pred, b, gram = jit_with_model(_weights, loss.model_fn, static_argnums=0)(
    loss.loss, op.params, x, y, jnp.asarray(w_rows)
  )
  gram = np.asarray(gram, np.float64)
  b = np.asarray(b, np.float64) * float(np.sum(w_rows)) / w_all  # N is every real row
  sqrt_b = np.sqrt(b)
  mu = max(float(op.regularizer_scale()), np.finfo(np.float32).tiny)
  k_hat = sqrt_b[:, None] * gram * sqrt_b[None, :]
  shift = max(mu, 1e-12 * float(np.max(np.diag(k_hat), initial=0.0)))
  cholesky = np.linalg.cholesky(k_hat + shift * np.eye(len(rows)))
  inverse_diagonal = np.sum(scipy.linalg.solve_triangular(cholesky, np.eye(len(rows)), lower=True) ** 2, 0)
  one_minus_h = np.clip(shift * inverse_diagonal, 1e-6, 1.0)  # I − H = μ(K̂ + μI)⁻¹
  loo = (np.asarray(y, np.float64) - np.asarray(pred, np.float64)) / one_minus_h
  posterior = LaplacePosterior(loss.model_fn, op.params, x, sqrt_b, mu, w_all, cholesky, 1.0, 0.0, np.inf, loo)
  spread = posterior._from_kernels(gram, np.diag(gram)) / one_minus_h  # the rows' kernels: no second pass
  keep = w_rows > 0  # the calibration sees real rows only
  noise, scale, dof = calibrate(loo[keep], spread[keep])
  posterior = dataclasses.replace(posterior, loo_residuals=loo[keep])
  return dataclasses.replace(posterior, noise=noise, scale=scale, dof=dof)

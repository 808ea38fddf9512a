"""Training a model while carrying its regularity tangent: the loop's inner solver.

Minimises ``F(θ, s) = Σᵢ mᵢ ℓ(f(θ, xᵢ), yᵢ) / Σᵢ mᵢ + s·½‖θ‖²`` (``m`` a 0/1 mask over a
padded labelled set) with ``optax.chain(regularity_tangent(...), adam)`` on the fused path
``tx.update(None, state, params, value_fn=loss, x=…, y=…, weights=…)``: each minibatch step
returns ``∇F`` and advances the tangent ``v ← v − η_τ((G + λI)v + ρ)`` in one pass (Gauss-Newton
curvature ``G`` and a small damping ``λ`` by default, since an MLP's Hessian is indefinite).

Shapes are fixed: the labelled set is padded to a ``capacity`` and masked, each epoch is a
``lax.scan`` over ``⌈capacity / minibatch⌉`` minibatches of a random order that puts the real
points first (all-padding minibatches are skipped with ``lax.cond``), and all epochs run in
one jitted call. So a :class:`Trainer` compiles once for a whole active-learning run,
however many points are labelled. The strength ``s`` lives in the optimizer state
(``optax.inject_hyperparams``), so changing it does not recompile either.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from curiojax.active.models import make_model
  >>> spec = make_model("mlp", in_features=2, hidden_sizes=(8,))
  >>> x = jax.random.normal(jax.random.key(0), (40, 2)); y = jnp.sin(x[:, 0])
  >>> trainer = Trainer(spec.model_fn, TrainOptions(epochs=20))
  >>> result = trainer.fit(spec.init(jax.random.key(1)), x, y, strength=1e-3, key=jax.random.key(2))
  >>> jax.tree.structure(result.tangent) == jax.tree.structure(result.params)
  True
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from curiojax._checks import check_int
from curiojax.extensions.hypergradient import set_strength, tunable_regularity_tangent
from curiojax.padding import next_pow2
from curiojax.tangent.curvature import check_curvature
from curiojax.tangent.losses import get_loss, prediction_loss
from curiojax.tangent.regularizers import get_regularizer
from curiojax.tangent.solvers import FINISH_MAXITER, FINISH_TOLERANCE, finish_tangent
from curiojax.tangent.transform import TangentInaccurateWarning, carried_tangent, tangent_diagnostics


@dataclasses.dataclass(frozen=True)
class TrainOptions:
  """How to train.

  Attributes:
    epochs: passes over the labelled set per fit.
    learning_rate: Adam step size.
    minibatch_size: points per step.
    damping: ``λ`` added to the curvature of the tangent system.
    curvature: ``"gauss_newton"`` (default, PSD) or ``"hessian"``.
    regularizer: ``"l2"``, ``"log_l2"`` or a callable ``R(params, s)``.
    loss: per-example loss name or callable (see :mod:`curiojax.tangent.losses`).
    finish_tolerance: relative residual the tangent is solved to on the labelled set after
      training (:func:`curiojax.finish_tangent`).
    finish_maxiter: products the finishing solve may spend (conjugate gradients).
  """

  epochs: int = 200
  learning_rate: float = 1e-2
  minibatch_size: int = 32
  damping: float = 1e-3
  curvature: str = "gauss_newton"
  regularizer: Any = "l2"
  loss: Any = "squared_error"
  finish_tolerance: float = FINISH_TOLERANCE
  finish_maxiter: int = FINISH_MAXITER

  def __post_init__(self):
    for name in ("epochs", "minibatch_size", "finish_maxiter"):
      check_int(name, getattr(self, name), 1)
    if not 0 < self.learning_rate < np.inf:
      raise ValueError(f"learning_rate must be positive and finite, got {self.learning_rate!r}.")
    if not 0 <= self.damping < np.inf:
      raise ValueError(f"damping must be finite and >= 0, got {self.damping!r}.")
    if not 0 < self.finish_tolerance < 1:
      raise ValueError(f"finish_tolerance must be in (0, 1), got {self.finish_tolerance!r}.")
    check_curvature(self.curvature)  # unknown names raise here, not at the first fit
    if isinstance(self.regularizer, str):
      get_regularizer(self.regularizer)
    get_loss(self.loss)


class TrainResult(NamedTuple):
  """Outcome of :meth:`Trainer.fit`.

  Attributes:
    params: trained parameters.
    opt_state: optimizer state (holds the tangent; pass back for a warm start).
    tangent: ``τ = dθ*/ds``, shaped like params, solved to ``finish_tolerance`` on the labelled set.
    noise_variance: ``σ̂²``, mean squared training residual (float32 scalar array).
    loss: final regularised objective on the labelled set (scalar array).
    tangent_residual: the tangent's full-data relative residual ``‖(C + λI)τ + ρ‖/‖ρ‖``.
    online_residual: the residual estimate the online recursion reached before finishing.
  """

  params: Any
  opt_state: Any
  tangent: Any
  noise_variance: jax.Array
  loss: jax.Array
  tangent_residual: jax.Array
  online_residual: jax.Array


def make_optimizer(options: TrainOptions, strength: float = 1e-3) -> optax.GradientTransformationExtraArgs:
  """``chain(tunable_regularity_tangent(...), adam)``: the tangent first, its strength in the state."""
  tangent = tunable_regularity_tangent(
    get_regularizer(options.regularizer),
    float(strength),
    curvature=options.curvature,
    damping=float(options.damping),
  )
  return optax.chain(tangent, optax.adam(options.learning_rate))


def capacity_for(n: int, minibatch_size: int) -> int:
  """A padded size for ``n`` points: the next power of two, at least one minibatch."""
  return max(int(minibatch_size), next_pow2(n))


class Trainer:
  """A model and an optimizer, with the whole multi-epoch fit compiled once.

  Args:
    model_fn: batched ``model_fn(params, x) -> (n,)``.
    options: :class:`TrainOptions`.
  """

  def __init__(self, model_fn: Callable, options: TrainOptions | None = None):
    self.model_fn = model_fn
    self.options = options = options or TrainOptions()
    self.loss = prediction_loss(model_fn, options.loss)
    self.regularizer = get_regularizer(options.regularizer)
    self.tx = make_optimizer(options)
    self._fit = jax.jit(self._fit_impl, static_argnames=("epochs",))
    self._predict = jax.jit(model_fn)

  def init(self, params, strength) -> Any:
    """A fresh optimizer state (zero tangent, zero Adam moments) at strength ``s``."""
    return set_strength(self.tx.init(params), strength)

  def predict(self, params, x) -> jax.Array:
    """Jitted ``model_fn(params, x)``."""
    return self._predict(params, x)

  def _fit_impl(self, params, opt_state, x, y, mask, key, *, epochs):
    capacity = x.shape[0]
    mb = min(self.options.minibatch_size, capacity)
    steps = -(-capacity // mb)
    total = steps * mb
    loss = self.loss

    def step(carry, idx):
      params, opt_state = carry
      xb, yb, wb = x[idx], y[idx], mask[idx]

      def do(carry):
        params, opt_state = carry
        updates, opt_state = self.tx.update(None, opt_state, params, value_fn=loss, x=xb, y=yb, weights=wb)
        return optax.apply_updates(params, updates), opt_state

      return jax.lax.cond(jnp.sum(wb) > 0, do, lambda c: c, (params, opt_state)), None

    def epoch(carry, key):
      # Real points first in a random order, padding last; indices wrap past the capacity.
      order = jnp.argsort(jnp.where(mask > 0, jax.random.uniform(key, (capacity,)), 2.0))
      order = jnp.concatenate([order, jnp.full((total - capacity,), order[-1])]) if total > capacity else order
      idx = order.reshape(steps, mb)
      carry, _ = jax.lax.scan(step, carry, idx)
      return carry, None

    (params, opt_state), _ = jax.lax.scan(epoch, (params, opt_state), jax.random.split(key, epochs))
    online_residual = opt_state[0].inner_state.residual
    opt_state = finish_tangent(
      opt_state,
      params,
      loss,
      dict(x=x, y=y, weights=mask),
      tol=self.options.finish_tolerance,
      maxiter=self.options.finish_maxiter,
    )
    preds = self.model_fn(params, x)
    n = jnp.maximum(jnp.sum(mask), 1.0)
    sq = jnp.sum(mask * jnp.square(preds - y)) / n
    strength = opt_state[0].hyperparams["strength"]
    objective = loss.mean_on_predictions(preds, y, mask) + self.regularizer(params, strength)
    residual = opt_state[0].inner_state.residual
    return TrainResult(params, opt_state, carried_tangent(opt_state), sq, objective, residual, online_residual)

  def fit(self, params, x, y, *, strength, key, opt_state=None, mask=None, epochs=None) -> TrainResult:
    """Train from ``params`` (and ``opt_state`` for a warm start) on ``(x, y)``.

    Args:
      params: initial parameters.
      x, y: inputs ``(n, d)`` and targets ``(n,)``, already padded if ``mask`` is given.
      strength: ``s``; replaces the strength in ``opt_state``.
      key: PRNG key for the minibatch order.
      opt_state: continue from this optimizer state (default: a fresh one).
      mask: ``(n,)`` 1 for real points, 0 for padding (default: all real).
      epochs: override ``options.epochs``.

    Returns:
      A :class:`TrainResult`.
    """
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    if x.ndim != 2 or y.shape != (x.shape[0],):
      raise ValueError(f"fit needs x of shape (n, d) and y of shape (n,), got {x.shape} and {y.shape}.")
    if x.shape[0] == 0:
      raise ValueError("fit needs at least one labelled point.")
    mask = jnp.ones(x.shape[0], jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    opt_state = self.init(params, strength) if opt_state is None else set_strength(opt_state, strength)
    epochs = self.options.epochs if epochs is None else int(epochs)
    result = self._fit(params, opt_state, x, y, mask, key, epochs=epochs)
    d = tangent_diagnostics(result.opt_state)
    if not d.accurate:
      warnings.warn(
        f"curiojax: the trained tangent's relative residual on the labelled set is {d.residual:.3g}, above "
        f"its tolerance {d.tolerance:.3g}, after finishing (finish_tolerance {self.options.finish_tolerance:.3g}, "
        f"finish_maxiter {self.options.finish_maxiter}). Scores and hypergradients built on it are "
        "approximate. Likely cause: an indefinite or near-singular curvature; fix: curvature='gauss_newton' "
        "with damping > 0, or a larger finish_maxiter.",
        TangentInaccurateWarning,
        stacklevel=2,
      )
    return result


@functools.lru_cache(maxsize=16)
def cached_trainer(model_fn, options: TrainOptions) -> Trainer:
  """One :class:`Trainer` (one compilation per shape) per ``(model_fn, options)``."""
  return Trainer(model_fn, options)


def train(model_fn, params, x, y, *, strength=1e-3, key=None, options=None, opt_state=None) -> TrainResult:
  """Train ``model_fn`` on ``(x, y)`` with the tangent: a one-call front end to :class:`Trainer`.

  Returns ``TrainResult(params, opt_state, tangent, noise_variance, loss)``.
  """
  key = jax.random.key(0) if key is None else key
  trainer = cached_trainer(model_fn, options or TrainOptions())
  return trainer.fit(params, x, y, strength=strength, key=key, opt_state=opt_state)

"""Per-example losses on predictions, and the prediction loss used as optax ``value_fn``.

A *loss* here is a per-example function ``loss(prediction, target) -> scalar`` on one
example (``prediction`` and ``target`` have the model's output shape). Curiosity scores
need its derivative with respect to the prediction, and the Gauss-Newton curvature its
second derivative, so losses are kept separate from the model.

``prediction_loss(model_fn, loss)`` turns a batched ``model_fn(params, x)`` into the mean
loss ``(1/n) Σᵢ wᵢ ℓ(f(θ, xᵢ), yᵢ)``: a plain ``value_fn(params, x, y)`` for optax, which
also tells the tangent transformation how to form the Gauss-Newton matrix.

Example:
  >>> import jax.numpy as jnp
  >>> model_fn = lambda params, x: x @ params["w"]
  >>> loss = prediction_loss(model_fn)
  >>> float(loss({"w": jnp.ones(2)}, x=jnp.ones((3, 2)), y=jnp.zeros(3)))
  2.0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Loss = Callable[[jax.Array, jax.Array], jax.Array]


def squared_error(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """``½‖f − y‖²`` for one example (the method's default loss)."""
  return 0.5 * jnp.sum(jnp.square(prediction - target))


squared_error.prediction_axes = ()  # the prediction has the target's shape (checked, not broadcast)
squared_error.closed_form = "squared_error"  # E_y[∇_fℓ∇_fℓᵀ] = σ²I under y ~ N(f, σ²): scoring's closed form


def huber(delta: float = 1.0) -> Loss:
  """Huber loss ``½r²`` for ``|r| ≤ δ``, ``δ(|r| − ½δ)`` beyond, summed over outputs."""

  def loss(prediction, target):
    r = jnp.abs(prediction - target)
    return jnp.sum(jnp.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta)))

  loss.prediction_axes = ()
  return loss


def gaussian_nll(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """Heteroscedastic Gaussian NLL; ``prediction = (mean, log_variance)`` on the last axis."""
  mean, log_var = prediction[..., 0], prediction[..., 1]
  return jnp.sum(0.5 * (log_var + jnp.square(target - mean) * jnp.exp(-log_var)))


gaussian_nll.prediction_axes = (2,)  # (mean, log variance) after the target's shape
gaussian_nll.closed_form = "gaussian_nll"  # E_y[∇_fℓ∇_fℓᵀ] is the Fisher information: scoring's closed form


LOSSES: dict[str, Loss] = {"squared_error": squared_error, "huber": huber(), "gaussian_nll": gaussian_nll}


def closed_form(loss: Loss) -> str | None:
  """The name of the closed form a loss declares (``loss.closed_form``), else ``None``.

  A per-example loss may declare ``closed_form = "squared_error"`` (it is a positive multiple of
  ``½‖f − y‖²``: the same ranking) or ``"gaussian_nll"`` (predictions ``(mean, log variance)``); the scorer then uses
  that loss's exact expected squared curiosity instead of quadrature. Declared data, never
  function identity: a wrapped or rebuilt loss keeps its form by keeping the attribute.
  """
  return getattr(loss, "closed_form", None)


def get_loss(loss: str | Loss) -> Loss:
  """Look a loss up by name, or pass a callable through."""
  if callable(loss):
    return loss
  if loss not in LOSSES:
    raise ValueError(f"Unknown loss {loss!r}; choose one of {sorted(LOSSES)} or pass a callable.")
  return LOSSES[loss]


@dataclasses.dataclass(frozen=True)
class PredictionLoss:
  """Mean per-example loss of a batched model: ``value_fn(params, x, y, weights=None)``.

  ``F_data(θ) = Σᵢ wᵢ ℓ(f(θ, xᵢ), yᵢ) / Σᵢ wᵢ`` (plain mean when ``weights`` is None).
  Weights let a padded batch carry a mask without recompiling.
  """

  model_fn: Callable[[Any, jax.Array], jax.Array]
  loss: Loss = squared_error

  def per_example(self, predictions: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example losses from batched predictions, shape ``(n,)``."""
    check_prediction_shape(self.loss, jnp.shape(predictions), jnp.shape(y))
    return jax.vmap(self.loss)(predictions, y)

  def mean_on_predictions(self, predictions, y, weights=None) -> jax.Array:
    """The data loss as a function of the batch's predictions (for Gauss-Newton)."""
    losses = self.per_example(predictions, y)
    if weights is not None and jnp.shape(weights) != losses.shape:
      raise ValueError(f"weights must have one entry per example, shape {losses.shape}, got {jnp.shape(weights)}.")
    if weights is None:
      return jnp.mean(losses)
    return jnp.sum(weights * losses) / jnp.maximum(jnp.sum(weights), 1e-12)

  def __call__(self, params, x, y, weights=None) -> jax.Array:
    return self.mean_on_predictions(self.model_fn(params, x), y, weights)


def prediction_loss(
  model_fn: Callable[[Any, jax.Array], jax.Array], loss: str | Loss = "squared_error"
) -> PredictionLoss:
  """Mean loss of ``model_fn`` over a batch, usable as optax ``value_fn``.

  Args:
    model_fn: batched model, ``model_fn(params, x) -> predictions`` with a leading batch axis.
    loss: a name in ``LOSSES`` or a per-example callable ``loss(prediction, target)``.

  Returns:
    A :class:`PredictionLoss`, called as ``value_fn(params, x=..., y=..., weights=None)``.
  """
  if not callable(model_fn):
    raise TypeError(f"model_fn must be callable model_fn(params, x), got {type(model_fn).__name__}.")
  return PredictionLoss(model_fn, get_loss(loss))


def check_prediction_shape(loss: Loss, prediction_shape, target_shape) -> None:
  """``ValueError`` when a built-in loss would broadcast a model output against labels of another shape.

  A model returning ``(n, 2)`` against labels ``(n,)`` would otherwise train on a silently
  broadcast loss. Custom losses (without a ``prediction_axes`` attribute) are not checked.
  """
  axes = getattr(loss, "prediction_axes", None)
  if axes is None:
    return
  expected = tuple(target_shape) + tuple(axes)
  if tuple(prediction_shape) != expected:
    raise ValueError(
      f"the model's output has shape {tuple(prediction_shape)} but the labels have shape {tuple(target_shape)}; "
      f"this loss needs outputs of shape {expected}. For one output per point return f(x)[..., 0] (or reshape "
      "the labels to match)."
    )


def check_prediction_loss(loss) -> None:
  """``TypeError`` unless ``loss`` comes from :func:`prediction_loss` (model and loss kept apart)."""
  if not isinstance(loss, PredictionLoss):
    raise TypeError("loss must be curiojax.prediction_loss(model_fn, ...), which separates model and loss.")


def check_xy(x, y) -> tuple[jax.Array, jax.Array]:
  """``x`` and ``y`` as arrays sharing a non-empty leading axis, else ``ValueError``."""
  x, y = jnp.asarray(x), jnp.asarray(y)
  if x.ndim == 0 or x.shape[0] == 0 or y.ndim == 0 or y.shape[0] != x.shape[0]:
    raise ValueError(f"x and y must share a non-empty leading axis, got shapes {x.shape} and {y.shape}.")
  return x, y

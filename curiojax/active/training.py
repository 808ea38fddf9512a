"""Training a model and solving its regularity tangent: the loop's inner solver.

Minimises ``F(θ, s) = Σᵢ mᵢ ℓ(f(θ, xᵢ), yᵢ) / Σᵢ mᵢ + s·½‖θ‖²`` (``m`` a 0/1 mask over a
padded labelled set) with Adam, then solves ``τ = −(G + λI)⁻¹ρ`` on the labelled set to a
certified tolerance (:func:`curiojax.finish_tangent`; Gauss-Newton curvature ``G`` and a small
damping ``λ`` by default, since an MLP's Hessian is indefinite). Optionally
(``carry_tangent``) the tangent transformation carries ``τ`` online over the last part of the
training, in the same pass as ``∇F`` (``tx.update(None, state, params, value_fn=loss, ...)``).

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

from curiojax._checks import check_bool, check_int
from curiojax.padding import next_pow2
from curiojax.tangent.access import find_tangent_state
from curiojax.tangent.curvature import check_curvature
from curiojax.tangent.diagnostics import TangentInaccurateWarning, carried_tangent, tangent_diagnostics
from curiojax.tangent.losses import get_loss, prediction_loss
from curiojax.tangent.regularizers import get_regularizer
from curiojax.tangent.solvers import FINISH_MAXITER, FINISH_TOLERANCE, finish_tangent
from curiojax.tangent.strength import get_strength, set_strength, tunable_regularity_tangent

LEARNING_RATE_SCHEDULES = ("constant", "linear_decay")


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
    finish_maxiter: products the finishing solve may spend.
    carry_tangent: the final share of the training steps over which the tangent is carried
      online (``0``, the default: plain training, the tangent solved after it; ``1``: carried
      throughout). Carrying costs a Gauss-Newton product per step and measured no saving in
      the finish (``benchmarks/certified/main.py``); it is there for online uses, e.g.
      tuning ``s`` during training.
    learning_rate_schedule: ``"constant"`` or ``"linear_decay"`` (``η·(1 − t/T)`` over the fit's
      ``T`` steps, restarting at every fit).
    drop_last: minibatches of ``min(minibatch_size, n)`` rows with the incomplete last one dropped
      (``bmdal_reg``'s data loader); default False keeps it.
    regularised_training: True (default) minimises ``F = loss + R(θ, s)`` and carries the
      tangent online; False minimises the unregularised loss (``bmdal_reg``'s protocol): ``s``
      then only defines the tangent system, solved after training at the returned parameters.
    restore_best: evaluate the data loss on a validation set (given to :meth:`Trainer.fit`)
      after every epoch and return the best epoch's parameters; the tangent is solved there.
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
  learning_rate_schedule: str = "constant"
  drop_last: bool = False
  regularised_training: bool = True
  restore_best: bool = False
  carry_tangent: float = 0.0

  def __post_init__(self):
    for name in ("epochs", "minibatch_size", "finish_maxiter"):
      check_int(name, getattr(self, name), 1)
    if not 0 < self.learning_rate < np.inf:
      raise ValueError(f"learning_rate must be positive and finite, got {self.learning_rate!r}.")
    if not 0 <= self.damping < np.inf:
      raise ValueError(f"damping must be finite and >= 0, got {self.damping!r}.")
    if not 0 <= self.carry_tangent <= 1:
      raise ValueError(f"carry_tangent must be in [0, 1] (a share of the training steps), got {self.carry_tangent!r}.")
    if not 0 < self.finish_tolerance < 1:
      raise ValueError(f"finish_tolerance must be in (0, 1), got {self.finish_tolerance!r}.")
    check_curvature(self.curvature)  # unknown names raise here, not at the first fit
    if isinstance(self.regularizer, str):
      get_regularizer(self.regularizer)
    get_loss(self.loss)
    if self.learning_rate_schedule not in LEARNING_RATE_SCHEDULES:
      raise ValueError(
        f"Unknown learning_rate_schedule {self.learning_rate_schedule!r}; choose one of {LEARNING_RATE_SCHEDULES}."
      )
    for name in ("drop_last", "regularised_training", "restore_best"):
      check_bool(name, getattr(self, name))


class TrainResult(NamedTuple):
  """Outcome of :meth:`Trainer.fit`.

  Attributes:
    params: trained parameters.
    opt_state: optimizer state (holds the tangent; pass back for a warm start).
    tangent: ``τ = dθ*/ds``, shaped like params, solved to ``finish_tolerance`` on the labelled
      set (None when ``fit(..., solve_tangent=False)``).
    noise_variance: ``σ̂²``, mean squared training residual (float32 scalar array).
    loss: final regularised objective on the labelled set (scalar array).
    tangent_residual: the tangent's full-data relative residual ``‖(C + λI)τ + ρ‖/‖ρ‖`` (NaN
      when not solved).
    online_residual: the residual estimate the online recursion reached before finishing (NaN
      when nothing is carried online: ``carry_tangent=0`` or unregularised training).
    tangent_products: products (and preconditioner applications, each about one product) the
      tangent's solve used (0 when not solved).
  """

  params: Any
  opt_state: Any
  tangent: Any
  noise_variance: jax.Array
  loss: jax.Array
  tangent_residual: jax.Array
  online_residual: jax.Array
  tangent_products: jax.Array


class TrainState(NamedTuple):
  """The :class:`Trainer`'s optimizer state: the tangent's transformation and Adam's, by name.

  ``tangent`` is a :func:`curiojax.tunable_regularity_tangent` state (the strength ``s`` and the
  tangent); ``adam`` the optimizer's. :func:`curiojax.tangent_of`, :func:`curiojax.finish_tangent`
  and :func:`curiojax.set_strength` find what they need in it, as in any optax chain state.
  """

  tangent: Any
  adam: Any


def make_optimizer(options: TrainOptions, strength: float = 1e-3) -> optax.GradientTransformationExtraArgs:
  """``tunable_regularity_tangent(...)``: the tangent transformation, its strength in the state."""
  return tunable_regularity_tangent(
    get_regularizer(options.regularizer),
    float(strength),
    curvature=options.curvature,
    damping=float(options.damping),
  )


def _adam(options: TrainOptions) -> optax.GradientTransformation:
  return optax.adam(options.learning_rate)


def capacity_for(n: int, minibatch_size: int) -> int:
  """A padded size for ``n`` points: the next power of two, at least one minibatch."""
  return max(int(minibatch_size), next_pow2(n))


class Trainer:
  """A model and an optimizer, with the whole multi-epoch fit compiled once.

  Each step is Adam on ``∇F`` (``F`` the regularised loss, or the plain loss with
  ``regularised_training=False``); over the last ``carry_tangent`` share of the steps the tangent
  transformation carries ``τ`` online in the same pass. After training the tangent is solved
  to ``finish_tolerance`` on the labelled set (:func:`curiojax.finish_tangent`, the method
  chosen by shape), starting from the carried one.

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
    self._adam = _adam(options)
    self._fit = jax.jit(self._fit_impl, static_argnames=("epochs", "solve_tangent"))
    self._predict = jax.jit(model_fn)

  def init(self, params, strength) -> TrainState:
    """A fresh optimizer state (zero tangent, zero Adam moments) at strength ``s``."""
    return set_strength(TrainState(self.tx.init(params), self._adam.init(params)), strength)

  def predict(self, params, x) -> jax.Array:
    """Jitted ``model_fn(params, x)``."""
    return self._predict(params, x)

  def _step(self, params, state: TrainState, batch, carry):
    """One Adam step on ``∇F`` (or the plain loss's gradient); with ``carry``, the tangent advances too."""
    options, loss = self.options, self.loss

    def carried(state):
      grads, tangent = self.tx.update(None, state.tangent, params, value_fn=loss, **batch)
      return grads, state._replace(tangent=tangent)

    def plain(state):
      if options.regularised_training:
        strength = get_strength(state)
        grads = jax.grad(lambda p: loss(p, **batch) + self.regularizer(p, strength))(params)
      else:
        grads = jax.grad(loss)(params, **batch)
      return grads, state

    if not options.regularised_training or options.carry_tangent == 0:
      grads, state = plain(state)
    elif options.carry_tangent == 1:
      grads, state = carried(state)
    else:
      grads, state = jax.lax.cond(carry, carried, plain, state)
    updates, adam = self._adam.update(grads, state.adam, params)
    return updates, state._replace(adam=adam)

  def _fit_impl(self, params, opt_state, x, y, mask, key, validation, *, epochs, solve_tangent):
    options, loss = self.options, self.loss
    capacity = x.shape[0]
    mb = min(options.minibatch_size, capacity)
    steps = -(-capacity // mb)
    total = steps * mb
    n = jnp.sum(mask).astype(jnp.int32)
    if options.drop_last:  # bmdal_reg's loader: batches of min(mb, n) rows, the incomplete last one dropped
      size = jnp.minimum(mb, n)
      n_batches = n // jnp.maximum(size, 1)
    else:
      size, n_batches = mb, -(-n // mb)
    in_batch = (jnp.arange(mb) < size).astype(mask.dtype)
    decay_steps = jnp.maximum(epochs * n_batches, 1).astype(jnp.float32)

    def step(carry, j_idx):
      j, idx = j_idx
      xb, yb, wb = x[idx], y[idx], mask[idx] * in_batch

      def do(carry):
        params, opt_state, count = carry
        carrying = count >= (1.0 - options.carry_tangent) * epochs * n_batches
        updates, opt_state = self._step(params, opt_state, dict(x=xb, y=yb, weights=wb), carrying)
        if options.learning_rate_schedule == "linear_decay":
          updates = jax.tree.map(lambda u: u * (1.0 - count / decay_steps), updates)
        return optax.apply_updates(params, updates), opt_state, count + 1

      active = (j < n_batches) & (jnp.sum(wb) > 0)
      return jax.lax.cond(active, do, lambda c: c, carry), None

    def epoch(carry, key):
      params, opt_state, count, best, best_loss = carry
      # Real points first in a random order, padding last; indices wrap past the capacity.
      order = jnp.argsort(jnp.where(mask > 0, jax.random.uniform(key, (capacity,)), 2.0))
      order = jnp.concatenate([order, jnp.full((total - capacity,), order[-1])]) if total > capacity else order
      (params, opt_state, count), _ = jax.lax.scan(
        step, (params, opt_state, count), (jnp.arange(steps), order.reshape(steps, mb))
      )
      if options.restore_best:
        x_valid, y_valid = validation
        valid_loss = loss(params, x_valid, y_valid)
        better = valid_loss < best_loss
        best = jax.tree.map(lambda u, v: jnp.where(better, u, v), params, best)
        best_loss = jnp.where(better, valid_loss, best_loss)
      return (params, opt_state, count, best, best_loss), None

    best = (params, jnp.float32(jnp.inf)) if options.restore_best else (None, None)  # no copy carried without it
    carry = (params, opt_state, jnp.float32(0.0), *best)
    (params, opt_state, _, best, _), _ = jax.lax.scan(epoch, carry, jax.random.split(key, epochs))
    if options.restore_best:
      params = best
    carried = options.regularised_training and options.carry_tangent > 0
    online_residual = find_tangent_state(opt_state).residual if carried else jnp.float32(jnp.nan)
    tangent, residual, products = None, jnp.float32(jnp.nan), jnp.int32(0)
    if solve_tangent:
      batch = dict(x=x, y=y, weights=mask)
      opt_state, info = finish_tangent(
        opt_state, params, loss, batch, tol=options.finish_tolerance, maxiter=options.finish_maxiter, return_info=True
      )
      tangent, residual, products = (
        carried_tangent(opt_state),
        info.residual,
        info.products + info.preconditioner_products,
      )
    preds = self.model_fn(params, x)
    sq = jnp.sum(mask * jnp.square(preds - y)) / jnp.maximum(jnp.sum(mask), 1.0)
    objective = loss.mean_on_predictions(preds, y, mask) + self.regularizer(params, get_strength(opt_state))
    return TrainResult(params, opt_state, tangent, sq, objective, residual, online_residual, products)

  def fit(
    self,
    params,
    x,
    y,
    *,
    strength,
    key,
    opt_state=None,
    mask=None,
    epochs=None,
    validation=None,
    solve_tangent: bool = True,
  ) -> TrainResult:
    """Train from ``params`` (and ``opt_state`` for a warm start) on ``(x, y)``.

    Args:
      params: initial parameters.
      x, y: inputs ``(n, d)`` and targets ``(n,)``, already padded if ``mask`` is given.
      strength: ``s``; replaces the strength in ``opt_state``.
      key: PRNG key for the minibatch order.
      opt_state: continue from this optimizer state (default: a fresh one).
      mask: ``(n,)`` 1 for real points, 0 for padding (default: all real).
      epochs: override ``options.epochs``.
      validation: ``(x_valid, y_valid)``, required by ``options.restore_best``.
      solve_tangent: False skips the tangent's solve (for a caller that does not use it):
        ``tangent`` is None and ``tangent_residual`` NaN.

    Returns:
      A :class:`TrainResult`.
    """
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    if x.ndim != 2 or y.shape != (x.shape[0],):
      raise ValueError(f"fit needs x of shape (n, d) and y of shape (n,), got {x.shape} and {y.shape}.")
    if x.shape[0] == 0:
      raise ValueError("fit needs at least one labelled point.")
    validation = check_validation(validation, x.shape[1], self.options.restore_best, "TrainOptions", "x")
    mask = jnp.ones(x.shape[0], jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    opt_state = self.init(params, strength) if opt_state is None else set_strength(opt_state, strength)
    epochs = self.options.epochs if epochs is None else int(epochs)
    result = self._fit(params, opt_state, x, y, mask, key, validation, epochs=epochs, solve_tangent=bool(solve_tangent))
    if not solve_tangent:
      return result
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


def check_validation(
  validation, d: int, restore_best: bool, options_name: str, inputs: str, *, needed_by: str | None = None
):
  """``(x_valid, y_valid)`` as finite float32 arrays with ``d`` columns, or None without one.

  Required when ``restore_best`` or when a strategy reads it (``needed_by``, its name); a
  missing or an unused validation set is a ``ValueError`` naming ``options_name`` or the
  strategy; ``inputs`` names what the columns must match.
  """
  if validation is None:
    if restore_best:
      raise ValueError(f"{options_name}(restore_best=True) needs a validation set: validation=(x_valid, y_valid).")
    if needed_by is not None:
      raise ValueError(f"strategy {needed_by!r} needs a validation set: validation=(x_valid, y_valid).")
    return None
  if not restore_best and needed_by is None:
    raise ValueError(
      f"validation is used only with {options_name}(restore_best=True) or a strategy that reads it "
      "(its needs.validation); drop it, set restore_best or choose such a strategy."
    )
  x_valid, y_valid = (np.asarray(a, np.float32) for a in validation)
  if x_valid.ndim != 2 or not len(x_valid) or y_valid.shape != (len(x_valid),):
    raise ValueError(
      f"validation must be (x_valid (m, d), y_valid (m,)) with m >= 1, got {x_valid.shape} and {y_valid.shape}."
    )
  if x_valid.shape[1] != d:
    raise ValueError(f"validation x_valid has {x_valid.shape[1]} columns, {inputs} has {d}.")
  if not (np.all(np.isfinite(x_valid)) and np.all(np.isfinite(y_valid))):
    raise ValueError("the validation set has NaN or infinite values.")
  return x_valid, y_valid


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

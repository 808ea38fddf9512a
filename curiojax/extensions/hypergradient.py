"""Hypergradients from the regularity tangent, and online tuning of the strength ``s``.

For a validation loss ``L_val(θ*(s))`` the chain rule and ``τ = dθ*/ds`` give

    dL_val/ds = ∇_θL_val(θ*)ᵀ τ,

the summed curiosities of the validation points (``method.md``, "Related quantities"). It is
ONE forward-mode JVP of the validation loss along ``τ``; with ``k`` tangents (a strength
vector) a ``vmap`` over them gives the ``k`` partial derivatives.

The same carried tangent tunes ``s`` while the model trains: every few steps,
``log s ← log s − β · s · dL_val/ds`` (``d/d log s = s · d/ds``), or ``s ← s − β dL_val/ds``
when ``s`` already is a log strength (``curiojax.l2(log_strength=True)``). The strength lives
in ``optax.inject_hyperparams`` state (:func:`tunable_regularity_tangent`), so changing it never
recompiles; ``θ*(s)`` and ``τ(s)`` move slowly with ``s``, so the carried tangent stays a good
warm start. The strength's state handling lives in :mod:`curiojax.tangent.strength` (re-exported
here).

Example:
  >>> import jax, jax.numpy as jnp, optax, curiojax
  >>> x = jax.random.normal(jax.random.key(0), (64, 3)); y = x @ jnp.array([1.0, -2.0, 0.5])
  >>> loss = curiojax.prediction_loss(lambda p, x: x @ p["w"])
  >>> tx = optax.chain(curiojax.tunable_regularity_tangent(curiojax.l2(), 0.1), optax.sgd(0.5))
  >>> val = dict(x=x[:16], y=y[:16])
  >>> @jax.jit
  ... def step(params, state):
  ...   updates, state = tx.update(None, state, params, value_fn=loss, x=x, y=y)
  ...   return optax.apply_updates(params, updates), state
  >>> tune = jax.jit(lambda s, p: curiojax.tune_strength(s, p, loss, val, learning_rate=1.0))
  >>> params = {"w": jnp.zeros(3)}; state = tx.init(params)
  >>> for t in range(300):
  ...   params, state = step(params, state)
  ...   if t % 10 == 9:
  ...     state, g = tune(state, params)
  >>> bool(curiojax.get_strength(state) < 0.1)   # noiseless data: less regularisation is better
  True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from curiojax.tangent.diagnostics import carried_tangent
from curiojax.tangent.state import align_tangent
from curiojax.tangent.strength import get_strength, set_strength, tunable_regularity_tangent

__all__ = ["get_strength", "hypergradient", "set_strength", "tunable_regularity_tangent", "tune_strength"]


def hypergradient(val_value_fn: Callable, params, tangent, val_batch: Mapping[str, Any]) -> jax.Array:
  """``dL_val/ds = ∇_θL_val(θ)ᵀτ`` by one JVP of the validation loss along the tangent.

  Args:
    val_value_fn: validation loss ``val_value_fn(params, **val_batch) -> scalar`` (e.g. the
      same :func:`curiojax.prediction_loss` used for training).
    params: trained parameters ``θ*(s)``.
    tangent: ``τ = dθ*/ds`` shaped like params, or with a leading axis ``k`` (``k`` strengths).
    val_batch: ``val_value_fn``'s keyword arguments (e.g. ``dict(x=x_val, y=y_val)``).

  Returns:
    A scalar, or shape ``(k,)`` for ``k`` tangents: the derivative of the validation loss
    with respect to each strength, in the regularizer's own parametrisation of ``s``.
  """
  if not callable(val_value_fn):
    raise TypeError(f"val_value_fn must be callable, got {type(val_value_fn).__name__}.")
  if not isinstance(val_batch, Mapping):
    raise TypeError(f"val_batch must be a dict of val_value_fn's keyword arguments, got {type(val_batch).__name__}.")
  params, tangent, k = align_tangent(params, tangent)
  f = lambda p: val_value_fn(p, **val_batch)
  one = lambda t: jax.jvp(f, (params,), (t,))[1]
  return one(tangent) if k is None else jax.vmap(one)(tangent)


def tune_strength(
  opt_state,
  params,
  val_value_fn: Callable,
  val_batch: Mapping[str, Any],
  *,
  learning_rate: float,
  log_scale: bool = True,
  max_step: float | None = 0.5,
  min_strength: float = 1e-8,
  max_strength: float = 1e8,
):
  """One hypergradient step on the injected strength, using the carried tangent.

  With ``g = dL_val/ds = ∇L_valᵀτ`` (:func:`hypergradient`):

  - ``log_scale=True`` (``s > 0``, e.g. ``curiojax.l2()``): ``log s ← log s − β·s·g``,
    i.e. gradient descent on ``log s`` (``d/d log s = s·d/ds``);
  - ``log_scale=False``: ``s ← s − β·g`` (use this when the regularizer already takes a log
    strength, ``curiojax.l2(log_strength=True)``, or for a signed hyperparameter).

  Call it every few training steps (``τ`` must have caught up with the new ``s``; a few tens of
  steps between calls is typical). Pure and jit-compatible; a vector strength is tuned
  componentwise with its ``k`` tangents.

  Args:
    opt_state: a chain state containing a :func:`tunable_regularity_tangent`.
    params: current parameters.
    val_value_fn, val_batch: the validation loss and its keyword arguments.
    learning_rate: ``β``.
    log_scale: step on ``log s`` (default) or on ``s``.
    max_step: clip each step's size (in log units when ``log_scale``) to this; ``None`` for none.
    min_strength, max_strength: bounds on ``s`` (log-scale updates only).

  Returns:
    ``(new_opt_state, g)`` with ``g`` the hypergradient ``dL_val/ds`` used.
  """
  if not np.isfinite(learning_rate) or learning_rate <= 0:
    raise ValueError(f"learning_rate must be positive and finite, got {learning_rate!r}.")
  s = get_strength(opt_state)
  g = hypergradient(val_value_fn, params, carried_tangent(opt_state), val_batch).astype(s.dtype)
  step = learning_rate * (s * g if log_scale else g)
  if max_step is not None:
    step = jnp.clip(step, -max_step, max_step)
  step = jnp.where(jnp.isfinite(step), step, 0.0)  # never let a bad tangent poison s
  if log_scale:
    new = jnp.clip(s * jnp.exp(-step), min_strength, max_strength)
  else:
    new = s - step
  return set_strength(opt_state, new), g

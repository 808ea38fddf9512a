"""Flax NNX modules as pure ``model_fn(params, x)`` functions.

``nnx.split`` once, outside jit, gives ``(graphdef, params, rest)``; the pure function
merges them back for each call, which is what ``jax.jvp``, the tangent and the scorer
differentiate.

Example:
  >>> from flax import nnx
  >>> import jax.numpy as jnp
  >>> model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
  >>> model_fn, params = nnx_model_fn(model)
  >>> model_fn(params, jnp.ones((5, 3))).shape
  (5, 1)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def nnx_model_fn(module, wrt: Any = None) -> tuple[Callable, Any]:
  """Split an NNX module into a pure batched ``model_fn(params, x)`` and its ``params``.

  Args:
    module: a ``flax.nnx.Module`` called as ``module(x)`` on a batch.
    wrt: the variables that are parameters (default ``nnx.Param``); the rest is frozen.

  Returns:
    ``(model_fn, params)`` with ``params`` the pure state (plain arrays) of ``wrt``, the
    same structure ``nnx.Optimizer(module, tx, wrt=nnx.Param)`` passes to optax.
  """
  from flax import nnx

  wrt = nnx.Param if wrt is None else wrt
  graphdef, params, rest = nnx.split(module, wrt, ...)
  params = nnx.as_pure(params) if hasattr(nnx, "as_pure") else params

  def model_fn(params, x):
    return nnx.merge(graphdef, params, rest)(x)

  return model_fn, params

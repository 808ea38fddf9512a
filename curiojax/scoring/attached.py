"""Compiled functions attached to a user's model function, weakly: no cache keeps a model alive.

A jitted function that takes ``model_fn`` as a static argument of a module-level ``jax.jit``
(or an ``lru_cache`` of scorers) keeps every model ever passed alive in a global cache. Here
the compiled function is built for one ``model_fn``, closes over it through a weak reference,
and is stored in a ``WeakKeyDictionary`` keyed by it: calls with the same ``model_fn`` reuse one
compilation per shape, and the function and its compilations die with ``model_fn``.

Example:
  >>> import gc, weakref, jax.numpy as jnp
  >>> def double(model_fn, x):
  ...   return 2 * model_fn(None, x)
  >>> model_fn = lambda p, x: x + 1
  >>> jit_with_model(double, model_fn) is jit_with_model(double, model_fn)
  True
  >>> ref = weakref.ref(model_fn); _ = jit_with_model(double, model_fn)(jnp.ones(2))
  >>> del model_fn, _; _ = gc.collect(); ref() is None
  True
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Any

import jax

_ATTACHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model_fn -> {key: built}, held weakly


class WeakModel:
  """``model_fn`` through a weak reference: called, and its attributes read, as the model itself.

  :func:`attached` points it at each caller's own ``model_fn`` (:meth:`point_to`): the store is
  keyed by equality, so a caller may be handed what an equal, older model built, and that older
  model may die while the caller's trace runs.
  """

  def __init__(self, model_fn: Callable):
    self._ref = weakref.ref(model_fn)

  def point_to(self, model_fn: Callable) -> None:
    self._ref = weakref.ref(model_fn)

  def __call__(self, *args, **kwargs):
    return self._ref()(*args, **kwargs)

  def __getattr__(self, name: str):
    return getattr(self._ref(), name)


def attached(model_fn: Callable, key: Hashable, build: Callable[[Callable], Any]) -> Any:
  """``build(WeakModel(model_fn))``, made once per ``(model_fn, key)`` and kept while ``model_fn`` lives.

  A ``model_fn`` that is not hashable or weakly referenceable, or an unhashable ``key``, gets
  ``build(model_fn)`` afresh on every call.
  """
  try:
    hash(key)
    store = _ATTACHED.setdefault(model_fn, {})
  except TypeError:
    return build(model_fn)
  if key not in store:
    model = WeakModel(model_fn)
    store[key] = (model, build(model))
  model, built = store[key]
  model.point_to(model_fn)  # the caller's model, which the caller keeps alive (class docstring)
  return built


def jit_with_model(fn: Callable, model_fn: Callable, **jit_options) -> Callable:
  """``jax.jit`` of ``fn(model_fn, *args)`` with ``model_fn`` bound, attached to ``model_fn``.

  ``jit_options`` count the arguments after ``model_fn`` (``static_argnums=0`` is the first of
  them). The compiled programs keep ``fn``'s name.
  """

  def build(model):
    def bound(*args):
      return fn(model, *args)

    bound.__name__ = bound.__qualname__ = fn.__name__
    return jax.jit(bound, **jit_options)

  return attached(model_fn, (fn, tuple(sorted(jit_options.items()))), build)

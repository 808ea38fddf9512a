"""Models for the active-learning loop: a default flax NNX MLP regressor, and a registry.

A model here is a :class:`ModelSpec`: a pure batched ``model_fn(params, x) -> (n,)`` built
once, and ``init(key) -> params`` giving fresh parameters with the same tree structure
(so one jitted training function serves every split, strategy and round, and a saved
parameter tree can be rebuilt from its flat leaves and the config).

The default MLP is ``f(x) = W_L σ(… σ(W_1 x + b_1) …) + b_L`` with ``σ = tanh`` (smooth, so the
Gauss-Newton curvature and the tangent behave), LeCun-normal weights and zero biases.

Example:
  >>> import jax, jax.numpy as jnp
  >>> spec = make_model("mlp", in_features=3, hidden_sizes=(16,))
  >>> params = spec.init(jax.random.key(0))
  >>> spec.model_fn(params, jnp.ones((5, 3))).shape
  (5,)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax

from curiojax._checks import check_int

ACTIVATIONS = ("tanh", "relu", "gelu", "silu")


@dataclasses.dataclass(frozen=True, eq=False)
class ModelSpec:
  """A model for the loop.

  Attributes:
    model_fn: batched ``model_fn(params, x) -> predictions`` of shape ``(n,)`` (scalar
      regression); built once, so jitted callers compile once.
    init: ``init(key) -> params``, fresh parameters with a fixed tree structure.
    name: a label for logs.
  """

  model_fn: Callable[[Any, jax.Array], jax.Array]
  init: Callable[[jax.Array], Any]
  name: str = "model"


def _activation(name: str):
  import jax.nn

  table = {"tanh": jax.nn.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu, "silu": jax.nn.silu}
  if name not in table:
    raise ValueError(f"Unknown activation {name!r}; choose one of {ACTIVATIONS}.")
  return table[name]


def mlp(in_features: int, hidden_sizes: Sequence[int] = (50,), activation: str = "tanh") -> ModelSpec:
  """A flax NNX multilayer perceptron with one scalar output (cached: same args, same spec).

  Args:
    in_features: number of input features.
    hidden_sizes: widths of the hidden layers (empty: a linear model).
    activation: ``"tanh"`` (default), ``"relu"``, ``"gelu"`` or ``"silu"``.

  Returns:
    A :class:`ModelSpec` whose ``model_fn`` returns shape ``(n,)``.
  """
  in_features = check_int("in_features", in_features, 1)
  hidden_sizes = tuple(check_int("hidden_sizes entries", h, 1) for h in hidden_sizes)
  return _mlp(in_features, hidden_sizes, activation)


@functools.lru_cache(maxsize=16)
def _mlp(in_features, hidden_sizes, activation) -> ModelSpec:
  from flax import nnx

  from curiojax.tangent.nnx_adapter import nnx_model_fn

  act = _activation(activation)
  sizes = (in_features, *hidden_sizes, 1)

  class MLP(nnx.Module):
    def __init__(self, rngs):
      self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:], strict=False)])

    def __call__(self, x):
      for layer in self.layers[:-1]:
        x = act(layer(x))
      return self.layers[-1](x)[..., 0]

  model_fn, _ = nnx_model_fn(MLP(nnx.Rngs(0)))

  def init(key):
    return nnx_model_fn(MLP(nnx.Rngs(params=key)))[1]

  return ModelSpec(model_fn=model_fn, init=init, name=f"mlp{hidden_sizes}")


MODELS: dict[str, Callable[..., ModelSpec]] = {"mlp": mlp}


def register_model(name: str):
  """Register a model factory ``factory(in_features, **options) -> ModelSpec`` under ``name``."""

  def deco(factory):
    MODELS[name] = factory
    return factory

  return deco


def make_model(name: str, in_features: int, **options) -> ModelSpec:
  """A model by name (``"mlp"``, or one added with :func:`register_model`)."""
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.")
  return MODELS[name](in_features, **options)

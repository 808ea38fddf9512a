"""Models for the active-learning loop: a default flax NNX MLP regressor, and a registry.

A model here is a :class:`ModelSpec`: a pure batched ``model_fn(params, x) -> (n,)`` built
once, and ``init(key) -> params`` giving fresh parameters with the same tree structure
(so one jitted training function serves every split, strategy and round, and a saved
parameter tree can be rebuilt from its flat leaves and the config).

The default MLP is ``f(x) = W_L σ(… σ(W_1 x + b_1) …) + b_L`` with ``σ = tanh`` (smooth, so the
Gauss-Newton curvature and the tangent behave), LeCun-normal weights and zero biases.
``"ntk_mlp"`` is the ReLU MLP in NTK parameterisation of the batch active-learning benchmark
(Holzmüller et al. 2023; ``benchmarks/active_learning/main.py``).

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
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

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


@dataclasses.dataclass(frozen=True)
class NTKMLP:
  """ReLU MLP in NTK parameterisation: ``z_l = σ_w/√fan_in · h_{l−1} W_l + σ_b · b_l``.

  Weights ``N(0, 1)``, zero biases. Callable as ``model(params, x) -> (n,)``; equal settings
  compare equal, so jitted callers taking it as a static argument compile once. Also exposes
  :meth:`gradient_factors`, which :func:`curiojax.scoring.features.gradient_sketch` uses to
  sketch per-example gradients without forming them (layer ``l``'s gradient is ``u_l ⊗ δ_l``).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> model = NTKMLP((8,))
    >>> model(model.init(jax.random.key(0), 3), jnp.ones((4, 3))).shape
    (4,)
  """

  hidden: tuple[int, ...] = (512, 512)
  sigma_w: float = 0.2
  sigma_b: float = 0.2

  def __post_init__(self):
    object.__setattr__(self, "hidden", tuple(check_int("hidden_sizes entries", h, 1) for h in self.hidden))
    object.__setattr__(self, "sigma_w", float(self.sigma_w))
    object.__setattr__(self, "sigma_b", float(self.sigma_b))

  def init(self, key, d_in: int):
    sizes = (d_in, *self.hidden, 1)
    keys = jax.random.split(key, len(sizes) - 1)
    return [
      {"w": jax.random.normal(k, (a, b), jnp.float32), "b": jnp.zeros((b,), jnp.float32)}
      for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=False)
    ]

  def __call__(self, params, x):
    h = x
    for i, layer in enumerate(params):
      z = self.sigma_w / math.sqrt(layer["w"].shape[0]) * (h @ layer["w"]) + self.sigma_b * layer["b"]
      h = jax.nn.relu(z) if i < len(params) - 1 else z
    return h[..., 0]

  def gradient_factors(self, params, x, dtype=jnp.float32):
    """Per layer ``(u, δ)``: ``u = [σ_w/√fan_in · h_{l−1}, σ_b]``, ``δ = ∂f/∂z_l``; grad = ``u ⊗ δ``.

    ``dtype`` is the matrix products' input type (``jnp.bfloat16`` halves their cost where the
    hardware has it); they accumulate in float32 and the factors are float32.
    """
    mm = lambda a, b: jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)
    hs, masks = [x], []
    h = x
    for i, layer in enumerate(params):
      z = self.sigma_w / math.sqrt(layer["w"].shape[0]) * mm(h, layer["w"]) + self.sigma_b * layer["b"]
      if i < len(params) - 1:
        masks.append((z > 0).astype(z.dtype))
        h = jax.nn.relu(z)
        hs.append(h)
    n = x.shape[0]
    deltas = [jnp.ones((n, 1), x.dtype)]
    for i in range(len(params) - 1, 0, -1):
      w = params[i]["w"]
      deltas.append(mm(deltas[-1], w.T) * (self.sigma_w / math.sqrt(w.shape[0])) * masks[i - 1])
    deltas = deltas[::-1]
    out = []
    for i, layer in enumerate(params):
      scale = self.sigma_w / math.sqrt(layer["w"].shape[0])
      u = jnp.concatenate([scale * hs[i], jnp.full((n, 1), self.sigma_b, x.dtype)], axis=1)
      out.append((u, deltas[i]))
    return out

  def factor_matrices(self, direction):
    """Per layer ``M_l = [V_l; v_l]`` (weights, then the bias row) of a parameter-shaped ``direction``.

    With :meth:`gradient_factors`, ``∇_θf(x)ᵀv = Σ_l u_l M_l δ_lᵀ``: the JVP along ``v`` from the
    factors, with one product per layer instead of a second forward pass.
    """
    return [jnp.concatenate([layer["w"], layer["b"][None]], axis=0) for layer in direction]


def ntk_mlp(
  in_features: int, hidden_sizes: Sequence[int] = (512, 512), sigma_w: float = 0.2, sigma_b: float = 0.2
) -> ModelSpec:
  """The benchmark's :class:`NTKMLP` as a :class:`ModelSpec` (``init`` draws its parameters)."""
  in_features = check_int("in_features", in_features, 1)
  model = NTKMLP(tuple(hidden_sizes), sigma_w, sigma_b)
  return ModelSpec(model_fn=model, init=lambda key: model.init(key, in_features), name=f"ntk_mlp{model.hidden}")


MODELS: dict[str, Callable[..., ModelSpec]] = {"mlp": mlp, "ntk_mlp": ntk_mlp}


def register_model(name: str):
  """Register a model factory ``factory(in_features, **options) -> ModelSpec`` under ``name``."""

  def deco(factory):
    MODELS[name] = factory
    return factory

  return deco


def make_model(name: str, in_features: int, **options) -> ModelSpec:
  """A model by name (``"mlp"``, ``"ntk_mlp"``, or one added with :func:`register_model`)."""
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.")
  return MODELS[name](in_features, **options)

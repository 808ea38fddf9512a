"""Selection strategies: the one small interface every active-learning method implements.

A strategy sees a :class:`SelectionContext` (the trained model, its tangent, the labelled
set and the unlabelled candidates) and returns ``batch_size`` distinct indices into
``ctx.x_pool``. Strategies are registered by name so configs and the command line can
refer to them; third-party strategies register with :func:`register_strategy`.

Example:
  >>> import numpy as np, jax
  >>> ctx = SelectionContext(model_fn=None, params=None, tangent=None,
  ...                        x_labelled=np.zeros((4, 2)), y_labelled=np.zeros(4),
  ...                        x_pool=np.zeros((10, 2)), key=jax.random.key(0))
  >>> picked = get_strategy("random").select(ctx, 3)
  >>> bool(len(set(picked.tolist())) == 3 and picked.max() < 10)
  True
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, Protocol

import jax
import numpy as np


@dataclasses.dataclass
class SelectionContext:
  """Everything a strategy may look at for one round.

  Attributes:
    model_fn: batched ``model_fn(params, x)``.
    params: trained parameters.
    tangent: the regularity tangent (shaped like params), or None if not carried.
    x_labelled, y_labelled: the labelled training set (host arrays).
    x_pool: unlabelled candidates (host array); indices returned refer to its rows.
    key: a JAX PRNG key for this round's randomness.
    noise_variance: ``σ²`` estimate (mean squared training residual), or None.
    options: strategy-specific settings from the config.
    info: filled by the strategy with what the loop may log or use (e.g. ``"top_score"``,
      read by the curiosity stopping rule).
  """

  model_fn: Callable | None
  params: Any
  tangent: Any
  x_labelled: np.ndarray
  y_labelled: np.ndarray
  x_pool: np.ndarray
  key: jax.Array
  noise_variance: float | None = None
  options: dict = dataclasses.field(default_factory=dict)
  info: dict = dataclasses.field(default_factory=dict)


def host_rng(key: jax.Array) -> np.random.Generator:
  """A numpy generator seeded from a JAX key: deterministic, and nothing compiles per size."""
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


class Strategy(Protocol):
  """``select(ctx, batch_size) -> indices``: distinct ints into ``ctx.x_pool``.

  A strategy that reads ``ctx.tangent`` sets the class attribute ``needs_tangent = True``, so
  callers that compute the tangent on demand (the benchmark's post-hoc solve) know to.
  """

  def select(self, ctx: SelectionContext, batch_size: int) -> np.ndarray: ...


STRATEGIES: dict[str, Callable[[], Strategy]] = {}


def register_strategy(name: str):
  """Class decorator registering a strategy under ``name``."""

  def deco(cls):
    STRATEGIES[name] = cls
    return cls

  return deco


def check_strategy_name(name: str) -> None:
  """``ValueError`` listing the registered strategies unless ``name`` is one of them."""
  if name not in STRATEGIES:
    raise ValueError(f"Unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}.")


def get_strategy(name: str, **kwargs) -> Strategy:
  """A fresh strategy by name; unknown names raise ``ValueError``, unknown options ``TypeError``."""
  check_strategy_name(name)
  cls = STRATEGIES[name]
  try:
    accepted = inspect.signature(cls).parameters
  except (TypeError, ValueError):  # pragma: no cover  (builtins without a signature)
    accepted = None
  if accepted is not None and not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
      raise TypeError(f"Strategy {name!r} has no option(s) {unknown}; its options are {sorted(accepted)}.")
  return cls(**kwargs)


def check_batch_size(ctx: SelectionContext, batch_size: int) -> None:
  n = len(ctx.x_pool)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  if batch_size > n:
    raise ValueError(f"batch_size {batch_size} is larger than the unlabelled pool ({n} points).")


@register_strategy("random")
class RandomStrategy:
  """Uniform sampling without replacement: the baseline every method must beat."""

  def select(self, ctx: SelectionContext, batch_size: int) -> np.ndarray:
    check_batch_size(ctx, batch_size)
    return host_rng(ctx.key).choice(len(ctx.x_pool), batch_size, replace=False)


@register_strategy("curiosity")
class CuriosityStrategy:
  """Top-k of the unlabelled curiosity score ``E_y[c²] = σ²·(J_x τ)²`` (``method.md``).

  ``J_x τ = d f(θ*(s), x)/ds`` is how fast the prediction at ``x`` moves when the
  regularizer tightens; the points where it moves most are labelled next. Needs
  ``ctx.tangent``. ``ctx.options`` may set ``heuristic`` (default ``"expected_squared"``).
  Writes the largest score to ``ctx.info["top_score"]``.
  """

  needs_tangent = True

  def select(self, ctx: SelectionContext, batch_size: int) -> np.ndarray:
    from curiojax.scores import curiosity_scores
    from curiojax.select import next_pow2, select_top_k
    from curiojax.train import pad_rows

    check_batch_size(ctx, batch_size)
    if ctx.tangent is None or ctx.model_fn is None:
      raise ValueError("the curiosity strategy needs a model_fn and a regularity tangent in the context.")
    heuristic = ctx.options.get("heuristic", "expected_squared")
    # The pool shrinks every round; padded to a power of two (padding masked), the scores, the
    # top-k and the top score compile once per doubling instead of once per round.
    n = len(ctx.x_pool)
    size = next_pow2(n)
    scores = curiosity_scores(
      ctx.model_fn,
      ctx.params,
      ctx.tangent,
      pad_rows(ctx.x_pool, size),
      heuristic=heuristic,
      noise_variance=ctx.noise_variance,
    )
    chosen = select_top_k(scores, batch_size, mask=np.arange(size) >= n)
    ctx.info["top_score"] = float(scores[chosen[0]])  # one scalar to the host, not the pool
    return chosen

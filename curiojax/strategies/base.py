"""The selection interface every active-learning method implements, and the registry of methods.

A strategy is an object with ``select(ctx, k) -> indices``: it sees a :class:`SelectionContext`
(the trained model and its tangent, the labelled set, the unlabelled candidates, a key) and
returns ``k`` distinct indices into ``ctx.x_pool``. Its settings are typed constructor
arguments; what it reports back (the scores of the chosen points, the top score over the
pool) goes into ``ctx.info``. Strategies are registered by name so configs and the command
line can refer to them (:func:`register_strategy`, :func:`get_strategy`).
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
    x_labelled, y_labelled: the labelled training set (host arrays, the model's input units).
    x_pool: unlabelled candidates (host array); indices returned refer to its rows.
    key: a JAX PRNG key for this round's randomness.
    noise_variance: ``σ²`` estimate (mean squared training residual), or None.
    problem: the fit's linear system ``C + λI`` (:class:`curiojax.TangentOperator`),
      for strategies that solve it for other directions than the tangent; or None.
    validation: a held-out labelled set ``(x_valid, y_valid)`` in the model's units, or None.
    info: filled by the strategy: ``"scores"`` (one per chosen point, in the order returned),
      ``"top_score"`` (the largest over the pool; read by the curiosity stopping rule),
      ``"direction_residual"`` (the relative residual of the directions it solved).
  """

  model_fn: Callable | None
  params: Any
  tangent: Any
  x_labelled: np.ndarray
  y_labelled: np.ndarray
  x_pool: np.ndarray
  key: jax.Array
  noise_variance: float | None = None
  problem: Any = None
  validation: tuple | None = None
  info: dict = dataclasses.field(default_factory=dict)


def host_rng(key: jax.Array) -> np.random.Generator:
  """A numpy generator seeded from a JAX key: deterministic, and nothing compiles per size."""
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


class Strategy(Protocol):
  """``select(ctx, k) -> indices``: distinct ints into ``ctx.x_pool``.

  Class attributes: ``criterion`` (one line: what the strategy maximises, shown to users with
  its picks), ``needs_tangent`` (True if it reads ``ctx.tangent``: callers such as
  :class:`curiojax.Learner` solve the tangent only for strategies that say so, and assume it is
  needed when the attribute is missing) and ``needs_validation`` (True if it reads
  ``ctx.validation``; False when missing).
  """

  criterion: str

  def select(self, ctx: SelectionContext, k: int) -> np.ndarray: ...


STRATEGIES: dict[str, Callable[..., Strategy]] = {}


def register_strategy(name: str, cls=None):
  """Register a strategy class under ``name``: ``register_strategy(name, cls)`` or as a decorator."""

  def register(cls):
    if not callable(getattr(cls, "select", None)):
      raise TypeError(f"strategy {name!r}: {cls!r} has no select(ctx, k) method.")
    STRATEGIES[name] = cls
    return cls

  return register if cls is None else register(cls)


def check_strategy_name(name: str) -> None:
  """``ValueError`` listing the registered strategies unless ``name`` is one of them."""
  if name not in STRATEGIES:
    raise ValueError(f"Unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}.")


def get_strategy(name: str, **options) -> Strategy:
  """A fresh strategy by name with typed options; unknown names raise ``ValueError``, unknown options ``TypeError``."""
  check_strategy_name(name)
  cls = STRATEGIES[name]
  try:
    accepted = inspect.signature(cls).parameters
  except (TypeError, ValueError):  # pragma: no cover  (builtins without a signature)
    accepted = None
  if accepted is not None and not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
    unknown = sorted(set(options) - set(accepted))
    if unknown:
      raise TypeError(f"Strategy {name!r} has no option(s) {unknown}; its options are {sorted(accepted)}.")
  return cls(**options)


def check_batch_size(ctx: SelectionContext, k: int) -> None:
  n = len(ctx.x_pool)
  if k < 1:
    raise ValueError(f"batch size must be >= 1, got {k}.")
  if k > n:
    raise ValueError(f"batch size {k} is larger than the unlabelled pool ({n} points).")


def check_indices(idx, n: int, who: str) -> np.ndarray:
  """``idx`` as distinct int64 indices into ``range(n)``; else a ``ValueError`` starting with ``who``."""
  idx = np.asarray(idx)
  if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
    raise ValueError(f"{who} {idx.dtype} of shape {idx.shape}; expected a 1-D integer index array.")
  idx = idx.astype(np.int64)
  if idx.size and (idx.min() < 0 or idx.max() >= n):
    raise ValueError(f"{who} indices out of range [0, {n}).")
  if len(np.unique(idx)) != len(idx):
    raise ValueError(f"{who} duplicated indices.")
  return idx


def select_checked(strategy: Strategy, ctx: SelectionContext, k: int, name: str = "") -> np.ndarray:
  """``strategy.select(ctx, k)``, checked: ``k`` distinct integer indices into ``ctx.x_pool``.

  Every front-end (:func:`curiojax.select_batch`, :meth:`curiojax.Learner.ask`) selects through
  this, so a strategy of one's own that returns too few, repeated or out-of-range indices is a
  ``ValueError`` naming it, not a wrong batch.
  """
  who = f"strategy {name or type(strategy).__name__!r} returned"
  picked = check_indices(strategy.select(ctx, k), len(ctx.x_pool), who)
  if len(picked) != k:
    raise ValueError(f"{who} {len(picked)} indices, expected {k}.")
  return picked

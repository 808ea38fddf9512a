"""The selection interface every active-learning method implements, and the registry of methods.

A strategy is a frozen dataclass (its fields are its options; ``dataclasses.asdict`` gives them
as JSON-able data) with ``select(ctx, k) -> Selection``: it sees a :class:`SelectionContext`
(the trained model and its tangent, the labelled set, the unlabelled candidates, a key) and
returns a :class:`Selection` (``k`` distinct indices into ``ctx.x_pool`` and what it reports
about them). What it reads besides the model is declared data, :class:`Needs` (read with
:func:`needs_of`). The strategies on sketched gradients take one :class:`SketchOptions` field,
``sketch``. Strategies are registered by name so configs and the command line can refer to them
(:func:`register_strategy`, :func:`get_strategy`).

A strategy of one's own needs only ``select(ctx, k)``; it may return a plain index array (its
scores are then NaN), and without a ``needs`` attribute it is handed the tangent.

Example:
  >>> import dataclasses, numpy as np, jax
  >>> s = get_strategy("random")
  >>> ctx = SelectionContext(None, None, None, np.zeros((0, 2)), np.zeros(0), np.zeros((10, 2)), jax.random.key(0))
  >>> picked = select_checked(s, ctx, 3)
  >>> picked.indices.shape, bool(np.isnan(picked.scores).all()), needs_of(s).tangent
  ((3,), True, False)
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, Protocol

import jax
import numpy as np

from curiojax.scoring.features import check_sketch_options

# bmdal_reg's grad → rp(512); docs/benchmark.md compares dim=256.
SKETCH_DIM = 512
SKETCH_CHUNK = 2048
SKETCH_COMPUTE_DTYPE = "bfloat16"  # the sketch's products; see gradient_sketch
SKETCH_KEYWORDS = ("dim", "chunk_size", "compute_dtype")


@dataclasses.dataclass(frozen=True)
class SketchOptions:
  """Settings of the sketched gradient features ``φ(x)`` (:func:`curiojax.scoring.features.gradient_sketch`).

  Attributes:
    dim: sketch dimension (random projection of the per-example gradients).
    chunk_size: pool rows per chunk when sketching.
    compute_dtype: input type of the sketch's matrix products, ``"bfloat16"`` or ``"float32"``
      (float32 accumulation either way).
  """

  dim: int = SKETCH_DIM
  chunk_size: int = SKETCH_CHUNK
  compute_dtype: str = SKETCH_COMPUTE_DTYPE

  def __post_init__(self):
    dim, chunk_size, compute_dtype = check_sketch_options(self.dim, self.chunk_size, self.compute_dtype)
    object.__setattr__(self, "dim", dim)
    object.__setattr__(self, "chunk_size", chunk_size)

  @classmethod
  def of(cls, sketch) -> SketchOptions:
    """``sketch`` as :class:`SketchOptions`: one already, ``None`` (the defaults) or a dict of its fields."""
    if sketch is None or isinstance(sketch, cls):
      return sketch or cls()
    if not isinstance(sketch, dict):
      raise TypeError(f"sketch must be SketchOptions or a dict of {SKETCH_KEYWORDS}, got {type(sketch).__name__}.")
    unknown = sorted(set(sketch) - set(SKETCH_KEYWORDS))
    if unknown:
      raise TypeError(f"sketch has no option(s) {unknown}; its options are {list(SKETCH_KEYWORDS)}.")
    return cls(**sketch)


@dataclasses.dataclass(frozen=True)
class Needs:
  """What a strategy reads from a :class:`SelectionContext` beyond the pool and the labelled set.

  Callers provide only what is needed: :class:`curiojax.Learner` solves the tangent at each fit
  only for ``tangent`` and requires a validation set for ``validation``.

  Attributes:
    model: ``ctx.model_fn`` and ``ctx.params`` (a trained model).
    tangent: ``ctx.tangent``, the regularity tangent.
    validation: ``ctx.validation``, a held-out labelled set.
    problem: ``ctx.problem``, the fit's linear system (to solve for other directions).
  """

  model: bool = True
  tangent: bool = False
  validation: bool = False
  problem: bool = False


def needs_of(strategy) -> Needs:
  """The :class:`Needs` a strategy declares (its ``needs``). An object that declares none gets the
  model, the tangent and the fit's system but no validation set, or what its older
  ``needs_tangent``/``needs_validation`` attributes say."""
  needs = getattr(strategy, "needs", None)
  if isinstance(needs, Needs):
    return needs
  if needs is not None:
    raise TypeError(f"strategy {type(strategy).__name__!r}: needs must be a curiojax.strategies.Needs, got {needs!r}.")
  tangent, validation = getattr(strategy, "needs_tangent", True), getattr(strategy, "needs_validation", False)
  return Needs(tangent=bool(tangent), validation=bool(validation), problem=True)


@dataclasses.dataclass(frozen=True, eq=False)
class Selection:
  """What a strategy chose, and what it reports about its choice.

  Attributes:
    indices: ``(k,)`` int64, distinct indices into ``ctx.x_pool``, in the order chosen.
    scores: ``(k,)`` float32, each pick's score under the strategy's criterion (NaN where it has none).
    top_score: the largest score over the whole pool (read by the curiosity stopping rule), or None.
    direction_residual: the relative residual of the directions it solved (NaN when none).
  """

  indices: np.ndarray
  scores: np.ndarray
  top_score: float | None = None
  direction_residual: float = float("nan")

  @classmethod
  def of(cls, indices, scores=None, top_score=None, direction_residual=float("nan")) -> Selection:
    """A selection from host or device arrays (one transfer each); ``scores=None`` gives NaN."""
    indices = np.asarray(indices).astype(np.int64, copy=False)
    scores = np.full(len(indices), np.nan, np.float32) if scores is None else np.asarray(scores, np.float32)
    top = None if top_score is None else float(top_score)
    return cls(indices, scores, top, float(direction_residual))


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


def host_rng(key: jax.Array) -> np.random.Generator:
  """A numpy generator seeded from a JAX key: deterministic, and nothing compiles per size."""
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


class Strategy(Protocol):
  """``select(ctx, k) -> Selection`` (or, for one's own strategies, an index array).

  Built-in strategies also declare ``criterion`` (one line: what the strategy maximises, shown to
  users with its picks) and ``needs`` (:class:`Needs`, read with :func:`needs_of`).
  """

  def select(self, ctx: SelectionContext, k: int) -> Selection | np.ndarray: ...


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
  """A fresh strategy by name with typed options; unknown names raise ``ValueError``, unknown options ``TypeError``.

  ``sketch`` may be a dict (``sketch={"dim": 256}``); the flat ``dim``, ``chunk_size`` and
  ``compute_dtype`` of earlier versions are folded into it.

  Example:
    >>> get_strategy("lcmd", sketch={"dim": 256}).sketch.dim, get_strategy("lcmd", dim=128).sketch.dim
    (256, 128)
  """
  check_strategy_name(name)
  cls = STRATEGIES[name]
  try:
    accepted = inspect.signature(cls).parameters
  except (TypeError, ValueError):  # pragma: no cover  (builtins without a signature)
    accepted = None
  if accepted is None or any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
    return cls(**options)
  flat = {key: options.pop(key) for key in SKETCH_KEYWORDS if key in options and key not in accepted}
  if flat and "sketch" not in accepted:  # a strategy without a sketch has no such options
    options, flat = {**options, **flat}, {}
  unknown = sorted(set(options) - set(accepted))
  if unknown:
    raise TypeError(f"Strategy {name!r} has no option(s) {unknown}; its options are {sorted(accepted)}.")
  if flat:
    if "sketch" in options:
      raise TypeError(f"Strategy {name!r}: give {sorted(flat)} inside sketch=, not beside it.")
    options["sketch"] = flat
  if "sketch" in options:
    options["sketch"] = SketchOptions.of(options["sketch"])
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


def select_checked(strategy: Strategy, ctx: SelectionContext, k: int, name: str = "") -> Selection:
  """``strategy.select(ctx, k)`` as a checked :class:`Selection`: ``k`` distinct integer indices
  into ``ctx.x_pool`` and ``k`` scores.

  Every front-end (:func:`curiojax.select_batch`, :meth:`curiojax.Learner.ask`) selects through
  this, so a strategy of one's own that returns too few, repeated or out-of-range indices is a
  ``ValueError`` naming it, not a wrong batch. A plain index array is accepted and wrapped
  (its scores NaN, no top score).
  """
  who = f"strategy {name or type(strategy).__name__!r} returned"
  got = strategy.select(ctx, k)
  got = got if isinstance(got, Selection) else Selection.of(check_indices(got, len(ctx.x_pool), who))
  picked = check_indices(got.indices, len(ctx.x_pool), who)
  if len(picked) != k:
    raise ValueError(f"{who} {len(picked)} indices, expected {k}.")
  scores = np.asarray(got.scores)
  if scores.shape != (k,) or not np.issubdtype(scores.dtype, np.number):
    raise ValueError(f"{who} scores {scores.dtype} of shape {scores.shape}; expected {k} numbers, one per pick.")
  top = got.top_score
  if top is not None and not (np.ndim(top) == 0 and np.issubdtype(np.asarray(top).dtype, np.number)):
    raise ValueError(f"{who} top_score {top!r}; expected a number or None.")
  return Selection.of(picked, scores, top, got.direction_residual)

"""The active learner: which candidates to label next, one labelling session at a time.

A :class:`Learner` holds a pool of unlabelled candidates and the settings of one method
(model, training, strategy); its state (:class:`LearnerState`) holds what has been labelled.
It is pure in the JAX way: methods take a state and return a new one.

- ``state = learner.init(key, x_labelled=…, y_labelled=…)``: labelled rows from outside the
  pool (a practitioner's first measurements), and/or ``labelled=…, labels=…`` pool indices
  already labelled (a simulation's random start).
- ``state, suggestion = learner.ask(state, k)``: standardise (inputs with the statistics of
  every row seen, the target with the first labels'), fit the model (:mod:`curiojax.active.training`;
  with its certified tangent, finished to a relative residual of 1e-3, when the strategy reads
  one), and let the strategy pick ``k`` unlabelled pool indices; :class:`Suggestion` says which, their scores and
  what the scores measure. Asking twice without telling gives the same batch.
- ``state = learner.tell(state, indices, labels)``: add labels for any unlabelled pool
  indices (not only the suggested ones); the next ask starts a new round.
- ``learner.save(dir, state)`` / ``Learner.load(dir)``: everything, atomically, no pickle
  (a JSON manifest and one ``flax.serialization`` msgpack file of arrays and pytrees), so a
  session days later continues exactly where this one stopped.

The simulated loop (:class:`curiojax.active.loop.ActiveLearner`: an oracle answers at once), the
benchmark and ``curiojax suggest`` all drive this object.

Example:
  >>> import jax, numpy as np
  >>> rng = np.random.default_rng(0)
  >>> x_pool = rng.normal(size=(200, 2)).astype("float32")
  >>> x_lab = rng.normal(size=(12, 2)).astype("float32"); y_lab = np.sin(x_lab[:, 0])
  >>> options = LearnerOptions(model=ModelOptions(hidden_sizes=(8,)), train=TrainOptions(epochs=20))
  >>> learner = Learner(x_pool, options=options)
  >>> state = learner.init(jax.random.key(0), x_labelled=x_lab, y_labelled=y_lab)
  >>> state, batch = learner.ask(state, 5)
  >>> batch.indices.shape, learner.strategy_name, bool(np.all(batch.scores > 0))
  ((5,), 'lcmd', True)
  >>> state = learner.tell(state, batch.indices, np.sin(x_pool[batch.indices, 0]))
  >>> int(state.round), len(state.labelled)
  (1, 5)
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from curiojax._checks import check_bool, check_int
from curiojax.active import persistence
from curiojax.active.models import ACTIVATIONS, MODELS, ModelSpec, make_model
from curiojax.active.training import (
  Trainer,
  TrainOptions,
  TrainResult,
  cached_trainer,
  capacity_for,
  check_validation,
)
from curiojax.padding import pad_rows
from curiojax.scoring.uncertainty import MIN_ROWS, LaplacePosterior, laplace_posterior
from curiojax.strategies import (
  DEFAULT_STRATEGY,
  SelectionContext,
  check_indices,
  check_strategy_name,
  get_strategy,
  host_rng,
  needs_of,
  select_checked,
)
from curiojax.tangent.curvature import TangentSystem
from curiojax.tangent.diagnostics import tangent_diagnostics
from curiojax.tangent.operator import TangentOperator

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ModelOptions:
  """Which model a learner fits (see :func:`curiojax.active.models.make_model`).

  Attributes:
    name: a registered model, e.g. ``"mlp"`` or ``"ntk_mlp"``.
    hidden_sizes: widths of the hidden layers.
    activation: the MLP's nonlinearity (``"tanh"``, ``"relu"``, …).
  """

  name: str = "mlp"
  hidden_sizes: tuple[int, ...] = (50,)
  activation: str = "tanh"

  def __post_init__(self):
    if self.name not in MODELS:
      raise ValueError(f"Unknown model {self.name!r}; choose one of {sorted(MODELS)}.")
    object.__setattr__(self, "hidden_sizes", tuple(check_int("hidden_sizes entries", h, 1) for h in self.hidden_sizes))
    if self.name == "mlp" and self.activation not in ACTIVATIONS:
      raise ValueError(f"Unknown activation {self.activation!r}; choose one of {ACTIVATIONS}.")

  def make(self, d: int) -> ModelSpec:
    """The :class:`~curiojax.active.models.ModelSpec` of these options for ``d`` inputs."""
    return make_model(self.name, d, hidden_sizes=self.hidden_sizes, activation=self.activation)


@dataclasses.dataclass(frozen=True)
class LearnerOptions:
  """How one learner fits (the defaults are the main job's, ``curiojax run``).

  Each field is declared once: training in :class:`~curiojax.active.training.TrainOptions`
  (``options.train``), the model in :class:`ModelOptions` (``options.model``). A strategy's own
  options go to :class:`Learner` with the strategy (``strategy_options=``), not here.

  Attributes:
    seed: base seed of the learner's keys.
    strength: fixed regularisation strength ``s``.
    strength_grid: if non-empty, choose ``s`` from it at every fit on a validation split.
    validation_fraction: share of the labelled set held out when choosing ``s``.
    warm_start: continue from the previous fit's parameters and optimizer state.
    standardise: scale inputs (pool statistics) and the target (first labels' statistics)
      inside the learner; False for data already on a common scale (a benchmark protocol).
    model: :class:`ModelOptions`.
    train: :class:`~curiojax.active.training.TrainOptions` (``train.restore_best`` needs the
      learner's ``validation`` set).

  Example:
    >>> LearnerOptions(model=ModelOptions(hidden_sizes=(8,)), train=TrainOptions(epochs=20)).train.epochs
    20
    >>> options_from_dict(LearnerOptions, {"train": {"epochs": 20}}).train.epochs
    20
  """

  seed: int = 0
  strength: float = 3e-3
  strength_grid: tuple[float, ...] = ()
  validation_fraction: float = 0.2
  warm_start: bool = False
  standardise: bool = True
  model: ModelOptions = dataclasses.field(default_factory=ModelOptions)
  train: TrainOptions = dataclasses.field(default_factory=TrainOptions)

  def __post_init__(self):
    check_int("seed", self.seed, 0)
    for name in ("warm_start", "standardise"):
      check_bool(name, getattr(self, name))
    for name, kind in (("model", ModelOptions), ("train", TrainOptions)):
      if not isinstance(getattr(self, name), kind):
        raise TypeError(f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}.")
    if not 0 < self.validation_fraction < 1:
      raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}.")
    object.__setattr__(self, "strength_grid", tuple(self.strength_grid))
    for value in (self.strength, *self.strength_grid):
      if not 0 <= value < np.inf:
        raise ValueError(f"strength and strength_grid values must be finite and >= 0, got {value!r}.")

  @property
  def train_options(self) -> TrainOptions:
    """``self.train`` (the name of the previous release)."""
    return self.train

  def to_dict(self) -> dict:
    """Nested plain dicts, as ``options_from_dict`` reads them back."""
    return dataclasses.asdict(self)


def options_from_dict(cls, values, where: str = "options"):
  """``cls`` (a frozen options dataclass) from a nested dict or ``ml_collections.ConfigDict``.

  The one conversion of configs and saved options: nested dataclass fields take nested dicts
  (``{"train": {"epochs": 100}}`` is ``TrainOptions.epochs``), lists become tuples, and an
  unknown field raises ``ValueError`` naming it and the valid ones (and the new spelling of a
  field that moved into a section, e.g. ``epochs`` → ``train.epochs``).
  """
  values = values.to_dict() if hasattr(values, "to_dict") else values
  if not isinstance(values, Mapping):
    raise TypeError(f"{where} must be a dict of fields, got {type(values).__name__}.")
  fields = {f.name: f for f in dataclasses.fields(cls)}
  kwargs = {}
  for key, value in values.items():
    if key not in fields:
      raise ValueError(f"unknown field {where}.{key}{_moved_hint(cls, key)}; valid fields: {', '.join(fields)}.")
    default = fields[key].default_factory() if callable(fields[key].default_factory) else fields[key].default
    if dataclasses.is_dataclass(default) and not dataclasses.is_dataclass(value):
      value = options_from_dict(type(default), value, f"{where}.{key}")
    kwargs[key] = tuple(value) if isinstance(value, list) else value
  return cls(**kwargs)


def _moved_hint(cls, key: str) -> str:
  for f in dataclasses.fields(cls):
    default = f.default_factory() if callable(f.default_factory) else f.default
    if dataclasses.is_dataclass(default) and key in {g.name for g in dataclasses.fields(default)}:
      return f" (it is now {f.name}.{key})"
  return ""


def options_from_flat(cls, flat: Mapping):
  """``cls`` from the previous release's flat dict (``epochs``, ``hidden_sizes``, ``model="mlp"``, …).

  Fields of a section move into it (``epochs`` → ``train.epochs``, ``model`` → ``model.name``).
  ``strategy_options`` (every strategy's) is kept for the compared strategies where ``cls``
  compares some (:class:`~curiojax.active.loop.LoopOptions`), else dropped (a learner's are
  kept with its strategy).
  """
  nested: dict = {"model": {}, "train": {}}
  sections = {
    name: {f.name for f in dataclasses.fields(kind)}
    for name, kind in (("model", ModelOptions), ("train", TrainOptions))
  }
  for key, value in flat.items():
    if key == "model":
      nested["model"]["name"] = value
    elif key in sections["model"] or key in sections["train"]:
      nested["model" if key in sections["model"] else "train"][key] = value
    elif key != "strategy_options":
      nested[key] = value
  if "strategy_options" in {f.name for f in dataclasses.fields(cls)} and "strategies" in flat:
    nested["strategy_options"] = {k: v for k, v in flat.get("strategy_options", {}).items() if k in flat["strategies"]}
  return options_from_dict(cls, nested)


@dataclasses.dataclass
class LearnerState:
  """What one learner has labelled, and where it stands.

  Attributes:
    labelled: pool indices labelled so far, in the order they were told (int64).
    labels: their labels, original units (float32).
    round: labelling sessions told so far (keys of round ``r`` derive from ``fold_in(key, r)``).
    key: the learner's base PRNG key.
    x_extra, y_extra: labelled rows that are not in the pool (original units), first in the
      training set.
    y_mean, y_std: the target's standardisation, from the first labels (fixed for the run).
    params, opt_state: the last fit (None before the first); used by warm starts.
    top_score0: the first round's top score (curiosity stopping rule), or None.
    stopped: the stopping rule fired.
  """

  labelled: np.ndarray
  labels: np.ndarray
  round: int
  key: jax.Array
  x_extra: np.ndarray
  y_extra: np.ndarray
  y_mean: float
  y_std: float
  params: Any = None
  opt_state: Any = None
  top_score0: float | None = None
  stopped: bool = False


@dataclasses.dataclass(frozen=True)
class Fit:
  """One fit on the labelled set: the trained model, its certified tangent, in standardised units."""

  result: TrainResult
  strength: float

  @property
  def tangent_residual(self) -> float:
    """The tangent's relative residual; NaN when the strategy needed none and none was solved."""
    return float(self.result.tangent_residual)

  @property
  def tangent_accurate(self) -> bool:
    """Whether the tangent meets its documented tolerance (``curiojax.tangent_diagnostics``); True without one."""
    return self.result.tangent is None or bool(tangent_diagnostics(self.result.opt_state).accurate)


@dataclasses.dataclass(frozen=True)
class Suggestion:
  """The batch :meth:`Learner.ask` proposes.

  Attributes:
    indices: pool indices to label next, in the order the strategy chose them (int64).
    scores: the strategy's score of each chosen point (NaN where it has none, e.g. random).
    criterion: what the scores measure (the strategy's one-line description).
    strength, noise_variance, tangent_residual: the fit behind it: ``s``, the training
      residual variance ``σ̂²`` (standardised units) and the tangent's certified residual.
    top_score: the largest score over the pool (curiosity strategies), or None.
    fit: the :class:`Fit` (parameters, tangent) for callers that evaluate it.
    direction_residual: the relative residual of the directions the strategy solved (the
      validation adjoint, the per-layer tangents); NaN when it solved none.
    prediction, std: the fit's prediction for each chosen row and the predictive standard
      deviation of a measurement there, in the target's units (:meth:`Learner.predict`); std
      is NaN, with a warning, below 3 labelled rows.
    low, high: the central 95% interval of a measurement at each chosen row (:meth:`Learner.interval`).
    ids: the chosen rows' labels in the pool DataFrame's index (None for an array pool).
  """

  indices: np.ndarray
  scores: np.ndarray
  criterion: str
  strength: float
  noise_variance: float
  tangent_residual: float
  top_score: float | None
  fit: Fit
  direction_residual: float = float("nan")
  prediction: np.ndarray | None = None
  std: np.ndarray | None = None
  low: np.ndarray | None = None
  high: np.ndarray | None = None
  ids: np.ndarray | None = None


def _is_frame(x) -> bool:
  """A pandas DataFrame (without importing pandas)."""
  return hasattr(x, "columns") and hasattr(x, "iloc")


def _frame_values(frame, names, what: str) -> np.ndarray:
  """A DataFrame's feature columns ``names`` (in that order; all of them when None) as float32 rows."""
  columns = [str(c) for c in frame.columns]
  names = columns if names is None else list(names)
  missing = [n for n in names if n not in columns]
  if missing:
    raise ValueError(f"{what} has no column {missing[0]!r}; the pool's feature columns are {names}.")
  frame = frame.set_axis(columns, axis=1)[names]
  text = [n for n in names if not np.issubdtype(np.asarray(frame[n]).dtype, np.number)]
  if text:
    raise ValueError(f"{what}: column {text[0]!r} is not numeric; give features as numbers (encode categories).")
  return np.asarray(frame, np.float32)


def _check_x(x, name) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if x.ndim != 2 or len(x) == 0:
    raise ValueError(f"{name} must be a non-empty (n, d) array, got shape {x.shape}.")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} has NaN or infinite values.")
  return x


def column_scales(x, names=None) -> tuple[np.ndarray, np.ndarray]:
  """Per-column ``(mean, std)`` for standardising, computed in float64, returned as float32.

  A constant column gets scale 1. A column whose mean or scale float32 cannot hold (an
  overflow, or a spread that rounds to 0) raises a ``ValueError`` naming it (``names[j]``,
  else "column j").
  """
  x = np.asarray(x, np.float64)
  mean, std = x.mean(0), x.std(0)
  std = np.where(std > 0, std, 1.0)
  with np.errstate(over="ignore"):
    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)
  bad = ~np.isfinite(mean32) | ~np.isfinite(std32) | (std32 <= 0) | ~np.isfinite((x - mean32) / std32).all(0)
  if bad.any():
    j = int(np.flatnonzero(bad)[0])
    name = repr(names[j]) if names is not None else f"column {j}"
    raise ValueError(
      f"{name} cannot be standardised in float32 (mean {mean[j]:.3g}, spread {std[j]:.3g}); rescale it (other units)."
    )
  return mean32, std32


def _check_labels(labels, n, who="labels") -> np.ndarray:
  try:
    labels = np.asarray(labels, np.float32)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{who} must be numbers: {e}.") from None
  if labels.shape != (n,):
    raise ValueError(f"{who} have shape {labels.shape}, expected ({n},).")
  if not np.all(np.isfinite(labels)):
    raise ValueError(f"{who} have NaN or infinite values.")
  return labels


class Learner:
  """A pool of candidates and one active-learning method; the session in :mod:`curiojax.active.learner`.

  Args:
    x_pool: unlabelled candidates ``(n, d)``, original units (a simulation may start with some
      of them labelled).
    options: :class:`LearnerOptions` (model, training, strength).
    strategy: a registered strategy name or an object with ``select(ctx, k)``; default the best
      measured, ``curiojax.DEFAULT_STRATEGY`` (``"lcmd"``).
    strategy_options: the named strategy's own options, e.g. ``strategy="curiosity_diverse",
      strategy_options={"gamma": 0.5}`` (checked against its constructor); a strategy object
      carries its own, so it takes none.
    model: a :class:`~curiojax.active.models.ModelSpec` (default from the options).
    trainer: a :class:`~curiojax.active.training.Trainer` for ``model`` (share one to compile once).
    capacity: padded size of the labelled set (default: the next power of two of each fit's
      size, so fits of similar size share one compilation).
    validation: ``(x_valid, y_valid)`` in original units, labelled rows kept out of training
      for ``options.train.restore_best`` (required by it, refused without it).

  A pandas DataFrame works wherever rows go (``x_pool``, ``x_labelled``, ``x_outside``, ``x``
  of :meth:`predict`): its numeric columns are the features, matched by name to the pool's
  (``learner.feature_names``), and the pool's index labels the suggested rows
  (``Suggestion.ids``; ``learner.pool_ids``). Indices into the pool stay positions.

  The tangent is solved at each fit when the strategy reads it (``needs_tangent``, True for
  strategy objects that do not say).
  """

  def __init__(
    self,
    x_pool,
    *,
    options: LearnerOptions | None = None,
    strategy=DEFAULT_STRATEGY,
    strategy_options: Mapping[str, Any] | None = None,
    model: ModelSpec | None = None,
    trainer: Trainer | None = None,
    capacity: int | None = None,
    validation=None,
  ):
    self.feature_names = tuple(str(c) for c in x_pool.columns) if _is_frame(x_pool) else None
    self.pool_ids = np.asarray(x_pool.index) if _is_frame(x_pool) else None
    if self.pool_ids is not None and len(set(self.pool_ids.tolist())) < len(self.pool_ids):
      raise ValueError("x_pool's index has duplicate labels; give each row a unique id (e.g. df.reset_index()).")
    self.x_pool = self.rows(x_pool, "x_pool")
    self.options = options = options or LearnerOptions()
    if not isinstance(options, LearnerOptions):
      raise TypeError(f"options must be a curiojax.LearnerOptions, got {type(options).__name__}.")
    self.strategy_options = _check_strategy_options(strategy, strategy_options)
    if isinstance(strategy, str):
      check_strategy_name(strategy)
      self.strategy_name, self.strategy = strategy, get_strategy(strategy, **self.strategy_options)
    else:
      self.strategy_name, self.strategy = type(strategy).__name__, strategy
    needs_validation = needs_of(self.strategy).validation
    self.validation = check_validation(
      validation,
      self.x_pool.shape[1],
      options.train.restore_best,
      "TrainOptions",
      "the pool",
      needed_by=self.strategy_name if needs_validation else None,
    )
    d = self.x_pool.shape[1]
    self.model = model or options.model.make(d)
    self.trainer = trainer or cached_trainer(self.model.model_fn, options.train)
    self.capacity = capacity
    self.needs_tangent = needs_of(self.strategy).tangent
    self.extra: dict = {}  # what a front end keeps with the learner (see save)
    self._scale(self.x_pool)

  def _scale(self, x_reference):
    d = x_reference.shape[1]
    if self.options.standardise:
      self._set_scale(*column_scales(x_reference))
    else:
      self._set_scale(np.zeros(d), np.ones(d))

  def _set_scale(self, mean, std):
    """The input statistics, and the inputs standardised with them once (pool, validation set)."""
    self.x_mean, self.x_std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    self.xs_pool = self.standardise(self.x_pool)
    self.xs_valid = None if self.validation is None else self.standardise(self.validation[0])

  def rows(self, x, what: str = "x") -> np.ndarray:
    """``x`` as checked float32 rows ``(n, d)``; a DataFrame's feature columns by name (class docstring)."""
    if _is_frame(x):
      x = _frame_values(x, getattr(self, "feature_names", None), what)
    return _check_x(x, what)

  def standardise(self, x) -> np.ndarray:
    """Inputs in the learner's standardised units."""
    return ((np.asarray(x, np.float32) - self.x_mean) / self.x_std).astype(np.float32)

  # -- state ---------------------------------------------------------------------------------
  def init(self, key: jax.Array, *, x_labelled=None, y_labelled=None, labelled=None, labels=None) -> LearnerState:
    """The first state: labelled rows from outside the pool and/or labelled pool indices.

    With ``x_labelled``, the inputs are standardised with the statistics of the pool and those
    rows together. The target is standardised with the statistics of these first labels
    (neither with ``options.standardise=False``).
    """
    d = self.x_pool.shape[1]
    if x_labelled is None:
      if y_labelled is not None:
        raise ValueError("y_labelled given without x_labelled.")
      x_extra, y_extra = np.zeros((0, d), np.float32), np.zeros(0, np.float32)
    else:
      x_extra = self.rows(x_labelled, "x_labelled")
      if x_extra.shape[1] != d:
        raise ValueError(f"x_labelled has {x_extra.shape[1]} columns, the pool has {d}.")
      y_extra = _check_labels(y_labelled, len(x_extra), "y_labelled")
      self._scale(np.concatenate([self.x_pool, x_extra]))
    labelled = check_indices(np.zeros(0, np.int64) if labelled is None else labelled, len(self.x_pool), "labelled:")
    labels = _check_labels(np.zeros(0) if labels is None else labels, len(labelled))
    first = np.concatenate([y_extra, labels])
    if len(first) < 2:
      raise ValueError(f"need at least 2 labelled rows to start, got {len(first)}.")
    mean, std = column_scales(first[:, None], ("the labels",)) if self.options.standardise else ([0.0], [1.0])
    return LearnerState(
      labelled=labelled,
      labels=labels,
      round=0,
      key=key,
      x_extra=x_extra,
      y_extra=y_extra,
      y_mean=float(mean[0]),
      y_std=float(std[0]),
    )

  def unlabelled(self, state: LearnerState) -> np.ndarray:
    """Pool indices not labelled yet."""
    return np.setdiff1d(np.arange(len(self.x_pool)), state.labelled)

  def training_set(self, state: LearnerState) -> tuple[np.ndarray, np.ndarray]:
    """``(xs, ys)``: the labelled rows in standardised units (outside rows first)."""
    xs = np.concatenate([self.standardise(state.x_extra), self.xs_pool[state.labelled]])
    y = np.concatenate([state.y_extra, state.labels])
    return xs, ((y - np.float32(state.y_mean)) / np.float32(state.y_std)).astype(np.float32)

  def round_key(self, state: LearnerState) -> jax.Array:
    return jax.random.fold_in(state.key, state.round)

  # -- fit -----------------------------------------------------------------------------------
  def _train(self, state, xs, ys, strength, key, params=None, opt_state=None) -> TrainResult:
    n = len(xs)
    capacity = self.padded_size(n)
    if n > capacity:
      raise ValueError(f"{n} labelled rows exceed the learner's capacity {capacity}.")
    if params is None:
      params, opt_state = self.model.init(jax.random.fold_in(key, 1)), None
    x, y, mask = self._padded(xs, ys, capacity)
    return self.trainer.fit(
      params,
      x,
      y,
      mask=mask,
      strength=strength,
      key=jax.random.fold_in(key, 2),
      opt_state=opt_state,
      validation=self._validation(state) if self.options.train.restore_best else None,
      solve_tangent=self.needs_tangent,
    )

  def padded_size(self, n: int) -> int:
    """Rows a set of ``n`` is padded to: the learner's capacity, or the next size class of ``n``."""
    return self.capacity or capacity_for(n, self.options.train.minibatch_size)

  def _padded(self, xs, ys, capacity):
    """``(x, y, mask)``: the labelled rows padded to ``capacity`` rows, as every fit sees them."""
    n = len(xs)
    return pad_rows(xs, capacity), pad_rows(ys, capacity), pad_rows(np.ones(n, np.float32), capacity)

  def _validation(self, state: LearnerState):
    """The validation set in the model's units (the target's scale is the state's), or None."""
    if self.validation is None:
      return None
    return self.xs_valid, (self.validation[1] - np.float32(state.y_mean)) / np.float32(state.y_std)

  def problem(self, fit: Fit, xs, ys, curvature: str | None = None) -> TangentOperator:
    """The fit's linear system ``C + λI`` on its training set ``(xs, ys)`` (padded as in the fit).

    ``curvature`` overrides the options' (the posterior is Gauss-Newton whatever the tangent's).
    """
    x, y, mask = self._padded(xs, ys, self.padded_size(len(xs)))
    trainer, options = self.trainer, self.options
    system = TangentSystem(trainer.loss, trainer.regularizer, curvature or options.train.curvature)
    return TangentOperator(system, fit.result.params, fit.strength, options.train.damping, dict(x=x, y=y, weights=mask))

  def choose_strength(self, state, xs, ys, key) -> float:
    """``s`` from ``strength_grid`` with the lowest RMSE on a held-out part of the labelled set."""
    n = len(xs)
    n_val = max(1, int(round(self.options.validation_fraction * n)))
    perm = host_rng(jax.random.fold_in(key, 3)).permutation(n)  # nothing compiles per n
    val, tr = perm[:n_val], perm[n_val:]
    x_val = pad_rows(xs[val], self.padded_size(n))
    errors = []
    for s in self.options.strength_grid:
      res = self._train(state, xs[tr], ys[tr], s, key)
      pred = np.asarray(self.trainer.predict(res.params, x_val))[:n_val]
      errors.append(float(np.sqrt(np.mean((pred - ys[val]) ** 2))))
    return float(self.options.strength_grid[int(np.argmin(errors))])

  def fit(self, state: LearnerState) -> tuple[LearnerState, Fit]:
    """Fit the model on the labelled set (strength fixed or chosen on validation)."""
    key = self.round_key(state)
    xs, ys = self.training_set(state)
    strength = self.choose_strength(state, xs, ys, key) if self.options.strength_grid else self.options.strength
    warm = self.options.warm_start and state.params is not None
    params, opt_state = (state.params, state.opt_state) if warm else (None, None)
    result = self._train(state, xs, ys, strength, key, params, opt_state)
    return dataclasses.replace(state, params=result.params, opt_state=result.opt_state), Fit(result, float(strength))

  def predict(self, state: LearnerState, fit: Fit, x, *, return_std: bool = False):
    """Predictions of a fit at rows ``x`` (original units in and out), and their standard deviations.

    Args:
      state, fit: the state and the fit (``suggestion.fit``) to predict with.
      x: rows ``(m, d)`` in the pool's units (a pandas DataFrame's values work too).
      return_std: also return the predictive standard deviation of a measurement at each row
        (the calibrated linearised Laplace posterior, :mod:`curiojax.scoring.uncertainty`: the
        model's uncertainty plus the noise), in the target's units.

    Returns:
      ``mean`` (float32 ``(m,)``), or ``(mean, std)`` with ``return_std``. The predictive
      distribution is a Student-t (its degrees of freedom calibrated with the scale); its
      central intervals are :meth:`interval`.

    Example:
      >>> import jax, numpy as np
      >>> x_pool = np.random.default_rng(0).normal(size=(100, 2))
      >>> options = LearnerOptions(model=ModelOptions(hidden_sizes=(8,)), train=TrainOptions(epochs=20))
      >>> learner = Learner(x_pool, options=options, strategy="random")
      >>> state = learner.init(jax.random.key(0), labelled=np.arange(10), labels=x_pool[:10, 0])
      >>> state, batch = learner.ask(state, 3)
      >>> mean, std = learner.predict(state, batch.fit, x_pool[:4], return_std=True)
      >>> low, high = learner.interval(state, batch.fit, x_pool[:4], level=0.68)
      >>> mean.shape, bool(np.all(std > 0)), bool(np.all((low < mean) & (mean < high)))
      ((4,), True, True)
    """
    xs = self.standardise(self.rows(x))
    capacity = self.padded_size(len(xs))
    if len(xs) <= capacity:  # one compilation for every call of this size class
      out = np.asarray(self.trainer.predict(fit.result.params, pad_rows(xs, capacity)))[: len(xs)]
    else:
      out = np.asarray(self.trainer.predict(fit.result.params, xs))
    mean = out * np.float32(state.y_std) + np.float32(state.y_mean)
    if not check_bool("return_std", return_std):
      return mean
    return mean, self.posterior(state, fit).std(xs) * np.float32(state.y_std)

  def interval(self, state: LearnerState, fit: Fit, x, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)``: the central ``level`` interval of a measurement at each row of ``x`` (target's units).

    Its coverage on held-out rows is measured by ``benchmarks/calibration/main.py``; an example
    is :meth:`predict`'s.
    """
    mean = self.predict(state, fit, x)
    half = self.posterior(state, fit).half_width(self.standardise(self.rows(x)), level)
    return mean - half * np.float32(state.y_std), mean + half * np.float32(state.y_std)

  def posterior(self, state: LearnerState, fit: Fit) -> LaplacePosterior:
    """The fit's calibrated linearised Laplace posterior (standardised units; :meth:`predict` uses it)."""
    xs, ys = self.training_set(state)
    return laplace_posterior(self.problem(fit, xs, ys, curvature="gauss_newton"))  # GN: the Laplace curvature

  # -- ask / tell ----------------------------------------------------------------------------
  def ask(self, state: LearnerState, k: int) -> tuple[LearnerState, Suggestion]:
    """Fit, then let the strategy choose ``k`` unlabelled pool indices to label next."""
    k = check_int("k", k, 1)
    unlabelled = self.unlabelled(state)
    if k > len(unlabelled):
      raise ValueError(f"asked for {k} points, the pool has {len(unlabelled)} unlabelled.")
    state, fit = self.fit(state)
    return state, self.select(state, fit, k, unlabelled)

  def select(self, state: LearnerState, fit: Fit, k: int, unlabelled=None) -> Suggestion:
    """The strategy's ``k`` picks among the unlabelled pool, given a fit."""
    unlabelled = self.unlabelled(state) if unlabelled is None else unlabelled
    xs, ys = self.training_set(state)
    noise_variance = float(fit.result.noise_variance)
    ctx = SelectionContext(
      model_fn=self.model.model_fn,
      params=fit.result.params,
      tangent=fit.result.tangent,
      x_labelled=xs,
      y_labelled=ys,
      x_pool=self.xs_pool[unlabelled],
      key=jax.random.fold_in(self.round_key(state), 4),
      noise_variance=noise_variance,
      problem=self.problem(fit, xs, ys),
      validation=self._validation(state),
    )
    selection = select_checked(self.strategy, ctx, k, str(self.strategy_name))
    indices = unlabelled[selection.indices].astype(np.int64)
    prediction = self.predict(state, fit, self.x_pool[indices])
    std = half = np.full(len(indices), np.nan, np.float32)
    if len(xs) >= MIN_ROWS:
      posterior, chosen, y_std = self.posterior(state, fit), self.xs_pool[indices], np.float32(state.y_std)
      std, half = posterior.std(chosen) * y_std, posterior.half_width(chosen, 0.95) * y_std
    else:  # too few labels to calibrate an error bar: say so, never a made-up one
      warnings.warn(f"no error bars with {len(xs)} labelled rows (std is NaN): they need {MIN_ROWS}.", stacklevel=2)
    return Suggestion(
      indices=indices,
      scores=selection.scores,
      criterion=getattr(self.strategy, "criterion", self.strategy_name),
      strength=fit.strength,
      noise_variance=noise_variance,
      tangent_residual=fit.tangent_residual,
      top_score=selection.top_score,
      fit=fit,
      direction_residual=selection.direction_residual,
      prediction=prediction,
      std=std,
      low=prediction - half,
      high=prediction + half,
      ids=None if self.pool_ids is None else self.pool_ids[indices],
    )

  def tell(self, state: LearnerState, indices=(), labels=(), *, x_outside=None, y_outside=None) -> LearnerState:
    """Add labels (original units); the next ask is a new round.

    Args:
      state: the current state.
      indices, labels: unlabelled pool indices (any, not only the suggested ones) and their labels.
      x_outside, y_outside: labelled rows that are not in the pool (measured elsewhere).
    """
    indices = check_indices(indices, len(self.x_pool), "tell:")
    already = np.intersect1d(indices, state.labelled)
    if already.size:
      raise ValueError(f"pool indices {already[:5].tolist()} are labelled already.")
    labels = _check_labels(labels, len(indices))
    x_extra, y_extra = state.x_extra, state.y_extra
    if x_outside is not None or y_outside is not None:
      x_new = self.rows(x_outside, "x_outside")
      if x_new.shape[1] != self.x_pool.shape[1]:
        raise ValueError(f"x_outside has {x_new.shape[1]} columns, the pool has {self.x_pool.shape[1]}.")
      x_extra = np.concatenate([x_extra, x_new])
      y_extra = np.concatenate([y_extra, _check_labels(y_outside, len(x_new), "y_outside")])
    if not len(indices) and len(x_extra) == len(state.x_extra):
      raise ValueError("tell needs at least one label (pool indices with labels, or rows outside the pool).")
    return dataclasses.replace(
      state,
      labelled=np.concatenate([state.labelled, indices]).astype(np.int64),
      labels=np.concatenate([state.labels, labels]).astype(np.float32),
      x_extra=x_extra.astype(np.float32),
      y_extra=y_extra.astype(np.float32),
      round=state.round + 1,
    )

  # -- persistence ---------------------------------------------------------------------------
  def save(self, directory, state: LearnerState, *, extra: dict | None = None) -> None:
    """Write the learner and its state to ``directory`` (created if missing), atomically.

    ``state.json`` (settings, progress) and one ``flax.serialization`` msgpack file (pool,
    labels, the model and optimizer pytrees as state dicts); see
    :mod:`curiojax.active.persistence`. A crash at any point leaves the previous save or the
    new one, never a mix. ``extra`` is any JSON-able dict a front end keeps with the learner
    (``curiojax suggest``'s row ids).
    """
    if not isinstance(self.strategy_name, str) or self.strategy_name not in _registered():
      raise ValueError(
        f"cannot save a learner whose strategy {self.strategy_name!r} is not registered by name "
        "(curiojax.strategies.register_strategy); load could not rebuild it."
      )
    meta, arrays = state_to_saved(state)
    meta = {
      "kind": "learner",
      "learner_format": FORMAT_VERSION,
      "options": self.options.to_dict(),
      "strategy": self.strategy_name,
      "strategy_options": self.strategy_options,
      "capacity": self.capacity,
      "x_mean": self.x_mean.tolist(),
      "x_std": self.x_std.tolist(),
      "state": meta,
      "extra": extra or {},
      "feature_names": None if self.feature_names is None else list(self.feature_names),
      "pool_ids": None if self.pool_ids is None else [_json_id(i) for i in self.pool_ids.tolist()],
    }
    arrays = {"state": arrays, "x_pool": self.x_pool}
    if self.validation is not None:
      arrays["x_valid"], arrays["y_valid"] = self.validation
    persistence.save_state(directory, meta, arrays, tag=state.round)

  @classmethod
  def load(cls, directory, *, model: ModelSpec | None = None) -> tuple[Learner, LearnerState]:
    """The learner and state saved by :meth:`save` (a clear ``ValueError`` if unreadable).

    The ``extra`` dict given to :meth:`save` is ``learner.extra``.
    """
    meta, arrays = persistence.load_state(directory)
    if meta.get("kind") != "learner" or meta.get("learner_format") != FORMAT_VERSION:
      raise ValueError(f"{directory} does not hold a saved curiojax learner (format {FORMAT_VERSION}).")
    try:
      options, strategy_options = _saved_options(meta)
      validation = (arrays["x_valid"], arrays["y_valid"]) if "x_valid" in arrays else None
      learner = cls(
        arrays["x_pool"],
        options=options,
        strategy=meta["strategy"],
        strategy_options=strategy_options,
        model=model,
        capacity=meta["capacity"],
        validation=validation,
      )
      learner._set_scale(*_saved_scale(meta["x_mean"], meta["x_std"], learner.x_pool.shape[1]))
      if meta.get("feature_names") is not None:
        learner.feature_names = tuple(meta["feature_names"])
        learner.pool_ids = np.asarray(meta["pool_ids"])
      state = state_from_saved(learner, meta["state"], arrays["state"])
      learner.extra = dict(meta.get("extra", {}))
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError(f"{directory}: the saved learner is inconsistent: {type(e).__name__}: {e}") from None
    return learner, state


def _check_strategy_options(strategy, strategy_options) -> dict:
  """The strategy's own options as a plain dict (a ``ConfigDict`` too); none for a strategy object."""
  options = strategy_options.to_dict() if hasattr(strategy_options, "to_dict") else strategy_options
  if options is not None and not isinstance(options, Mapping):
    raise TypeError(f"strategy_options must be a dict of the strategy's options, got {options!r}.")
  if options and not isinstance(strategy, str):
    raise TypeError("strategy_options go with a strategy named by string; a strategy object carries its own options.")
  return dict(options or {})


def _saved_options(meta: dict) -> tuple[LearnerOptions, dict]:
  """The saved :class:`LearnerOptions` and strategy options; a flat dict (the previous release's) is converted."""
  saved = meta["options"]
  if isinstance(saved.get("model"), Mapping):
    return options_from_dict(LearnerOptions, saved), dict(meta.get("strategy_options") or {})
  strategy_options = saved.get("strategy_options", {}).get(meta["strategy"], {})
  return options_from_flat(LearnerOptions, saved), dict(strategy_options)


def _json_id(value):
  """A pool index label as JSON keeps it (numbers and text as they are, anything else as text)."""
  return value if isinstance(value, (int, float, str)) else str(value)


def _registered():
  from curiojax.strategies import STRATEGIES

  return STRATEGIES


def state_to_saved(state: LearnerState) -> tuple[dict, dict]:
  """A :class:`LearnerState` as JSON-able meta and a state dict of arrays (the model's pytrees keyed by path)."""
  meta = {
    "round": int(state.round),
    "key_data": np.asarray(jax.random.key_data(state.key)).tolist(),
    "y_mean": float(state.y_mean),
    "y_std": float(state.y_std),
    "top_score0": state.top_score0,
    "stopped": bool(state.stopped),
    "has_model": state.params is not None,
  }
  arrays = {
    "labelled": np.asarray(state.labelled, np.int64),
    "labels": np.asarray(state.labels, np.float32),
    "x_extra": np.asarray(state.x_extra, np.float32),
    "y_extra": np.asarray(state.y_extra, np.float32),
  }
  if state.params is not None:
    arrays["params"] = persistence.tree_to_state_dict(state.params)
    arrays["opt_state"] = persistence.tree_to_state_dict(state.opt_state)
  return meta, arrays


def state_from_saved(learner: Learner, meta: dict, arrays: dict) -> LearnerState:
  """Rebuild the state :func:`state_to_saved` wrote; tree structures come from ``learner``'s model."""
  if not isinstance(arrays, dict):
    raise ValueError(f"the saved learner state is a {type(arrays).__name__}, not a state dict of arrays.")
  n = len(learner.x_pool)
  labelled = check_indices(arrays["labelled"], n, "saved labelled indices:")
  labels = _check_labels(arrays["labels"], len(labelled), "saved labels")
  x_extra = np.asarray(arrays["x_extra"], np.float32)
  if x_extra.ndim != 2 or x_extra.shape[1] != learner.x_pool.shape[1]:
    raise ValueError(f"saved labelled rows have shape {x_extra.shape}, the pool has {learner.x_pool.shape[1]} columns.")
  y_extra = _check_labels(arrays["y_extra"], len(x_extra), "saved labels of the rows outside the pool")
  params = opt_state = None
  if meta["has_model"]:
    params_like = jax.eval_shape(learner.model.init, jax.random.key(0))
    opt_like = jax.eval_shape(lambda p: learner.trainer.init(p, 0.0), params_like)
    params = persistence.tree_from_state_dict(params_like, arrays["params"], "parameters")
    opt_state = persistence.tree_from_state_dict(opt_like, arrays["opt_state"], "optimizer state")
  return LearnerState(
    labelled=labelled,
    labels=labels,
    round=_saved_round(meta["round"]),
    key=jax.random.wrap_key_data(np.asarray(meta["key_data"], np.uint32)),
    x_extra=x_extra,
    y_extra=y_extra,
    y_mean=_saved_float("y_mean", meta["y_mean"]),
    y_std=_saved_float("y_std", meta["y_std"], positive=True),
    params=params,
    opt_state=opt_state,
    top_score0=meta["top_score0"],
    stopped=bool(meta["stopped"]),
  )


def _saved_round(value) -> int:
  """The saved round: an int a PRNG fold-in takes (a forged 10**30 would overflow it)."""
  value = check_int("saved round", value, 0)
  if value >= 2**31:
    raise ValueError(f"saved round {value} is beyond any real run (< 2**31).")
  return value


def _saved_float(name: str, value, positive: bool = False) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(np.float32(value)):
    raise ValueError(f"saved {name} must be a finite float32 number, got {value!r}.")
  if positive and not value > 0:
    raise ValueError(f"saved {name} must be > 0, got {value!r}.")
  return float(value)


def _saved_scale(mean, std, d: int) -> tuple[np.ndarray, np.ndarray]:
  """The saved input statistics: ``d`` finite means and finite positive scales each."""
  mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  with np.errstate(over="ignore"):
    ok = mean.shape == std.shape == (d,) and np.isfinite(np.float32(mean)).all() and np.isfinite(np.float32(std)).all()
  if not ok or not (np.float32(std) > 0).all():
    raise ValueError(f"the saved input statistics (x_mean, x_std) must be {d} finite numbers each, x_std > 0.")
  return mean, std

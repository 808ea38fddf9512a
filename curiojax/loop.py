"""The active-learning loop as a library: train with the tangent → score → select → label → repeat.

One round of an :class:`ActiveLearner` (one pool, one oracle, one strategy):

1. standardise (inputs with the pool's statistics, the target with the initial labelled
   set's: both known before any query) and fit the model on the labelled set, carrying
   the regularity tangent ``τ = dθ*/ds`` (:mod:`curiojax.train`); from scratch each round,
   or warm-started from the previous round's parameters and optimizer state;
   the strength ``s`` is fixed or chosen on a validation split of the labelled set
   (grid search: fit on the rest for each ``s``, keep the lowest validation RMSE);
2. evaluate on a test set if given (RMSE and MAE in the target's original units);
3. let the strategy pick a batch from the unlabelled pool, ask the oracle, add.

Label schedule: ``initial_size``, then ``+batch_size`` per round for ``rounds`` rounds, capped
by the label ``budget`` and the pool. Curiosity stopping rule (``stop_ratio > 0``): stop
acquiring when the top score falls to ``stop_ratio ×`` the top score of the first round
(the most curious point is no longer interesting compared with where we started).

:class:`Experiment` runs the benchmark form (several strategies × random splits of one
dataset, the held-back label column as oracle) one unit (round, split, strategy) at a time
so the caller can save after each (:mod:`curiojax.persistence`). All randomness comes from
keys derived from ``seed``, the split and the round, so a resumed run repeats an
uninterrupted one exactly.

Example:
  >>> import numpy as np
  >>> from curiojax.data import ArrayOracle
  >>> rng = np.random.default_rng(0)
  >>> x = rng.normal(size=(300, 2)).astype("float32"); y = np.sin(2 * x[:, 0]) + 0.1 * x[:, 1]
  >>> opts = LoopOptions(initial_size=20, batch_size=10, rounds=2, epochs=20)
  >>> state, records = run_active_learning(x[:200], ArrayOracle(y[:200]), strategy="curiosity",
  ...                                      options=opts, x_test=x[200:], y_test=y[200:])
  >>> len(state.labelled), len(records)
  (40, 3)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from curiojax._checks import check_int
from curiojax.models import ModelSpec, make_model
from curiojax.scores import HEURISTICS, LABELLED_HEURISTICS
from curiojax.strategies import SelectionContext, check_strategy_name, get_strategy, host_rng
from curiojax.train import Trainer, TrainOptions, cached_trainer, capacity_for, pad_rows


@dataclasses.dataclass(frozen=True)
class LoopOptions:
  """Settings of the loop (the fields of ``configs/*.py`` minus the dataset and output).

  Attributes:
    strategies: strategy names for :class:`Experiment`.
    seed: base seed; every key derives from it.
    num_splits: random train/test splits for :class:`Experiment`.
    test_fraction: share of the data held out for testing in each split.
    initial_size: labels before the first round (drawn at random from the pool).
    batch_size: labels added per round.
    rounds: acquisition rounds (``rounds + 1`` fits: after each acquisition and before the first).
    budget: maximum total labels (0: no budget beyond ``rounds``).
    warm_start: continue from the previous round's parameters and optimizer state.
    strength: fixed regularisation strength ``s``.
    strength_grid: if non-empty, choose ``s`` from it each round on a validation split.
    validation_fraction: share of the labelled set held out when choosing ``s``.
    stop_ratio: curiosity stopping rule threshold (0 disables it).
    model, hidden_sizes, activation: the model (see :func:`curiojax.models.make_model`).
    epochs, learning_rate, minibatch_size, damping, curvature: training (see
      :class:`curiojax.train.TrainOptions`).
    heuristic: curiosity score heuristic passed to the curiosity strategy.
  """

  strategies: tuple[str, ...] = ("random", "curiosity", "curiosity_diverse")
  seed: int = 0
  num_splits: int = 3
  test_fraction: float = 0.2
  initial_size: int = 50
  batch_size: int = 25
  rounds: int = 8
  budget: int = 0
  warm_start: bool = False
  strength: float = 1e-3
  strength_grid: tuple[float, ...] = ()
  validation_fraction: float = 0.2
  stop_ratio: float = 0.0
  model: str = "mlp"
  hidden_sizes: tuple[int, ...] = (50,)
  activation: str = "tanh"
  epochs: int = 100
  learning_rate: float = 1e-2
  minibatch_size: int = 32
  damping: float = 1e-3
  curvature: str = "gauss_newton"
  heuristic: str = "expected_squared"

  def __post_init__(self):
    for name, low in (
      ("seed", 0),
      ("num_splits", 1),
      ("initial_size", 2),
      ("batch_size", 1),
      ("rounds", 0),
      ("budget", 0),
    ):
      check_int(name, getattr(self, name), low)
    if not self.strategies:
      raise ValueError("strategies is empty; give at least one, e.g. ('random', 'curiosity').")
    for name in self.strategies:
      check_strategy_name(name)
    if len(set(self.strategies)) != len(self.strategies):
      raise ValueError(f"strategies has duplicates: {list(self.strategies)}.")
    pool_heuristics = [h for h in HEURISTICS if h not in LABELLED_HEURISTICS]  # pool points have no labels
    if self.heuristic not in pool_heuristics:
      raise ValueError(f"Unknown heuristic {self.heuristic!r} for unlabelled pools; choose one of {pool_heuristics}.")
    if not 0 < self.test_fraction < 1:
      raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}.")
    if not 0 < self.validation_fraction < 1:
      raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}.")
    if not self.strength >= 0 or any(not s >= 0 for s in self.strength_grid):
      raise ValueError("strength and strength_grid values must be >= 0.")
    if not 0 <= self.stop_ratio < 1:
      raise ValueError(f"stop_ratio must be in [0, 1), got {self.stop_ratio!r}.")
    if self.budget and self.budget < self.initial_size:
      raise ValueError(f"budget {self.budget} is smaller than initial_size {self.initial_size}.")
    _ = self.train_options  # validates the training fields

  @property
  def train_options(self) -> TrainOptions:
    return TrainOptions(
      epochs=self.epochs,
      learning_rate=self.learning_rate,
      minibatch_size=self.minibatch_size,
      damping=self.damping,
      curvature=self.curvature,
    )

  def label_schedule(self, pool_size: int) -> list[int]:
    """Labels used at each fit: ``[initial, initial + b, …]`` capped by budget and pool."""
    if self.initial_size >= pool_size:
      raise ValueError(f"initial_size {self.initial_size} leaves no unlabelled pool ({pool_size} points in all).")
    if self.rounds and self.batch_size > pool_size - self.initial_size:
      raise ValueError(
        f"batch_size {self.batch_size} is larger than the unlabelled pool "
        f"({pool_size - self.initial_size} points after the initial {self.initial_size})."
      )
    cap = min(pool_size, self.budget or pool_size)
    counts = [self.initial_size]
    while len(counts) <= self.rounds and counts[-1] < cap:
      counts.append(min(counts[-1] + self.batch_size, cap))
    return counts


@dataclasses.dataclass
class LearnerState:
  """Where one active learner stands (everything needed to continue).

  Attributes:
    labelled: pool indices labelled so far, in acquisition order (int64).
    labels: their labels as the oracle gave them (float32).
    round: the next round to run.
    params, opt_state: the last fit (None before the first); used by warm starts.
    key: the learner's base PRNG key (round keys are ``fold_in(key, round)``).
    top_score0: the first round's top score (curiosity stopping rule), or None.
    stopped: the stopping rule fired.
  """

  labelled: np.ndarray
  labels: np.ndarray
  round: int
  key: jax.Array
  params: Any = None
  opt_state: Any = None
  top_score0: float | None = None
  stopped: bool = False


class ActiveLearner:
  """One active-learning run: a pool, an oracle and a strategy.

  Args:
    x_pool: candidates ``(n, d)`` (original units), including the initial labelled points.
    oracle: ``oracle(pool_indices) -> labels``.
    strategy: a name or an object with ``select(ctx, batch_size)``.
    options: :class:`LoopOptions`.
    model: a :class:`~curiojax.models.ModelSpec` (default from the options).
    trainer: a :class:`~curiojax.train.Trainer` for ``model`` (share one across learners to compile once).
    x_test, y_test: optional test set (original units) for RMSE/MAE.
    capacity: padded labelled-set size (default from the label schedule).
  """

  def __init__(
    self,
    x_pool,
    oracle: Callable,
    *,
    strategy,
    options: LoopOptions,
    model: ModelSpec | None = None,
    trainer: Trainer | None = None,
    x_test=None,
    y_test=None,
    capacity: int | None = None,
    name: str = "",
  ):
    self.x_pool = _check_x(x_pool, "x_pool")
    self.oracle = oracle
    self.options = options
    self.schedule = options.label_schedule(len(self.x_pool))
    self.strategy = get_strategy(strategy) if isinstance(strategy, str) else strategy
    self.name = name or (strategy if isinstance(strategy, str) else type(strategy).__name__)
    d = self.x_pool.shape[1]
    self.model = model or make_model(options.model, d, hidden_sizes=options.hidden_sizes, activation=options.activation)
    self.trainer = trainer or cached_trainer(self.model.model_fn, options.train_options)
    self.capacity = capacity or capacity_for(self.schedule[-1], options.minibatch_size)
    self.x_mean = self.x_pool.mean(0)
    self.x_std = np.where(self.x_pool.std(0) > 0, self.x_pool.std(0), 1.0).astype(np.float32)
    self.xs_pool = ((self.x_pool - self.x_mean) / self.x_std).astype(np.float32)
    self.x_test = None if x_test is None else _check_x(x_test, "x_test")
    self.y_test = None if y_test is None else np.asarray(y_test, np.float32)
    if self.x_test is not None:
      if self.y_test is None or self.y_test.shape != (len(self.x_test),):
        raise ValueError("y_test must be given with x_test, shape (n_test,).")
      self.xs_test = ((self.x_test - self.x_mean) / self.x_std).astype(np.float32)

  # -- state ---------------------------------------------------------------------------
  def init_state(self, key: jax.Array, initial: Sequence[int] | None = None) -> LearnerState:
    """Query the oracle for the initial labelled set (random ``initial_size`` points by default)."""
    n = len(self.x_pool)
    if initial is None:
      initial = np.asarray(jax.random.permutation(jax.random.fold_in(key, 10_007), n))[: self.options.initial_size]
    initial = _check_indices(initial, n, "initial")
    if len(initial) != self.options.initial_size:
      raise ValueError(f"initial has {len(initial)} indices, initial_size is {self.options.initial_size}.")
    labels = _check_labels(self.oracle(initial), len(initial))
    return LearnerState(labelled=initial.astype(np.int64), labels=labels, round=0, key=key)

  def done(self, state: LearnerState) -> bool:
    return state.round >= len(self.schedule)

  def _standardise_y(self, state):
    """``(ys, mean, std)``: labels standardised by the initial labelled set's statistics."""
    first = state.labels[: self.options.initial_size]  # the same rows every round of a run
    mean, std = np.float32(first.mean()), np.float32(first.std())
    std = std if std > 0 else np.float32(1.0)
    return ((state.labels - mean) / std).astype(np.float32), mean, std

  def _fit(self, xs, ys, strength, key, params=None, opt_state=None):
    n = len(xs)
    mask = pad_rows(np.ones(n, np.float32), self.capacity)
    if params is None:
      params, opt_state = self.model.init(jax.random.fold_in(key, 1)), None
    return self.trainer.fit(
      params,
      pad_rows(xs, self.capacity),
      pad_rows(ys, self.capacity),
      mask=mask,
      strength=strength,
      key=jax.random.fold_in(key, 2),
      opt_state=opt_state,
    )

  def choose_strength(self, xs, ys, key) -> float:
    """``s`` from ``strength_grid`` with the lowest RMSE on a held-out part of the labelled set."""
    n = len(xs)
    n_val = max(1, int(round(self.options.validation_fraction * n)))
    perm = host_rng(jax.random.fold_in(key, 3)).permutation(n)  # nothing compiles per n
    val, tr = perm[:n_val], perm[n_val:]
    x_val = pad_rows(xs[val], self.capacity)  # one predict compilation for every round
    errors = []
    for s in self.options.strength_grid:
      res = self._fit(xs[tr], ys[tr], s, key)
      pred = np.asarray(self.trainer.predict(res.params, x_val))[:n_val]
      errors.append(float(np.sqrt(np.mean((pred - ys[val]) ** 2))))
    return float(self.options.strength_grid[int(np.argmin(errors))])

  def step(self, state: LearnerState) -> tuple[LearnerState, dict]:
    """Run round ``state.round``: fit, evaluate, select and label the next batch.

    Returns the new state and a record: round, labels, test_rmse, test_mae (original
    units), strength, noise_variance, tangent_residual (the fit's certified residual), top_score, seconds.
    """
    if self.done(state):
      raise ValueError("this learner has finished its label schedule.")
    t0 = time.perf_counter()
    r = state.round
    key = jax.random.fold_in(state.key, r)
    xs = self.xs_pool[state.labelled]
    ys, y_mean, y_std = self._standardise_y(state)
    strength = self.choose_strength(xs, ys, key) if self.options.strength_grid else self.options.strength
    warm = self.options.warm_start and state.params is not None
    res = self._fit(xs, ys, strength, key, state.params if warm else None, state.opt_state if warm else None)
    noise_variance = float(res.noise_variance)
    record = {
      "round": r,
      "labels": int(len(state.labelled)),
      "strength": float(strength),
      "noise_variance": noise_variance,
      "tangent_residual": float(res.tangent_residual),
    }
    if self.x_test is not None:
      pred = np.asarray(self.trainer.predict(res.params, self.xs_test)) * y_std + y_mean
      err = pred - self.y_test
      record["test_rmse"] = float(np.sqrt(np.mean(err**2)))
      record["test_mae"] = float(np.mean(np.abs(err)))
    new = dataclasses.replace(state, round=r + 1, params=res.params, opt_state=res.opt_state)
    record["top_score"] = float("nan")
    if r + 1 < len(self.schedule) and not state.stopped:
      unlabelled = np.setdiff1d(np.arange(len(self.x_pool)), state.labelled)
      batch = self.schedule[r + 1] - self.schedule[r]
      ctx = SelectionContext(
        model_fn=self.model.model_fn,
        params=res.params,
        tangent=res.tangent,
        x_labelled=xs,
        y_labelled=ys,
        x_pool=self.xs_pool[unlabelled],
        key=jax.random.fold_in(key, 4),
        noise_variance=noise_variance,
        options={"heuristic": self.options.heuristic},
      )
      picked = _check_indices(self.strategy.select(ctx, batch), len(unlabelled), f"strategy {self.name!r}")
      if len(picked) != batch:
        raise ValueError(f"strategy {self.name!r} returned {len(picked)} indices, expected {batch}.")
      top = ctx.info.get("top_score")
      if top is not None:
        record["top_score"] = float(top)
        if r == 0:
          new.top_score0 = float(top)
        elif self.options.stop_ratio > 0 and state.top_score0 and top <= self.options.stop_ratio * state.top_score0:
          new.stopped = True
      if not new.stopped:
        chosen = unlabelled[picked]
        labels = _check_labels(self.oracle(chosen), len(chosen))
        new.labelled = np.concatenate([state.labelled, chosen]).astype(np.int64)
        new.labels = np.concatenate([state.labels, labels]).astype(np.float32)
    if new.stopped:
      new.round = len(self.schedule)
    record["stopped"] = bool(new.stopped)
    record["seconds"] = time.perf_counter() - t0
    return new, record


def _check_x(x, name) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if x.ndim != 2 or len(x) == 0:
    raise ValueError(f"{name} must be a non-empty (n, d) array, got shape {x.shape}.")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} has NaN or infinite values.")
  return x


def _check_indices(idx, n, who) -> np.ndarray:
  idx = np.asarray(idx)
  if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
    raise ValueError(f"{who}: expected a 1-D integer index array, got dtype {idx.dtype} shape {idx.shape}.")
  if idx.size and (idx.min() < 0 or idx.max() >= n):
    raise ValueError(f"{who}: indices out of range [0, {n}).")
  if len(np.unique(idx)) != len(idx):
    raise ValueError(f"{who}: duplicated indices.")
  return idx


def _check_labels(labels, n) -> np.ndarray:
  labels = np.asarray(labels, np.float32)
  if labels.shape != (n,):
    raise ValueError(f"the oracle returned labels of shape {labels.shape}, expected ({n},).")
  if not np.all(np.isfinite(labels)):
    raise ValueError("the oracle returned NaN or infinite labels.")
  return labels


def run_active_learning(
  x_pool,
  oracle,
  *,
  strategy="curiosity",
  options: LoopOptions | None = None,
  key=None,
  initial=None,
  x_test=None,
  y_test=None,
  model: ModelSpec | None = None,
  capacity: int | None = None,
  callback=None,
) -> tuple[LearnerState, list[dict]]:
  """Run one active learner to the end of its schedule; notebook front end.

  Args:
    x_pool: candidates ``(n, d)``; oracle: ``oracle(indices) -> labels``.
    strategy: name or strategy object; options: :class:`LoopOptions`.
    key: PRNG key (default from ``options.seed``); initial: initial pool indices (optional).
    x_test, y_test: optional test set; model: optional :class:`ModelSpec`.
    capacity: padded labelled-set size (default from the schedule).
    callback: ``callback(state, record)`` after each round.

  Returns:
    ``(final_state, records)``.
  """
  options = options or LoopOptions()
  key = jax.random.key(options.seed) if key is None else key
  learner = ActiveLearner(
    x_pool, oracle, strategy=strategy, options=options, model=model, x_test=x_test, y_test=y_test, capacity=capacity
  )
  state = learner.init_state(key, initial)
  records = []
  while not learner.done(state):
    state, record = learner.step(state)
    records.append(record)
    if callback is not None:
      callback(state, record)
  return state, records


# -- benchmark form: strategies × splits ---------------------------------------------------
@dataclasses.dataclass
class ExperimentState:
  """Progress of an :class:`Experiment`: one :class:`LearnerState` per (strategy, split)."""

  learners: dict[tuple[str, int], LearnerState]
  records: list[dict]
  unit: int = 0


class Experiment:
  """Compare strategies on random splits of ``(x, y)``; the held-back labels are the oracle.

  Units run in the order round → split → strategy, so partial results compare the
  strategies at equal label counts. One :class:`~curiojax.train.Trainer` (one compilation)
  serves every unit.
  """

  def __init__(self, x, y, options: LoopOptions, model: ModelSpec | None = None):
    from curiojax.data import ArrayOracle

    self.x = _check_x(x, "x")
    self.y = np.asarray(y, np.float32)
    if self.y.shape != (len(self.x),) or not np.all(np.isfinite(self.y)):
      raise ValueError("y must be a finite (n,) array matching x.")
    self.options = options
    n = len(self.x)
    n_test = max(1, int(round(options.test_fraction * n)))
    if n - n_test < 3:
      raise ValueError(f"{n} rows leave too few for training after holding out {n_test} for testing.")
    self.model = model or make_model(
      options.model, self.x.shape[1], hidden_sizes=options.hidden_sizes, activation=options.activation
    )
    self.trainer = cached_trainer(self.model.model_fn, options.train_options)
    self.learners: dict[tuple[str, int], ActiveLearner] = {}
    self.split_keys = []
    for split in range(options.num_splits):
      key = jax.random.fold_in(jax.random.key(options.seed), split)
      perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), n))
      test, pool = perm[:n_test], perm[n_test:]
      self.split_keys.append(jax.random.fold_in(key, 1))
      for name in options.strategies:
        self.learners[name, split] = ActiveLearner(
          self.x[pool],
          ArrayOracle(self.y[pool]),
          strategy=name,
          options=options,
          model=self.model,
          trainer=self.trainer,
          x_test=self.x[test],
          y_test=self.y[test],
          name=name,
        )
    schedule = next(iter(self.learners.values())).schedule
    self.units = [
      (r, split, name)
      for r in range(len(schedule))
      for split in range(options.num_splits)
      for name in options.strategies
    ]

  def init_state(self) -> ExperimentState:
    """Initial labelled sets (the same for every strategy of a split)."""
    states = {}
    for (name, split), learner in self.learners.items():
      states[name, split] = learner.init_state(self.split_keys[split])
    return ExperimentState(states, [], 0)

  def done(self, state: ExperimentState) -> bool:
    return state.unit >= len(self.units)

  def step(self, state: ExperimentState) -> tuple[ExperimentState, dict | None]:
    """Run the next unit (round, split, strategy); a finished learner's unit is skipped (None)."""
    r, split, name = self.units[state.unit]
    learner, ls = self.learners[name, split], state.learners[name, split]
    learners = dict(state.learners)
    if learner.done(ls) or ls.round != r:
      return ExperimentState(learners, state.records, state.unit + 1), None
    ls, record = learner.step(ls)
    learners[name, split] = ls
    record = {"strategy": name, "split": split, **record}
    return ExperimentState(learners, [*state.records, record], state.unit + 1), record


def summarise(records: Sequence[dict]) -> dict:
  """Per strategy: mean over splits of the mean log test RMSE over rounds, final RMSE, labels."""
  out = {}
  for name in dict.fromkeys(r["strategy"] for r in records):
    rows = [r for r in records if r["strategy"] == name and "test_rmse" in r]
    splits = sorted({r["split"] for r in rows})
    mean_logs, finals, labels = [], [], []
    for s in splits:
      srows = sorted((r for r in rows if r["split"] == s), key=lambda r: r["round"])
      mean_logs.append(float(np.mean(np.log([r["test_rmse"] for r in srows]))))
      finals.append(srows[-1]["test_rmse"])
      labels.append(srows[-1]["labels"])
    out[name] = {
      "mean_log_test_rmse": float(np.mean(mean_logs)),
      "final_test_rmse": float(np.mean(finals)),
      "final_test_rmse_std": float(np.std(finals)),
      "labels_used": int(np.max(labels)) if labels else 0,
      "splits": len(splits),
    }
  return out

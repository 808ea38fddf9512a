"""The simulated active-learning loop: a :class:`~curiojax.active.learner.Learner` and an oracle that answers at once.

One round of an :class:`ActiveLearner` (one pool, one oracle, one strategy) is one
``ask`` / ``tell`` of the learner (:mod:`curiojax.active.learner`: standardise, fit with the certified
tangent, select), with, in between, an evaluation on a test set if given (RMSE and MAE in
the target's original units) and the oracle's labels.

Label schedule: ``initial_size``, then ``+batch_size`` per round for ``rounds`` rounds, capped
by the label ``budget`` and the pool. Curiosity stopping rule (``stop_ratio > 0``): stop
acquiring when the top score falls to ``stop_ratio ×`` the top score of the first round
(the most curious point is no longer interesting compared with where we started).

:class:`Experiment` runs the benchmark form (several strategies × random splits of one
dataset, the held-back label column as oracle) one unit (round, split, strategy) at a time
so the caller can save after each (:mod:`curiojax.active.persistence`). All randomness comes from
keys derived from ``seed``, the split and the round, so a resumed run repeats an
uninterrupted one exactly.

Example:
  >>> import numpy as np
  >>> from curiojax.active.data import ArrayOracle
  >>> rng = np.random.default_rng(0)
  >>> x = rng.normal(size=(300, 2)).astype("float32"); y = np.sin(2 * x[:, 0]) + 0.1 * x[:, 1]
  >>> opts = LoopOptions(initial_size=20, batch_size=10, rounds=2, train=TrainOptions(epochs=20))
  >>> state, records = run_active_learning(x[:200], ArrayOracle(y[:200]), strategy="curiosity",
  ...                                      options=opts, x_test=x[200:], y_test=y[200:])
  >>> len(state.labelled), len(records)
  (40, 3)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from curiojax._checks import check_int
from curiojax.active.learner import (
  Learner,
  LearnerOptions,
  LearnerState,
  _check_labels,
  _check_x,
  state_from_saved,
  state_to_saved,
)
from curiojax.active.models import ModelSpec
from curiojax.active.training import Trainer, TrainOptions, cached_trainer, capacity_for  # noqa: F401 (the example)
from curiojax.strategies import DEFAULT_STRATEGY, check_indices, check_strategy_name, get_strategy

# The main job (`curiojax run`) compares random, the default strategy (what `Learner` and
# `curiojax suggest` use) and curiosity-weighted LCMD.
DEFAULT_STRATEGIES = ("random", DEFAULT_STRATEGY, "curiosity_diverse")


@dataclasses.dataclass(frozen=True)
class LoopOptions(LearnerOptions):
  """Settings of the simulated loop: a :class:`~curiojax.active.learner.LearnerOptions` and a label schedule.

  These are the fields of ``configs/*.py`` minus the dataset and output; their defaults are
  the main job's (``curiojax run``), and ``curiojax.config_defaults`` is built from them.

  Attributes:
    strategies: strategy names compared by :class:`Experiment`.
    strategy_options: the own options of compared strategies by name, e.g.
      ``{"curiosity_diverse": {"gamma": 0.5}}`` (checked against each strategy's constructor;
      a strategy not named here runs with its defaults).
    num_splits: random train/test splits for :class:`Experiment`.
    test_fraction: share of the data held out for testing in each split.
    initial_size: labels before the first round (drawn at random from the pool).
    batch_size: labels added per round.
    rounds: acquisition rounds (``rounds + 1`` fits: after each acquisition and before the first).
    budget: maximum total labels (0: no budget beyond ``rounds``).
    stop_ratio: curiosity stopping rule threshold (0 disables it).
  """

  strategies: tuple[str, ...] = DEFAULT_STRATEGIES
  strategy_options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  num_splits: int = 5
  test_fraction: float = 0.2
  initial_size: int = 50
  batch_size: int = 25
  rounds: int = 10
  budget: int = 0
  stop_ratio: float = 0.0

  def __post_init__(self):
    super().__post_init__()
    for name, low in (("num_splits", 1), ("initial_size", 2), ("batch_size", 1), ("rounds", 0), ("budget", 0)):
      check_int(name, getattr(self, name), low)
    if not self.strategies:
      raise ValueError("strategies is empty; give at least one, e.g. ('random', 'curiosity').")
    for name in self.strategies:
      check_strategy_name(name)
    if len(set(self.strategies)) != len(self.strategies):
      raise ValueError(f"strategies has duplicates: {list(self.strategies)}.")
    self._check_strategy_options()
    if not 0 < self.test_fraction < 1:
      raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}.")
    if not 0 <= self.stop_ratio < 1:
      raise ValueError(f"stop_ratio must be in [0, 1), got {self.stop_ratio!r}.")
    if self.train.restore_best:
      raise ValueError(
        "restore_best needs a validation set, which the simulated loop does not hold out; use it with "
        "curiojax.Learner(..., validation=(x_valid, y_valid)) (as benchmarks/active_learning/main.py does)."
      )
    if self.budget and self.budget < self.initial_size:
      raise ValueError(f"budget {self.budget} is smaller than initial_size {self.initial_size}.")

  def _check_strategy_options(self):
    options = self.strategy_options
    options = options.to_dict() if hasattr(options, "to_dict") else options  # a ConfigDict from a config file
    if not isinstance(options, Mapping) or not all(isinstance(v, Mapping) for v in options.values()):
      raise TypeError(f"strategy_options must map strategy names to dicts of options, got {options!r}.")
    for name, kwargs in options.items():
      if name not in self.strategies:
        raise ValueError(
          f"strategy_options names {name!r}, which is not compared; strategies: {list(self.strategies)}."
        )
      get_strategy(name, **kwargs)  # unknown options, bad values: raise here
    object.__setattr__(self, "strategy_options", {k: dict(v) for k, v in options.items()})

  @property
  def learner_options(self) -> LearnerOptions:
    """The :class:`LearnerOptions` part (its fields, shared by name)."""
    return LearnerOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(LearnerOptions)})

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


class ActiveLearner:
  """One simulated active-learning run: a :class:`~curiojax.active.learner.Learner`, an oracle, a schedule.

  Args:
    x_pool: candidates ``(n, d)`` (original units), including the initial labelled points.
    oracle: ``oracle(pool_indices) -> labels``.
    strategy: a name or an object with ``select(ctx, batch_size)``.
    options: :class:`LoopOptions`.
    model: a :class:`~curiojax.active.models.ModelSpec` (default from the options).
    trainer: a :class:`~curiojax.active.training.Trainer` for ``model`` (share one across learners to compile once).
    x_test, y_test: optional test set (original units) for RMSE/MAE.
    capacity: padded labelled-set size (default from the label schedule: one compilation per run).
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
    x_pool = _check_x(x_pool, "x_pool")
    self.oracle = oracle
    self.options = options
    self.schedule = options.label_schedule(len(x_pool))
    capacity = capacity or capacity_for(self.schedule[-1], options.train.minibatch_size)
    self.learner = Learner(
      x_pool,
      options=options.learner_options,
      strategy=strategy,
      strategy_options=options.strategy_options.get(strategy) if isinstance(strategy, str) else None,
      model=model,
      trainer=trainer,
      capacity=capacity,
    )
    self.name = name or self.learner.strategy_name
    self.x_test = None if x_test is None else _check_x(x_test, "x_test")
    self.y_test = None if y_test is None else np.asarray(y_test, np.float32)
    if self.x_test is not None:
      if self.y_test is None or self.y_test.shape != (len(self.x_test),):
        raise ValueError("y_test must be given with x_test, shape (n_test,).")
      self.xs_test = self.learner.standardise(self.x_test)

  @property
  def x_pool(self) -> np.ndarray:
    return self.learner.x_pool

  @property
  def model(self) -> ModelSpec:
    return self.learner.model

  @property
  def trainer(self) -> Trainer:
    return self.learner.trainer

  def init_state(self, key: jax.Array, initial: Sequence[int] | None = None) -> LearnerState:
    """Query the oracle for the initial labelled set (random ``initial_size`` points by default)."""
    n = len(self.x_pool)
    if initial is None:
      initial = np.asarray(jax.random.permutation(jax.random.fold_in(key, 10_007), n))[: self.options.initial_size]
    initial = check_indices(initial, n, "initial:")
    if len(initial) != self.options.initial_size:
      raise ValueError(f"initial has {len(initial)} indices, initial_size is {self.options.initial_size}.")
    labels = _check_labels(self.oracle(initial), len(initial), "the oracle's labels")
    return self.learner.init(key, labelled=initial, labels=labels)

  def done(self, state: LearnerState) -> bool:
    return state.round >= len(self.schedule)

  def step(self, state: LearnerState) -> tuple[LearnerState, dict]:
    """Run round ``state.round``: fit (and select), evaluate, label the batch.

    Returns the new state and a record: round, labels, test_rmse, test_mae (original
    units), strength, noise_variance, tangent_residual (the fit's certified residual),
    tangent_ok (whether it meets the tolerance), top_score, stopped, seconds.
    """
    if self.done(state):
      raise ValueError("this learner has finished its label schedule.")
    t0 = time.perf_counter()
    r = state.round
    acquire = r + 1 < len(self.schedule) and not state.stopped
    if acquire:
      batch = self.schedule[r + 1] - self.schedule[r]
      state, suggestion = self.learner.ask(state, batch)
      fit = suggestion.fit
    else:
      state, fit = self.learner.fit(state)
    record = {
      "round": r,
      "labels": int(len(state.labelled) + len(state.x_extra)),
      "strength": fit.strength,
      "noise_variance": float(fit.result.noise_variance),
      "tangent_residual": fit.tangent_residual,
      "tangent_ok": fit.tangent_accurate,
    }
    if self.x_test is not None:
      pred = np.asarray(self.trainer.predict(fit.result.params, self.xs_test)) * np.float32(state.y_std)
      err = pred + np.float32(state.y_mean) - self.y_test
      record["test_rmse"] = float(np.sqrt(np.mean(err**2)))
      record["test_mae"] = float(np.mean(np.abs(err)))
    record["top_score"] = float("nan")
    stopped = state.stopped
    if acquire:
      top = suggestion.top_score
      if top is not None:
        record["top_score"] = top
        if r == 0:
          state = dataclasses.replace(state, top_score0=top)
        elif self.options.stop_ratio > 0 and state.top_score0 and top <= self.options.stop_ratio * state.top_score0:
          stopped = True
      if not stopped:
        labels = _check_labels(self.oracle(suggestion.indices), len(suggestion.indices), "the oracle's labels")
        state = self.learner.tell(state, suggestion.indices, labels)
    if stopped:
      state = dataclasses.replace(state, stopped=True, round=len(self.schedule))
    elif not acquire:
      state = dataclasses.replace(state, round=r + 1)
    record["stopped"] = bool(stopped)
    record["seconds"] = time.perf_counter() - t0
    return state, record


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
  strategies at equal label counts. One :class:`~curiojax.active.training.Trainer` (one compilation)
  serves every unit.
  """

  def __init__(self, x, y, options: LoopOptions, model: ModelSpec | None = None):
    from curiojax.active.data import ArrayOracle

    self.x = _check_x(x, "x")
    self.y = np.asarray(y, np.float32)
    if self.y.shape != (len(self.x),) or not np.all(np.isfinite(self.y)):
      raise ValueError("y must be a finite (n,) array matching x.")
    self.options = options
    n = len(self.x)
    n_test = max(1, int(round(options.test_fraction * n)))
    if n - n_test < 3:
      raise ValueError(f"{n} rows leave too few for training after holding out {n_test} for testing.")
    self.model = model or options.model.make(self.x.shape[1])
    self.trainer = cached_trainer(self.model.model_fn, options.train)
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


def experiment_to_saved(state: ExperimentState) -> tuple[dict, dict]:
  """An :class:`ExperimentState` as JSON-able meta and a state dict of arrays, for :func:`persistence.save_state`.

  Learner ``i`` (in ``state.learners`` order) is ``meta["learners"][i]`` and ``arrays[str(i)]``.
  """
  learners, arrays = [], {}
  for i, ((name, split), ls) in enumerate(state.learners.items()):
    meta, arrays[str(i)] = state_to_saved(ls)
    learners.append({"strategy": name, "split": split, **meta})
  return {"unit": state.unit, "records": state.records, "learners": learners}, arrays


def experiment_from_saved(experiment: Experiment, meta: dict, arrays: dict) -> ExperimentState:
  """Rebuild the :class:`ExperimentState` saved by :func:`experiment_to_saved`.

  Parameter and optimizer-state tree structures come from ``experiment`` (its model and
  trainer, built from the saved config).
  """
  learners = {}
  for i, d in enumerate(meta["learners"]):
    key = d["strategy"], int(d["split"])
    if key not in experiment.learners:
      raise ValueError(f"the saved learner {key} is not in the saved config's strategies and splits.")
    learners[key] = state_from_saved(experiment.learners[key].learner, d, arrays[str(i)])
  if set(learners) != set(experiment.learners):
    raise ValueError("the saved learners do not match the saved config's strategies and splits.")
  unit, records = meta["unit"], list(meta["records"])
  if isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit <= len(experiment.units):
    raise ValueError(f"the saved progress unit {unit!r} is outside the run's 0..{len(experiment.units)} units.")
  if len(records) > unit:
    raise ValueError(f"the saved state has {len(records)} result rows for {unit} completed units.")
  return ExperimentState(learners, records, unit)


def summarise(records: Sequence[dict]) -> dict:
  """Per strategy: mean over splits of the mean log test RMSE over rounds, final RMSE, labels.

  Also the tangent's health behind those numbers: ``fits_with_inaccurate_tangent`` (records
  whose tangent missed its tolerance) and ``max_tangent_residual``.
  """
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
      "fits_with_inaccurate_tangent": sum(not r.get("tangent_ok", True) for r in rows),
      # NaN where the strategy needed no tangent and none was solved
      "max_tangent_residual": max(
        (float(r["tangent_residual"]) for r in rows if np.isfinite(r.get("tangent_residual", np.nan))), default=0.0
      ),
    }
  return out

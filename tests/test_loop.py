"""The loop on synthetic data: RMSE falls, labels unique and on schedule, budget and stop rule."""

import jax
import numpy as np
import pytest

import curiojax
from curiojax.active.data import ArrayOracle
from curiojax.active.learner import ModelOptions, options_from_dict
from curiojax.active.loop import (
  DEFAULT_STRATEGIES,
  ActiveLearner,
  Experiment,
  LoopOptions,
  run_active_learning,
  summarise,
)
from curiojax.active.training import TrainOptions
from curiojax.scoring.scores import curiosity_scores
from curiojax.strategies import Selection, SelectionContext, get_strategy

# one model and trainer shared by the tests
SMALL = dict(model=ModelOptions(hidden_sizes=(16,)), train=TrainOptions(epochs=40, minibatch_size=16))
OPTS = dict(initial_size=20, batch_size=30, rounds=3, num_splits=2, test_fraction=0.25, **SMALL)


def _data(n=400, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-2, 2, size=(n, 2)).astype(np.float32)
  y = (np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] ** 2 + 0.05 * rng.normal(size=n)).astype(np.float32)
  return x, y


@pytest.fixture(scope="module")
def finished():
  x, y = _data()
  exp = Experiment(x, y, LoopOptions(**OPTS))
  state = exp.init_state()
  while not exp.done(state):
    state, _ = exp.step(state)
  return exp, state


def test_main_job_compares_random_the_default_strategy_and_curiosity_diverse():
  assert (
    DEFAULT_STRATEGIES
    == ("random", curiojax.DEFAULT_STRATEGY, "curiosity_diverse")
    == ("random", "lcmd", "curiosity_diverse")
  )
  assert LoopOptions().strategies == DEFAULT_STRATEGIES
  from configs.default import get_config

  assert tuple(get_config().strategies) == DEFAULT_STRATEGIES  # what `curiojax run` runs


@pytest.mark.slow  # a full run per default strategy (34 s on a loaded machine)
def test_rmse_falls_for_every_default_strategy(finished):
  _, state = finished
  for name in DEFAULT_STRATEGIES:
    rows = [r for r in state.records if r["strategy"] == name]
    first = np.mean([r["test_rmse"] for r in rows if r["round"] == 0])
    last = np.mean([r["test_rmse"] for r in rows if r["round"] == 3])
    assert last < 0.8 * first, (name, first, last)
  summary = summarise(state.records)
  assert set(summary) == set(DEFAULT_STRATEGIES) and summary["random"]["labels_used"] == 110


def test_labels_unique_on_schedule_and_oracle_consistent(finished):
  exp, state = finished
  for (name, split), ls in state.learners.items():
    learner = exp.learners[name, split]
    assert len(ls.labelled) == 110 and len(np.unique(ls.labelled)) == 110
    np.testing.assert_array_equal(ls.labels, learner.oracle(ls.labelled))
    # Same initial set for every strategy of a split; test and pool disjoint by construction.
    other = state.learners["random", split]
    np.testing.assert_array_equal(ls.labelled[:20], other.labelled[:20])
  labels = sorted({r["labels"] for r in state.records})
  assert labels == [20, 50, 80, 110]


def test_budget_and_batch_checks():
  opts = LoopOptions(initial_size=20, batch_size=20, rounds=10, budget=70)
  assert opts.label_schedule(1000) == [20, 40, 60, 70]
  assert LoopOptions(initial_size=20, batch_size=20, rounds=10).label_schedule(55) == [20, 40, 55]
  with pytest.raises(ValueError, match="batch_size 50 is larger than the unlabelled pool"):
    LoopOptions(initial_size=20, batch_size=50).label_schedule(60)
  with pytest.raises(ValueError, match="Unknown strategy 'nope'"):
    LoopOptions(strategies=("random", "nope"))
  with pytest.raises(ValueError, match="budget 10 is smaller"):
    LoopOptions(budget=10)
  # bad options fail when the options are built, before any model is fitted
  with pytest.raises(ValueError, match="Unknown heuristic 'bogus'"):
    LoopOptions(strategies=("curiosity",), strategy_options={"curiosity": {"heuristic": "bogus"}})
  with pytest.raises(ValueError, match="Unknown heuristic 'signed'"):  # needs labels the pool lacks
    LoopOptions(strategies=("curiosity",), strategy_options={"curiosity": {"heuristic": "signed"}})
  with pytest.raises(TypeError, match="no option"):
    LoopOptions(strategy_options={"curiosity_diverse": {"gama": 0.5}})
  with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 3.0"):
    LoopOptions(train=TrainOptions(epochs=3.0))
  with pytest.raises(ValueError, match="names 'curiosity', which is not compared"):
    LoopOptions(strategies=("random",), strategy_options={"curiosity": {}})
  from curiojax.active.models import mlp

  with pytest.raises(ValueError, match="in_features must be an integer >= 1, got 2.5"):
    mlp(2.5)


def test_run_active_learning_with_warm_start_and_strength_grid():
  x, y = _data(200, seed=1)
  opts = LoopOptions(
    initial_size=20, batch_size=10, rounds=2, **SMALL, warm_start=True, strength_grid=(1e-4, 1e-1), budget=35
  )
  state, records = run_active_learning(
    x[:150], ArrayOracle(y[:150]), strategy="random", options=opts, x_test=x[150:], y_test=y[150:], capacity=128
  )
  assert [r["labels"] for r in records] == [20, 30, 35]
  assert len(np.unique(state.labelled)) == 35
  assert all(r["strength"] in (1e-4, 1e-1) for r in records)
  assert state.opt_state is not None


class _Decaying:
  """A strategy whose top score halves each round (to test the stopping rule)."""

  def __init__(self):
    self.calls = 0

  def select(self, ctx, batch_size):
    self.calls += 1
    return Selection.of(np.arange(batch_size), top_score=0.5 ** (self.calls - 1))


def test_curiosity_stopping_rule():
  x, y = _data(200, seed=2)
  opts = LoopOptions(initial_size=20, batch_size=10, rounds=6, stop_ratio=0.3, **SMALL)
  state, records = run_active_learning(x, ArrayOracle(y), strategy=_Decaying(), options=opts, capacity=128)
  # Scores 1, .5, .25 ≤ 0.3·1 at round 2: stop, no label queried that round.
  assert [r["labels"] for r in records] == [20, 30, 40]
  assert records[-1]["stopped"] and state.stopped and len(state.labelled) == 40


def test_curiosity_strategy_is_top_k_of_scores():
  x, y = _data(120, seed=3)
  learner = ActiveLearner(
    x[:100],
    ArrayOracle(y[:100]),
    strategy="curiosity",
    options=LoopOptions(initial_size=20, batch_size=7, rounds=1, **SMALL),
    capacity=128,
  )
  state = learner.init_state(jax.random.key(0))
  _, fit = learner.learner.fit(state)
  res = fit.result
  ctx = SelectionContext(
    learner.model.model_fn,
    res.params,
    res.tangent,
    None,
    None,
    learner.learner.xs_pool,
    jax.random.key(2),
    noise_variance=float(res.noise_variance),
  )
  selection = get_strategy("curiosity").select(ctx, 7)
  picked = selection.indices
  scores = np.asarray(
    curiosity_scores(
      learner.model.model_fn, res.params, res.tangent, learner.learner.xs_pool, noise_variance=float(res.noise_variance)
    )
  )
  assert set(picked.tolist()) == set(np.argsort(-scores)[:7].tolist())
  assert selection.top_score == pytest.approx(scores.max())


def test_curiosity_selection_does_not_recompile_as_the_pool_shrinks(compilations):
  import jax.numpy as jnp

  model_fn = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
  params = {"w1": jnp.full((2, 4), 0.3), "w2": jnp.ones(4)}
  pool = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)

  def select(p):
    ctx = SelectionContext(model_fn, params, params, None, None, p, jax.random.key(0), noise_variance=0.1)
    return get_strategy("curiosity").select(ctx, 5)

  select(pool)  # round 1 compiles
  with compilations() as names:
    select(pool[:90])  # the next round's smaller pool, same size class
  assert names == []
  with compilations() as names:
    select(np.concatenate([pool] * 6))  # a larger size class does compile: the check can fire
  assert names


def test_summary_counts_fits_whose_tangent_missed_its_tolerance():
  rec = lambda split, r, ok, res: dict(
    strategy="curiosity", split=split, round=r, labels=10 + r, test_rmse=1.0, tangent_ok=ok, tangent_residual=res
  )
  summary = summarise([rec(0, 0, True, 1e-4), rec(0, 1, False, 0.7), rec(1, 0, False, 0.3), rec(1, 1, True, 0.01)])
  assert summary["curiosity"]["fits_with_inaccurate_tangent"] == 2
  assert summary["curiosity"]["max_tangent_residual"] == pytest.approx(0.7)


def test_options_come_from_nested_dicts_with_clear_errors():
  opts = options_from_dict(LoopOptions, {"train": {"epochs": 7}, "model": {"hidden_sizes": [4]}, "rounds": 1})
  assert opts.train == TrainOptions(epochs=7) and opts.model.hidden_sizes == (4,) and opts.rounds == 1
  assert options_from_dict(LoopOptions, opts.to_dict()) == opts  # to_dict and back
  with pytest.raises(ValueError, match=r"unknown field options.epochs \(it is now train.epochs\); valid fields: seed,"):
    options_from_dict(LoopOptions, {"epochs": 7})
  with pytest.raises(ValueError, match=r"unknown field options.train.epoch; valid fields: epochs, learning_rate"):
    options_from_dict(LoopOptions, {"train": {"epoch": 7}})
  with pytest.raises(TypeError, match="options.model must be a dict"):
    options_from_dict(LoopOptions, {"model": 3})


def test_a_compared_strategy_gets_its_own_options_only():
  x, _ = _data(100)
  opts = LoopOptions(
    strategies=("random", "curiosity_diverse"), strategy_options={"curiosity_diverse": {"gamma": 0.5}}, **SMALL
  )
  diverse = ActiveLearner(x, ArrayOracle(np.zeros(100)), strategy="curiosity_diverse", options=opts)
  plain = ActiveLearner(x, ArrayOracle(np.zeros(100)), strategy="random", options=opts)
  assert diverse.learner.strategy_options == {"gamma": 0.5} and plain.learner.strategy_options == {}
  assert diverse.learner.strategy.gamma == 0.5

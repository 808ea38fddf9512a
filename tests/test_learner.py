"""The learner's ask/tell/save/load: sessions days apart give exactly an uninterrupted run's batches (issue 11)."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import curiojax
from curiojax.active.learner import Learner, LearnerOptions, ModelOptions
from curiojax.active.training import TrainOptions

OPTIONS = LearnerOptions(model=ModelOptions(hidden_sizes=(8,)), train=TrainOptions(epochs=15, minibatch_size=16))
SESSIONS = 3


def _data(seed=0):
  rng = np.random.default_rng(seed)
  x_pool = rng.uniform(-2, 2, size=(300, 3)).astype(np.float32)
  x_lab = rng.uniform(-2, 2, size=(15, 3)).astype(np.float32)
  truth = lambda x: np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2]
  return x_pool, x_lab, truth(x_lab).astype(np.float32), truth


def _fresh(strategy="curiosity_diverse"):
  x_pool, x_lab, y_lab, truth = _data()
  learner = Learner(x_pool, options=OPTIONS, strategy=strategy)
  state = learner.init(jax.random.key(7), x_labelled=x_lab, y_labelled=y_lab)
  return learner, state, truth


def _uninterrupted(k=6):
  learner, state, truth = _fresh()
  batches = []
  for _ in range(SESSIONS):
    state, batch = learner.ask(state, k)
    batches.append(batch.indices.tolist())
    state = learner.tell(state, batch.indices, truth(learner.x_pool[batch.indices]))
  return batches


SESSION = textwrap.dedent("""
  import json, sys
  import numpy as np
  from curiojax.active.learner import Learner
  sys.path.insert(0, {tests!r})
  from test_learner import _data
  _, _, _, truth = _data()
  learner, state = Learner.load({workdir!r})
  pending = learner.extra.get("pending")
  if pending:  # the labels of the previous session's batch came back
    state = learner.tell(state, np.asarray(pending), truth(learner.x_pool[pending]))
  state, batch = learner.ask(state, {k})
  learner.save({workdir!r}, state, extra={{"pending": batch.indices.tolist()}})
  print(json.dumps(batch.indices.tolist()))
""")


@pytest.mark.slow  # three fresh processes
def test_sessions_in_new_processes_give_the_uninterrupted_batches(tmp_path):
  """ask → save → (new process) load → tell → ask, three times: the same batches as one process."""
  learner, state, _ = _fresh()
  workdir = str(tmp_path / "deep" / "state")  # a folder that does not exist yet
  learner.save(workdir, state)
  env = {**os.environ, "XLA_FLAGS": ""}
  got = []
  for _ in range(SESSIONS):
    code = SESSION.format(tests=os.path.dirname(__file__), workdir=workdir, k=6)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got.append(json.loads(proc.stdout.strip().splitlines()[-1]))
  assert got == _uninterrupted()
  _, final = Learner.load(workdir)
  assert final.round == SESSIONS - 1 and len(final.labelled) == 6 * (SESSIONS - 1)


def test_ask_is_idempotent_and_tell_accepts_any_unlabelled_rows():
  learner, state, truth = _fresh("curiosity")
  state, first = learner.ask(state, 5)
  state, again = learner.ask(state, 5)
  np.testing.assert_array_equal(first.indices, again.indices)
  assert np.all(np.isfinite(first.scores)) and np.all(np.diff(first.scores) <= 0)  # top-k, best first
  assert "σ²(J_xτ)²" in first.criterion and first.tangent_residual <= 1e-3
  others = np.setdiff1d(np.arange(10), first.indices)[:3]  # the practitioner labels other rows
  x_new = np.ones((2, 3), np.float32)
  state = learner.tell(state, others, truth(learner.x_pool[others]), x_outside=x_new, y_outside=truth(x_new))
  assert state.round == 1 and len(state.labelled) == 3 and len(state.x_extra) == 17
  state, batch = learner.ask(state, 5)
  assert not set(batch.indices.tolist()) & set(others.tolist())


def test_predictions_come_back_in_original_units():
  learner, state, truth = _fresh("random")
  y_scale = 1000.0
  state = learner.init(
    jax.random.key(0), x_labelled=learner.x_pool[:40], y_labelled=y_scale * truth(learner.x_pool[:40]) + 5e4
  )
  state, fit = learner.fit(state)
  pred = learner.predict(state, fit, learner.x_pool[:40])
  target = y_scale * truth(learner.x_pool[:40]) + 5e4
  # A wrong unit conversion would miss by ~5e4 (offset) or by a factor ~1000 (scale).
  assert abs(pred.mean() - target.mean()) < 0.2 * np.std(target)
  assert np.sqrt(np.mean((pred - target) ** 2)) < np.std(target)
  assert np.corrcoef(pred, target)[0, 1] > 0.5


def test_bad_calls_get_clear_errors(tmp_path):
  learner, state, truth = _fresh("random")
  with pytest.raises(ValueError, match="asked for 400 points"):
    learner.ask(state, 400)
  with pytest.raises(ValueError, match="k must be an integer"):
    learner.ask(state, 0)
  with pytest.raises(ValueError, match="duplicated"):
    learner.tell(state, [3, 3], [1.0, 2.0])
  with pytest.raises(ValueError, match="out of range"):
    learner.tell(state, [300], [1.0])
  with pytest.raises(ValueError, match="NaN or infinite"):
    learner.tell(state, [1], [np.nan])
  with pytest.raises(ValueError, match="shape"):
    learner.tell(state, [1, 2], [1.0])
  with pytest.raises(ValueError, match="at least one label"):
    learner.tell(state)
  told = learner.tell(state, [4], [1.0])
  with pytest.raises(ValueError, match="labelled already"):
    learner.tell(told, [4], [1.0])
  with pytest.raises(ValueError, match="columns"):
    learner.init(jax.random.key(0), x_labelled=np.ones((3, 2)), y_labelled=np.ones(3))
  with pytest.raises(ValueError, match="at least 2 labelled"):
    learner.init(jax.random.key(0), labelled=[1], labels=[1.0])
  with pytest.raises(ValueError, match="NaN or infinite"):
    Learner(np.array([[np.inf, 1.0]]))
  with pytest.raises(ValueError, match="Unknown strategy"):
    Learner(learner.x_pool, strategy="bogus")
  with pytest.raises(ValueError, match="no state.json"):
    Learner.load(tmp_path)
  (tmp_path / "state.json").write_text("{}")
  with pytest.raises(ValueError, match="state format"):
    Learner.load(tmp_path)


def test_saved_state_that_disagrees_with_itself_is_refused(tmp_path):
  learner, state, truth = _fresh("random")
  state, batch = learner.ask(state, 4)
  learner.save(tmp_path, state)
  meta = json.loads((tmp_path / "state.json").read_text())
  meta["options"]["model"]["hidden_sizes"] = [9]  # another model than the saved parameters
  (tmp_path / "state.json").write_text(json.dumps(meta))
  with pytest.raises(ValueError, match="modified or corrupted"):  # a hand edit: the checksum catches it
    Learner.load(tmp_path)
  from curiojax.active import persistence

  meta["checksum"] = persistence._meta_checksum(meta)  # a writer that signs an inconsistent state
  (tmp_path / "state.json").write_text(json.dumps(meta))
  with pytest.raises(ValueError, match="inconsistent.*parameters"):
    Learner.load(tmp_path)


def test_no_recompilation_across_rounds_of_one_size_class(compilations):
  learner, state, truth = _fresh("curiosity")
  for _ in range(2):  # 15 labelled rows (capacity 16), then 19 (capacity 32): both compile once
    state, batch = learner.ask(state, 4)
    state = learner.tell(state, batch.indices, truth(learner.x_pool[batch.indices]))
  with compilations() as names:
    state, batch = learner.ask(state, 4)  # 23 labelled rows: the same capacity, the same pool bucket
    state = learner.tell(state, batch.indices, truth(learner.x_pool[batch.indices]))
    learner.ask(state, 4)
  assert not [n for n in names if "fit" in n], names
  assert not [n for n in names if "_weights" in n or "_pool_kernels" in n], names  # the error bars' kernels


def test_exported_at_the_top_level():
  assert curiojax.Learner is Learner and curiojax.LearnerOptions is LearnerOptions


PROTOCOL = LearnerOptions(
  standardise=False,
  model=ModelOptions(hidden_sizes=(8,)),
  train=TrainOptions(
    epochs=15,
    minibatch_size=16,
    regularised_training=False,
    learning_rate_schedule="linear_decay",
    drop_last=True,
    restore_best=True,
    damping=0.0,
  ),
)


def _protocol_learner(strategy="curiosity"):
  x_pool, x_lab, y_lab, truth = _data()
  rng = np.random.default_rng(5)
  x_valid = rng.uniform(-2, 2, size=(20, 3)).astype(np.float32)
  learner = Learner(x_pool, options=PROTOCOL, strategy=strategy, validation=(x_valid, truth(x_valid)))
  return learner, learner.init(jax.random.key(3), x_labelled=x_lab, y_labelled=y_lab), truth


def test_protocol_options_unscaled_restore_best_and_resume(tmp_path):
  """The benchmark's options through the learner: no scaling, a validation set kept with the save."""
  learner, state, truth = _protocol_learner()
  xs, ys = learner.training_set(state)
  np.testing.assert_array_equal(xs, state.x_extra)  # standardise=False: the rows as given
  np.testing.assert_array_equal(ys, state.y_extra)
  assert (state.y_mean, state.y_std) == (0.0, 1.0)
  state, batch = learner.ask(state, 5)
  assert batch.tangent_residual < 1e-3  # solved at the restored parameters
  # the restored parameters are the best epoch's: no worse on validation than the last epoch's
  x_valid, y_valid = learner.validation
  last_trainer = curiojax.active.training.Trainer(
    learner.model.model_fn, dataclasses.replace(PROTOCOL.train, restore_best=False)
  )
  xs, ys = learner.training_set(state)
  key = learner.round_key(state)
  last = last_trainer.fit(
    learner.model.init(jax.random.fold_in(key, 1)), xs, ys, strength=PROTOCOL.strength, key=jax.random.fold_in(key, 2)
  )
  rmse = lambda p: np.sqrt(np.mean((np.asarray(learner.trainer.predict(p, x_valid)) - y_valid) ** 2))
  assert rmse(batch.fit.result.params) <= rmse(last.params) + 1e-6
  learner.save(tmp_path, state)
  loaded, loaded_state = Learner.load(tmp_path)
  np.testing.assert_array_equal(loaded.validation[0], learner.validation[0])
  _, again = loaded.ask(loaded_state, 5)
  np.testing.assert_array_equal(again.indices, batch.indices)


def test_tangent_is_solved_only_for_strategies_that_read_it():
  learner, state, _ = _fresh("random")
  state, batch = learner.ask(state, 4)
  assert batch.fit.result.tangent is None and np.isnan(batch.tangent_residual)
  assert batch.fit.tangent_accurate  # no tangent was handed out, so none is inaccurate
  assert not learner.needs_tangent and _fresh("lcmd")[0].needs_tangent is False
  assert _fresh("curiosity_diverse")[0].needs_tangent


def test_the_learner_hands_its_strategy_the_fits_system_and_validation_set(tmp_path):
  """The system handed out is the fit's own (solving it for −ρ gives the fit's tangent); the
  validation set goes to the strategy in the model's units, without restore_best, and is saved."""
  x_pool, x_lab, y_lab, truth = _data()
  x_valid = np.random.default_rng(6).uniform(-2, 2, size=(20, 3)).astype(np.float32)
  learner = Learner(x_pool, options=OPTIONS, strategy="validation_influence", validation=(x_valid, truth(x_valid)))
  assert learner.needs_tangent is False
  state = learner.init(jax.random.key(7), x_labelled=x_lab, y_labelled=y_lab)
  state, fit = learner.fit(state)
  seen = {}

  class Spy:
    needs_tangent = True

    def select(self, ctx, k):
      seen.update(problem=ctx.problem, validation=ctx.validation)
      return np.arange(k)

  spy = Learner(x_pool, options=OPTIONS, strategy=Spy())
  spy_state, spy_fit = spy.fit(spy.init(jax.random.key(7), x_labelled=x_lab, y_labelled=y_lab))
  spy.select(spy_state, spy_fit, 3)
  problem = seen["problem"]
  assert seen["validation"] is None  # this learner holds none
  tangent, info = curiojax.solve(
    problem, jax.tree.map(lambda r: -r[None], problem.rho()), tol=1e-5, maxiter=500, stacked=True
  )
  residual = info.residual
  flat = lambda t: np.asarray(jax.flatten_util.ravel_pytree(t)[0])
  want = flat(spy_fit.result.tangent)
  assert float(residual) < 1e-3
  assert np.linalg.norm(flat(jax.tree.map(lambda t: t[0], tangent)) - want) <= 2e-3 * np.linalg.norm(want)
  # the validation strategy: its picks, scores and the standardised validation set
  suggestion = learner.select(state, fit, 4)
  assert len(set(suggestion.indices.tolist())) == 4 and np.all(np.isfinite(suggestion.scores))
  assert 0 <= suggestion.direction_residual < 1e-3  # the adjoint's solve, certified
  assert np.isnan(spy.select(spy_state, spy_fit, 3).direction_residual)  # solved none
  x_std, y_std = learner._validation(state)
  np.testing.assert_allclose(x_std, learner.standardise(x_valid), rtol=1e-6)
  np.testing.assert_allclose(y_std * state.y_std + state.y_mean, truth(x_valid), rtol=1e-5, atol=1e-5)
  learner.save(tmp_path, state)
  loaded, loaded_state = Learner.load(tmp_path)
  np.testing.assert_array_equal(loaded.validation[0], x_valid)
  np.testing.assert_array_equal(loaded.select(loaded_state, fit, 4).indices, suggestion.indices)


def test_bad_protocol_options_get_clear_errors():
  from curiojax.active.loop import LoopOptions

  x_pool, x_lab, y_lab, truth = _data()
  with pytest.raises(ValueError, match="needs a validation set"):
    Learner(x_pool, options=PROTOCOL)
  with pytest.raises(ValueError, match="only with TrainOptions\\(restore_best=True\\) or a strategy that reads it"):
    Learner(x_pool, options=OPTIONS, validation=(x_lab, y_lab))
  with pytest.raises(ValueError, match="strategy 'validation_influence' needs a validation set"):
    Learner(x_pool, options=OPTIONS, strategy="validation_influence")
  with pytest.raises(ValueError, match="2 columns, the pool has 3"):
    Learner(x_pool, options=PROTOCOL, validation=(x_lab[:, :2], y_lab))
  with pytest.raises(ValueError, match="NaN or infinite"):
    Learner(x_pool, options=PROTOCOL, validation=(x_lab, np.full(len(x_lab), np.nan)))
  with pytest.raises(TypeError, match="standardise must be True or False"):
    LearnerOptions(standardise="no")
  with pytest.raises(ValueError, match="Unknown learning_rate_schedule 'cosine'"):
    TrainOptions(learning_rate_schedule="cosine")
  with pytest.raises(TypeError, match="drop_last must be True or False"):
    TrainOptions(drop_last=1)
  with pytest.raises(ValueError, match="simulated loop does not hold out"):
    LoopOptions(train=TrainOptions(restore_best=True))


def test_no_recompilation_across_rounds_with_the_protocol_options(compilations):
  learner, state, truth = _protocol_learner()
  for _ in range(2):  # 15 labelled rows (capacity 16), then 19 (capacity 32): both compile once
    state, batch = learner.ask(state, 4)
    state = learner.tell(state, batch.indices, truth(learner.x_pool[batch.indices]))
  with compilations() as names:  # 23 and 27 rows: capacity 32 again
    state, batch = learner.ask(state, 4)
    state = learner.tell(state, batch.indices, truth(learner.x_pool[batch.indices]))
    learner.ask(state, 4)
  assert not [n for n in names if "fit" in n], names


def test_dataframes_match_columns_by_name_and_label_rows_by_index(tmp_path):
  pd = pytest.importorskip("pandas")
  x_pool, x_lab, y_lab, truth = _data()
  names = ["temperature", "pressure", "ph"]
  pool = pd.DataFrame(x_pool, columns=names, index=[f"s{i}" for i in range(len(x_pool))])
  first = pd.DataFrame(x_lab, columns=names)[["ph", "temperature", "pressure"]]  # another column order
  learner = Learner(pool, options=OPTIONS, strategy="random")
  state = learner.init(jax.random.key(7), x_labelled=first, y_labelled=pd.Series(y_lab))
  plain = Learner(x_pool, options=OPTIONS, strategy="random")
  plain_state = plain.init(jax.random.key(7), x_labelled=x_lab, y_labelled=y_lab)
  state, batch = learner.ask(state, 3)
  _, plain_batch = plain.ask(plain_state, 3)
  np.testing.assert_array_equal(batch.indices, plain_batch.indices)  # the same as the arrays
  assert list(batch.ids) == [f"s{i}" for i in batch.indices]
  np.testing.assert_allclose(learner.predict(state, batch.fit, pool.iloc[batch.indices][names[::-1]]), batch.prediction)
  learner.save(tmp_path / "s", state)
  loaded, _ = Learner.load(tmp_path / "s")
  assert loaded.feature_names == tuple(names) and list(loaded.pool_ids[:2]) == ["s0", "s1"]
  with pytest.raises(ValueError, match="no column 'ph'"):
    learner.predict(state, batch.fit, pool[["temperature", "pressure"]])
  with pytest.raises(ValueError, match="'ph' is not numeric"):
    learner.predict(state, batch.fit, pool.assign(ph="acid"))
  with pytest.raises(ValueError, match="duplicate labels"):
    Learner(pool.set_axis(["a"] * len(pool)), options=OPTIONS)


def test_a_learner_takes_its_own_strategy_options_and_saves_them(tmp_path):
  x_pool, x_lab, y_lab, _ = _data()
  learner = Learner(x_pool, options=OPTIONS, strategy="curiosity_diverse", strategy_options={"gamma": 0.5})
  assert learner.strategy.gamma == 0.5
  learner.save(tmp_path, learner.init(jax.random.key(0), x_labelled=x_lab, y_labelled=y_lab))
  meta = json.loads((tmp_path / "state.json").read_text())
  assert meta["options"]["train"]["epochs"] == 15 and meta["strategy_options"] == {"gamma": 0.5}
  loaded, _ = Learner.load(tmp_path)
  assert loaded.options == OPTIONS and loaded.strategy.gamma == 0.5
  with pytest.raises(TypeError, match="no option"):
    Learner(x_pool, options=OPTIONS, strategy="curiosity_diverse", strategy_options={"gama": 0.5})
  with pytest.raises(TypeError, match="a strategy object carries its own options"):
    Learner(x_pool, options=OPTIONS, strategy=learner.strategy, strategy_options={"gamma": 0.5})
  with pytest.raises(TypeError, match="options must be a curiojax.LearnerOptions"):
    Learner(x_pool, options={"train": {"epochs": 3}})


def test_a_state_saved_with_the_previous_flat_options_loads(tmp_path):
  """The previous release wrote the options flat (``epochs`` beside ``seed``) with every strategy's options."""
  from curiojax.active import persistence

  x_pool, x_lab, y_lab, _ = _data()
  learner = Learner(x_pool, options=OPTIONS, strategy="curiosity_diverse", strategy_options={"gamma": 0.5})
  learner.save(tmp_path, learner.init(jax.random.key(0), x_labelled=x_lab, y_labelled=y_lab))
  meta = json.loads((tmp_path / "state.json").read_text())
  nested = meta["options"]
  train = {k: nested["train"][k] for k in ("epochs", "learning_rate", "minibatch_size", "damping", "curvature")}
  meta["options"] = {
    **{k: v for k, v in nested.items() if k not in ("model", "train")},
    "model": "mlp",
    "hidden_sizes": [8],
    "activation": "tanh",
    **train,
    "strategy_options": {"curiosity_diverse": {"gamma": 0.5}, "curiosity": {"heuristic": "jvp"}},
  }
  del meta["strategy_options"]
  meta["checksum"] = persistence._meta_checksum(meta)
  (tmp_path / "state.json").write_text(json.dumps(meta))
  loaded, _ = Learner.load(tmp_path)
  assert loaded.options == OPTIONS and loaded.strategy_options == {"gamma": 0.5}

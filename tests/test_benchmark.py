"""Benchmark protocol: splits, preprocessing, the jitted trainer, the tangent, the report."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from benchmarks.active_learning import main as bm
from curiojax.active.models import NTKMLP


def test_friedman_roundtrip_through_uci_loader(tmp_path):
  folder = bm.write_friedman1(str(tmp_path / "f1"), n=50, seed=3)
  x, y = bm.load_uci_folder(folder)
  x0, y0 = bm.friedman1(50, seed=3)
  assert x.shape == (50, 10)
  np.testing.assert_allclose(x, x0, atol=1e-6)
  np.testing.assert_allclose(y, y0, atol=1e-5)
  # noise-free Friedman #1 against the formula evaluated by hand at one point
  xn, yn = bm.friedman1(5, seed=1, noise=0.0)
  a = xn[2]
  assert yn[2] == pytest.approx(10 * np.sin(np.pi * a[0] * a[1]) + 20 * (a[2] - 0.5) ** 2 + 10 * a[3] + 5 * a[4])
  with pytest.raises(ValueError, match="missing file"):
    bm.load_uci_folder(str(tmp_path))


def test_split_sizes_and_preprocessing():
  rng = np.random.default_rng(0)
  x = np.column_stack([rng.normal(3, 2, 1200), np.ones(1200), rng.exponential(size=1200) * 50])
  y = 4 * x[:, 0] + rng.normal(size=1200)
  s = bm.make_split(x, y, seed=1)
  assert len(s.x_test) == 240 and len(s.x_valid) == 256 and len(s.x_initial) == 64
  assert len(s.x_pool) == 1200 - 240 - 256 - 64 and s.standard and s.batch_size == 32
  assert s.x_pool.shape[1] == 2  # the constant column is dropped
  ref = np.concatenate([s.x_initial, s.x_pool])
  # before clipping the reference rows are standardised; tanh clipping keeps |x| < 5
  raw = 5 * np.arctanh(np.clip(ref / 5, -0.999999, 0.999999))
  np.testing.assert_allclose(raw.mean(0), 0, atol=1e-3)
  np.testing.assert_allclose(raw.std(0), 1, atol=1e-3)
  assert np.abs(s.x_test).max() < 5
  yref = np.concatenate([s.y_initial, s.y_pool])
  assert abs(yref.mean()) < 1e-4 and abs(yref.std() - 1) < 1e-4
  # same seed, same split; another seed, another split
  np.testing.assert_array_equal(bm.make_split(x, y, seed=1).x_test, s.x_test)
  assert not np.array_equal(bm.make_split(x, y, seed=2).x_test, s.x_test)


def test_small_data_fallback_and_pool_cap():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(308, 4)), rng.normal(size=308)
  s = bm.make_split(x, y, seed=0)
  assert not s.standard and len(s.x_valid) == 61 and len(s.x_initial) == 61
  assert s.batch_size * s.rounds * 2 <= len(s.x_pool)
  big = bm.make_split(rng.normal(size=(3000, 2)), rng.normal(size=3000), seed=0, max_pool=500)
  assert len(big.x_pool) == 500
  with pytest.raises(ValueError, match="too few"):
    bm.make_split(x[:20], y[:20], seed=0)


def _protocol_trainer(model, epochs, lr, batch=256, maxiter=50):
  from curiojax.active.training import Trainer

  cfg = _protocol_config(strength=0.05, hidden_sizes=model.hidden, epochs=epochs, learning_rate=lr)
  cfg.train.minibatch_size, cfg.train.finish_maxiter = batch, maxiter
  return Trainer(model, bm.protocol_options(cfg).train)


def _protocol_config(strength, hidden_sizes, **train):
  """The benchmark config (``benchmarks/active_learning/configs/``) with a smaller model and training."""
  from benchmarks.active_learning.configs.benchmark import get_config

  cfg = get_config()
  cfg.strength, cfg.model.hidden_sizes = strength, tuple(hidden_sizes)
  cfg.train.update(train)
  return cfg


def _reference_train(model, params, x, y, xv, yv, epochs, lr, steps_per_epoch=1, batch=None):
  """Plain Adam loop with optax's linear schedule; ``batch`` rows per step (default all)."""
  opt = optax.adam(optax.linear_schedule(lr, 0.0, steps_per_epoch * epochs))
  state = opt.init(params)
  xb, yb = (x, y) if batch is None else (x[:batch], y[:batch])
  loss = lambda p: 0.5 * jnp.mean(jnp.square(model(p, xb) - yb))  # the library's squared_error is ½r²
  best, best_rmse = params, np.inf
  for _ in range(epochs):
    for _ in range(steps_per_epoch):
      upd, state = opt.update(jax.grad(loss)(params), state)
      params = optax.apply_updates(params, upd)
    rmse = float(jnp.sqrt(jnp.mean(jnp.square(model(params, xv) - yv))))
    if rmse < best_rmse:
      best, best_rmse = params, rmse
  return best


def test_protocol_trainer_matches_plain_adam_loop_with_padding():
  # the protocol's options (unregularised, linear decay, drop-last, best-validation restore) on
  # the library's Trainer against a hand-written loop; junk padding rows must not matter
  model = NTKMLP(hidden=(8, 8))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(12, 3)).astype(np.float32)
  y = np.sin(x[:, 0]).astype(np.float32)
  xv, yv = x[:6] + 0.1, y[:6]
  xpad = np.concatenate([x, np.full((20, 3), 7.0, np.float32)])
  ypad = np.concatenate([y, np.full(20, -9.0, np.float32)])
  mask = (np.arange(32) < 12).astype(np.float32)
  params = model.init(jax.random.key(4), 3)
  trainer = _protocol_trainer(model, epochs=30, lr=0.05)
  out = trainer.fit(params, xpad, ypad, mask=mask, strength=0.05, key=jax.random.key(1), validation=(xv, yv))
  want = _reference_train(model, params, x, y, xv, yv, 30, 0.05)
  for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert np.isnan(out.online_residual)  # nothing was carried online: unregularised training
  with pytest.raises(ValueError, match="validation set"):
    trainer.fit(params, xpad, ypad, mask=mask, strength=0.05, key=jax.random.key(1))
  with pytest.raises(ValueError, match="2 columns, x has 3"):
    trainer.fit(params, xpad, ypad, mask=mask, strength=0.05, key=jax.random.key(1), validation=(xv[:, :2], yv))
  plain = _protocol_trainer(model, epochs=3, lr=0.05)
  plain = type(plain)(model, dataclasses.replace(plain.options, restore_best=False))
  with pytest.raises(ValueError, match="only with TrainOptions\\(restore_best=True\\)"):
    plain.fit(params, xpad, ypad, mask=mask, strength=0.05, key=jax.random.key(1), validation=(xv, yv))


@pytest.mark.slow  # a second trainer compile; the padding test covers the trainer
def test_protocol_trainer_takes_floor_n_over_b_steps_per_epoch():
  # identical labelled rows make every minibatch the same, so the schedule is checkable exactly:
  # n = 10, batch 4 -> 2 steps per epoch (the incomplete batch of 2 dropped), lr over 2·epochs.
  model = NTKMLP(hidden=(8,))
  row = np.array([[0.3, -1.2]], np.float32)
  x = np.concatenate([np.repeat(row, 10, 0), np.full((6, 2), 5.0, np.float32)])
  y = np.concatenate([np.full(10, 0.7, np.float32), np.full(6, -3.0, np.float32)])
  mask = (np.arange(16) < 10).astype(np.float32)
  xv, yv = np.array([[0.2, -1.0], [0.5, 0.1]], np.float32), np.array([0.6, 0.2], np.float32)
  params = model.init(jax.random.key(0), 2)
  trainer = _protocol_trainer(model, epochs=7, lr=0.05, batch=4)
  out = trainer.fit(params, x, y, mask=mask, strength=0.05, key=jax.random.key(3), validation=(xv, yv))
  want = _reference_train(model, params, x[:10], y[:10], xv, yv, 7, 0.05, steps_per_epoch=2, batch=4)
  for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # a trainer compile per case
@pytest.mark.parametrize("hidden", [(4,), (48, 32)])  # dense finishing (≤ 1024 parameters), and CG
def test_protocol_tangent_matches_dense_solve_at_the_restored_parameters(hidden):
  import curiojax

  model = NTKMLP(hidden=hidden)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(9, 2)).astype(np.float32)
  y = rng.normal(size=9).astype(np.float32)
  mask = (np.arange(9) < 6).astype(np.float32)
  trainer = _protocol_trainer(model, epochs=5, lr=0.05, maxiter=400)
  out = trainer.fit(
    model.init(jax.random.key(1), 2), x, y, mask=mask, strength=0.05, key=jax.random.key(0), validation=(x[:3], y[:3])
  )
  want = curiojax.exact_tangent(
    curiojax.prediction_loss(model),
    out.params,
    dict(x=x[:6], y=y[:6]),
    regularizer=curiojax.l2(),
    strength=0.05,
    curvature="gauss_newton",
    solver="dense",
  )
  assert out.tangent_residual < 1e-3
  got, ref = (np.concatenate([np.ravel(a) for a in jax.tree.leaves(t)]) for t in (out.tangent, want))
  assert np.linalg.norm(got - ref) <= 2e-3 * np.linalg.norm(ref)


def test_metric_and_paired_summary():
  r = lambda vals: dict(rmse=[9.0, *vals], select_s=[0.1, 0.2, 0.3], batch_size=4, n_initial=8)
  results = {"d": {"random": {0: r([1.0, 1.0]), 1: r([2.0, 2.0])}, "lcmd": {0: r([0.5, 0.5]), 1: r([1.0, 1.0])}}}
  assert bm.metric([9.0, 1.0, np.e]) == pytest.approx(0.5)
  rows = {row["strategy"]: row for row in bm.summarise(results)}
  assert rows["random"]["mean"] == pytest.approx(np.log(2) / 2)
  assert rows["lcmd"]["delta"] == pytest.approx(np.log(0.5))
  assert rows["lcmd"]["delta_se"] == pytest.approx(0.0, abs=1e-12)
  assert rows["lcmd"]["select_s"] == pytest.approx(0.2)
  assert rows["lcmd"]["wins"] == 2
  table = bm.markdown_table(list(rows.values()), ["random", "lcmd"])
  assert "-0.693 ± 0.000 (2/2)" in table
  # A second dataset where lcmd loses one split: wins count it, the mean row averages datasets.
  results["e"] = {"random": {0: r([1.0, 1.0]), 1: r([1.0, 1.0])}, "lcmd": {0: r([np.e, np.e]), 1: r([1 / np.e] * 2)}}
  all_rows = bm.summarise(results)
  e_lcmd = next(row for row in all_rows if row["dataset"] == "e" and row["strategy"] == "lcmd")
  assert e_lcmd["wins"] == 1 and e_lcmd["delta"] == pytest.approx(0.0, abs=1e-12)
  mean_line = next(line for line in bm.markdown_table(all_rows, ["random", "lcmd"]).splitlines() if "mean over" in line)
  se = np.sqrt(0.0**2 + e_lcmd["delta_se"] ** 2) / 2  # of a mean of two independent dataset means
  assert f"{np.log(0.5) / 2:+.3f} ± {se:.3f}" in mean_line
  # against another reference: lcmd is the absolute column, random the paired difference to it
  by_lcmd = bm.markdown_table(bm.summarise(results, reference="lcmd"), ["lcmd", "random"], reference="lcmd")
  assert f"{-np.log(0.5):+.3f} ± 0.000 (0/2)" in by_lcmd.splitlines()[2]


@pytest.mark.slow  # three tiny benchmark runs (compiles)
def test_end_to_end_tiny_run(tmp_path, capsys):
  folder = bm.write_friedman1(str(tmp_path / "f1"), n=300)
  c = ml_collections.ConfigDict(
    dict(
      fast=False,
      datasets=(folder,),
      friedman_dir="",
      friedman_rows=0,
      max_rows=0,
      splits=(0,),
      strategies=("random", "lcmd"),
      strategy_options={"lcmd": {"dim": 16}},
      n_valid=30,
      n_initial=20,
      max_pool=100,
      rounds=2,
      batch_size=5,
      strength=1e-3,
      model={"name": "ntk_mlp", "hidden_sizes": (8,)},
      sigma_w=0.2,
      sigma_b=0.2,
      train=dict(_protocol_config(1e-3, (8,)).train.to_dict(), epochs=3, learning_rate=0.1, finish_maxiter=5),
      results_dir=str(tmp_path / "out"),
    )
  )
  out = bm.run(c, log=lambda *_: None)
  assert os.path.isfile(tmp_path / "out" / "report.md")
  assert all(os.path.isfile(p) for p in out["plots"])
  res = out["results"]["f1"]["lcmd"][0]
  assert len(res["rmse"]) == 3 and len(res["select_s"]) == 2
  assert res["tangent_residual"] == []  # lcmd needs no tangent
  # progress: one line per computed unit, with the time left, as it happens (stderr is not a TTY)
  lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("units")]
  n_units = len(out["results"]["f1"])
  assert len(lines) == n_units and f"{n_units}/{n_units}" in lines[-1] and "left" in lines[0]
  bm.run(c, log=lambda *_: None)  # resumed: every unit reused, nothing recomputed or reported
  assert not [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("units")]
  # a run without random (e.g. extra splits of a few strategies) reports against lcmd, not NaN
  c.strategies, c.report_only = ("lcmd",), True
  out = bm.run(c, log=lambda *_: None)
  assert out["rows"][0]["strategy"] == "lcmd" and out["rows"][0]["delta"] == 0.0
  report = (tmp_path / "out" / "report.md").read_text()
  assert report.startswith("Mean over rounds of log test RMSE: lcmd as mean") and "+nan" not in report
  assert [os.path.basename(p) for p in out["plots"]] == ["learning_curves.png"]  # no bar chart of lcmd against itself


def test_bad_strategy_options_fail_before_anything_runs(tmp_path):
  from benchmarks.active_learning.configs.benchmark_fast import get_config

  c = get_config()
  c.results_dir = str(tmp_path / "out")
  c.strategy_options = {"lcmd": {"gama": 1.0}}
  with pytest.raises(TypeError, match="gama"):
    bm.run(c, log=lambda *_: None)
  c.strategy_options = {}
  c.train.epoch = 3  # the options' fields, checked before anything runs
  with pytest.raises(ValueError, match="unknown field config.train.epoch; valid fields: epochs"):
    bm.run(c, log=lambda *_: None)
  del c.train["epoch"]
  c.strategies = ("random", "lcdm")
  with pytest.raises(ValueError, match="lcdm"):
    bm.run(c, log=lambda *_: None)
  assert not os.path.exists(tmp_path / "out")  # nothing written


@pytest.mark.slow
def test_tangent_solved_only_for_strategies_that_need_it():
  from curiojax.strategies import STRATEGIES, Needs, Selection, register_strategy

  seen = {}

  def probe(name, tangent):
    @register_strategy(name)
    class Probe:
      needs = Needs(tangent=tangent)

      def select(self, ctx, batch_size):
        seen.setdefault(name, []).append(ctx.tangent is not None)
        return Selection.of(np.arange(batch_size))

  probe("_probe_needs", True)
  probe("_probe_plain", False)
  try:
    x, y = bm.friedman1(300, seed=0)
    split = bm.make_split(x, y, 0, n_valid=30, n_initial=20, max_pool=100, rounds=2, batch_size=5)
    cfg = _protocol_config(1e-3, (8,), epochs=2, learning_rate=0.1, finish_maxiter=3)
    learners = {name: bm.split_learner(cfg, split, name) for name in ("_probe_needs", "_probe_plain")}
    fit0 = bm.initial_fit(learners["_probe_needs"], split, seed=0)
    out = {name: bm.run_strategy(learner, split, seed=0, fit0=fit0) for name, learner in learners.items()}
  finally:
    STRATEGIES.pop("_probe_needs"), STRATEGIES.pop("_probe_plain")
  # round 0's shared fit carries a tangent; the plain strategy's own fits do not solve one
  assert seen == {"_probe_needs": [True, True], "_probe_plain": [True, False]}
  # the residual of each tangent is recorded: 3 CG products leave it well away from zero
  residuals = out["_probe_needs"]["tangent_residual"]
  assert len(residuals) == 2 and all(0 < r < 1 for r in residuals) and out["_probe_plain"]["tangent_residual"] == []

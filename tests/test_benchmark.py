"""Benchmark protocol: splits, preprocessing, the jitted trainer, the tangent, the report."""

import dataclasses
import json
import os
import types

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


def test_error_metrics_of_a_known_prediction():
  # |errors| 0..9 with mixed signs: RMSE √(Σk²/10) = √28.5, q99 at 0.99·9 = 8.91 between 8 and 9, max 9
  err = np.arange(10.0) * np.where(np.arange(10) % 2, 1.0, -1.0)
  target = np.linspace(-1.0, 1.0, 10).astype(np.float32)
  out = bm.error_metrics(target + err.astype(np.float32), target)
  assert out["rmse"] == pytest.approx(np.sqrt(28.5), rel=1e-6)
  assert out["q99"] == pytest.approx(8.91, rel=1e-6) and out["q99"] == pytest.approx(np.quantile(np.abs(err), 0.99))
  assert out["max_error"] == pytest.approx(9.0, rel=1e-6)
  # the held-out errors come from one prediction of the split's test set
  calls = []
  learner = type("L", (), {"predict": lambda self, state, fit, x: calls.append(x) or x[:, 0] + err})()
  split = types.SimpleNamespace(x_test=np.column_stack([target, target]), y_test=target)
  assert bm.heldout_errors(learner, None, None, split) == pytest.approx(out) and len(calls) == 1


def _unit(rmse, q99=None, max_error=None):
  """A saved result with rounds 0..2 (round 0 at 9, outside the metric); no tail curves if not given."""
  out = dict(rmse=[9.0, *rmse], select_s=[0.1, 0.2], batch_size=4, n_initial=8)
  out.update({k: [9.0, *v] for k, v in (("q99", q99), ("max_error", max_error)) if v is not None})
  return out


def test_summarise_pairs_q99_the_way_it_pairs_rmse():
  e = np.e
  # mean log q99 over rounds 1-2: random 0, 1, 1 on splits 0-2; lcmd -1, 1, 0
  q99 = {"random": ([1, 1], [e, e], [1, e * e]), "lcmd": ([1 / e, 1 / e], [e, e], [1, 1])}
  results = {"d": {s: {k: _unit([1.0, 1.0], q, [5.0, 5.0]) for k, q in enumerate(q99[s])} for s in q99}}
  rows = {r["strategy"]: r for r in bm.summarise(results, metric_name="q99")}
  diffs = np.array([-1 - 0, 1 - 1, 0 - 1])  # lcmd minus random per split, by hand
  mean = diffs.sum() / 3
  se = np.sqrt(np.sum((diffs - mean) ** 2) / 2) / np.sqrt(3)
  assert mean == pytest.approx(-2 / 3) and se == pytest.approx(1 / 3)
  lcmd = rows["lcmd"]
  assert lcmd["metric"] == "q99" and not lcmd["missing"]
  assert lcmd["delta"] == pytest.approx(mean) and lcmd["delta_se"] == pytest.approx(se) and lcmd["wins"] == 2
  assert rows["random"]["mean"] == pytest.approx(2 / 3) and rows["random"]["se"] == pytest.approx(1 / 3)
  table = bm.markdown_table(list(rows.values()), ["random", "lcmd"])
  assert "| d | 3 | 0.667 ± 0.333 | -0.667 ± 0.333 (2/3) |" in table
  # the RMSE rows of the same results are their own (equal curves: no difference)
  assert next(r for r in bm.summarise(results) if r["strategy"] == "lcmd")["delta"] == 0.0


def test_results_without_tail_metrics_tabulate_rmse_and_mark_the_tail_missing():
  # "old" was saved before q99 and max_error were recorded; "new" has them
  old = {"random": {k: _unit([1.0, 1.0]) for k in (0, 1)}, "lcmd": {k: _unit([0.5, 0.5]) for k in (0, 1)}}
  new = {s: {k: _unit(u["rmse"][1:], [2.0, 2.0], [3.0, 3.0]) for k, u in by.items()} for s, by in old.items()}
  results = {"old": old, "new": new}
  text, rows = bm.report_tables(results, ["random", "lcmd"], "random")
  assert [r["metric"] for r in rows] == ["rmse"] * 4 and not any(r["missing"] for r in rows)
  rmse_table = text.split("\n\n")[0]
  assert "| old | 2 | 0.000 ± 0.000 | -0.693 ± 0.000 (2/2) |" in rmse_table
  assert "| *mean over datasets* | 2 | +0.000 | -0.693 ± 0.000 |" in rmse_table
  for name, value in (("q99", 2.0), ("max_error", 3.0)):  # the same curves for both strategies of "new"
    for ref in ("random", "lcmd"):
      intro = f"Mean over rounds of log test {bm.METRICS[name]} against {ref} ("
      table = text.split(intro)[1].split("\n\n")[1]
      assert f"| old | 2 | missing (no {name}) | missing (no {name}) |" in table
      cells = [f"{np.log(value):.3f} ± 0.000", "+0.000 ± 0.000 (0/2)"]
      assert f"| new | 2 | {' | '.join(cells if ref == 'random' else cells[::-1])} |" in table
      assert "| *mean over datasets* | 2 | missing | missing |" in table
  assert "nan" not in text.lower()
  # the verdict says what is missing instead of computing from nothing
  assert "- random: fails: incomplete (0 of 6×10 dataset splits paired);" in text


def _verdict_results(lead, se, q99_delta):
  """lcmd at log RMSE and log q99 0 on splits 0-9 of the six datasets; the candidate's paired RMSE
  differences alternate −lead ± a, so se_d = std(ddof=1)/√10 = a/3 and the se of the mean of six
  such dataset means is √(6 (a/3)²)/6: a = 3·se·√6 gives ``se``. Its q99 differences are ``q99_delta``."""
  from benchmarks.active_learning.compare import DATASETS

  a = 3 * se * np.sqrt(6)
  unit = lambda log_rmse, log_q99: _unit([np.exp(log_rmse)], [np.exp(log_q99)], [1.0])
  return {
    ds: {
      "lcmd": {k: unit(0.0, 0.0) for k in range(10)},
      "cand": {k: unit(-lead + a * (-1) ** k, q99_delta) for k in range(10)},
    }
    for ds in DATASETS
  }


@pytest.mark.parametrize(
  "lead, se, q99_delta, failure",
  [
    (0.011, 0.004, -0.001, None),
    (0.009, 0.004, -0.001, "lead below 0.01"),
    (0.011, 0.006, -0.001, "se above 0.005"),
    (0.011, 0.004, 0.001, "worse on q99"),
    (0.009, 0.006, 0.001, "lead below 0.01; se above 0.005; worse on q99"),
  ],
)
def test_verdict_thresholds(lead, se, q99_delta, failure):
  from benchmarks.active_learning.verdict import verdict

  results = _verdict_results(lead, se, q99_delta)
  v = verdict(results, "cand")
  assert v.lead == pytest.approx(lead) and v.se == pytest.approx(se) and v.q99_delta == pytest.approx(q99_delta)
  assert len(v.datasets) == 6 and v.splits == tuple(range(10)) and v.reference == "lcmd"
  assert v.passes == (failure is None)
  assert v.reason.startswith("passes:" if failure is None else f"fails: {failure}:")
  assert verdict(json.loads(json.dumps(results)), "cand") == v  # results.json's string split keys


def test_verdict_fails_incomplete_or_without_q99():
  from benchmarks.active_learning.verdict import verdict

  results = _verdict_results(0.011, 0.004, -0.001)
  del results["yacht"]["cand"][9]
  v = verdict(results, "cand")
  assert not v.passes and v.reason.startswith("fails: incomplete (59 of 6×10 dataset splits paired):")
  results = _verdict_results(0.011, 0.004, -0.001)
  for unit in results["concrete"]["cand"].values():
    del unit["q99"]
  v = verdict(results, "cand")
  assert not v.passes and v.reason.startswith("fails: q99 missing:") and "q99 difference n/a" in v.reason
  for unit in results["concrete"]["cand"].values():
    unit["q99"] = [1.0, 1.0]
  del results["concrete"]["cand"][9]["q99"]
  assert "q99 missing" not in verdict(results, "cand", splits=range(9)).reason  # only the given splits are read


def test_the_report_s_verdict_repeats_the_rule_on_a_run_of_other_datasets():
  # the decision's run: one section, the rule as decided
  text = bm.verdict_lines(_verdict_results(0.011, 0.004, -0.001), ["lcmd", "cand"])
  assert "- cand: passes:" in text and "this run's" not in text
  # a repetition on two other datasets and splits 0-2: the rule as decided is incomplete, the same
  # thresholds on what ran are applied to it (here the candidate leads by 0.02 with no spread)
  results = {
    ds: {
      "lcmd": {k: _unit([1.0], [1.0], [1.0]) for k in range(3)},
      "cand": {k: _unit([np.exp(-0.02)], [1.0], [1.0]) for k in range(3)},
    }
    for ds in ("housing", "protein")
  }
  decided, repeated = bm.verdict_lines(results, ["lcmd", "cand"]).split("The same thresholds on this run's")
  assert "- cand: fails: incomplete (0 of 6×10 dataset splits paired)" in decided
  assert repeated.startswith(" 2 datasets (housing, protein) and splits 0, 1, 2 (")
  assert "- cand: passes: lead in mean log RMSE +0.0200 ± 0.0000" in repeated and "paired splits 6" in repeated


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
  # the tail errors of the same predictions, per round: RMSE ≤ max error, q99 ≤ max error
  assert len(res["q99"]) == len(res["max_error"]) == 3
  assert all(0 < q <= m and 0 < r <= m for r, q, m in zip(res["rmse"], res["q99"], res["max_error"], strict=True))
  report = (tmp_path / "out" / "report.md").read_text()
  for name in ("q99 (99th percentile of the absolute error)", "max error"):
    for ref in ("random", "lcmd"):
      table = report.split(f"Mean over rounds of log test {name} against {ref} (")[1].split("\n\n")[1]
      assert table.startswith("| dataset | splits | random | lcmd |") and "| f1 | 1 |" in table
  assert "- random: fails: incomplete (0 of 6×10 dataset splits paired)" in report  # the verdict against lcmd
  # progress: one line per computed unit, with the time left, as it happens (stderr is not a TTY)
  lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("units")]
  n_units = len(out["results"]["f1"])
  assert len(lines) == n_units and f"{n_units}/{n_units}" in lines[-1] and "left" in lines[0]
  # resumed: every unit reused, nothing recomputed or reported; results saved before the tail errors were
  # recorded still give the RMSE table, and the tail tables say they are missing
  for unit in (tmp_path / "out" / "f1").iterdir():
    saved = json.loads(unit.read_text())
    unit.write_text(json.dumps({k: v for k, v in saved.items() if k not in ("q99", "max_error")}))
  again = bm.run(c, log=lambda *_: None)
  assert not [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("units")]
  assert [(r["mean"], r["delta"]) for r in again["rows"]] == [(r["mean"], r["delta"]) for r in out["rows"]]
  assert "| f1 | 1 | missing (no q99) | missing (no q99) |" in again["table"]
  assert "| f1 | 1 | missing (no max_error) | missing (no max_error) |" in again["table"]
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

"""The benchmark scripts beside the harness still run against the library as it is (smoke runs)."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.active_learning import compare, tangent_accuracy, tune
from benchmarks.active_learning import main as bm
from benchmarks.curiosity_vs_error import main as curiosity_vs_error
from benchmarks.selection import main as bench_selection


def test_the_benchmark_runs_as_documented_from_the_repository_root_without_pythonpath():
  # python benchmarks/active_learning/main.py ...: the script's folder is on the path, the root is not
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  out = subprocess.run(
    [sys.executable, "benchmarks/active_learning/main.py", "--helpshort"],
    cwd=root,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  # absl's --helpshort exits 1 after printing the flags; an import failure prints a traceback instead
  assert "Traceback" not in out.stderr and "--config: benchmark config file" in out.stdout + out.stderr, out.stderr[
    -2000:
  ]


@pytest.mark.slow
def test_curiosity_vs_error_prints_its_correlations(tmp_path, capsys):
  folder = bm.write_friedman1(str(tmp_path / "f1"), n=600)
  curiosity_vs_error.main(["--fast", "--split", "100", folder])
  line = capsys.readouterr().out.strip().splitlines()[-1]
  fields = line.split()
  assert fields[0] == "f1" and len(fields) == 7
  assert all(-1 <= float(v) <= 1 for v in fields[2:5])  # three rank correlations


@pytest.mark.slow
def test_selection_benchmark_prints_the_breakdown_and_the_ratio(capsys):
  bench_selection.main(["--pool", "700", "--labelled", "40", "--batch", "4", "--reps", "1"])
  out = capsys.readouterr().out
  for part in ("tangent solve", "features: pool sketch", "curiosity JVP", "in one pass", "greedy LCMD"):
    assert part in out
  ratios = re.findall(r"^(\w+) .* ratio to target (\d+\.\d+)$", out, re.M)
  names = ["random", "lcmd", *bench_selection.TANGENT_STRATEGIES, *bench_selection.REFERENCE_STRATEGIES]
  assert [name for name, _ in ratios] == names
  assert re.search(r"^lcmd, dim=256 .* ratio to target", out, re.M)
  rates = re.search(r"product rate: bfloat16 (\d+) GFLOP/s, float32 (\d+) GFLOP/s", out)
  assert rates and all(float(r) > 0 for r in rates.groups())
  floor = re.search(r"lcmd's products: sketch ([\d.]+) \+ labelled distances ([\d.]+) GFLOP: >= ([\d.]+) s", out)
  # 700 rows pad to 1024; 40 labelled to 512; sketch dim 512: 2·1024·512·(2·512 + 4·512) and 2·1024·512·512 FLOP
  assert floor and [float(floor[1]), float(floor[2])] == [3.2, 0.5]


def test_tangent_accuracy_tabulates_its_two_runs(tmp_path, monkeypatch, capsys):
  import json

  rmse = {"random": [1.0, 1.0], "lcmd": [1.0, 0.9], "curiosity": [1.0, 0.8], "curiosity_diverse": [1.0, 1.1]}
  for run, residual in (("certified", 1e-4), ("cg2", 0.2)):
    for ds in compare.DATASETS:
      (tmp_path / run / ds).mkdir(parents=True)
      for k in tangent_accuracy.SPLITS:
        for name, r in rmse.items():
          unit = dict(rmse=r, tangent_residual=[residual])
          (tmp_path / run / ds / f"split{k}_{name}.json").write_text(json.dumps(unit))
  monkeypatch.setattr(tangent_accuracy, "HERE", str(tmp_path))
  tangent_accuracy.main()
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 2 + 6 + 2  # header, rule, six datasets, two means
  exact = [float(v) for v in lines[-2].split("|")[2:7]]
  # the mean over rounds 1.. of log RMSE minus random's: lcmd, curiosity twice, curiosity_diverse twice
  np.testing.assert_allclose(exact, np.log([0.9, 0.8, 0.8, 1.1, 1.1]), atol=1e-3)


def test_compare_tabulates_runs_against_their_paired_random(tmp_path, capsys):
  import json

  for ds in compare.DATASETS:
    for k in (100, 101):
      for name, rmse in (("random", [1.0, 1.0, 1.0]), ("lcmd", [1.0, 0.5, 0.5])):
        path = tmp_path / ds / f"split{k}_{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(rmse=rmse)))
  compare.main([f"{tmp_path}:lcmd", f"{tmp_path}:random:self", f"{tmp_path}:badge"])
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0] == "| dataset | lcmd | self | badge |"
  want = f"{np.log(0.5):+.3f}"  # the mean over rounds 1.. of log RMSE, minus random's (0)
  assert lines[2] == f"| concrete | {want} | +0.000 | — |"
  assert lines[-1] == f"| mean, all 6 | {want} | +0.000 | — |"


def test_tuning_variants_are_strategies_that_read_the_tangent():
  import jax
  import jax.numpy as jnp

  from curiojax.strategies import STRATEGIES, SelectionContext, get_strategy, needs_of

  f = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
  params = {"w1": jnp.ones((2, 4)), "w2": jnp.ones(4)}
  pool = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
  labelled = np.zeros((3, 2), np.float32)
  ctx = SelectionContext(f, params, jax.tree.map(jnp.negative, params), labelled, np.zeros(3), pool, jax.random.key(0))
  for kind in ("lcmd", "kpp", "deflate"):  # one variant of each design
    name = f"_tune_{kind}"
    tune.variant(name, kind, 0.5)
    try:
      strategy = get_strategy(name, sketch={"dim": 16})
      picked = strategy.select(ctx, 5)
    finally:
      STRATEGIES.pop(name)
    assert needs_of(strategy).tangent
    assert len(set(picked.indices.tolist())) == 5 and picked.indices.max() < len(pool)


def test_verdict_and_reference_set_configs_name_the_rule_s_runs():
  import os

  from benchmarks.active_learning.configs import leaders_ten_splits, reference_set
  from curiojax.strategies import get_strategy

  v, r = leaders_ten_splits.get_config(), reference_set.get_config()
  # the verdict's run covers what the rule reads: splits 0-9 of the six datasets, lcmd among the strategies
  assert {os.path.basename(os.path.normpath(d)) for d in v.datasets} == set(compare.DATASETS)
  assert v.splits == tuple(range(10)) and "lcmd" in v.strategies and v.results_dir == "benchmarks/results/verdict"
  assert {"random", "lcmd", "bait", "maxdet", "maxdist", "badge", "variance"} <= set(r.strategies)
  assert r.splits == (0, 1, 2, 3, 4)
  assert r.results_dir == "benchmarks/results/reference_set"
  for c in (v, r):
    for s in c.strategies:
      options = c.strategy_options.get(s)
      get_strategy(s, **(options.to_dict() if options else {}))

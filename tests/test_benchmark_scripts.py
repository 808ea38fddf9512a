"""The benchmark scripts beside the harness still run against the library as it is (smoke runs)."""

import re

from benchmarks import active_learning as bm
from benchmarks import bench_selection, curiosity_vs_error
from benchmarks.tuning import tangent_accuracy


def test_curiosity_vs_error_prints_its_correlations(tmp_path, capsys):
  folder = bm.write_friedman1(str(tmp_path / "f1"), n=600)
  curiosity_vs_error.main(["--fast", "--split", "100", folder])
  line = capsys.readouterr().out.strip().splitlines()[-1]
  fields = line.split()
  assert fields[0] == "f1" and len(fields) == 7
  assert all(-1 <= float(v) <= 1 for v in fields[2:5])  # three rank correlations


def test_selection_benchmark_prints_the_breakdown_and_the_ratio(capsys):
  bench_selection.main(["--pool", "700", "--labelled", "40", "--batch", "4", "--reps", "1"])
  out = capsys.readouterr().out
  for part in ("tangent solve", "features: pool sketch", "curiosity JVP", "greedy LCMD loop"):
    assert part in out
  ratios = re.findall(r"^(\w+) .* ratio to target (\d+\.\d+)$", out, re.M)
  assert [name for name, _ in ratios] == ["random", "lcmd", "curiosity", "curiosity_diverse"]


def test_tangent_accuracy_table_reads_the_committed_runs(capsys):
  tangent_accuracy.main()
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 2 + 6 + 2  # header, rule, six datasets, two means
  exact = lines[-2].split("|")[2:7]
  assert all(-1 < float(v) < 1 for v in exact)

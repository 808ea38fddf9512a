"""``curiojax suggest``: the next rows to label from two CSV files, across sessions; bad files refused (issue 11)."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curiojax.active.learner import Learner
from curiojax.cli import main

FAST = ["--config.epochs=15", "--config.hidden_sizes=8", "--config.minibatch_size=16"]
ENV = {**os.environ, "XLA_FLAGS": ""}


def truth(x):
  return np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2]


def write_csv(path, header, rows):
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  return path


@pytest.fixture
def files(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.uniform(-2, 2, size=(220, 3))
  lab = write_csv(
    tmp_path / "labelled.csv",
    ["sample", "temp", "pressure", "dose", "yield"],
    [[f"S{i}", *row, truth(row[None])[0]] for i, row in enumerate(x[:20])],
  )
  pool = write_csv(
    tmp_path / "pool.csv", ["sample", "temp", "pressure", "dose"], [[f"P{i}", *row] for i, row in enumerate(x[20:])]
  )
  return tmp_path, lab, pool, x


def read_rows(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def suggest_args(tmp, lab, pool, k=8, *extra):
  return [
    "suggest", "--labelled", str(lab), "--target", "yield", "--pool", str(pool), "-k", str(k),
    "--id-column", "sample", "--state", str(tmp / "state"), *FAST, *extra,
  ]  # fmt: skip


def test_end_to_end_in_a_fresh_directory_then_continue(files):
  tmp, lab, pool, x = files
  proc = subprocess.run(
    [sys.executable, "-m", "curiojax", *suggest_args(tmp, lab.name, pool.name)],
    cwd=tmp,
    env=ENV,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr
  assert "Traceback" not in proc.stderr and "run the same command again" in proc.stdout
  first = read_rows(tmp / "state" / "suggestions.csv")
  pool_ids = {f"P{i}" for i in range(200)}
  assert [r["rank"] for r in first] == [str(i) for i in range(1, 9)]
  assert {r["sample"] for r in first} <= pool_ids and len({r["sample"] for r in first}) == 8
  assert all(np.isfinite(float(r["score"])) for r in first)
  np.testing.assert_allclose(
    [[float(r[c]) for c in ("temp", "pressure", "dose")] for r in first],
    [x[20 + int(r["sample"][1:])] for r in first],
    rtol=1e-6,
  )
  # The lab measures the suggested rows; the practitioner appends them to the labelled file.
  with open(lab, "a", newline="") as f:
    w = csv.writer(f)
    for r in first:
      row = x[20 + int(r["sample"][1:])]
      w.writerow([r["sample"], *row, truth(row[None])[0]])
  assert main(suggest_args(tmp, lab, pool)) == 0
  second = read_rows(tmp / "state" / "suggestions.csv")
  assert not {r["sample"] for r in first} & {r["sample"] for r in second}  # no labelled row suggested again
  learner, state = Learner.load(tmp / "state")
  assert state.round == 1 and len(state.labelled) == 8 and len(state.x_extra) == 20
  # Run again without new labels: the same suggestion (the state did not move).
  assert main(suggest_args(tmp, lab, pool)) == 0
  assert read_rows(tmp / "state" / "suggestions.csv") == second


def test_python_call_without_id_column_matches_rows_by_features(files):
  from curiojax.active.learner import LearnerOptions
  from curiojax.active.suggest_csv import suggest

  tmp, _, _, x = files
  lab = write_csv(tmp / "l.csv", ["a", "b", "c", "y"], [[*row, truth(row[None])[0]] for row in x[:20]])
  pool = write_csv(tmp / "p.csv", ["a", "b", "c"], [list(row) for row in x[:220]])  # the labelled rows too
  options = LearnerOptions(epochs=15, hidden_sizes=(8,), minibatch_size=16)
  out = suggest(lab, pool, target="y", k=5, state=tmp / "s", options=options)
  rows = [int(i) for i in out.ids]  # 1-based data rows of the pool file
  assert all(21 <= r <= 220 for r in rows)  # never one of the 20 labelled rows
  header = read_rows(out.path)[0].keys()
  assert list(header)[:3] == ["rank", "pool_row", "score"]


def _no_output(tmp):
  return not (tmp / "state").exists()


@pytest.mark.parametrize(
  "case, match",
  [
    ("missing target", "no target column named 'yield'"),
    ("blank cell", "column 'pressure' is blank"),
    ("text cell", "non-numeric value 'hot'"),
    ("pool columns differ", "feature columns differ"),
    ("duplicate ids", "appears 2 times"),
    ("duplicate column", "names column 'temp' twice"),
    ("k too large", "only 200 pool rows are unlabelled"),
    ("unknown strategy", "Unknown strategy"),
    ("unknown option", "unknown config field 'epoch'"),
  ],
)
def test_bad_files_one_line_exit_2_nothing_written(files, capsys, case, match):
  tmp, lab, pool, x = files
  text = lab.read_text().splitlines()
  extra = []
  k = 8
  if case == "missing target":
    lab.write_text("\n".join([text[0].replace("yield", "result"), *text[1:]]) + "\n")
  elif case == "blank cell":
    lab.write_text("\n".join([text[0], "S0,1.0,,2.0,3.0", *text[2:]]) + "\n")
  elif case == "text cell":
    lab.write_text("\n".join([text[0], "S0,hot,1.0,2.0,3.0", *text[2:]]) + "\n")
  elif case == "pool columns differ":
    write_csv(pool, ["sample", "temp", "dose", "pressure"], [[f"P{i}", *row] for i, row in enumerate(x[20:])])
  elif case == "duplicate ids":
    write_csv(pool, ["sample", "temp", "pressure", "dose"], [["P0", *row] for row in x[20:22]])
  elif case == "duplicate column":
    lab.write_text("\n".join([text[0].replace("dose", "temp"), *text[1:]]) + "\n")
  elif case == "k too large":
    k = 500
  elif case == "unknown strategy":
    extra = ["--strategy", "bogus"]
  elif case == "unknown option":
    extra = ["--config.epoch=3"]
  rc = main(suggest_args(tmp, lab, pool, k, *extra))
  err = capsys.readouterr().err.strip()
  assert rc == 2
  assert err.count("\n") == 0 and err.startswith("curiojax: error:") and match in err, err
  assert _no_output(tmp)


def test_a_continued_state_refuses_changed_labels_and_pools(files, capsys):
  tmp, lab, pool, x = files
  assert main(suggest_args(tmp, lab, pool)) == 0
  before = sorted(p.name for p in (tmp / "state").iterdir())
  text = lab.read_text().splitlines()
  changed = text[1].split(",")
  changed[-1] = "123.0"
  lab.write_text("\n".join([text[0], ",".join(changed), *text[2:]]) + "\n")
  assert main(suggest_args(tmp, lab, pool)) == 2
  assert "told labels are kept" in capsys.readouterr().err
  lab.write_text("\n".join(text) + "\n")
  with open(pool, "a", newline="") as f:
    csv.writer(f).writerow(["P999", 0.1, 0.2, 0.3])
  assert main(suggest_args(tmp, lab, pool)) == 2
  assert "the pool of a state is fixed" in capsys.readouterr().err
  assert sorted(p.name for p in (tmp / "state").iterdir()) == before
  assert main(suggest_args(tmp, lab, pool, 8, "--strategy", "random")) == 2
  assert "to change strategy" in capsys.readouterr().err
  assert Path(tmp / "state" / "state.json").exists()


def test_a_state_folder_in_use_is_refused_in_one_line(files, capsys):
  """Two labelling sessions on one state folder: the second is refused, the first's state is untouched."""
  from curiojax.active import persistence

  tmp, lab, pool, x = files
  assert main(suggest_args(tmp, lab, pool)) == 0
  before = {p.name: p.read_bytes() for p in (tmp / "state").iterdir() if p.name != ".lock"}
  capsys.readouterr()
  with persistence.workdir_lock(tmp / "state"):  # another process, as far as flock knows
    assert main(suggest_args(tmp, lab, pool)) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "in use by another curiojax process" in err
  assert {p.name: p.read_bytes() for p in (tmp / "state").iterdir() if p.name != ".lock"} == before

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

FAST = ["--config.train.epochs=15", "--config.model.hidden_sizes=8", "--config.train.minibatch_size=16"]
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


@pytest.mark.slow  # fresh processes; the in-process tests cover suggest
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
  from curiojax.active.learner import LearnerOptions, ModelOptions, TrainOptions
  from curiojax.active.suggest_csv import suggest

  tmp, _, _, x = files
  lab = write_csv(tmp / "l.csv", ["a", "b", "c", "y"], [[*row, truth(row[None])[0]] for row in x[:20]])
  pool = write_csv(tmp / "p.csv", ["a", "b", "c"], [list(row) for row in x[:220]])  # the labelled rows too
  options = LearnerOptions(model=ModelOptions(hidden_sizes=(8,)), train=TrainOptions(epochs=15, minibatch_size=16))
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


# -- issue 21: a session checks the files against its state, both ways; labels are never lost ----
TINY = {"model": {"hidden_sizes": (8,)}, "train": {"epochs": 3, "minibatch_size": 16}}


def _tiny(tmp, lab_rows, pool_rows, header=("id", "a", "b"), **kw):
  """Write lab.csv / pool.csv and run suggest (random strategy, tiny model); returns the result."""
  from curiojax.active.learner import LearnerOptions, options_from_dict
  from curiojax.active.suggest_csv import suggest

  if lab_rows is not None:
    write_csv(tmp / "lab.csv", [*header, "y"], lab_rows)
  if pool_rows is not None:
    write_csv(tmp / "pool.csv", list(header), pool_rows)
  kw.setdefault("id_column", header[0] if header[0] == "id" else None)
  kw = {
    "target": "y",
    "k": 2,
    "state": tmp / "st",
    "strategy": "random",
    "options": options_from_dict(LearnerOptions, TINY),
    **kw,
  }
  return suggest(tmp / "lab.csv", tmp / "pool.csv", **kw)


def _pool_rows(n=12):
  return [[f"p{i}", i * 0.5, (i * 7) % 5] for i in range(n)]


LAB_ROWS = [["p0", 0.0, 0, 1.0], ["p1", 0.5, 2, 2.0], ["out1", 9.0, 9, 3.0]]


def _refused(tmp, match, **kw):
  before = {p.name: p.read_bytes() for p in (tmp / "st").iterdir()} if (tmp / "st").exists() else {}
  with pytest.raises(ValueError, match=match):
    _tiny(tmp, None, None, **kw)
  after = {p.name: p.read_bytes() for p in (tmp / "st").iterdir()} if (tmp / "st").exists() else {}
  assert after == before


@pytest.mark.parametrize("target", ["lab", "pool", "lab_link", "state_json", "arrays", "state_other"])
def test_out_never_overwrites_an_input_or_the_state(tmp_path, target):
  """Issue 21, item 1: --out lab.csv replaced every label with the suggestions."""
  _tiny(tmp_path, LAB_ROWS, _pool_rows())
  lab_text = (tmp_path / "lab.csv").read_text()
  arrays = next(p.name for p in (tmp_path / "st").iterdir() if p.name.startswith("arrays-"))
  if target == "lab_link":
    (tmp_path / "link.csv").symlink_to(tmp_path / "lab.csv")
  out = {
    "lab": tmp_path / "lab.csv",
    "pool": tmp_path / "sub" / ".." / "pool.csv",
    "lab_link": tmp_path / "link.csv",
    "state_json": tmp_path / "st" / "state.json",
    "arrays": tmp_path / "st" / arrays,
    "state_other": tmp_path / "st" / "mine.csv",
  }[target]
  (tmp_path / "sub").mkdir()
  _refused(tmp_path, "--out", out=out)
  assert (tmp_path / "lab.csv").read_text() == lab_text


def test_a_pool_that_lost_rows_is_refused(tmp_path):
  """Issue 21, item 3: rows deleted from the pool after the state was saved were still suggested."""
  _tiny(tmp_path, LAB_ROWS, _pool_rows())
  write_csv(tmp_path / "pool.csv", ["id", "a", "b"], _pool_rows()[:-1])
  _refused(tmp_path, "lost 1 unlabelled pool row.*'p11'.*restore them")


def test_a_pool_without_ids_that_lost_its_last_row_is_refused(tmp_path):
  rows = [r[1:] for r in _pool_rows()]
  _tiny(tmp_path, [r[1:] for r in LAB_ROWS], rows, header=("a", "b"))
  write_csv(tmp_path / "pool.csv", ["a", "b"], rows[:-1])
  _refused(tmp_path, "lost 1 unlabelled pool row.*'12'", id_column=None)


def test_huge_feature_and_target_values_keep_their_scale(tmp_path):
  """Issue 21, item 4: 1e30 made the float32 scale infinite, and the column (or every label) became 0."""
  from curiojax.active.learner import Learner

  pool = [[f"p{i}", i * 1e30, (i * 7) % 5] for i in range(12)]
  lab = [["p0", 0.0, 0, 1e30], ["p1", 1e30, 2, 2e30], ["p2", 2e30, 4, 5e29]]
  _tiny(tmp_path, lab, pool)
  learner, state = Learner.load(tmp_path / "st")
  assert np.isfinite(learner.x_std).all() and learner.x_std[0] > 1e29
  assert np.ptp(learner.xs_pool[:, 0]) > 1 and np.isfinite(state.y_std) and state.y_std > 1e29
  _, ys = learner.training_set(state)
  assert np.ptp(ys) > 1


def test_a_scale_float32_cannot_hold_names_the_column(tmp_path):
  from curiojax.active.learner import column_scales

  with pytest.raises(ValueError, match="'big' cannot be standardised"):
    column_scales(np.array([[0.0, -1e39], [1.0, 1e39]]), ["small", "big"])


def test_without_ids_an_edited_label_outside_the_pool_is_refused(tmp_path):
  """Issue 21, item 5: the edit was added as a second, conflicting row."""
  lab = [r[1:] for r in LAB_ROWS]
  _tiny(tmp_path, lab, [r[1:] for r in _pool_rows()], header=("a", "b"))
  lab[2][-1] = 30.0
  write_csv(tmp_path / "lab.csv", ["a", "b", "y"], lab)
  _refused(tmp_path, "data row 3 has label 30.0, the saved state has 3.0", id_column=None)


def test_without_ids_two_rows_with_one_pool_rows_features_are_refused_in_a_later_session(tmp_path):
  lab = [r[1:] for r in LAB_ROWS]
  _tiny(tmp_path, lab, [r[1:] for r in _pool_rows()], header=("a", "b"))
  write_csv(tmp_path / "lab.csv", ["a", "b", "y"], [*lab, [1.0, 4, 5.0], [1.0, 4, 6.0]])
  _refused(tmp_path, "data rows 4 and 5 both have the features of pool row 3", id_column=None)


@pytest.mark.parametrize("typo", ["P2", "p02", " p2x"])
def test_a_typod_id_with_a_pool_rows_features_is_refused(tmp_path, typo):
  """Issue 21, item 6: the row became an extra outside row and the pool row stayed unlabelled."""
  _tiny(tmp_path, LAB_ROWS, _pool_rows())
  write_csv(tmp_path / "lab.csv", ["id", "a", "b", "y"], [*LAB_ROWS, [typo.strip(), 1.0, 4, 5.0]])
  _refused(tmp_path, f"row '{typo.strip()}' matches no pool id.*pool row 'p2'.*--allow-same-features")
  out = _tiny(tmp_path, None, None, allow_same_features=True)  # the user says it is another sample
  assert out.new_labels == 1 and out.labelled == 4


def test_a_typod_id_in_the_first_session_is_refused(tmp_path):
  with pytest.raises(ValueError, match="row 'P1' matches no pool id"):
    _tiny(tmp_path, [LAB_ROWS[0], ["P1", 0.5, 2, 2.0]], _pool_rows())


@pytest.mark.parametrize("which", ["pool row", "outside row", "renamed", "no ids, pool row", "no ids, outside row"])
def test_a_removed_labelled_row_is_refused(tmp_path, which):
  """Issue 21, item 7: a deleted labelled row was silently kept ("fitted on 85 rows" for 84)."""
  by_id = not which.startswith("no ids")
  lab = [list(r) for r in LAB_ROWS] if by_id else [r[1:] for r in LAB_ROWS]
  header = ("id", "a", "b") if by_id else ("a", "b")
  pool = _pool_rows() if by_id else [r[1:] for r in _pool_rows()]
  _tiny(tmp_path, lab, pool, header=header)
  if which == "renamed":
    lab[0][0] = "p0-remeasured"
  else:
    del lab[0 if "pool" in which else 2]
  write_csv(tmp_path / "lab.csv", [*header, "y"], lab)
  match = {
    "pool row": "pool row 'p0', labelled 1.0 in an earlier session, is missing",
    "outside row": "row 'out1', labelled 3.0 in an earlier session, is missing",
    "renamed": "pool row 'p0', labelled 1.0 in an earlier session, is missing",
    "no ids, pool row": "the row with the features of pool row 1, labelled 1.0 .* is missing",
    "no ids, outside row": r"the row outside the pool with features \(9, 9\), labelled 3.0 .* is missing",
  }[which]
  _refused(tmp_path, match, id_column="id" if by_id else None)


def test_an_outside_row_whose_features_changed_is_refused(tmp_path):
  _tiny(tmp_path, LAB_ROWS, _pool_rows())
  write_csv(tmp_path / "lab.csv", ["id", "a", "b", "y"], [*LAB_ROWS[:2], ["out1", 9.5, 9, 3.0]])
  _refused(tmp_path, "row 'out1' has other feature values than the saved state")


def test_ids_without_id_column(tmp_path):
  """Issue 21, item 8: numeric ids became a feature; string ids gave no hint, even with a saved state."""
  numeric = [[i, i * 0.5, (i * 7) % 5] for i in range(12)]
  with pytest.raises(ValueError, match="column 'id' looks like row ids.*--id-column id"):
    _tiny(tmp_path, [[0, 0.0, 0, 1.0], [1, 0.5, 2, 2.0]], numeric, id_column=None)
  with pytest.raises(ValueError, match="non-numeric value 'p0'.*If column 'code' holds row ids, pass --id-column code"):
    _tiny(tmp_path, [r for r in LAB_ROWS], _pool_rows(), header=("code", "a", "b"), id_column=None)
  _tiny(tmp_path, LAB_ROWS, _pool_rows())
  _refused(tmp_path, "was started with --id-column id; run it the same way", id_column=None)
  _refused(tmp_path, "was started with --id-column id; run it the same way", id_column="a")
  with pytest.raises(ValueError, match="--out .*/ names a folder"):
    _tiny(tmp_path, None, None, out=f"{tmp_path}/new/")


@pytest.mark.parametrize(
  "field, value, match",
  [
    ("x_std", [0.0, float("nan")], "x_std"),
    ("x_std", [1e-30, 0.0], "x_std"),
    ("y_std", -1.0, "y_std"),
    ("y_mean", float("inf"), "y_mean"),
    ("round", 10**30, "round"),
    ("pool_ids", ["p0"], "inconsistent"),
  ],
)
def test_a_forged_rechecksummed_state_is_checked_for_consistency(tmp_path, field, value, match):
  """Issue 21, item 10: a state whose checksums were recomputed after forging loaded absurd values."""
  import json

  from curiojax.active import persistence

  _tiny(tmp_path, LAB_ROWS, _pool_rows())
  path = tmp_path / "st" / "state.json"
  meta = json.loads(path.read_text())
  where = meta["state"] if field in ("y_std", "y_mean", "round") else meta["extra"] if field == "pool_ids" else meta
  where[field] = value
  meta["checksum"] = persistence._meta_checksum(meta)
  path.write_text(json.dumps(meta))
  _refused(tmp_path, match)


def test_suggestions_csv_cells_that_look_like_formulas_are_text(tmp_path):
  """Issue 21, item 11: an id or header starting with = + - @ was evaluated by spreadsheets."""
  pool = [[f'=HYPERLINK("x")+{i}', i * 0.5, (i * 7) % 5] for i in range(12)]
  lab = [[pool[0][0], 0.0, 0, 1.0], [pool[1][0], 0.5, 2, 2.0], [pool[2][0], 1.0, 4, -1.0]]
  out = _tiny(tmp_path, lab, pool, header=("@id", "-a", "+b"), id_column="@id")
  with open(out.path, newline="") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["rank", "'@id", "score", "predicted_y", "std_y", "low95_y", "high95_y", "'-a", "'+b"]
  assert all(r[1].startswith("'=HYPERLINK") for r in rows[1:])
  assert all(not c.startswith("'") for r in rows[1:] for c in r[3:])  # numbers stay numbers (negative ones too)
  with open(out.history, newline="") as f:
    assert all(r[2].startswith("'=HYPERLINK") for r in list(csv.reader(f))[1:])  # the history's ids too
  assert out.ids[0].startswith("=")  # the ids themselves are the file's


def test_an_infinite_strength_grid_is_one_line(files, capsys):
  """Issue 21, item 14: '<=' not supported between 'int' and 'str'."""
  tmp, lab, pool, x = files
  for value, match in (("0.001,inf", "strength_grid values must be finite"), ("0.001,abc", "'strength_grid'")):
    assert main(suggest_args(tmp, lab, pool, 8, f"--config.strength_grid={value}")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("curiojax: error:") and match in err, err
  assert _no_output(tmp)


def test_out_onto_the_labelled_file_is_one_line_and_keeps_it(files, capsys):
  tmp, lab, pool, x = files
  text = lab.read_text()
  assert main(suggest_args(tmp, lab, pool, 8, "--out", str(lab))) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "is the labelled file" in err, err
  assert lab.read_text() == text and _no_output(tmp)


def test_a_reader_that_leaves_early_is_no_error(files, monkeypatch, capsys):
  """Issue 21, item 13: `curiojax suggest ... | head` ended in a BrokenPipeError traceback."""

  class Closed:
    def write(self, text):
      raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
      raise BrokenPipeError(32, "Broken pipe")

  tmp, lab, pool, x = files
  monkeypatch.setattr(sys, "stdout", Closed())
  assert main(suggest_args(tmp, lab, pool, 8, "--strategy", "random")) == 0
  monkeypatch.undo()
  assert capsys.readouterr().err == ""
  assert len(read_rows(tmp / "state" / "suggestions.csv")) == 8  # everything was written before printing


def test_without_ids_a_pool_with_two_equal_rows_is_refused(tmp_path):
  """Found in the issue-21 sweep: a label for the second of two equal pool rows went to the first one."""
  rows = [r[1:] for r in _pool_rows()]
  with pytest.raises(ValueError, match="data rows 1 and 12 have the same features"):
    _tiny(tmp_path, [r[1:] for r in LAB_ROWS], [*rows[:-1], rows[0]], header=("a", "b"))


def test_labelled_rows_may_leave_the_pool_file(tmp_path):
  _tiny(tmp_path, LAB_ROWS, _pool_rows())
  write_csv(tmp_path / "pool.csv", ["id", "a", "b"], _pool_rows()[1:])  # p0 is labelled: moved out of the pool
  out = _tiny(tmp_path, None, None)
  assert out.labelled == 3 and "p0" not in out.ids


def test_a_continued_state_refuses_another_seed_and_odd_arguments(tmp_path):
  from curiojax.active.suggest_csv import suggest

  _tiny(tmp_path, LAB_ROWS, _pool_rows(), seed=3)
  _refused(tmp_path, "started with seed 3", seed=4)
  assert _tiny(tmp_path, None, None).labelled == 3  # no seed given: the state's own
  with pytest.raises(TypeError, match="options must be a curiojax.LearnerOptions"):
    _tiny(tmp_path, None, None, options={"epochs": 3})
  with pytest.raises(ValueError, match="seed must be an integer >= 0"):
    _tiny(tmp_path, None, None, seed=1.5)
  with pytest.raises(ValueError, match="the id column must be a column name"):
    _tiny(tmp_path, None, None, id_column="")
  with pytest.raises(TypeError, match="labelled must be the path of a CSV file"):
    suggest(np.zeros((3, 2)), tmp_path / "pool.csv", target="y", k=1)


def test_ids_are_printed_without_control_sequences(tmp_path, capsys):
  pool = [[f"p{i}\x1b[2J", i * 0.5, (i * 7) % 5] for i in range(12)]
  lab = [[pool[0][0], 0.0, 0, 1.0], [pool[1][0], 0.5, 2, 2.0], [pool[2][0], 1.0, 4, -1.0]]
  write_csv(tmp_path / "lab.csv", ["id", "a", "b", "y"], lab)
  write_csv(tmp_path / "pool.csv", ["id", "a", "b"], pool)
  args = ["suggest", "--labelled", str(tmp_path / "lab.csv"), "--target", "y", "--pool", str(tmp_path / "pool.csv")]
  args += ["-k", "2", "--id-column", "id", "--state", str(tmp_path / "st"), "--strategy", "random", *FAST]
  assert main(args) == 0
  assert "\x1b" not in capsys.readouterr().out


def test_two_labelled_rows_get_a_batch_without_made_up_error_bars(tmp_path):
  with pytest.warns(UserWarning, match="no error bars with 2 labelled rows"):
    out = _tiny(tmp_path, [["p0", 0.0, 0, 1.0], ["p1", 0.5, 2, 2.0]], _pool_rows())
  assert len(out.ids) == 2 and np.all(np.isfinite(out.predictions)) and np.all(np.isnan(out.stds))


def test_an_interrupted_suggest_says_how_to_continue(files, capsys, monkeypatch):
  import curiojax.active.suggest_csv as module

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  tmp, lab, pool, x = files
  monkeypatch.setattr(module, "suggest", interrupted)
  assert main(suggest_args(tmp, lab, pool)) == 130
  err = capsys.readouterr().err
  assert "run the same command again" in err and "--resume" not in err


@pytest.mark.parametrize("by_id", [True, False])
def test_features_rounded_on_the_way_are_refused(tmp_path, by_id):
  """Found in the issue-21 sweep: a labelled row rounded to 6 digits became a second sample outside the pool."""
  pool = [[f"p{i}", (i + 1) / 7, 100 + i / 3] for i in range(12)]
  lab = [["p0", *pool[0][1:], 1.0], ["p1", *pool[1][1:], 2.0], ["x", float(f"{pool[2][1]:.6g}"), pool[2][2], 3.0]]
  header = ("id", "a", "b") if by_id else ("a", "b")
  if not by_id:
    pool, lab = [r[1:] for r in pool], [r[1:] for r in lab]
  with pytest.raises(ValueError, match=r"features nearly equal \(rounded\?\) those of unlabelled pool row '(p2|3)'"):
    _tiny(tmp_path, lab, pool, header=header, id_column="id" if by_id else None)
  assert _tiny(tmp_path, None, None, id_column="id" if by_id else None, allow_same_features=True).labelled == 3


def test_a_new_state_is_not_started_in_a_folder_of_other_files(tmp_path):
  """Found in the issue-21 sweep: --state . started a state among the user's files (and cleared arrays-*.npz)."""
  (tmp_path / "st").mkdir()
  (tmp_path / "st" / "arrays-final.npz").write_bytes(b"mine")
  with pytest.raises(ValueError, match="holds no curiojax state but other files \\(e.g. 'arrays-final.npz'\\)"):
    _tiny(tmp_path, LAB_ROWS, _pool_rows())
  assert (tmp_path / "st" / "arrays-final.npz").read_bytes() == b"mine"


def test_saving_never_deletes_a_users_arrays_file(tmp_path):
  from curiojax.active import persistence

  (tmp_path / "arrays-final.npz").write_bytes(b"mine")
  persistence.save_state(tmp_path, {"unit": 1}, {"a": np.arange(3)}, tag=1)
  persistence.save_state(tmp_path, {"unit": 2}, {"a": np.arange(3)}, tag=2)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays-000002.msgpack", "arrays-final.npz", "state.json"]

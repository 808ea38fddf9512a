"""`curiojax suggest`: predictions with error bars, a history of batches, the pool's own text, DataFrames (issue 22)."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from curiojax.active.learner import LearnerOptions, ModelOptions
from curiojax.active.suggest_csv import HISTORY_COLUMNS, RANK_MEANING, SCORE_MEANINGS, suggest
from curiojax.active.training import TrainOptions
from curiojax.cli import main

FAST = ["--config.train.epochs=15", "--config.model.hidden_sizes=8", "--config.train.minibatch_size=16"]
OPTIONS = LearnerOptions(model=ModelOptions(hidden_sizes=(8,)), train=TrainOptions(epochs=15, minibatch_size=16))


def truth(x):
  return np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2]


def write_csv(path, header, rows):
  with open(path, "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
  return path


def read_rows(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def texts(v, i):
  """The pool's cells in the forms people type: '6.4', '-2.50', '1.250e-01', '3'."""
  return [f"{v[0]:.1f}", f"{v[1]:.2f}", f"{v[2]:.3e}" if i % 2 else str(int(round(v[2] * 10)))]


@pytest.fixture
def files(tmp_path):
  rng = np.random.default_rng(1)
  x = rng.uniform(-2, 2, size=(80, 3))
  cells = [texts(v, i) for i, v in enumerate(x)]
  x = np.array([[float(c) for c in row] for row in cells])
  lab = write_csv(
    tmp_path / "labelled.csv",
    ["sample", "temp", "pressure", "dose", "yield"],
    [[f"S{i}", *cells[i], f"{truth(x[i : i + 1])[0]:.6g}"] for i in range(15)],
  )
  pool = write_csv(
    tmp_path / "pool.csv", ["sample", "temp", "pressure", "dose"], [[f"P{i}", *cells[i]] for i in range(15, 80)]
  )
  return tmp_path, lab, pool, x, cells


def cli_args(tmp, lab, pool, k=4):
  return [
    "suggest", "--labelled", str(lab), "--target", "yield", "--pool", str(pool), "-k", str(k),
    "--id-column", "sample", "--state", str(tmp / "state"), *FAST,
  ]  # fmt: skip


def test_predictions_history_text_and_the_score_sentence_across_sessions(files, capsys):
  tmp, lab, pool, x, cells = files
  assert main(cli_args(tmp, lab, pool)) == 0
  out = capsys.readouterr().out
  # The terminal: the table has the prediction and its std; rank and score are explained in plain words.
  header = out.splitlines()[0].split()
  assert header == ["rank", "sample", "score", "predicted", "yield", "std", "95%", "interval"]
  assert RANK_MEANING[1:] in out and SCORE_MEANINGS["lcmd"][1:] in out and "standard deviation" in out
  assert "history.csv" in out
  first = read_rows(tmp / "state" / "suggestions.csv")
  assert list(first[0]) == [
    "rank", "sample", "score", "predicted_yield", "std_yield", "low95_yield", "high95_yield", "temp", "pressure", "dose"
  ]  # fmt: skip
  assert [r["rank"] for r in first] == ["1", "2", "3", "4"]
  predicted = np.array([float(r["predicted_yield"]) for r in first])
  std = np.array([float(r["std_yield"]) for r in first])
  assert np.all(np.isfinite(predicted)) and np.all(np.isfinite(std)) and np.all(std > 0)
  low, high = (np.array([float(r[c]) for r in first]) for c in ("low95_yield", "high95_yield"))
  assert np.all(low < predicted) and np.all(predicted < high)
  for r in first:  # the pool's own text, byte for byte ('6.4' stays '6.4')
    assert [r["temp"], r["pressure"], r["dose"]] == cells[int(r["sample"][1:])]
  history = read_rows(tmp / "state" / "history.csv")
  assert tuple(history[0]) == HISTORY_COLUMNS
  assert [(h["round"], h["rank"], h["id"]) for h in history] == [("1", r["rank"], r["sample"]) for r in first]
  assert all(h["strategy"] == "lcmd" and h["time"].endswith("Z") for h in history)
  assert [h["prediction"] for h in history] == [r["predicted_yield"] for r in first]

  # Asked again without new labels: the same batch, and the history keeps its rows once.
  before = (tmp / "state" / "history.csv").read_bytes()
  assert main(cli_args(tmp, lab, pool)) == 0
  capsys.readouterr()
  assert (tmp / "state" / "history.csv").read_bytes() == before

  # The lab measures the batch; the next session appends round 2 and keeps round 1.
  with open(lab, "a", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    for r in first:
      i = int(r["sample"][1:])
      w.writerow([r["sample"], *cells[i], f"{truth(x[i : i + 1])[0]:.6g}"])
  assert main(cli_args(tmp, lab, pool, k=3)) == 0
  assert "4 new this session" in capsys.readouterr().out
  history = read_rows(tmp / "state" / "history.csv")
  assert [h["round"] for h in history] == ["1"] * 4 + ["2"] * 3
  assert (tmp / "state" / "history.csv").read_bytes().startswith(before)
  assert not {h["id"] for h in history[4:]} & {r["sample"] for r in first}

  # A damaged history is named, and nothing is written.
  state_json = (tmp / "state" / "state.json").read_bytes()
  (tmp / "state" / "history.csv").write_text("what,is,this\n")
  assert main(cli_args(tmp, lab, pool)) == 2
  assert "not a curiojax history" in capsys.readouterr().err
  assert (tmp / "state" / "state.json").read_bytes() == state_json


def test_a_history_without_its_state_is_never_overwritten(files, capsys):
  tmp, lab, pool, *_ = files
  (tmp / "state").mkdir()
  (tmp / "state" / "history.csv").write_text(",".join(HISTORY_COLUMNS) + "\n")
  assert main(cli_args(tmp, lab, pool)) == 2
  assert "history.csv" in capsys.readouterr().err
  assert not (tmp / "state" / "state.json").exists()


def frames(index_name="sid"):
  pd = pytest.importorskip("pandas")
  rng = np.random.default_rng(2)
  x = np.round(rng.uniform(-2, 2, size=(60, 3)), 2)
  ids = pd.Index([f"R{i}" for i in range(60)], name=index_name)
  data = pd.DataFrame(x, columns=["temp", "pressure", "dose"], index=ids)
  data["yield"] = truth(x)
  return pd, data


def test_dataframes_with_ids_from_the_index(tmp_path):
  pd, data = frames()
  labelled, pool = data.iloc[:12], data.iloc[12:].drop(columns="yield")
  out = suggest(labelled, pool, target="yield", k=3, state=tmp_path / "s", options=OPTIONS)
  assert set(out.ids) <= set(pool.index) and out.id_header == "sid"
  assert out.predictions.shape == out.stds.shape == out.low95.shape == (3,) and np.all(np.isfinite(out.predictions))
  assert np.all(out.low95 < out.predictions) and np.all(out.predictions < out.high95)
  assert np.all(out.stds > 0) and out.round == 1
  rows = read_rows(out.path)
  assert [r["sid"] for r in rows] == list(out.ids)
  assert [r["temp"] for r in rows] == [str(pool.loc[i, "temp"]) for i in out.ids]  # 1.23, not 1.23000002
  # The next session: the measured rows move from the pool to the labelled frame (by their index ids).
  labelled = pd.concat([labelled, data.loc[list(out.ids)]])
  pool = pool.drop(index=list(out.ids))
  again = suggest(labelled, pool, target="yield", k=3, state=tmp_path / "s")
  assert again.new_labels == 3 and again.round == 2 and not set(again.ids) & set(out.ids)
  assert [h["round"] for h in read_rows(again.history)] == ["1"] * 3 + ["2"] * 3
  with pytest.raises(ValueError, match="started with the DataFrames' index as ids"):
    suggest(labelled.reset_index(drop=True), pool.reset_index(drop=True), target="yield", k=3, state=tmp_path / "s")


def test_dataframes_with_an_id_column(tmp_path):
  pd, data = frames()
  data = data.reset_index()  # ids in the column "sid", plain 0..n-1 index
  out = suggest(data.iloc[:12], data.iloc[12:], target="yield", k=3, id_column="sid", state=tmp_path / "s",
                options=OPTIONS)  # fmt: skip
  assert set(out.ids) <= set(data["sid"][12:]) and np.all(out.stds > 0)
  assert list(read_rows(out.path)[0])[:5] == ["rank", "sid", "score", "predicted_yield", "std_yield"]


@pytest.mark.parametrize(
  "edit, match",
  [
    (lambda lab, pool: (lab.drop(columns="yield"), pool), "no target column named 'yield'"),
    (lambda lab, pool: (lab.assign(temp=lab["temp"].astype(str)), pool), "feature column 'temp' is not numeric"),
    (lambda lab, pool: (lab, pool.assign(dose="high")), "feature column 'dose' is not numeric"),
    (lambda lab, pool: (lab, pool.set_axis(["R20"] * len(pool)).rename_axis("sid")), "'R20' appears 48 times"),
    (lambda lab, pool: (lab.assign(pressure=np.nan), pool), "column 'pressure' is blank"),
    (lambda lab, pool: (lab.assign(**{"yield": np.inf}), pool), "column 'yield' is inf"),
  ],
)
def test_bad_dataframes_name_the_column_and_write_nothing(tmp_path, edit, match):
  _, data = frames()
  labelled, pool = edit(data.iloc[:12], data.iloc[12:].drop(columns="yield"))
  with pytest.raises(ValueError, match=match):
    suggest(labelled, pool, target="yield", k=3, state=tmp_path / "s", options=OPTIONS)
  assert not (tmp_path / "s").exists()


def test_duplicate_ids_in_an_id_column_and_odd_calls(tmp_path):
  pd, data = frames()
  data = data.reset_index()
  data.loc[3, "sid"] = "R2"
  with pytest.raises(ValueError, match="id 'R2' appears 2 times in column 'sid'"):
    suggest(data.iloc[:12], data.iloc[12:], target="yield", k=3, id_column="sid", state=tmp_path / "s")
  with pytest.raises(TypeError, match="both CSV file paths or both pandas DataFrames"):
    suggest(data, str(tmp_path / "pool.csv"), target="yield", k=3, state=tmp_path / "s")
  with pytest.raises(ValueError, match="give state="):
    suggest(data.iloc[:12], data.iloc[12:], target="yield", k=3, id_column="sid")
  assert not (tmp_path / "s").exists()


def test_a_learner_takes_a_dataframe_pool_and_pandas_stays_optional():
  pd, data = frames()
  from curiojax.active.learner import Learner

  learner = Learner(data.drop(columns="yield"), options=OPTIONS)
  assert learner.x_pool.shape == (60, 3) and learner.x_pool.dtype == np.float32
  code = "import sys, curiojax, curiojax.cli, curiojax.active.suggest_csv; assert 'pandas' not in sys.modules"
  env = {**os.environ, "XLA_FLAGS": ""}
  subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)

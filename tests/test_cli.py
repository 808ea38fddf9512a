"""The curiojax command: outputs, one-line user errors, SIGKILL + --resume equals an uninterrupted run."""

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curiojax.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.py")
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
  """Share compiled executables between the subprocesses (later runs skip most compiling)."""
  ENV["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))
  ENV["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  ENV["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  yield


def _run(*args, cwd):
  return subprocess.run(
    [sys.executable, "-m", "curiojax", "run", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300
  )


def _results(workdir):
  with open(Path(workdir) / "results.csv") as f:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _labelled(workdir):
  from curiojax.active import persistence

  meta, arrays = persistence.load_state(workdir)
  return {(d["strategy"], d["split"]): arrays[str(i)]["labelled"].tolist() for i, d in enumerate(meta["learners"])}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("ref") / "run"
  proc = _run("--config", TINY, "--workdir", str(workdir), cwd=workdir.parent)
  assert proc.returncode == 0, proc.stderr
  return workdir, proc


@pytest.mark.slow
def test_run_writes_three_files_and_table(reference):
  workdir, proc = reference
  for name in ("results.csv", "summary.json", "learning_curve.png"):
    assert (workdir / name).stat().st_size > 0
  rows = _results(workdir)
  assert len(rows) == 2 * 2 * 4  # strategies × splits × (rounds + 1)
  assert {r["strategy"] for r in rows} == {"random", "curiosity"}
  summary = json.loads((workdir / "summary.json").read_text())
  assert set(summary["random"]) >= {"mean_log_test_rmse", "final_test_rmse", "labels_used"}
  assert (workdir / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "mean log RMSE" in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(reference, tmp_path):
  ref_dir, _ = reference
  workdir = tmp_path / "run"
  proc = subprocess.Popen(
    [sys.executable, "-m", "curiojax", "run", "--config", TINY, "--workdir", str(workdir)],
    cwd=tmp_path,
    env=ENV,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  state = workdir / "state.json"
  deadline = time.time() + 240
  try:
    while time.time() < deadline:
      try:
        if json.loads(state.read_text())["unit"] >= 1:
          break
      except (OSError, ValueError, KeyError):
        pass
      time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  unit = json.loads(state.read_text())["unit"]
  assert 1 <= unit < 16, unit  # killed mid-run
  resumed = _run("--resume", str(workdir), cwd=tmp_path)
  assert resumed.returncode == 0, resumed.stderr
  assert _results(workdir) == _results(ref_dir)
  assert _labelled(workdir) == _labelled(ref_dir)
  for labelled in _labelled(workdir).values():
    assert len(labelled) == len(set(labelled)) == 50


def _one_line_error(capsys, args, match):
  rc = main(["run", *args])
  err = capsys.readouterr().err.strip()
  assert rc == 2
  assert err.count("\n") == 0 and err.startswith("curiojax: error:") and match in err, err
  return err


def test_user_errors_one_line(tmp_path, capsys):
  ragged = tmp_path / "ragged"
  ragged.mkdir()
  (ragged / "data.txt").write_text("1 2 3\n4 5\n")
  (ragged / "index_features.txt").write_text("0\n1\n")
  (ragged / "index_target.txt").write_text("2\n")
  nan = tmp_path / "nan.csv"
  nan.write_text("a,y\n1,2\n3,nan\n4,5\n")
  wd = ["--workdir", str(tmp_path / "out")]
  cases = [
    (["--config", TINY, "--config.strategies=random,oracle"], "Unknown strategy 'oracle'"),
    (["--config", TINY, "--config.nope=3"], "unknown config field 'nope'"),
    (["--config", TINY, "--config.rounds=many"], "bad value: --config.rounds=many"),
    (["--config", TINY, "--config.train.epoch=3"], "unknown config field 'train.epoch' (did you mean 'epochs'?)"),
    (["--config", TINY, "--config.epochs=3"], "unknown config field 'epochs' (it is now train.epochs)"),
    (["--config", TINY, "--config.strategies=random,lcmd,bogus"], "Unknown strategy 'bogus'"),
    (["--config", TINY, f"--config.dataset={ragged}"], "ragged row"),
    (["--config", TINY, f"--config.dataset={nan}", "--config.target=y"], "'nan' is not a finite number"),
    (["--config", TINY, f"--config.dataset={tmp_path / 'missing'}"], "not found"),
    (["--config", TINY, "--config.batch_size=5000"], "larger than the unlabelled pool"),
    (["--config", str(tmp_path / "none.py")], "does not exist"),
    (["--resume", str(tmp_path)], "no state.json"),
    (["--config", TINY, "--config.strength=inf"], "strength"),
    (["--config", TINY, "--config.train.learning_rate=inf"], "learning_rate"),
    (["--config", TINY, "--config.train.damping=nan"], "damping"),
  ]
  for args, match in cases:
    _one_line_error(capsys, [*args, *wd] if "--resume" not in args else args, match)
  assert not (tmp_path / "out").exists()  # validated before anything was written


@pytest.mark.slow
def test_existing_run_is_never_overwritten(reference, capsys):
  workdir, _ = reference
  before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in workdir.iterdir()}
  _one_line_error(capsys, ["--config", TINY, "--workdir", str(workdir)], "already holds a run")
  _one_line_error(capsys, ["--resume", str(workdir), "--config.rounds=9"], "--resume continues")
  after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in workdir.iterdir()}
  assert before == after


def test_subprocess_error_has_no_traceback(tmp_path):
  proc = _run("--config", TINY, "--config.no_such_field=1", cwd=tmp_path)
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
  assert "unknown config field 'no_such_field'" in proc.stderr
  assert not (tmp_path / "curiojax_runs").exists()


@pytest.mark.slow
def test_progress_reaches_a_log_file_as_it_happens(tmp_path):
  """stderr redirected to a file (a background job): one line per fit, with the time left, not at the end."""
  log = tmp_path / "log.txt"
  with open(log, "w") as err:
    proc = subprocess.Popen(
      [sys.executable, "-m", "curiojax", "run", "--config", TINY, "--workdir", str(tmp_path / "run")],
      cwd=tmp_path,
      env=ENV,
      stdout=subprocess.DEVNULL,
      stderr=err,
    )
    deadline = time.time() + 240
    lines = []
    while time.time() < deadline and proc.poll() is None:
      lines = [ln for ln in log.read_text().splitlines() if ln.startswith("fits ")]
      if lines:
        break
      time.sleep(0.05)
    seen_while_running = bool(lines) and proc.poll() is None
    proc.wait(timeout=240)
  assert proc.returncode == 0
  assert seen_while_running  # progress arrived before the job ended
  lines = [ln for ln in log.read_text().splitlines() if ln.startswith("fits ")]
  assert len(lines) == 16 and lines[-1].startswith("fits (rounds x splits x strategies) 16/16")
  assert all("left" in ln and "s/unit" in ln for ln in lines)


@pytest.mark.slow
def test_second_writer_is_refused_and_a_damaged_state_stops_the_resume(reference, tmp_path, capsys):
  """One owner per work directory; a truncated or hand-edited state gives one line, exit 2, nothing changed."""
  import shutil

  from curiojax.active import persistence

  ref_dir, _ = reference
  copy = tmp_path / "copy"
  shutil.copytree(ref_dir, copy)
  fresh = tmp_path / "fresh"
  with persistence.workdir_lock(copy), persistence.workdir_lock(fresh):  # another process, as far as flock knows
    _one_line_error(capsys, ["--resume", str(copy)], "in use by another curiojax process")
    _one_line_error(capsys, ["--config", TINY, "--workdir", str(fresh)], "in use by another curiojax process")
  assert not (fresh / "state.json").exists()  # the refused writer wrote nothing

  state = copy / "state.json"
  original = state.read_text()
  unit = json.loads(original)["unit"]
  state.write_text(original.replace(f'"unit": {unit}', f'"unit": {unit + 7}'))  # past the end
  files = lambda: {p.name: p.read_bytes() for p in copy.iterdir() if p.name != ".lock"}  # the lock holds a pid
  before = files()
  _one_line_error(capsys, ["--resume", str(copy)], "modified or corrupted")
  state.write_text(original)
  arrays = copy / json.loads(original)["arrays"]
  arrays.write_bytes(arrays.read_bytes()[:-100])
  _one_line_error(capsys, ["--resume", str(copy)], "truncated or corrupted")
  before[arrays.name] = arrays.read_bytes()
  before["state.json"] = state.read_bytes()
  assert files() == before  # nothing rewritten


@pytest.mark.slow
def test_results_record_the_tangent_health_and_say_so_loudly(reference, tmp_path):
  """Fits on an uncertifiable tangent (no damping, s = 1e-7) are marked in results.csv and summary.json."""
  workdir = tmp_path / "run"
  args = ("--config.train.damping=0", "--config.strength=1e-7", "--config.model.hidden_sizes=64,64")
  proc = _run("--config", TINY, *args, "--workdir", str(workdir), cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  rows = _results(workdir)
  bad = [r for r in rows if r["tangent_ok"] == "False"]
  assert bad and all(float(r["tangent_residual"]) > 0.1 for r in bad)
  good = [r for r in rows if r["tangent_ok"] == "True"]
  assert all(float(r["tangent_residual"]) <= 0.1 for r in good if r["strategy"] != "random")
  # random reads no tangent, so none is solved: the residual is NaN and nothing is flagged
  assert all(r["tangent_residual"] == "nan" for r in good if r["strategy"] == "random")
  summary = json.loads((workdir / "summary.json").read_text())
  assert sum(s["fits_with_inaccurate_tangent"] for s in summary.values()) == len(bad)
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("curiojax: WARNING:") and f"{len(bad)} of {len(rows)} fits" in last
  # the default settings certify every fit and say nothing
  ref_dir, ref_proc = reference
  assert all(r["tangent_ok"] == "True" for r in _results(ref_dir)) and "WARNING" not in ref_proc.stderr


def _corrupt(workdir, how):
  state = workdir / "state.json"
  meta = json.loads(state.read_text())
  arrays = workdir / meta["arrays"]
  if how == "state truncated":
    state.write_text(state.read_text()[:50])
  elif how == "state empty":
    state.write_text("")
  elif how == "state not an object":
    state.write_text("[]")
  elif how == "state from the future":
    state.write_text(json.dumps({**meta, "format_version": 99}))
  elif how == "state edited: unit":
    state.write_text(json.dumps({**meta, "unit": meta["unit"] + 3}))
  elif how == "state edited: config":
    state.write_text(json.dumps({**meta, "config": {**meta["config"], "rounds": 9}}))
  elif how == "state deleted":
    state.unlink()
  elif how == "arrays deleted":
    arrays.unlink()
  elif how == "arrays truncated":
    arrays.write_bytes(arrays.read_bytes()[:-64])
  elif how == "arrays bit flip":
    data = bytearray(arrays.read_bytes())
    data[len(data) // 2] ^= 0x01
    arrays.write_bytes(bytes(data))
  elif how == "stale temporary files":
    (workdir / ".state.json.x1.tmp").write_text("{")
    (workdir / f".{arrays.name}.x2.tmp").write_bytes(b"PK")
  elif how == "stale lock file":
    (workdir / ".lock").write_text("12345")


CORRUPTIONS = {
  "state truncated": "unreadable",
  "state empty": "unreadable",
  "state not an object": "state format",
  "state from the future": "state format",
  "state edited: unit": "modified or corrupted",
  "state edited: config": "modified or corrupted",
  "state deleted": "no state.json",
  "arrays deleted": "missing",
  "arrays truncated": "truncated or corrupted",
  "arrays bit flip": "truncated or corrupted",
  "stale temporary files": None,  # resumes, and the results are the same
  "stale lock file": None,
}


@pytest.mark.slow
@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_resume_after_each_corruption_continues_or_stops_in_one_line(reference, tmp_path, capsys, how):
  import shutil

  ref_dir, _ = reference
  workdir = tmp_path / "run"
  shutil.copytree(ref_dir, workdir)
  _corrupt(workdir, how)
  match = CORRUPTIONS[how]
  files = lambda: {p.name: p.read_bytes() for p in workdir.iterdir() if p.name != ".lock"}  # the lock holds a pid
  if match is not None:
    before = files()
    _one_line_error(capsys, ["--resume", str(workdir)], match)
    assert files() == before  # nothing rewritten or lost
  else:
    assert main(["run", "--resume", str(workdir)]) == 0
    assert _results(workdir) == _results(ref_dir)


@pytest.mark.slow
def test_a_full_disk_stops_in_one_line_and_loses_nothing(reference, tmp_path, capsys, monkeypatch):
  """A save that fails mid-run (ENOSPC) is one line naming --resume; the resumed run equals an uninterrupted one."""
  import errno

  from curiojax.active import persistence

  ref_dir, _ = reference
  workdir = tmp_path / "run"
  real = persistence.atomic_write_bytes
  calls = {"n": 0}

  def full_disk(path, data):
    calls["n"] += 1
    if calls["n"] == 9:  # a few rounds in
      raise OSError(errno.ENOSPC, "No space left on device")
    real(path, data)

  monkeypatch.setattr(persistence, "atomic_write_bytes", full_disk)
  assert main(["run", "--config", TINY, "--workdir", str(workdir)]) == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert all(line.startswith("fits ") for line in lines[:-1])  # progress, then the one-line error
  assert lines[-1].startswith("curiojax: error:") and "No space left on device" in lines[-1]
  assert f"--resume {workdir}" in lines[-1] and "Traceback" not in "".join(lines)
  monkeypatch.undo()
  unit = json.loads((workdir / "state.json").read_text())["unit"]
  assert 0 < unit < 16
  assert main(["run", "--resume", str(workdir)]) == 0
  assert _results(workdir) == _results(ref_dir)
  assert _labelled(workdir) == _labelled(ref_dir)


@pytest.mark.slow
def test_results_that_cannot_be_written_are_one_line_and_resumable(reference, tmp_path, capsys, monkeypatch):
  import errno
  import shutil

  from curiojax.active import persistence

  ref_dir, _ = reference
  workdir = tmp_path / "run"
  shutil.copytree(ref_dir, workdir)
  (workdir / "results.csv").unlink()
  real = persistence.atomic_write_bytes

  def no_results(path, data):
    if Path(path).name == "results.csv":
      raise OSError(errno.EROFS, "Read-only file system")
    real(path, data)

  monkeypatch.setattr(persistence, "atomic_write_bytes", no_results)
  _one_line_error(capsys, ["--resume", str(workdir)], "cannot write the results")
  monkeypatch.undo()
  assert main(["run", "--resume", str(workdir)]) == 0
  assert _results(workdir) == _results(ref_dir)


def test_nested_config_overrides_reach_the_options(tmp_path, capsys, monkeypatch):
  """``--config.train.epochs`` is ``TrainOptions.epochs``, one to one; ``sys.argv`` is never read or changed."""
  from curiojax.active import loop

  seen = []

  def experiment(x, y, options):
    seen.append(options)
    raise ValueError("stopped before fitting")

  monkeypatch.setattr(loop, "Experiment", experiment)
  monkeypatch.setattr(sys, "argv", ["pytest", "--config.rounds=oops"])
  args = ["--config.train.epochs=7", "--config.model.hidden_sizes=4,4"]
  _one_line_error(capsys, ["--config", TINY, *args, "--workdir", str(tmp_path / "w")], "stopped before fitting")
  options = seen[0]
  assert options.train.epochs == 7 and options.model.hidden_sizes == (4, 4) and options.train.minibatch_size == 16
  assert sys.argv == ["pytest", "--config.rounds=oops"]


def test_the_learning_curve_is_drawn_by_plotting():
  from curiojax import cli, plotting

  assert not hasattr(cli, "plot_learning_curve")
  rows = [{"strategy": "random", "labels": n, "test_rmse": 1.0 / n, "split": 0} for n in (10, 20)]
  assert plotting.plot_learning_curve(rows).startswith(b"\x89PNG")


def test_a_run_config_saved_flat_by_the_previous_release_resumes_as_it_meant():
  from curiojax.cli import UserError, options_from_config

  flat = {"name": "old", "dataset": "concrete", "target": "", "epochs": 7, "hidden_sizes": [4], "model": "mlp"}
  kept = {"lcmd": {"dim": 16}, "curiosity": {"heuristic": "jvp"}}  # every strategy's; lcmd's is the compared one's
  options = options_from_config({**flat, "rounds": 2, "strategies": ["random", "lcmd"], "strategy_options": kept})
  assert options.train.epochs == 7 and options.model.hidden_sizes == (4,) and options.rounds == 2
  assert options.strategies == ("random", "lcmd") and options.strategy_options == {"lcmd": {"dim": 16}}
  with pytest.raises(UserError, match=r"unknown field config.train.epoch; valid fields: epochs"):
    options_from_config({"train": {"epoch": 3}})

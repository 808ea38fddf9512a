"""Run state on disk: atomic replacement, no pickle, exact round trips, and the previous format refused."""

import json
import os
import re
from unittest import mock

import jax
import numpy as np
import pytest
from flax import serialization

from curiojax.active import persistence
from curiojax.active.learner import ModelOptions
from curiojax.active.loop import Experiment, LoopOptions, experiment_from_saved, experiment_to_saved
from curiojax.active.training import TrainOptions


def test_save_load_and_old_arrays_removed(tmp_path):
  persistence.save_state(tmp_path, {"unit": 1}, {"a": np.arange(3, dtype=np.int32)}, tag=1)
  persistence.save_state(tmp_path, {"unit": 2}, {"a": np.arange(4.0)}, tag=2)
  meta, arrays = persistence.load_state(tmp_path)
  assert meta["unit"] == 2 and arrays["a"].tolist() == [0.0, 1.0, 2.0, 3.0]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays-000002.msgpack", "state.json"]


def test_failed_write_keeps_previous_state(tmp_path, monkeypatch):
  persistence.save_state(tmp_path, {"unit": 1}, {"a": np.ones(2)}, tag=1)
  real_replace = os.replace

  def crash(src, dst):
    if str(dst).endswith("state.json"):
      raise OSError("disk full")
    return real_replace(src, dst)

  monkeypatch.setattr(persistence.os, "replace", crash)
  with pytest.raises(OSError, match="disk full"):
    persistence.save_state(tmp_path, {"unit": 2}, {"a": np.zeros(2)}, tag=2)
  monkeypatch.undo()
  meta, arrays = persistence.load_state(tmp_path)
  assert meta["unit"] == 1 and arrays["a"].tolist() == [1.0, 1.0]
  assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_load_errors(tmp_path):
  with pytest.raises(ValueError, match="no state.json"):
    persistence.load_state(tmp_path)
  (tmp_path / "state.json").write_text("{not json")
  with pytest.raises(ValueError, match="unreadable"):
    persistence.load_state(tmp_path)
  # Bytes that are no msgpack state dict: refused on load (even in a state whose checksums match).
  for data in (b"\xc1 not msgpack", serialization.msgpack_serialize([1, 2]), b""):
    _forge(tmp_path, data)
    with pytest.raises(ValueError, match="arrays-000001.msgpack is unreadable"):
      persistence.load_state(tmp_path)


def test_object_arrays_are_never_written_or_read(tmp_path):
  """msgpack holds raw array bytes: an object array (which would need pickle) cannot be saved."""
  with pytest.raises(Exception, match="Object and structured dtypes not supported"):
    persistence.save_state(tmp_path, {}, {"a": np.array([{"x": 1}], dtype=object)}, tag=1)


def _forge(folder, data: bytes, **meta):
  """A state written by hand with valid checksums (what a forger, or a buggy writer, leaves)."""
  (folder / "arrays-000001.msgpack").write_bytes(data)
  meta = {"format_version": 4, "arrays": "arrays-000001.msgpack", "arrays_sha256": persistence._sha256(data), **meta}
  meta["checksum"] = persistence._meta_checksum(meta)
  (folder / "state.json").write_text(json.dumps(meta))


def _array_bytes(**arrays) -> bytes:
  return serialization.msgpack_serialize(arrays)


def test_a_format_without_checksums_is_refused(tmp_path):
  """Issue 21: format_version 2 switched the checksums off, so any hand edit loaded."""
  persistence.save_state(tmp_path, {"unit": 1}, {"a": np.arange(3)}, tag=1)
  meta = json.loads((tmp_path / "state.json").read_text())
  meta["unit"] = 99
  meta["format_version"] = 2
  (tmp_path / "state.json").write_text(json.dumps(meta))
  with pytest.raises(ValueError, match="format 2 carries no checksums|Format 2 carries no checksums"):
    persistence.load_state(tmp_path)
  del meta["checksum"], meta["arrays_sha256"]  # a checksum field missing is a mismatch, whatever the version
  meta["format_version"] = 4
  (tmp_path / "state.json").write_text(json.dumps(meta))
  with pytest.raises(ValueError, match="checksum mismatch"):
    persistence.load_state(tmp_path)


@pytest.mark.parametrize(
  "name", ["../outside.npz", "/etc/passwd", "arrays-000001.msgpack/..", "arrays-000001.npz", "notes.txt", 7]
)
def test_the_arrays_file_is_confined_to_the_state_folder(tmp_path, name):
  """A re-checksummed state naming a file elsewhere is refused before that file is read."""
  (tmp_path / "outside.npz").write_bytes(b"secret")
  folder = tmp_path / "st"
  folder.mkdir()
  _forge(folder, _array_bytes(a=np.arange(3)))
  meta = json.loads((folder / "state.json").read_text())
  meta["arrays"] = name
  meta["checksum"] = persistence._meta_checksum(meta)
  (folder / "state.json").write_text(json.dumps(meta))
  with mock.patch("pathlib.Path.read_bytes", side_effect=AssertionError("read before the name was checked")):
    with pytest.raises(ValueError, match="is not a file of this state"):
      persistence.load_state(folder)


def test_an_arrays_file_that_is_a_link_is_refused(tmp_path):
  _forge(tmp_path, _array_bytes(a=np.arange(3)))
  (tmp_path / "arrays-000001.msgpack").rename(tmp_path / "real.msgpack")
  (tmp_path / "arrays-000001.msgpack").symlink_to(tmp_path / "real.msgpack")
  with pytest.raises(ValueError, match="not a regular file"):
    persistence.load_state(tmp_path)


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "dangling"])
def test_the_lock_never_writes_through_a_link(tmp_path, kind):
  """Issue 21: a .lock symlinked to a user's file was truncated and overwritten with the pid."""
  notes = tmp_path / "notes.txt"
  notes.write_text("my notes")
  folder = tmp_path / "st"
  folder.mkdir()
  lock = folder / ".lock"
  if kind == "symlink":
    lock.symlink_to(notes)
  elif kind == "hardlink":
    os.link(notes, lock)
  else:
    lock.symlink_to(tmp_path / "new.txt")
  with pytest.raises(ValueError, match=r"\.lock is (a link|not a plain file)"):
    with persistence.workdir_lock(folder):
      pass
  assert notes.read_text() == "my notes" and not (tmp_path / "new.txt").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip_bit", "edit_state", "edit_arrays_name", "drop_arrays"])
def test_damaged_state_is_refused_with_the_reason(tmp_path, damage):
  """A truncated or bit-flipped array file, or a hand-edited state.json, never loads silently."""
  persistence.save_state(tmp_path, {"unit": 3, "records": [1, 2, 3]}, {"a": np.arange(50.0)}, tag=3)
  arrays = tmp_path / "arrays-000003.msgpack"
  state = tmp_path / "state.json"
  if damage == "truncate":
    arrays.write_bytes(arrays.read_bytes()[:-40])
    match = "truncated or corrupted"
  elif damage == "flip_bit":  # a flipped bit inside the float data: msgpack alone would not notice
    data = bytearray(arrays.read_bytes())
    i = data.index(np.float64(25.0).tobytes())
    data[i + 3] ^= 0x10
    arrays.write_bytes(bytes(data))
    match = "truncated or corrupted"
  elif damage == "edit_state":
    state.write_text(state.read_text().replace('"unit": 3', '"unit": 30'))
    match = "modified or corrupted"
  elif damage == "edit_arrays_name":
    state.write_text(state.read_text().replace("arrays-000003", "arrays-000004"))
    match = "modified or corrupted"
  else:
    arrays.unlink()
    match = "missing"
  with pytest.raises(ValueError, match=match):
    persistence.load_state(tmp_path)


def test_stale_temporary_files_are_cleaned_on_the_next_save(tmp_path):
  (tmp_path / ".state.json.abc.tmp").write_text("left by a killed writer")
  (tmp_path / ".arrays-000007.msgpack.x9.tmp").write_bytes(b"\x81")
  (tmp_path / ".notes.tmp").write_text("the user's own file")  # not ours: kept
  persistence.save_state(tmp_path, {"unit": 1}, {"a": np.ones(2)}, tag=1)
  assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.tmp", "arrays-000001.msgpack", "state.json"]


def test_workdir_has_one_owner(tmp_path):
  with persistence.workdir_lock(tmp_path):
    with pytest.raises(ValueError, match=f"in use by another curiojax process \\(pid {os.getpid()}\\)"):
      with persistence.workdir_lock(tmp_path):
        pass
  with persistence.workdir_lock(tmp_path):  # released on exit
    pass


def test_experiment_round_trip_resumes_exactly(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 3)).astype(np.float32)
  y = (x[:, 0] - x[:, 1] ** 2).astype(np.float32)
  opts = LoopOptions(
    initial_size=20,
    batch_size=10,
    rounds=2,
    train=TrainOptions(epochs=40, minibatch_size=16),
    model=ModelOptions(hidden_sizes=(16,)),
    num_splits=1,
    warm_start=True,
  )
  exp = Experiment(x, y, opts)
  state = exp.init_state()
  for _ in range(3):
    state, _ = exp.step(state)
  meta, arrays = experiment_to_saved(state)
  persistence.save_state(tmp_path, {**meta, "config": {}}, arrays, tag=state.unit)
  meta2, arrays2 = persistence.load_state(tmp_path)
  restored = experiment_from_saved(exp, meta2, arrays2)
  for k, a in state.learners.items():
    b = restored.learners[k]
    np.testing.assert_array_equal(a.labelled, b.labelled)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(jax.random.key_data(a.key), jax.random.key_data(b.key))
    for u, v in zip(jax.tree.leaves((a.params, a.opt_state)), jax.tree.leaves((b.params, b.opt_state)), strict=True):
      np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
  while not exp.done(state):
    state, _ = exp.step(state)
    restored, _ = exp.step(restored)
  strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
  assert json.dumps(strip(state.records)) == json.dumps(strip(restored.records))
  for k in state.learners:
    np.testing.assert_array_equal(state.learners[k].labelled, restored.learners[k].labelled)


@pytest.mark.parametrize(
  "damage, match",
  [
    ("duplicate index", "duplicated"),
    ("negative index", "out of range"),
    ("labels misaligned", "saved labels"),
    ("unit past the end", "outside the run"),
    ("more records than units", "result rows"),
  ],
)
def test_a_consistently_signed_but_wrong_state_is_refused(tmp_path, damage, match):
  """Beyond the checksum: a state that a buggy writer signed is checked for consistency on load."""
  x = np.random.default_rng(0).normal(size=(120, 3)).astype(np.float32)
  opts = LoopOptions(
    initial_size=20,
    batch_size=10,
    rounds=1,
    train=TrainOptions(epochs=2),
    model=ModelOptions(hidden_sizes=(4,)),
    num_splits=1,
  )
  exp = Experiment(x, x[:, 0], opts)
  state, _ = exp.step(exp.init_state())
  meta, arrays = experiment_to_saved(state)
  saved = arrays["0"]
  labelled = saved["labelled"]
  if damage == "duplicate index":
    saved["labelled"] = np.concatenate([labelled[:-1], labelled[:1]])
  elif damage == "negative index":
    saved["labelled"] = np.concatenate([labelled[:-1], [-1]])
  elif damage == "labels misaligned":
    saved["labels"] = saved["labels"][:-1]
  elif damage == "unit past the end":
    meta["unit"] = len(exp.units) + 5
  else:
    meta["records"] = meta["records"] * 3
  persistence.save_state(tmp_path, {**meta, "config": {}}, arrays, tag=1)
  with pytest.raises(ValueError, match=match):
    experiment_from_saved(exp, *persistence.load_state(tmp_path))


def _fitted_learner():
  import curiojax

  x = np.random.default_rng(1).normal(size=(40, 3)).astype(np.float32)
  learner = curiojax.Learner(
    x,
    options=curiojax.LearnerOptions(
      model=curiojax.ModelOptions(hidden_sizes=(8,)), train=curiojax.TrainOptions(epochs=3)
    ),
    strategy="random",
  )
  state = learner.init(jax.random.key(3), labelled=[0, 1, 2, 3], labels=[0.1, 0.2, 0.3, 0.4])
  state, batch = learner.ask(state, 2)  # fits: params and optimizer state exist
  return learner, learner.tell(state, batch.indices, [0.5, 0.6], x_outside=x[:1] + 1, y_outside=[0.7])


def test_learner_round_trip_is_exact(tmp_path):
  """Options, strategy, pool, labels, the model's pytrees, the key and ``extra`` come back as saved."""
  import curiojax

  learner, state = _fitted_learner()
  learner.save(tmp_path, state, extra={"id_column": "id", "rows": [1, 2]})
  back, restored = curiojax.Learner.load(tmp_path)
  assert back.options == learner.options and back.strategy_name == learner.strategy_name
  assert back.extra == {"id_column": "id", "rows": [1, 2]}
  np.testing.assert_array_equal(back.x_pool, learner.x_pool)
  for name in ("labelled", "labels", "x_extra", "y_extra"):
    np.testing.assert_array_equal(getattr(restored, name), getattr(state, name))
  np.testing.assert_array_equal(jax.random.key_data(restored.key), jax.random.key_data(state.key))
  assert (restored.round, restored.y_mean, restored.y_std) == (state.round, state.y_mean, state.y_std)
  for part in ("params", "opt_state"):
    a, b = getattr(state, part), getattr(restored, part)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
      assert np.asarray(u).dtype == np.asarray(v).dtype
      np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
  _, again = back.ask(restored, 2)
  _, first = learner.ask(state, 2)
  np.testing.assert_array_equal(again.indices, first.indices)  # the same next batch


def test_a_missing_or_misshapen_model_leaf_is_named(tmp_path):
  like = {"w": jax.ShapeDtypeStruct((2, 3), np.float32), "b": (jax.ShapeDtypeStruct((3,), np.float32),)}
  saved = persistence.tree_to_state_dict({"w": np.zeros((2, 3), np.float32), "b": (np.ones(3, np.float32),)})
  back = persistence.tree_from_state_dict(like, saved, "parameters")
  assert back["b"][0].tolist() == [1.0, 1.0, 1.0]
  with pytest.raises(ValueError, match=r"saved parameters leaf \['w'\] is float64\[2, 3\], expected float32\[2, 3\]"):
    persistence.tree_from_state_dict(like, {**saved, "['w']": np.zeros((2, 3))}, "parameters")
  with pytest.raises(ValueError, match=r"do not fit the model.*missing \[\"\['b'\]\[0\]\"\]"):
    persistence.tree_from_state_dict(like, {"['w']": saved["['w']"]}, "parameters")


def _write_format3(folder, meta: dict, arrays: dict) -> None:
  """The layout curiojax 0.2 wrote (state format 3): state.json + arrays-<tag>.npz, signed."""
  import io

  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  data = buffer.getvalue()
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "arrays-000001.npz").write_bytes(data)
  meta = {**meta, "format_version": 3, "arrays": "arrays-000001.npz", "arrays_sha256": persistence._sha256(data)}
  meta["checksum"] = persistence._meta_checksum(meta)
  (folder / "state.json").write_text(json.dumps(meta, indent=1))


OLD_FORMAT = (
  r"state\.json: saved in state format 3 by curiojax 0\.2 or earlier; .* "
  r"Continue it with .*curiojax<0\.3.*start a new run"
)


def test_a_state_of_the_previous_format_is_refused_with_how_to_continue(tmp_path):
  """Format 3 (curiojax 0.2: an .npz beside state.json) is refused in one line that says what to do."""
  import curiojax

  learner, state = _fitted_learner()
  old = {"kind": "learner", "learner_format": 1, "options": learner.options.to_dict(), "strategy": "random"}
  _write_format3(tmp_path, old, {"x_pool": learner.x_pool, "labelled": state.labelled, "model": np.zeros(4, np.uint8)})
  for load in (persistence.load_state, curiojax.Learner.load):
    with pytest.raises(ValueError, match=OLD_FORMAT) as e:
      load(tmp_path)
    assert "\n" not in str(e.value)
  assert persistence.is_state_file("arrays-000001.npz")  # its data file still counts as the state's own


def test_resuming_a_run_of_the_previous_format_is_refused_in_one_line(tmp_path):
  import subprocess
  import sys

  _write_format3(
    tmp_path / "run", {"unit": 1, "records": [], "learners": [], "config": {}}, {"0/labelled": np.arange(3)}
  )
  proc = subprocess.run(
    [sys.executable, "-m", "curiojax", "run", "--resume", str(tmp_path / "run")],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 2 and proc.stdout == ""
  assert len(proc.stderr.strip().splitlines()) == 1
  assert re.search(OLD_FORMAT, proc.stderr), proc.stderr

"""Run state on disk: atomic replacement, no pickle, exact round trip of an experiment mid-run."""

import json
import os
from unittest import mock

import jax
import numpy as np
import pytest

from curiojax.active import persistence
from curiojax.active.loop import Experiment, LoopOptions


def test_save_load_and_old_arrays_removed(tmp_path):
  persistence.save_state(tmp_path, {"unit": 1}, {"a": np.arange(3, dtype=np.int32)}, tag=1)
  persistence.save_state(tmp_path, {"unit": 2}, {"a": np.arange(4.0)}, tag=2)
  meta, arrays = persistence.load_state(tmp_path)
  assert meta["unit"] == 2 and arrays["a"].tolist() == [0.0, 1.0, 2.0, 3.0]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays-000002.npz", "state.json"]


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
  # Object arrays would need pickle: refused on load (even in a state whose checksums match).
  _forge(tmp_path, {"a": np.array([{"x": 1}], dtype=object)})
  with pytest.raises(ValueError, match="unreadable"):
    persistence.load_state(tmp_path)


def _forge(folder, arrays, **meta):
  """A state written by hand with valid checksums (what a forger, or an old writer, leaves)."""
  import io

  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  data = buffer.getvalue()
  (folder / "arrays-000001.npz").write_bytes(data)
  meta = {"format_version": 3, "arrays": "arrays-000001.npz", "arrays_sha256": persistence._sha256(data), **meta}
  meta["checksum"] = persistence._meta_checksum(meta)
  (folder / "state.json").write_text(json.dumps(meta))


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
  meta["format_version"] = 3
  (tmp_path / "state.json").write_text(json.dumps(meta))
  with pytest.raises(ValueError, match="checksum mismatch"):
    persistence.load_state(tmp_path)


@pytest.mark.parametrize("name", ["../outside.npz", "/etc/passwd", "arrays-000001.npz/..", "notes.txt", 7])
def test_the_arrays_file_is_confined_to_the_state_folder(tmp_path, name):
  """A re-checksummed state naming a file elsewhere is refused before that file is read."""
  (tmp_path / "outside.npz").write_bytes(b"secret")
  folder = tmp_path / "st"
  folder.mkdir()
  _forge(folder, {"a": np.arange(3)})
  meta = json.loads((folder / "state.json").read_text())
  meta["arrays"] = name
  meta["checksum"] = persistence._meta_checksum(meta)
  (folder / "state.json").write_text(json.dumps(meta))
  with mock.patch("pathlib.Path.read_bytes", side_effect=AssertionError("read before the name was checked")):
    with pytest.raises(ValueError, match="is not a file of this state"):
      persistence.load_state(folder)


def test_an_arrays_file_that_is_a_link_is_refused(tmp_path):
  _forge(tmp_path, {"a": np.arange(3)})
  (tmp_path / "arrays-000001.npz").rename(tmp_path / "real.npz")
  (tmp_path / "arrays-000001.npz").symlink_to(tmp_path / "real.npz")
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
  arrays = tmp_path / "arrays-000003.npz"
  state = tmp_path / "state.json"
  if damage == "truncate":
    arrays.write_bytes(arrays.read_bytes()[:-40])
    match = "truncated or corrupted"
  elif damage == "flip_bit":  # a flipped bit inside the float data: np.load alone would not notice
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
  (tmp_path / ".arrays-000007.npz.x9.tmp").write_bytes(b"PK")
  (tmp_path / ".notes.tmp").write_text("the user's own file")  # not ours: kept
  persistence.save_state(tmp_path, {"unit": 1}, {"a": np.ones(2)}, tag=1)
  assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.tmp", "arrays-000001.npz", "state.json"]


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
    epochs=40,
    hidden_sizes=(16,),
    minibatch_size=16,
    num_splits=1,
    warm_start=True,
  )
  exp = Experiment(x, y, opts)
  state = exp.init_state()
  for _ in range(3):
    state, _ = exp.step(state)
  meta, arrays = persistence.experiment_to_saved(state)
  persistence.save_state(tmp_path, {**meta, "config": {}}, arrays, tag=state.unit)
  meta2, arrays2 = persistence.load_state(tmp_path)
  restored = persistence.experiment_from_saved(exp, meta2, arrays2)
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
  opts = LoopOptions(initial_size=20, batch_size=10, rounds=1, epochs=2, hidden_sizes=(4,), num_splits=1)
  exp = Experiment(x, x[:, 0], opts)
  state, _ = exp.step(exp.init_state())
  meta, arrays = persistence.experiment_to_saved(state)
  labelled = arrays["0/labelled"]
  if damage == "duplicate index":
    arrays["0/labelled"] = np.concatenate([labelled[:-1], labelled[:1]])
  elif damage == "negative index":
    arrays["0/labelled"] = np.concatenate([labelled[:-1], [-1]])
  elif damage == "labels misaligned":
    arrays["0/labels"] = arrays["0/labels"][:-1]
  elif damage == "unit past the end":
    meta["unit"] = len(exp.units) + 5
  else:
    meta["records"] = meta["records"] * 3
  persistence.save_state(tmp_path, {**meta, "config": {}}, arrays, tag=1)
  with pytest.raises(ValueError, match=match):
    persistence.experiment_from_saved(exp, *persistence.load_state(tmp_path))

"""Atomic, pickle-free save and load of an active-learning run's state.

A work directory holds ``state.json`` (config, progress, PRNG key data, results so far, and
the name of the array file) and ``arrays-<unit>.npz`` (labelled indices and labels, and each
learner's model parameters and optimizer state as ``flax.serialization`` msgpack of their
leaves; the tree structure is re-derived from the config on load). Every file is written to a temporary
name in the same directory and moved into place with ``os.replace`` (atomic on POSIX), the
array file first, so ``state.json`` always names a complete array file; older array files
are deleted only afterwards. Loading uses ``np.load(allow_pickle=False)``.

Example:
  >>> import tempfile, numpy as np
  >>> d = tempfile.mkdtemp()
  >>> save_state(d, {"unit": 1}, {"a": np.arange(3)}, tag=1)
  >>> meta, arrays = load_state(d); meta["unit"], arrays["a"].tolist()
  (1, [0, 1, 2])
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

STATE_FILE = "state.json"
FORMAT_VERSION = 2  # 2: model and optimizer pytrees as flax.serialization msgpack


_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic_write(path: str | os.PathLike, write) -> None:
  """Call ``write(file)`` on a temporary file in ``path``'s folder, fsync, then ``os.replace``."""
  path = Path(path)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; results follow the user's umask
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
  _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  atomic_write_bytes(path, text.encode())


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
  _atomic_write(path, lambda f: np.savez(f, **arrays))


def save_state(workdir, meta: dict, arrays: dict[str, np.ndarray], *, tag: int) -> None:
  """Atomically replace the run state: ``arrays-<tag>.npz`` then ``state.json``."""
  workdir = Path(workdir)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ValueError(f"cannot create the folder {workdir}: {e.strerror or e}.") from None
  name = f"arrays-{int(tag):06d}.npz"
  _write_npz(workdir / name, {k: np.asarray(v) for k, v in arrays.items()})
  meta = {**meta, "format_version": FORMAT_VERSION, "arrays": name}
  atomic_write_text(workdir / STATE_FILE, json.dumps(meta, indent=1))
  for old in workdir.glob("arrays-*.npz"):
    if old.name != name:
      old.unlink(missing_ok=True)


def load_state(workdir) -> tuple[dict, dict[str, np.ndarray]]:
  """``(meta, arrays)`` of a saved run; a clear ``ValueError`` if missing or unreadable."""
  workdir = Path(workdir)
  path = workdir / STATE_FILE
  if not path.is_file():
    raise ValueError(f"{workdir} has no {STATE_FILE}: not a curiojax run directory (or it never finished a round).")
  try:
    meta = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"{path} is unreadable: {e}") from None
  if meta.get("format_version") != FORMAT_VERSION:
    raise ValueError(
      f"{path}: saved in state format {meta.get('format_version')!r}, this curiojax reads format "
      f"{FORMAT_VERSION}; start a new run (or use the curiojax that wrote it)."
    )
  try:
    with np.load(workdir / meta["arrays"], allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except (OSError, KeyError, ValueError) as e:
    raise ValueError(f"{workdir}: the array file of the saved state is unreadable: {e}") from None
  return meta, arrays


# -- experiment state <-> (meta, arrays) ---------------------------------------------------
def experiment_to_saved(state) -> tuple[dict, dict[str, np.ndarray]]:
  """Flatten an :class:`curiojax.active.loop.ExperimentState` into JSON-able meta and arrays."""
  from curiojax.active.learner import state_to_saved

  learners, arrays = [], {}
  for i, ((name, split), ls) in enumerate(state.learners.items()):
    meta, more = state_to_saved(ls, prefix=f"{i}/")
    learners.append({"strategy": name, "split": split, **meta})
    arrays.update(more)
  return {"unit": state.unit, "records": state.records, "learners": learners}, arrays


def experiment_from_saved(experiment, meta: dict, arrays: dict[str, np.ndarray]):
  """Rebuild the :class:`curiojax.active.loop.ExperimentState` saved by :func:`experiment_to_saved`.

  Parameter and optimizer-state tree structures come from ``experiment`` (its model and
  trainer, built from the saved config).
  """
  from curiojax.active.learner import state_from_saved
  from curiojax.active.loop import ExperimentState

  learners = {}
  for i, d in enumerate(meta["learners"]):
    key = d["strategy"], int(d["split"])
    if key not in experiment.learners:
      raise ValueError(f"the saved learner {key} is not in the saved config's strategies and splits.")
    learners[key] = state_from_saved(experiment.learners[key].learner, d, arrays, prefix=f"{i}/")
  if set(learners) != set(experiment.learners):
    raise ValueError("the saved learners do not match the saved config's strategies and splits.")
  return ExperimentState(learners, list(meta["records"]), int(meta["unit"]))

"""Atomic, pickle-free save and load of an active-learning run's state.

A work directory holds ``state.json`` (config, progress, PRNG key data, results so far, and
the name of the array file) and ``arrays-<unit>.npz`` (labelled indices and labels, and each
learner's model parameters and optimizer state as ``flax.serialization`` msgpack of their
leaves; the tree structure is re-derived from the config on load). Every file is written to a temporary
name in the same directory and moved into place with ``os.replace`` (atomic on POSIX), the
array file first, so ``state.json`` always names a complete array file; older array files
are deleted only afterwards. Loading uses ``np.load(allow_pickle=False)``. ``state.json``
carries the SHA-256 of the array file and of its own content, so a truncated, bit-flipped or
hand-edited state is refused with a ``ValueError`` instead of resuming from wrong numbers.
:func:`workdir_lock` gives a work directory one owner at a time.

Example:
  >>> import tempfile, numpy as np
  >>> d = tempfile.mkdtemp()
  >>> save_state(d, {"unit": 1}, {"a": np.arange(3)}, tag=1)
  >>> meta, arrays = load_state(d); meta["unit"], arrays["a"].tolist()
  (1, [0, 1, 2])
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import stat
import tempfile
import zipfile
from pathlib import Path

import numpy as np

STATE_FILE = "state.json"
FORMAT_VERSION = 3  # 2: pytrees as flax.serialization msgpack; 3: + checksums (2, unchecked, is refused)
_READABLE = (3,)
LOCK_FILE = ".lock"
_ARRAYS_NAME = re.compile(r"arrays-[0-9]{6,20}\.npz")  # the only array file a state may name (in its own folder)


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


def is_state_file(name: str) -> bool:
  """Whether a file name in a work directory is one the state writes (or a writer left)."""
  return (
    name in (STATE_FILE, LOCK_FILE)
    or bool(_ARRAYS_NAME.fullmatch(name))
    or (name.startswith((f".{STATE_FILE}.", ".arrays-")) and name.endswith(".tmp"))
  )


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _meta_checksum(meta: dict) -> str:
  return _sha256(json.dumps({k: v for k, v in meta.items() if k != "checksum"}, sort_keys=True).encode())


def save_state(workdir, meta: dict, arrays: dict[str, np.ndarray], *, tag: int) -> None:
  """Atomically replace the run state: ``arrays-<tag>.npz`` then ``state.json``."""
  workdir = Path(workdir)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ValueError(f"cannot create the folder {workdir}: {e.strerror or e}.") from None
  name = f"arrays-{int(tag):06d}.npz"
  buffer = io.BytesIO()
  np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
  data = buffer.getvalue()
  atomic_write_bytes(workdir / name, data)
  meta = {**meta, "format_version": FORMAT_VERSION, "arrays": name, "arrays_sha256": _sha256(data)}
  meta["checksum"] = _meta_checksum(meta)
  atomic_write_text(workdir / STATE_FILE, json.dumps(meta, indent=1))
  for old in workdir.glob("arrays-*.npz"):
    if old.name != name and _ARRAYS_NAME.fullmatch(old.name):  # ours only: never a user's arrays-final.npz
      old.unlink(missing_ok=True)
  for pattern in (f".{STATE_FILE}.*.tmp", ".arrays-*.npz.*.tmp"):  # ours, left by a killed writer
    for stale in workdir.glob(pattern):
      stale.unlink(missing_ok=True)


def load_state(workdir) -> tuple[dict, dict[str, np.ndarray]]:
  """``(meta, arrays)`` of a saved run; a clear ``ValueError`` if missing, unreadable or altered."""
  workdir = Path(workdir)
  path = workdir / STATE_FILE
  if not path.is_file():
    raise ValueError(f"{workdir} has no {STATE_FILE}: not a curiojax run directory (or it never finished a round).")
  try:
    meta = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path} is unreadable: {e}") from None
  if not isinstance(meta, dict) or meta.get("format_version") not in _READABLE:
    version = meta.get("format_version") if isinstance(meta, dict) else None
    raise ValueError(
      f"{path}: saved in state format {version!r}, this curiojax reads formats {_READABLE}; "
      "start a new run (or use the curiojax that wrote it). Format 2 carries no checksums and is no longer read."
    )
  if meta.get("checksum") != _meta_checksum(meta):
    raise ValueError(
      f"{path} was modified or corrupted after it was written (checksum mismatch); restore it from a "
      "backup or start a new run. Hand-editing a state file is not supported."
    )
  name = meta.get("arrays")
  if not isinstance(name, str) or not _ARRAYS_NAME.fullmatch(name):
    raise ValueError(f"{path}: the array file {name!r} is not a file of this state (arrays-NNNNNN.npz in {workdir}).")
  array_path = workdir / name
  try:
    if not stat.S_ISREG(os.lstat(array_path).st_mode):
      raise ValueError(f"{array_path} is not a regular file (a link or a folder); restore the state from a backup.")
    data = array_path.read_bytes()
  except OSError as e:
    raise ValueError(f"{workdir}: the array file of the saved state is missing: {e}") from None
  if _sha256(data) != meta.get("arrays_sha256"):
    raise ValueError(
      f"{array_path} is truncated or corrupted (checksum mismatch); restore it from a backup or start a new run."
    )
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
    raise ValueError(f"{workdir}: the array file of the saved state is unreadable: {e}") from None
  return meta, arrays


@contextlib.contextmanager
def workdir_lock(workdir):
  """Hold ``workdir`` for this process: a second process gets a ``ValueError`` at once.

  An advisory ``flock`` on ``workdir/.lock``, released when the process exits, however it
  exits (a killed run leaves nothing to clean up). A no-op where ``fcntl`` does not exist.
  """
  workdir = Path(workdir)
  try:
    import fcntl
  except ImportError:  # pragma: no cover - not POSIX
    yield
    return
  lock = workdir / LOCK_FILE
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666 & ~_UMASK)
  except OSError as e:
    if os.path.islink(lock):
      raise ValueError(
        f"{lock} is a link; curiojax never follows it (it would write into the file it points to). "
        "Remove the link and run again."
      ) from None
    raise ValueError(f"cannot use the folder {workdir}: {e.strerror or e}.") from None
  info = os.fstat(fd)
  if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:  # a FIFO, a device, a hard link: not ours to write
    os.close(fd)
    raise ValueError(
      f"{lock} is not a plain file of this folder (a hard link or a special file); remove it and run again."
    )
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
      raise ValueError(
        f"{workdir} is in use by another curiojax process (pid {holder}); wait for it to finish or "
        "choose another folder."
      ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    yield
  finally:
    os.close(fd)


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
  unit, records = meta["unit"], list(meta["records"])
  if isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit <= len(experiment.units):
    raise ValueError(f"the saved progress unit {unit!r} is outside the run's 0..{len(experiment.units)} units.")
  if len(records) > unit:
    raise ValueError(f"the saved state has {len(records)} result rows for {unit} completed units.")
  return ExperimentState(learners, records, unit)

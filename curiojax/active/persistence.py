"""Atomic, pickle-free save and load of a run's state: a JSON manifest and a ``flax.serialization`` msgpack file.

A state folder holds ``state.json`` (settings, progress, PRNG key data, results so far, the
name of the data file and checksums) and ``arrays-<tag>.msgpack``: one state dict (nested
dicts of arrays, as :func:`flax.serialization.msgpack_serialize` writes them; pytrees such as
model parameters go in as :func:`tree_to_state_dict`, keyed by their paths). Every file is written to a
temporary name in the same folder, fsynced and moved into place with ``os.replace`` (atomic on
POSIX), the data file first, so ``state.json`` always names a complete data file and a crash
leaves the previous save or the new one; older data files are deleted only afterwards.
``state.json`` carries the SHA-256 of the data file and of its own content, so a truncated,
bit-flipped or hand-edited state is refused with a one-line ``ValueError`` naming the file.
Loading never unpickles. :func:`workdir_lock` gives a folder one owner at a time.

This module knows nothing of learners or experiments: :meth:`curiojax.active.learner.Learner.save`
and :func:`curiojax.active.loop.experiment_to_saved` say what goes in.

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
import json
import os
import re
import stat
import tempfile
from pathlib import Path

import jax
import numpy as np
from flax import serialization

STATE_FILE = "state.json"
# 3: state.json + arrays-<tag>.npz (curiojax 0.2); 4: the data file is one flax msgpack state dict.
FORMAT_VERSION = 4
LOCK_FILE = ".lock"
_DATA_NAME = re.compile(r"arrays-[0-9]{6,20}\.msgpack")  # the only data file a state may name (in its own folder)
_OLD_DATA_NAME = re.compile(r"arrays-[0-9]{6,20}\.npz")  # format 3's


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
    or bool(_DATA_NAME.fullmatch(name) or _OLD_DATA_NAME.fullmatch(name))
    or (name.startswith((f".{STATE_FILE}.", ".arrays-")) and name.endswith(".tmp"))
  )


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _meta_checksum(meta: dict) -> str:
  return _sha256(json.dumps({k: v for k, v in meta.items() if k != "checksum"}, sort_keys=True).encode())


def tree_to_state_dict(tree) -> dict[str, np.ndarray]:
  """A pytree as a flat state dict ``{key path: array}`` (``jax.tree_util.keystr`` paths).

  Keyed by name, not position, so it needs no serialization registration of the tree's node
  types (``nnx.State``, optax states) and a restore can say which leaf is wrong.

  Example:
    >>> tree_to_state_dict({"w": np.zeros(2), "b": (np.ones(1),)})
    {"['b'][0]": array([1.]), "['w']": array([0., 0.])}
  """
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def tree_from_state_dict(like, saved, what: str):
  """The pytree of ``like``'s structure, shapes and dtypes holding the leaves of ``saved``.

  ``saved`` is what :func:`tree_to_state_dict` wrote; a missing, extra or misshapen leaf is a
  ``ValueError`` naming ``what`` and the leaf. ``like`` may hold ``jax.ShapeDtypeStruct``s.
  """
  paths, treedef = jax.tree_util.tree_flatten_with_path(like)
  names = [jax.tree_util.keystr(path) for path, _ in paths]
  if not isinstance(saved, dict):
    raise ValueError(f"saved {what} are a {type(saved).__name__}, not a state dict of leaves.")
  if set(saved) != set(names):
    missing, extra = sorted(set(names) - set(saved))[:3], sorted(set(saved) - set(names))[:3]
    raise ValueError(f"saved {what} do not fit the model of the saved settings (missing {missing}, unknown {extra}).")
  leaves = []
  for name, (_, ref) in zip(names, paths, strict=True):
    a = np.asarray(saved[name])
    if a.shape != ref.shape or a.dtype != ref.dtype:
      raise ValueError(f"saved {what} leaf {name} is {a.dtype}{list(a.shape)}, expected {ref.dtype}{list(ref.shape)}.")
    leaves.append(a)
  return jax.tree.unflatten(treedef, leaves)


def save_state(workdir, meta: dict, arrays: dict, *, tag: int) -> None:
  """Atomically replace the run state: ``arrays-<tag>.msgpack`` then ``state.json``.

  ``meta`` is JSON-able; ``arrays`` a state dict (nested dicts with string keys, arrays at the
  leaves) that :func:`flax.serialization.msgpack_serialize` writes.
  """
  workdir = Path(workdir)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ValueError(f"cannot create the folder {workdir}: {e.strerror or e}.") from None
  name = f"arrays-{int(tag):06d}.msgpack"
  data = serialization.msgpack_serialize(jax.tree.map(np.asarray, arrays))
  atomic_write_bytes(workdir / name, data)
  meta = {**meta, "format_version": FORMAT_VERSION, "arrays": name, "arrays_sha256": _sha256(data)}
  meta["checksum"] = _meta_checksum(meta)
  atomic_write_text(workdir / STATE_FILE, json.dumps(meta, indent=1))
  for old in workdir.glob("arrays-*"):
    if old.name != name and _DATA_NAME.fullmatch(old.name):  # ours only: never a user's arrays-final.npz
      old.unlink(missing_ok=True)
  for pattern in (f".{STATE_FILE}.*.tmp", ".arrays-*.msgpack.*.tmp"):  # ours, left by a killed writer
    for stale in workdir.glob(pattern):
      stale.unlink(missing_ok=True)


def _read_manifest(workdir: Path) -> dict:
  """``state.json``, its version and its own checksum checked."""
  path = workdir / STATE_FILE
  if not path.is_file():
    raise ValueError(f"{workdir} has no {STATE_FILE}: not a curiojax run directory (or it never finished a round).")
  try:
    meta = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path} is unreadable: {e}") from None
  version = meta.get("format_version") if isinstance(meta, dict) else None
  if version in (2, 3):
    raise ValueError(
      f"{path}: saved in state format {version} by curiojax 0.2 or earlier; this curiojax reads format "
      f"{FORMAT_VERSION}. Continue it with the curiojax that wrote it (pip install 'curiojax<0.3'), or start a "
      "new run in another folder (your labelled CSV keeps the labels)."
      + (" Format 2 carries no checksums and is no longer read." if version == 2 else "")
    )
  if version != FORMAT_VERSION:
    raise ValueError(
      f"{path}: saved in state format {version!r}, this curiojax reads format {FORMAT_VERSION}; "
      "start a new run (or use the curiojax that wrote it)."
    )
  if meta.get("checksum") != _meta_checksum(meta):
    raise ValueError(
      f"{path} was modified or corrupted after it was written (checksum mismatch); restore it from a "
      "backup or start a new run. Hand-editing a state file is not supported."
    )
  return meta


def load_state(workdir) -> tuple[dict, dict]:
  """``(meta, arrays)`` of a saved run; a clear ``ValueError`` if missing, unreadable or altered."""
  workdir = Path(workdir)
  meta = _read_manifest(workdir)
  name = meta.get("arrays")
  if not isinstance(name, str) or not _DATA_NAME.fullmatch(name):
    raise ValueError(
      f"{workdir / STATE_FILE}: the data file {name!r} is not a file of this state "
      f"(arrays-NNNNNN.msgpack in {workdir})."
    )
  data_path = workdir / name
  try:
    if not stat.S_ISREG(os.lstat(data_path).st_mode):
      raise ValueError(f"{data_path} is not a regular file (a link or a folder); restore the state from a backup.")
    data = data_path.read_bytes()
  except OSError as e:
    raise ValueError(f"{workdir}: the data file of the saved state is missing: {e}") from None
  if _sha256(data) != meta.get("arrays_sha256"):
    raise ValueError(
      f"{data_path} is truncated or corrupted (checksum mismatch); restore it from a backup or start a new run."
    )
  try:
    arrays = serialization.msgpack_restore(data)
  except Exception as e:  # noqa: BLE001 - msgpack raises many types on forged bytes; none may escape raw
    raise ValueError(f"{data_path} is unreadable: {type(e).__name__}: {e}") from None
  if not isinstance(arrays, dict):
    raise ValueError(f"{data_path} is unreadable: it holds a {type(arrays).__name__}, not a state dict.")
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

"""Atomic, pickle-free save and load of an active-learning run's state.

A work directory holds ``state.json`` (config, progress, labelled indices and labels,
PRNG key data, results so far, and the name of the array file) and ``arrays-<unit>.npz``
(model parameters and optimizer state per learner, as flat leaf lists; the tree
structure is re-derived from the config on load). Every file is written to a temporary
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

import jax
import numpy as np

STATE_FILE = "state.json"
FORMAT_VERSION = 1


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
    raise ValueError(f"{path}: unsupported state format {meta.get('format_version')!r}.")
  try:
    with np.load(workdir / meta["arrays"], allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except (OSError, KeyError, ValueError) as e:
    raise ValueError(f"{workdir}: the array file of the saved state is unreadable: {e}") from None
  return meta, arrays


# -- experiment state <-> (meta, arrays) ---------------------------------------------------
def experiment_to_saved(state) -> tuple[dict, dict[str, np.ndarray]]:
  """Flatten an :class:`curiojax.loop.ExperimentState` into JSON-able meta and arrays."""
  learners, arrays = [], {}
  for i, ((name, split), ls) in enumerate(state.learners.items()):
    learners.append(
      {
        "strategy": name,
        "split": split,
        "round": ls.round,
        "labelled": [int(v) for v in ls.labelled],
        "labels": [float(v) for v in ls.labels],
        "key_data": np.asarray(jax.random.key_data(ls.key)).tolist(),
        "top_score0": ls.top_score0,
        "stopped": ls.stopped,
        "has_model": ls.params is not None,
      }
    )
    if ls.params is not None:
      for j, leaf in enumerate(jax.tree.leaves(ls.params)):
        arrays[f"{i}/params/{j}"] = np.asarray(leaf)
      for j, leaf in enumerate(jax.tree.leaves(ls.opt_state)):
        arrays[f"{i}/opt_state/{j}"] = np.asarray(leaf)
  return {"unit": state.unit, "records": state.records, "learners": learners}, arrays


def experiment_from_saved(experiment, meta: dict, arrays: dict[str, np.ndarray]):
  """Rebuild the :class:`curiojax.loop.ExperimentState` saved by :func:`experiment_to_saved`.

  Parameter and optimizer-state tree structures come from ``experiment`` (its model and
  trainer, built from the saved config).
  """
  from curiojax.loop import ExperimentState, LearnerState

  params_like = jax.eval_shape(experiment.model.init, jax.random.key(0))
  opt_like = jax.eval_shape(lambda p: experiment.trainer.init(p, 0.0), params_like)
  p_def, o_def = jax.tree.structure(params_like), jax.tree.structure(opt_like)
  p_like, o_like = jax.tree.leaves(params_like), jax.tree.leaves(opt_like)

  def rebuild(i, kind, treedef, like):
    leaves = []
    for j, ref in enumerate(like):
      a = arrays.get(f"{i}/{kind}/{j}")
      if a is None or a.shape != ref.shape or a.dtype != ref.dtype:
        raise ValueError(f"saved {kind} do not match the model of the saved config (leaf {j}).")
      leaves.append(a)
    if f"{i}/{kind}/{len(like)}" in arrays:
      raise ValueError(f"saved {kind} have more leaves than the model of the saved config.")
    return jax.tree.unflatten(treedef, leaves)

  learners = {}
  for i, d in enumerate(meta["learners"]):
    params = opt_state = None
    if d["has_model"]:
      params = rebuild(i, "params", p_def, p_like)
      opt_state = rebuild(i, "opt_state", o_def, o_like)
    key = jax.random.wrap_key_data(np.asarray(d["key_data"], np.uint32))
    learners[d["strategy"], int(d["split"])] = LearnerState(
      labelled=np.asarray(d["labelled"], np.int64),
      labels=np.asarray(d["labels"], np.float32),
      round=int(d["round"]),
      key=key,
      params=params,
      opt_state=opt_state,
      top_score0=d["top_score0"],
      stopped=bool(d["stopped"]),
    )
  if set(learners) != set(experiment.learners):
    raise ValueError("the saved learners do not match the saved config's strategies and splits.")
  return ExperimentState(learners, list(meta["records"]), int(meta["unit"]))

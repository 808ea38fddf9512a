"""Which rows to label next, from two CSV files, across labelling sessions (``curiojax suggest``).

A practitioner has a labelled CSV (features and a target column) and a pool CSV of
candidates (the same feature columns; a target column, if any, is ignored). :func:`suggest`
reads both, fits the model (with its certified tangent when the strategy reads one), and
writes the ``k`` pool rows to label next (their ids, rank, score and features) to a CSV file;
it keeps everything in a state folder. After the labels come back (days later), add the
labelled rows to the labelled file and call it again: it reads the new labels from the file,
tells the learner, and suggests the next batch. Rows are identified by ``id_column``
(recommended), or else by their 1-based row number in the pool file, a labelled row matching
a pool row when their features are equal. Labelled rows that are not in the pool are used too.

Everything is checked before anything is written; a mistake raises ``ValueError`` naming
the file, the row and the column. The state is written atomically (see
:meth:`curiojax.active.learner.Learner.save`) and labels once told are never dropped: a later
labelled file must agree with them.

Example:
  >>> import os, tempfile, numpy as np
  >>> d = tempfile.mkdtemp(); rng = np.random.default_rng(0)
  >>> x = rng.normal(size=(60, 2))
  >>> with open(os.path.join(d, "lab.csv"), "w") as f:
  ...   _ = f.write("id,a,b,y\\n" + "".join(f"L{i},{a},{b},{np.sin(a)}\\n" for i, (a, b) in enumerate(x[:10])))
  >>> with open(os.path.join(d, "pool.csv"), "w") as f:
  ...   _ = f.write("id,a,b\\n" + "".join(f"P{i},{a},{b}\\n" for i, (a, b) in enumerate(x[10:])))
  >>> out = suggest(os.path.join(d, "lab.csv"), os.path.join(d, "pool.csv"), target="y", k=3, id_column="id",
  ...               state=os.path.join(d, "state"), options=LearnerOptions(epochs=10, hidden_sizes=(8,)))
  >>> len(out.ids), all(i.startswith("P") for i in out.ids), os.path.basename(out.path)
  (3, True, 'suggestions.csv')
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
from pathlib import Path

import jax
import numpy as np

from curiojax.active import persistence
from curiojax.active.data import Table, read_table
from curiojax.active.learner import Learner, LearnerOptions
from curiojax.strategies import DEFAULT_STRATEGY, check_strategy_name

STATE_KIND = "suggest"


@dataclasses.dataclass(frozen=True)
class Suggested:
  """What :func:`suggest` wrote.

  Attributes:
    ids: the pool rows to label next, best first (the id column's values or pool row numbers).
    scores: the strategy's score of each (NaN where it has none).
    x: their features (original units), columns ``feature_names``.
    criterion: what the scores measure.
    path: the CSV file written (``rank``, the id column (or ``pool_row``), ``score``, features…).
    state: the state folder.
    labelled: labelled rows the model was fitted on.
    new_labels: labels read from the labelled file this session (0 on the first run).
    tangent_residual: the fit's certified tangent residual (NaN when the strategy reads no tangent).
    tangent_accurate: whether it meets the documented tolerance (else the scores are approximate).
  """

  ids: tuple[str, ...]
  scores: np.ndarray
  x: np.ndarray
  feature_names: tuple[str, ...]
  criterion: str
  path: str
  state: str
  labelled: int
  new_labels: int
  tangent_residual: float
  tangent_accurate: bool


def _read_inputs(labelled, pool, target, id_column) -> tuple[Table, Table]:
  lab = read_table(labelled, target=target, id_column=id_column)
  pool_table = read_table(pool, target=target, id_column=id_column, blank_target="ignore")
  if lab.feature_names != pool_table.feature_names:
    only_lab = [n for n in lab.feature_names if n not in pool_table.feature_names]
    only_pool = [n for n in pool_table.feature_names if n not in lab.feature_names]
    detail = f"only in {lab.source}: {only_lab}; only in {pool_table.source}: {only_pool}"
    if not only_lab and not only_pool:
      detail = "the same columns in another order"
    raise ValueError(
      f"the pool's feature columns differ from the labelled file's ({detail}); they must match, "
      f"in the same order: {list(lab.feature_names)}."
    )
  return lab, pool_table


def _match_rows(lab: Table, pool_ids, pool_x, by_id: bool) -> list[int | None]:
  """For each labelled row, its pool index (by id, or by equal features), or None (outside the pool)."""
  if by_id:
    where = {pid: i for i, pid in enumerate(pool_ids)}
    out = []
    for rid, row in zip(lab.ids, lab.x, strict=True):
      i = where.get(rid)
      if i is not None and not np.array_equal(np.float32(row), np.float32(pool_x[i])):
        raise ValueError(f"{lab.source}: row with id {rid!r} has other feature values than pool row {rid!r}.")
      out.append(i)
    return out
  where = {}
  for i, row in enumerate(np.float32(pool_x)):
    where.setdefault(row.tobytes(), i)
  return [where.get(row.tobytes()) for row in np.float32(lab.x)]


def suggest(
  labelled,
  pool,
  *,
  target: str,
  k: int,
  id_column: str | None = None,
  state=None,
  strategy: str | None = None,
  out=None,
  options: LearnerOptions | None = None,
  seed: int = 0,
) -> Suggested:
  """Suggest the next ``k`` pool rows to label, and keep the state for the next session.

  Args:
    labelled: CSV file of labelled rows (features, ``target``, and ``id_column`` if given).
    pool: CSV file of candidate rows (the same feature columns).
    target: the label column of the labelled file.
    k: how many rows to suggest.
    id_column: a column of unique row ids in both files (default: pool row numbers, and
      labelled rows matched to pool rows by equal features).
    state: the state folder (default ``curiojax_suggest`` next to the pool file); created on
      the first call, continued on the next ones.
    strategy: a registered strategy (default the best measured, ``"lcmd"``); a
      continued state keeps its own.
    out: the CSV file to write (default ``suggestions.csv`` in the state folder).
    options: model and training settings for a new state (a continued state keeps its own).
    seed: seed of a new state.
  """
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"k must be a positive integer, got {k!r}.")
  if not target:
    raise ValueError("name the target column of the labelled file.")
  if strategy is not None:
    check_strategy_name(strategy)
  state_dir = Path(state) if state is not None else Path(pool).resolve().parent / "curiojax_suggest"
  out = Path(out) if out is not None else state_dir / "suggestions.csv"
  lab, pool_table = _read_inputs(labelled, pool, target, id_column)
  with contextlib.ExitStack() as owner:  # one process per state folder (created only on success)
    locked = state_dir.is_dir()
    if locked:
      owner.enter_context(persistence.workdir_lock(state_dir))
    saved = (state_dir / "state.json").exists()
    if saved:
      learner, st, extra = _continue(state_dir, lab, pool_table, target, id_column, strategy, options)
      learner, st, new = _tell_new(learner, st, extra, lab)
    else:
      learner, st, extra = _start(lab, pool_table, target, id_column, strategy, options, seed)
      new = 0
    unlabelled = len(learner.x_pool) - len(st.labelled)
    if k > unlabelled:
      raise ValueError(f"asked for {k} rows, but only {unlabelled} pool rows are unlabelled.")
    if out.exists() and out.is_dir():
      raise ValueError(f"--out {out} is a directory; give a file name.")
    st, batch = learner.ask(st, k)
    pool_ids = extra["pool_ids"]
    ids = tuple(pool_ids[i] for i in batch.indices)
    x = learner.x_pool[batch.indices]
    if not locked:
      owner.enter_context(persistence.workdir_lock(state_dir))
      if (state_dir / "state.json").exists():
        raise ValueError(f"{state_dir} was just started by another process; run again to continue it.")
    learner.save(state_dir, st, extra=extra)
    _write_suggestions(out, ids, batch.scores, x, extra["feature_names"], id_column or "pool_row")
  return Suggested(
    ids=ids,
    scores=batch.scores,
    x=x,
    feature_names=tuple(extra["feature_names"]),
    criterion=batch.criterion,
    path=str(out),
    state=str(state_dir),
    labelled=int(len(st.labelled) + len(st.x_extra)),
    new_labels=new,
    tangent_residual=batch.tangent_residual,
    tangent_accurate=batch.fit.tangent_accurate,
  )


def _start(lab, pool_table, target, id_column, strategy, options, seed):
  match = _match_rows(lab, pool_table.ids, pool_table.x, by_id=id_column is not None)
  inside = [j for j, i in enumerate(match) if i is not None]
  outside = [j for j, i in enumerate(match) if i is None]
  idx = np.asarray([match[j] for j in inside], np.int64)
  if len(np.unique(idx)) != len(idx):
    raise ValueError(f"{lab.source}: two labelled rows have the same features as one pool row; give an id column.")
  learner = Learner(pool_table.x, options=options, strategy=strategy or DEFAULT_STRATEGY)
  st = learner.init(
    jax.random.key(seed),
    x_labelled=lab.x[outside] if outside else None,
    y_labelled=lab.y[outside] if outside else None,
    labelled=idx,
    labels=lab.y[inside],
  )
  extra = {
    "kind": STATE_KIND,
    "target": target,
    "id_column": id_column,
    "feature_names": list(lab.feature_names),
    "pool_ids": list(pool_table.ids),
    "outside_ids": [lab.ids[j] for j in outside],
  }
  return learner, st, extra


def _continue(state_dir, lab, pool_table, target, id_column, strategy, options):
  learner, st = Learner.load(state_dir)
  extra = getattr(learner, "extra", {})
  if extra.get("kind") != STATE_KIND:
    raise ValueError(f"{state_dir} holds no curiojax suggest state; choose another --state.")
  for what, now, then in (
    ("target column", target, extra["target"]),
    ("id column", id_column, extra["id_column"]),
    ("feature columns", list(lab.feature_names), extra["feature_names"]),
  ):
    if now != then:
      raise ValueError(f"{state_dir} was started with {what} {then!r}, not {now!r}; use a new --state to start over.")
  if strategy is not None and strategy != learner.strategy_name:
    raise ValueError(
      f"{state_dir} was started with strategy {learner.strategy_name!r}; use a new --state to change strategy."
    )
  if options is not None and options != learner.options:
    raise ValueError(f"{state_dir} was started with other model options; use a new --state to change them.")
  known = {pid: i for i, pid in enumerate(extra["pool_ids"])}
  unknown = [pid for pid in pool_table.ids if pid not in known]
  if unknown:
    raise ValueError(
      f"{pool_table.source} has {len(unknown)} row(s) the saved pool does not (e.g. {unknown[0]!r}); the pool "
      "of a state is fixed: use a new --state for a new pool."
    )
  for pid, row in zip(pool_table.ids, pool_table.x, strict=True):
    if not np.array_equal(np.float32(row), learner.x_pool[known[pid]]):
      raise ValueError(f"{pool_table.source}: pool row {pid!r} changed since the saved state; use a new --state.")
  return learner, st, extra


def _tell_new(learner, st, extra, lab):
  """Tell the learner the labelled file's rows it does not know yet; known ones must agree."""
  by_id = extra["id_column"] is not None
  match = _match_rows(lab, extra["pool_ids"], learner.x_pool, by_id=by_id)
  known_labels = dict(zip(st.labelled.tolist(), st.labels.tolist(), strict=True))
  outside = {}
  if by_id:
    outside = dict(zip(extra["outside_ids"], zip(st.x_extra.tolist(), st.y_extra.tolist(), strict=True), strict=True))
  new_idx, new_y, new_x_out, new_y_out, new_out_ids = [], [], [], [], []
  for j, i in enumerate(match):
    rid, y = lab.ids[j], np.float32(lab.y[j])
    if i is not None:
      if i in known_labels:
        if known_labels[i] != y:
          raise _changed_label(lab.source, rid, lab.y[j], known_labels[i])
      elif i not in new_idx:
        new_idx.append(i)
        new_y.append(y)
      continue
    if by_id and rid in outside:
      if np.float32(outside[rid][1]) != y:
        raise _changed_label(lab.source, rid, lab.y[j], outside[rid][1])
      continue
    if not by_id and _is_saved_outside(st, lab.x[j], y):
      continue
    new_x_out.append(lab.x[j])
    new_y_out.append(y)
    new_out_ids.append(rid)
  if not new_idx and not new_x_out:
    return learner, st, 0
  st = learner.tell(
    st,
    np.asarray(new_idx, np.int64),
    np.asarray(new_y, np.float32),
    x_outside=np.asarray(new_x_out, np.float32) if new_x_out else None,
    y_outside=np.asarray(new_y_out, np.float32) if new_x_out else None,
  )
  extra["outside_ids"] = list(extra["outside_ids"]) + new_out_ids
  return learner, st, len(new_idx) + len(new_x_out)


def _changed_label(source, rid, now, then) -> ValueError:
  return ValueError(
    f"{source}: row {rid!r} has label {float(now)!r}, the saved state has {float(then)!r} for it; told labels are "
    "kept: restore it (or use a new --state)."
  )


def _is_saved_outside(st, x, y) -> bool:
  same = np.all(st.x_extra == np.float32(x), axis=1) & (st.y_extra == np.float32(y))
  return bool(np.any(same))


def _write_suggestions(path: Path, ids, scores, x, feature_names, id_header: str) -> None:
  from curiojax.active.persistence import atomic_write_text

  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(["rank", id_header, "score", *feature_names])
  for rank, (rid, score, row) in enumerate(zip(ids, scores, x, strict=True), 1):
    writer.writerow([rank, rid, "" if np.isnan(score) else f"{float(score):.6g}", *(f"{float(v):.9g}" for v in row)])
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buf.getvalue())
  except OSError as e:
    raise ValueError(f"cannot write {path}: {e.strerror or e}.") from None

"""Which rows to label next, from two CSV files (or DataFrames), across labelling sessions (``curiojax suggest``).

A practitioner has a labelled CSV (features and a target column) and a pool CSV of
candidates (the same feature columns; a target column, if any, is ignored), or two pandas
DataFrames. :func:`suggest` reads both, fits the model (with its certified tangent when the
strategy reads one), and writes the ``k`` pool rows to label next (their rank, ids, score,
the model's prediction and its standard deviation, and the features as the pool writes them)
to a CSV file, appends them to ``history.csv`` (every batch so far); it keeps everything in a
state folder. After the labels come back (days later), add the
labelled rows to the labelled file and call it again: it reads the new labels from the file,
tells the learner, and suggests the next batch. Rows are identified by ``id_column``
(recommended), or else by their 1-based row number in the pool file, a labelled row matching
a pool row when their features are equal. Between DataFrames the ids are by default their index
values (as text), unless both frames have pandas' plain ``0..n-1`` index (two frames read from
two files), which are treated like CSV files without ids. Labelled rows that are not in the pool
are used too.

What :func:`suggest` writes (only after the batch is chosen; a refused call writes nothing):

- ``out`` (default ``suggestions.csv`` in the state folder), one row per suggestion:
  ``rank`` (the order in which the strategy chose the rows, 1 = first; not a sort by score),
  the id (the id column's name, the index's name (``id`` if unnamed) or ``pool_row``),
  ``score`` (the strategy's score, meaning :attr:`Suggested.score_meaning`; blank where it has
  none), ``predicted_<target>`` and ``std_<target>`` (the model's prediction and the
  predictive standard deviation of a measurement, in the target's units), ``low95_<target>``
  and ``high95_<target>`` (the central 95% interval of a measurement), then the features
  as the pool writes them (a CSV cell's own text; text a spreadsheet would run as a formula
  gets a leading ``'``). Replaced every session.
- ``history.csv`` in the state folder: every batch so far, one row per suggested row, with
  columns ``round`` (1 for the first batch, +1 with each session that brings new labels),
  ``rank``, ``id``, ``score``, ``prediction``, ``std`` (as in ``out``), ``strategy`` and
  ``time`` (ISO-8601, UTC). Rows are appended and never overwritten; asking again without new
  labels is the same round, and its rows are kept once (replaced only if the batch differs,
  e.g. another ``k``). Written atomically (a temporary file then a rename).
- the state (see :meth:`curiojax.active.learner.Learner.save`).

Everything is checked before anything is written; a mistake raises ``ValueError`` naming
the file, the row and the column. The state is written atomically (see
:meth:`curiojax.active.learner.Learner.save`) and labels once told are never dropped: a later
labelled file must agree with them. A continued session checks the inputs against the saved
state, both ways: rows may be added to the labelled rows; a removed or changed labelled row, a
pool that lost, gained or changed rows, is refused with the row named.

Example:
  >>> import os, tempfile, numpy as np
  >>> d = tempfile.mkdtemp(); rng = np.random.default_rng(0)
  >>> x = rng.normal(size=(60, 2))
  >>> with open(os.path.join(d, "lab.csv"), "w") as f:
  ...   _ = f.write("id,a,b,y\\n" + "".join(f"L{i},{a},{b},{np.sin(a)}\\n" for i, (a, b) in enumerate(x[:10])))
  >>> with open(os.path.join(d, "pool.csv"), "w") as f:
  ...   _ = f.write("id,a,b\\n" + "".join(f"P{i},{a},{b}\\n" for i, (a, b) in enumerate(x[10:])))
  >>> from curiojax.active.learner import ModelOptions, TrainOptions
  >>> options = LearnerOptions(model=ModelOptions(hidden_sizes=(8,)), train=TrainOptions(epochs=10))
  >>> out = suggest(os.path.join(d, "lab.csv"), os.path.join(d, "pool.csv"), target="y", k=3, id_column="id",
  ...               state=os.path.join(d, "state"), options=options)
  >>> len(out.ids), all(i.startswith("P") for i in out.ids), os.path.basename(out.path)
  (3, True, 'suggestions.csv')
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import io
import os
import re
from pathlib import Path

import jax
import numpy as np

from curiojax._checks import check_bool, check_int
from curiojax.active import persistence
from curiojax.active.data import Table, is_frame, is_plain_index, read_frame, read_table
from curiojax.active.learner import Learner, LearnerOptions, column_scales
from curiojax.strategies import DEFAULT_STRATEGY, check_strategy_name

STATE_KIND = "suggest"
SUGGESTIONS_FILE = "suggestions.csv"
HISTORY_FILE = "history.csv"
HISTORY_COLUMNS = ("round", "rank", "id", "score", "prediction", "std", "strategy", "time")
INDEX_IDS = "(index)"  # the saved id column of a state whose ids are its DataFrames' index values
RANK_MEANING = "rank is the order in which the strategy chose the rows (1 = chosen first), not a sort by score"

# What each strategy's score means, for a lab user (the strategy's ``criterion`` says it for an expert).
_SPREAD = "; each pick covers another region, so the scores need not fall with the rank"
SCORE_MEANINGS = {
  "random": "no score: the rows are drawn at random",
  "lcmd": "score = how unlike every labelled or already chosen row this row is, as the model sees them "
  "(larger = newer to the model)" + _SPREAD,
  "tangent_coverage": "score = how unlike every labelled or already chosen row this row is, as the model sees "
  "them (larger = newer to the model)" + _SPREAD,
  "validation_coverage": "score = how unlike every labelled or already chosen row this row is, as the model sees "
  "them, counting most where it would improve the predictions on held-out labelled rows" + _SPREAD,
  "curiosity": "score = how much measuring this row is expected to change the fitted model (larger = more)",
  "group_curiosity": "score = how much measuring this row is expected to change the fitted model, summed over its "
  "layers (larger = more)",
  "curiosity_diverse": "score = how much measuring this row is expected to change the fitted model (larger = more)"
  + _SPREAD,
  "validation_influence": "score = how much measuring this row is expected to change the error on held-out "
  "labelled rows (larger = more)",
  "validation_diverse": "score = how much measuring this row is expected to change the error on held-out labelled "
  "rows (larger = more)" + _SPREAD,
  "variance": "score = how unsure the model is about this row (its predictive variance, in standardised units; "
  "larger = less sure)",
  "emcm": "score = how much measuring this row is expected to change the model's predictions (larger = more)",
  "badge": "no score: the rows are sampled to differ from each other, as the model sees them",
}


def score_meaning(strategy: str, criterion: str) -> str:
  """One plain sentence on what a strategy's score says (its ``criterion`` for an unknown strategy)."""
  return SCORE_MEANINGS.get(strategy, f"score = {criterion}")


@dataclasses.dataclass(frozen=True)
class Suggested:
  """What :func:`suggest` wrote.

  Attributes:
    ids: the pool rows to label next, in the order the strategy chose them (the id column's
      values, the DataFrames' index values, or pool row numbers).
    scores: the strategy's score of each (NaN where it has none); in the order of choice, not
      sorted (see ``score_meaning``).
    predictions: the fitted model's prediction of the target at each row (float32, the target's units).
    stds: the predictive standard deviation of a measurement at each row (float32, the target's
      units). The predictive distribution is a Student-t (heavier tails than a normal one), so
      ``prediction ± std`` holds at least about 68% of measurements; for a stated coverage use
      ``low95``/``high95``.
    low95, high95: the central 95% interval of a measurement at each row (float32, the target's
      units; :meth:`curiojax.Learner.interval`): 19 in 20 measurements should fall inside.
    x: their features (original units, float32), columns ``feature_names``.
    criterion: what the scores measure (the strategy's technical description).
    score_meaning: the same in one plain sentence.
    strategy: the strategy's name.
    round: the labelling round of this batch (1 for the first), as in the history.
    path: the CSV file written (``rank``, the id column, ``score``, ``predicted_<target>``,
      ``std_<target>``, ``low95_<target>``, ``high95_<target>``, the features as the pool
      writes them).
    history: the history file, ``history.csv`` in the state folder (every batch so far).
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
  predictions: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
  stds: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
  low95: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
  high95: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
  score_meaning: str = ""
  strategy: str = ""
  round: int = 0
  history: str = ""
  target: str = ""
  id_header: str = ""


_ID_LIKE = {"id", "ids", "identifier", "index", "idx", "key", "name", "uid", "uuid", "sample", "row", "no", "number"}


def _looks_like_ids(name: str) -> bool:
  low = name.strip().lower().replace(" ", "_").replace(".", "")
  return low in _ID_LIKE or low.endswith("_id") or low.startswith("id_") or low.endswith("_no")


def _read_inputs(labelled, pool, target, id_column, index_ids=False) -> tuple[Table, Table]:
  frames = is_frame(labelled)
  if frames:
    lab = read_frame(labelled, target=target, id_column=id_column, index_ids=index_ids, source="the labelled DataFrame")
    pool_table = read_frame(
      pool, target=target, id_column=id_column, index_ids=index_ids, blank_target="ignore", source="the pool DataFrame"
    )
  else:
    lab = _read(labelled, target, id_column, "error")
    pool_table = _read(pool, target, id_column, "ignore")
  if lab.feature_names != pool_table.feature_names:
    only_lab = [n for n in lab.feature_names if n not in pool_table.feature_names]
    only_pool = [n for n in pool_table.feature_names if n not in lab.feature_names]
    detail = f"only in {lab.source}: {only_lab}; only in {pool_table.source}: {only_pool}"
    if not only_lab and not only_pool:
      detail = "the same columns in another order"
    raise ValueError(
      f"the pool's feature columns differ from the labelled {'DataFrame' if frames else 'file'}'s ({detail}); they "
      f"must match, in the same order: {list(lab.feature_names)}."
    )
  if id_column is None:
    named = [n for n in lab.feature_names if _looks_like_ids(n)]
    if named:
      flag = f"id_column={named[0]!r}" if frames else f"--id-column {named[0]}"
      raise ValueError(
        f"column {named[0]!r} looks like row ids, and without an id column it would be a model feature; "
        f"pass {flag} (or rename the column if it really is a measured feature)."
      )
  return lab, pool_table


def _read(path, target, id_column, blank_target) -> Table:
  try:
    return read_table(path, target=target, id_column=id_column, blank_target=blank_target)
  except ValueError as e:
    found = re.search(r"column '([^']*)': non-numeric value", str(e))
    if id_column is None and found:
      raise ValueError(f"{e} If column {found[1]!r} holds row ids, pass --id-column {found[1]}.") from None
    raise


def _check_paths(labelled, pool, state_dir: Path, out: Path) -> None:
  """``--out`` never overwrites an input or the state's own files; the state folder is a folder.

  ``labelled`` and ``pool`` are the input files (None for DataFrames).
  """
  if state_dir.exists() and not state_dir.is_dir():
    raise ValueError(f"--state {state_dir} is a file, not a folder; give a folder name.")
  if state_dir.is_dir() and not (state_dir / persistence.STATE_FILE).exists():  # a new state: in a folder of its own
    others = sorted(p.name for p in state_dir.iterdir() if not persistence.is_state_file(p.name))
    others = [n for n in others if n != SUGGESTIONS_FILE]  # a history without its state is never overwritten
    if others:
      raise ValueError(
        f"--state {state_dir} holds no curiojax state but other files (e.g. {others[0]!r}); a new state needs a "
        "folder of its own: give a new or empty folder."
      )
  if out.is_dir():
    raise ValueError(f"--out {out} is a directory; give a file name.")
  state_res = state_dir.resolve()
  own = {state_res / SUGGESTIONS_FILE}
  for what, given in (("the labelled file", labelled), ("the pool file", pool)):
    if given is None:
      continue
    path = Path(given)
    if out.resolve() == path.resolve() or (out.exists() and path.exists() and os.path.samefile(out, path)):
      raise ValueError(f"--out {out} is {what}: the suggestions would overwrite it. Give another file name.")
    if path.resolve().parent == state_res and (
      path.name in (persistence.STATE_FILE, persistence.LOCK_FILE, SUGGESTIONS_FILE, HISTORY_FILE)
      or path.name.startswith("arrays-")
    ):
      raise ValueError(f"{what} {path} is inside --state {state_dir} under a name the state writes; move it.")
  out_res = out.resolve()
  if (out_res == state_res or state_res in out_res.parents) and out_res not in own:
    raise ValueError(
      f"--out {out} is inside the state folder {state_dir}, which holds curiojax's own files; write it elsewhere."
    )


_NO_STATE = object()


def _saved_id_column(state_dir: Path):
  """The id column the saved state names (read without checks: only for a hint), or ``_NO_STATE``."""
  import json

  try:
    meta = json.loads((state_dir / persistence.STATE_FILE).read_text())
    saved = meta["extra"]["id_column"]
  except (OSError, ValueError, KeyError, TypeError):
    return _NO_STATE
  return saved if saved is None or isinstance(saved, str) else _NO_STATE


def _feature_twins(lab: Table, rows, pool_ids, pool_x, free, allow: bool, by_id: bool = True) -> None:
  """New labelled rows outside the pool whose features equal (or round to) an unlabelled pool row's: refused.

  Almost always a typo'd id (``H406`` for ``h406``) or features rounded on the way (a
  spreadsheet keeping 6 digits): the row would be used as a second sample and the pool row
  suggested again. Close means every feature within 1e-5 of its value (and 1e-6 of the
  pool's spread). ``allow``: the user says they really are other samples.
  """
  if allow or not len(rows) or not len(free):
    return
  candidates = np.asarray(pool_x, np.float64)[free]
  spread = np.asarray(pool_x, np.float64).std(0)
  spread = np.where(spread > 0, spread, 1.0)
  for j in rows:
    x = np.asarray(lab.x[j], np.float64)
    close = np.abs(candidates - x) <= 1e-5 * np.maximum(np.abs(candidates), np.abs(x)) + 1e-6 * spread
    hits = np.flatnonzero(close.all(1))
    if not len(hits):
      continue
    i = int(free[hits[0]])
    row = f"row {lab.ids[j]!r} matches no pool id, but" if by_id else f"data row {lab.ids[j]} matches no pool row, but"
    same = "equal" if np.array_equal(np.float32(x), np.float32(pool_x[i])) else "nearly equal (rounded?)"
    fix = "correct the id" if by_id else "copy the features exactly from the pool file (or use --id-column)"
    raise ValueError(
      f"{lab.source}: {row} its features {same} those of unlabelled pool row {pool_ids[i]!r}; {fix}, or, if it "
      "is really another sample, pass --allow-same-features."
    )


def _match_rows(lab: Table, pool_ids, pool_x, by_id: bool) -> list[int | None]:
  """For each labelled row, its pool index (by id, or by equal features), or None (outside the pool).

  Without ids, two labelled rows with one pool row's features are refused (one label would be lost).
  """
  if by_id:
    where = {pid: i for i, pid in enumerate(pool_ids)}
    out = []
    for rid, row in zip(lab.ids, lab.x, strict=True):
      i = where.get(rid)
      if i is not None and not np.array_equal(np.float32(row), np.float32(pool_x[i])):
        raise ValueError(
          f"{lab.source}: row with id {rid!r} has other feature values than pool row {rid!r} "
          f"({_values(row)} here, {_values(pool_x[i])} in the pool); copy them exactly from the pool file."
        )
      out.append(i)
    return out
  where = {}
  for i, row in enumerate(np.float32(pool_x)):
    where.setdefault(row.tobytes(), i)
  out, first = [], {}
  for j, row in enumerate(np.float32(lab.x)):
    i = where.get(row.tobytes())
    if i is not None and i in first:
      raise ValueError(
        f"{lab.source}: data rows {lab.ids[first[i]]} and {lab.ids[j]} both have the features of pool row "
        f"{pool_ids[i]}, so one label would be lost; remove one, or give both files an id column (--id-column)."
      )
    if i is not None:
      first[i] = j
    out.append(i)
  return out


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
  seed: int | None = None,
  allow_same_features: bool = False,
) -> Suggested:
  """Suggest the next ``k`` pool rows to label, and keep the state for the next session.

  What it writes, and how a continued session is checked: see the module docstring.

  Args:
    labelled: CSV file of labelled rows (features, ``target``, and ``id_column`` if given), or
      a pandas DataFrame with those columns (named).
    pool: CSV file of candidate rows (the same feature columns), or a DataFrame (the same kind
      as ``labelled``). A target column in the pool is ignored.
    target: the label column of the labelled file.
    k: how many rows to suggest.
    id_column: a column of unique row ids in both inputs (for DataFrames, a column or the
      name of their index); without one, rows are identified as the module docstring says.
    state: the state folder (default ``curiojax_suggest`` next to the pool file; required for
      DataFrames); created on the first call, continued on the next ones.
    strategy: a registered strategy (default the best measured, ``"lcmd"``); a
      continued state keeps its own.
    out: the CSV file to write (default ``suggestions.csv`` in the state folder); never an
      input file or another file in the state folder.
    options: model and training settings for a new state (a continued state keeps its own).
    seed: seed of a new state (default 0; a continued state keeps its own).
    allow_same_features: accept labelled rows whose id matches no pool row although their
      features equal an unlabelled pool row's (refused by default: usually a typo'd id).

  Returns:
    a :class:`Suggested`: the ids, scores, predictions and standard deviations of the batch,
    in the order of choice, and where everything was written.

  Raises:
    ValueError: a mistake in the inputs (a missing target column, a non-numeric feature
      column, duplicate ids, a row that contradicts the saved state…), named with its file or
      DataFrame, row and column.

  Example with DataFrames (ids from their index; pandas is optional)::

    data = pandas.read_csv("concrete.csv", index_col="id")
    labelled = data[data["strength"].notna()]
    pool = data[data["strength"].isna()].drop(columns="strength")
    out = suggest(labelled, pool, target="strength", k=5, state="state")
    out.ids, out.predictions, out.stds
  """
  frames, seed = _check_arguments(
    labelled, pool, target, k, id_column, state, strategy, options, seed, allow_same_features
  )
  state_dir, out = _out_paths(labelled, pool, state, out, frames)
  index_ids = frames and id_column is None and not (is_plain_index(labelled) and is_plain_index(pool))
  id_key = INDEX_IDS if index_ids else id_column  # what the state saves as its id column
  _check_saved_id_key(state_dir, id_key, frames)  # before the inputs are read with the wrong columns
  lab, pool_table = _read_inputs(labelled, pool, target, id_column, index_ids)
  history_path = state_dir / HISTORY_FILE
  _read_history(history_path)  # a damaged history stops here, before the fit and before anything is written
  with contextlib.ExitStack() as owner:  # one process per state folder (created only on success)
    locked = state_dir.is_dir()
    if locked:
      owner.enter_context(persistence.workdir_lock(state_dir))
    learner, st, extra, new = _fit(
      state_dir, lab, pool_table, target, id_key, strategy, options, seed, allow_same_features
    )
    st, batch = _ask(learner, st, k)
    if not locked:
      _lock_new_state(owner, state_dir)
    id_header = _id_header(id_key, pool)
    return _write_session(state_dir, out, learner, st, extra, batch, pool_table, target, id_header, new)


def _lock_new_state(owner: contextlib.ExitStack, state_dir: Path) -> None:
  """Lock a state folder created by this session; another process that started a state there meanwhile wins."""
  owner.enter_context(persistence.workdir_lock(state_dir))
  if (state_dir / persistence.STATE_FILE).exists():
    raise ValueError(f"{state_dir} was just started by another process; run again to continue it.")


def _check_arguments(labelled, pool, target, k, id_column, state, strategy, options, seed, allow_same_features):
  """:func:`suggest`'s arguments, checked before any file is read.

  Returns whether the inputs are DataFrames, and the checked seed.
  """
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"k must be a positive integer, got {k!r}.")
  frames = is_frame(labelled)
  if frames != is_frame(pool):
    raise TypeError("labelled and pool must be of one kind: both CSV file paths or both pandas DataFrames.")
  if not frames:
    for what, given in (("labelled", labelled), ("pool", pool)):
      if not isinstance(given, (str, os.PathLike)):
        raise TypeError(
          f"{what} must be the path of a CSV file or a pandas DataFrame, got {type(given).__name__}; for arrays "
          "use curiojax.Learner."
        )
  if not target or not isinstance(target, str):
    raise ValueError("name the target column of the labelled file.")
  if id_column is not None and (not isinstance(id_column, str) or not id_column.strip()):
    raise ValueError(f"the id column must be a column name, got {id_column!r}.")
  if seed is not None:
    seed = check_int("seed", seed, 0)
  check_bool("allow_same_features", allow_same_features)
  if options is not None and not isinstance(options, LearnerOptions):
    raise TypeError(f"options must be a curiojax.LearnerOptions, got {type(options).__name__}.")
  if strategy is not None:
    check_strategy_name(strategy)
  if frames and state is None:
    raise ValueError("give state= (a folder for this labelling campaign) when the inputs are DataFrames.")
  return frames, seed


def _out_paths(labelled, pool, state, out, frames: bool) -> tuple[Path, Path]:
  """The state folder and the suggestions file (defaults filled in), checked by :func:`_check_paths`."""
  state_dir = Path(state) if state is not None else Path(pool).resolve().parent / "curiojax_suggest"
  if out is not None and str(out).endswith(("/", os.sep)):
    raise ValueError(f"--out {out} names a folder; give a file name.")
  out = Path(out) if out is not None else state_dir / SUGGESTIONS_FILE
  _check_paths(None if frames else labelled, None if frames else pool, state_dir, out)
  return state_dir, out


def _check_saved_id_key(state_dir: Path, id_key, frames: bool) -> None:
  """A saved state is continued with the ids it was started with (id column, index, or none)."""
  saved_id = _saved_id_column(state_dir)
  if saved_id is not _NO_STATE and id_key != saved_id:
    hint = " (DataFrames' ids come from their index unless both have the plain 0..n-1 index)" if frames else ""
    raise ValueError(f"{state_dir} was started {_id_way(saved_id)}; run it the same way{hint} (or use a new --state).")


def _fit(state_dir, lab, pool_table, target, id_key, strategy, options, seed, allow_same_features):
  """The learner fitted on every label: a saved state told the new ones, or a new state.

  Returns ``(learner, st, extra, new)``, ``new`` the number of labels told this session.
  """
  if (state_dir / persistence.STATE_FILE).exists():
    learner, st, extra = _continue(state_dir, lab, pool_table, target, id_key, strategy, options, seed)
    learner, st, new = _tell_new(learner, st, extra, lab, allow_same_features)
    return learner, st, extra, new
  learner, st, extra = _start(lab, pool_table, target, id_key, strategy, options, seed or 0, allow_same_features)
  return learner, st, extra, 0


def _ask(learner, st, k: int):
  """The next batch of ``k`` unlabelled pool rows."""
  unlabelled = len(learner.x_pool) - len(st.labelled)
  if k > unlabelled:
    raise ValueError(f"asked for {k} rows, but only {unlabelled} pool rows are unlabelled.")
  return learner.ask(st, k)


def _write_session(state_dir, out, learner, st, extra, batch, pool_table, target, id_header, new) -> Suggested:
  """Save the state, append the batch to the history and write the suggestions (under the state's lock).

  ``new``: the labels told this session, for :attr:`Suggested.new_labels`.
  """
  pool_ids = extra["pool_ids"]
  ids = tuple(pool_ids[i] for i in batch.indices)
  x = learner.x_pool[batch.indices]
  text = _pool_text(pool_table, ids, x)
  strategy = str(learner.strategy_name)
  round_no = int(st.round) + 1
  history_path = state_dir / HISTORY_FILE
  history = _read_history(history_path)  # again, under the lock: what another session may have added
  learner.save(state_dir, st, extra=extra)
  rows = _history_rows(round_no, ids, batch.scores, batch.prediction, batch.std, strategy)
  _write_history(history_path, history, rows)
  columns = (batch.scores, batch.prediction, batch.std, batch.low, batch.high)
  _write_suggestions(out, ids, columns, text, extra["feature_names"], id_header, target)
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
    predictions=batch.prediction,
    stds=batch.std,
    low95=batch.low,
    high95=batch.high,
    score_meaning=score_meaning(strategy, batch.criterion),
    strategy=strategy,
    round=round_no,
    history=str(history_path),
    target=target,
    id_header=id_header,
  )


def _id_way(id_key) -> str:
  if id_key is None:
    return "without --id-column"
  if id_key == INDEX_IDS:
    return "with the DataFrames' index as ids"
  return f"with --id-column {id_key}"


def _id_header(id_key, pool) -> str:
  if id_key is None:
    return "pool_row"
  if id_key == INDEX_IDS:
    name = getattr(getattr(pool, "index", None), "name", None)
    return "id" if name is None else str(name)
  return id_key


def _pool_text(pool_table: Table, ids, x) -> list[tuple[str, ...]]:
  """The suggested rows' features as the pool writes them (its cells' own text)."""
  where = {pid: j for j, pid in enumerate(pool_table.ids)}
  out = []
  for rid, row in zip(ids, x, strict=True):
    j = where.get(rid)
    if pool_table.text and j is not None:
      out.append(pool_table.text[j])
    else:  # not expected: a suggested row is an unlabelled pool row, present in the pool
      out.append(tuple(f"{float(v):.9g}" for v in row))
  return out


def _start(lab, pool_table, target, id_column, strategy, options, seed, allow_same_features=False):
  by_id = id_column is not None
  if not by_id:
    _no_duplicate_rows(pool_table)
  match = _match_rows(lab, pool_table.ids, pool_table.x, by_id=by_id)
  inside = [j for j, i in enumerate(match) if i is not None]
  outside = [j for j, i in enumerate(match) if i is None]
  idx = np.asarray([match[j] for j in inside], np.int64)
  free = np.setdiff1d(np.arange(len(pool_table.ids)), idx)
  _feature_twins(lab, outside, pool_table.ids, pool_table.x, free, allow_same_features, by_id)
  names = lab.feature_names
  column_scales(
    np.concatenate([pool_table.x, lab.x[outside]]), [f"{lab.source} / {pool_table.source}: column {n!r}" for n in names]
  )
  column_scales(lab.y[:, None], [f"{lab.source}: the target column {target!r}"])
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
    "seed": int(seed),
  }
  return learner, st, extra


def _no_duplicate_rows(pool_table) -> None:
  """Without ids a pool row is found by its features: two equal rows could not be told apart."""
  first = {}
  for pid, row in zip(pool_table.ids, np.float32(pool_table.x), strict=True):
    other = first.setdefault(row.tobytes(), pid)
    if other != pid:
      raise ValueError(
        f"{pool_table.source}: data rows {other} and {pid} have the same features; without an id column rows are "
        "matched by their features, so give both files an id column (--id-column) or drop the duplicate."
      )


def _continue(state_dir, lab, pool_table, target, id_column, strategy, options, seed=None):
  learner, st = Learner.load(state_dir)
  extra = getattr(learner, "extra", {})
  if extra.get("kind") != STATE_KIND:
    raise ValueError(f"{state_dir} holds no curiojax suggest state; choose another --state.")
  _check_saved_extra(state_dir, learner, st, extra)
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
  if seed is not None and seed != extra.get("seed", seed):
    raise ValueError(f"{state_dir} was started with seed {extra['seed']}; use a new --state to change it.")
  known = {pid: i for i, pid in enumerate(extra["pool_ids"])}
  unknown = [pid for pid in pool_table.ids if pid not in known]
  if unknown:
    raise ValueError(
      f"{pool_table.source} has {len(unknown)} row(s) the saved pool does not (e.g. {unknown[0]!r}); the pool "
      "of a state is fixed: use a new --state for a new pool."
    )
  present = set(pool_table.ids)
  told = set(st.labelled.tolist()) if id_column else set()  # a labelled row may leave the pool file: it is kept
  if id_column:  # and so may a row labelled this session (it is in the labelled input, by id)
    told |= {known[rid] for rid in lab.ids if rid in known}
  lost = [pid for i, pid in enumerate(extra["pool_ids"]) if pid not in present and i not in told]
  if lost:
    what = "row" if id_column else "data row"
    raise ValueError(
      f"{pool_table.source} lost {len(lost)} unlabelled pool row(s) since the saved state (e.g. {what} "
      f"{lost[0]!r}); the pool of a state is fixed: restore them (or use a new --state for a new pool)."
    )
  for pid, row in zip(pool_table.ids, pool_table.x, strict=True):
    if not np.array_equal(np.float32(row), learner.x_pool[known[pid]]):
      hint = "" if id_column else " (without --id-column rows are their row numbers: were rows removed or reordered?)"
      raise ValueError(
        f"{pool_table.source}: pool row {pid!r} changed since the saved state{hint}; restore it or use a new --state."
      )
  return learner, st, extra


def _check_saved_extra(state_dir, learner, st, extra) -> None:
  """What suggest saved with the learner agrees with it (a forged, re-checksummed state is refused)."""
  try:
    ok = (
      isinstance(extra.get("target"), str)
      and (extra.get("id_column") is None or isinstance(extra["id_column"], str))
      and len(extra["feature_names"]) == learner.x_pool.shape[1]
      and len(extra["pool_ids"]) == len(learner.x_pool) == len(set(extra["pool_ids"]))
      and all(isinstance(i, str) for i in extra["pool_ids"])
      and (extra["id_column"] is None or len(extra["outside_ids"]) == len(st.x_extra))
    )
  except (KeyError, TypeError):
    ok = False
  if not ok:
    raise ValueError(
      f"{state_dir}: the saved suggest state is inconsistent (row ids vs rows); restore it or start a new --state."
    )


def _tell_new(learner, st, extra, lab, allow_same_features=False):
  """Tell the learner the labelled file's new rows; every saved label must still be there, unchanged."""
  by_id = extra["id_column"] is not None
  pool_ids = extra["pool_ids"]
  match = _match_rows(lab, pool_ids, learner.x_pool, by_id=by_id)
  known_labels = dict(zip(st.labelled.tolist(), st.labels.tolist(), strict=True))
  seen = set()
  new_idx, new_y = [], []
  outside_rows = []
  for j, i in enumerate(match):
    if i is None:
      outside_rows.append(j)
      continue
    seen.add(i)
    y = np.float32(lab.y[j])
    if i in known_labels:
      if known_labels[i] != y:
        raise _changed_label(lab.source, lab.ids[j], lab.y[j], known_labels[i])
    else:
      new_idx.append(i)
      new_y.append(y)
  missing = [i for i in st.labelled.tolist() if i not in seen]
  if missing:
    i = missing[0]
    what = f"pool row {pool_ids[i]!r}" if by_id else f"the row with the features of pool row {pool_ids[i]}"
    raise _removed_row(lab.source, what, known_labels[i], len(missing))
  if by_id:
    new_out = _outside_by_id(lab, outside_rows, extra["outside_ids"], st)
  else:
    new_out = _outside_by_features(lab, outside_rows, st)
  free = np.setdiff1d(np.arange(len(pool_ids)), np.asarray(st.labelled.tolist() + new_idx, np.int64))
  _feature_twins(lab, new_out, pool_ids, learner.x_pool, free, allow_same_features, by_id)
  if not new_idx and not new_out:
    return learner, st, 0
  st = learner.tell(
    st,
    np.asarray(new_idx, np.int64),
    np.asarray(new_y, np.float32),
    x_outside=np.asarray(lab.x[new_out], np.float32) if new_out else None,
    y_outside=np.asarray(lab.y[new_out], np.float32) if new_out else None,
  )
  extra["outside_ids"] = list(extra["outside_ids"]) + [lab.ids[j] for j in new_out]
  return learner, st, len(new_idx) + len(new_out)


def _outside_by_id(lab, rows, saved_ids, st) -> list[int]:
  """Labelled rows outside the pool, by id: saved ones unchanged and all present; the new ones."""
  saved = {rid: n for n, rid in enumerate(saved_ids)}
  new, seen = [], set()
  for j in rows:
    n = saved.get(lab.ids[j])
    if n is None:
      new.append(j)
      continue
    seen.add(n)
    if not np.array_equal(np.float32(lab.x[j]), st.x_extra[n]):
      raise ValueError(
        f"{lab.source}: row {lab.ids[j]!r} has other feature values than the saved state has for it; told rows "
        "are kept: restore it (or use a new --state)."
      )
    if np.float32(lab.y[j]) != st.y_extra[n]:
      raise _changed_label(lab.source, lab.ids[j], lab.y[j], st.y_extra[n])
  missing = [n for n in range(len(saved_ids)) if n not in seen]
  if missing:
    raise _removed_row(lab.source, f"row {saved_ids[missing[0]]!r}", st.y_extra[missing[0]], len(missing))
  return new


def _outside_by_features(lab, rows, st) -> list[int]:
  """Labelled rows outside the pool, without ids: each saved (features, label) still there; the rest new."""
  remaining = {}
  for n, (x, y) in enumerate(zip(st.x_extra, st.y_extra, strict=True)):
    remaining.setdefault(x.tobytes() + np.float32(y).tobytes(), []).append(n)
  new = []
  for j in rows:
    key = np.float32(lab.x[j]).tobytes() + np.float32(lab.y[j]).tobytes()
    if remaining.get(key):
      remaining[key].pop()
    else:
      new.append(j)
  lost = sorted(n for ns in remaining.values() for n in ns)
  if not lost:
    return new
  n = lost[0]
  for j in new:
    if np.array_equal(np.float32(lab.x[j]), st.x_extra[n]):
      raise _changed_label(lab.source, lab.ids[j], lab.y[j], st.y_extra[n], data_row=True)
  features = ", ".join(f"{v:.6g}" for v in st.x_extra[n])
  raise _removed_row(lab.source, f"the row outside the pool with features ({features})", st.y_extra[n], len(lost))


def _values(row) -> str:
  return "(" + ", ".join(f"{float(v):.9g}" for v in row) + ")"


def _changed_label(source, rid, now, then, data_row=False) -> ValueError:
  row = f"data row {rid}" if data_row else f"row {rid!r}"
  return ValueError(
    f"{source}: {row} has label {float(now)!r}, the saved state has {float(then)!r} for it; told labels are "
    "kept: restore it (or use a new --state)."
  )


def _removed_row(source, what, label, count) -> ValueError:
  more = f" ({count} such rows)" if count > 1 else ""
  return ValueError(
    f"{source}: {what}, labelled {float(label)!r} in an earlier session, is missing{more}; told labels are kept: "
    "restore the row (only new rows may be added), or use a new --state."
  )


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
  """A text cell spreadsheets show as text: one starting like a formula gets a leading ``'``."""
  return "'" + text if text.startswith(_FORMULA_START) else text


def _write_suggestions(path: Path, ids, columns, text, feature_names, id_header, target) -> None:
  """``rank, <id>, score, predicted_, std_, low95_, high95_<target>, <features as the pool writes them>``."""
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  numbers = ["score", *(f"{what}_{target}" for what in ("predicted", "std", "low95", "high95"))]
  writer.writerow([_cell(h) for h in ("rank", id_header, *numbers, *feature_names)])
  for rank, (rid, *values, cells) in enumerate(zip(ids, *columns, text, strict=True), 1):
    writer.writerow([rank, _cell(rid), *map(_number, values), *map(_feature_cell, cells)])
  _write_text(path, buf.getvalue())


def _feature_cell(text: str) -> str:
  """A feature as the pool wrote it: a number (``-0.76`` is no formula), else neutralised like any text."""
  try:
    float(text)
  except ValueError:
    return _cell(text)
  return text


def _number(value) -> str:
  return "" if np.isnan(value) else f"{float(value):.6g}"


def _write_text(path: Path, text: str) -> None:
  from curiojax.active.persistence import atomic_write_text

  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
  except OSError as e:
    raise ValueError(f"cannot write {path}: {e.strerror or e}.") from None


def _read_history(path: Path) -> list[list[str]]:
  """The rows of an existing ``history.csv`` (checked: a damaged one is named before anything is written)."""
  if not path.exists():
    return []
  fix = "restore it, or move it away to start a new history"
  try:
    text = path.read_text(encoding="utf-8")
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f"cannot read the history {path}: {getattr(e, 'strerror', None) or e}; {fix}.") from None
  rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row]
  if not rows or tuple(rows[0]) != HISTORY_COLUMNS:
    raise ValueError(f"{path} is not a curiojax history (its header is not {','.join(HISTORY_COLUMNS)}); {fix}.")
  for lineno, row in enumerate(rows[1:], 2):
    if len(row) != len(HISTORY_COLUMNS) or not row[0].isdigit() or not row[1].isdigit():
      raise ValueError(f"{path}:{lineno}: not a history row (round, rank, id, …); {fix}.")
  return rows[1:]


def _history_rows(round_no, ids, scores, prediction, std, strategy) -> list[list[str]]:
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
  return [
    [str(round_no), str(rank), _cell(rid), _number(score), _number(mean), _number(sd), strategy, now]
    for rank, (rid, score, mean, sd) in enumerate(zip(ids, scores, prediction, std, strict=True), 1)
  ]


def _write_history(path: Path, old: list[list[str]], new: list[list[str]]) -> None:
  """Append a round's rows; a round already there (asked again, no new labels) is kept once, not duplicated."""
  round_no = new[0][0]
  same = [r for r in old if r[0] == round_no]
  if same and [r[1:3] for r in same] == [r[1:3] for r in new]:
    return  # the same batch again: the rows (and the time it was first asked) are kept
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(HISTORY_COLUMNS)
  writer.writerows([r for r in old if r[0] != round_no] + new)
  _write_text(path, buf.getvalue())

"""Regression datasets for the loop: the embedded UCI concrete set, UCI-style folders, CSV files.

A UCI-style folder (the layout of the Bayesian-deep-learning UCI benchmarks) holds
``data.txt`` (whitespace-separated numbers, one row per example), ``index_features.txt`` and
``index_target.txt`` (0-based column indices, one per line). A CSV file has a header row
and a named target column; the other columns are the features unless ``features`` names
them. Everything is validated on load: ragged rows, non-numeric values, non-finite
features or targets, out-of-range or duplicated indices each raise a one-line
``ValueError`` naming the file and what to fix.

Oracles answer label queries: any callable ``oracle(indices) -> labels`` for pool
indices, e.g. :class:`ArrayOracle`, the held-back label column of a benchmark.

Example:
  >>> ds = load_dataset("concrete")
  >>> ds.x.shape, ds.y.shape
  ((1030, 8), (1030,))
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

EMBEDDED = ("concrete",)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Features ``x`` (n, d) float32, target ``y`` (n,) float32, and where they came from."""

  x: np.ndarray
  y: np.ndarray
  name: str
  feature_names: tuple[str, ...] = ()


class ArrayOracle:
  """The held-back label column: ``oracle(indices) -> y[indices]`` (a benchmark's oracle)."""

  def __init__(self, y):
    self.y = np.asarray(y)
    if self.y.ndim != 1:
      raise ValueError(f"ArrayOracle needs a 1-D label column, got shape {self.y.shape}.")

  def __call__(self, indices) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.size and (indices.min() < 0 or indices.max() >= len(self.y)):
      raise ValueError(f"oracle queried indices outside [0, {len(self.y)}).")
    return self.y[indices]


def embedded_path(name: str) -> Path:
  """Folder of a dataset shipped inside the package."""
  return Path(__file__).parent / "datasets" / name  # curiojax/active/datasets


def _parse_number(token: str, where: str) -> float:
  try:
    return float(token)
  except ValueError:
    raise ValueError(f"{where}: non-numeric value {token!r}; every value must be a number.") from None


def _text_lines(path: Path):
  """``(line number, line)`` of a text file; undecodable bytes or an unreadable file are a ``ValueError``."""
  try:
    with open(path, encoding="utf-8-sig") as f:
      yield from enumerate(f, 1)
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not a UTF-8 text file (byte {e.start}: {e.reason}).") from None
  except OSError as e:
    raise ValueError(f"{path}: cannot read the file: {e.strerror or e}.") from None


def _read_matrix(path: Path) -> np.ndarray:
  rows = []
  width = None
  for lineno, line in _text_lines(path):
    tokens = line.split()
    if not tokens:
      continue
    if width is None:
      width = len(tokens)
    elif len(tokens) != width:
      raise ValueError(f"{path}:{lineno}: ragged row with {len(tokens)} values, expected {width} like the first row.")
    rows.append([_parse_number(t, f"{path}:{lineno}") for t in tokens])
  if not rows:
    raise ValueError(f"{path}: no data rows.")
  return np.asarray(rows, dtype=np.float64)


def _read_indices(path: Path) -> list[int]:
  if not path.is_file():
    raise ValueError(f"missing file {path}: a dataset folder needs data.txt, index_features.txt, index_target.txt.")
  out = []
  for lineno, line in _text_lines(path):
    token = line.strip()
    if not token:
      continue
    try:
      value = float(token)
    except ValueError:
      raise ValueError(f"{path}:{lineno}: {token!r} is not a column index.") from None
    if not math.isfinite(value) or value != int(value):
      raise ValueError(f"{path}:{lineno}: {token!r} is not an integer column index.")
    out.append(int(value))
  if not out:
    raise ValueError(f"{path}: no column index in the file.")
  return out


def _finalise(x: np.ndarray, y: np.ndarray, name: str, source: str, feature_names=()) -> Dataset:
  with np.errstate(over="ignore"):
    x, y = np.asarray(x).astype(np.float32), np.asarray(y).astype(np.float32)  # beyond float32: inf, refused below
  bad_y = ~np.isfinite(y)
  if bad_y.any():
    row = int(np.flatnonzero(bad_y)[0])
    raise ValueError(
      f"{source}: {int(bad_y.sum())} target value(s) are NaN or infinite (or beyond float32's 3.4e38) "
      f"(first at data row {row + 1}); drop those rows first."
    )
  bad_x = ~np.isfinite(x)
  if bad_x.any():
    row = int(np.flatnonzero(bad_x.any(axis=1))[0])
    raise ValueError(
      f"{source}: {int(bad_x.any(axis=1).sum())} row(s) have NaN or infinite features (or beyond float32's 3.4e38) "
      f"(first at data row {row + 1}); impute or drop them first."
    )
  if len(y) < 2:
    raise ValueError(f"{source}: need at least 2 rows, got {len(y)}.")
  return Dataset(x.astype(np.float32), y.astype(np.float32), name, tuple(feature_names))


def load_uci_folder(path: str | os.PathLike, name: str | None = None) -> Dataset:
  """Load a folder with ``data.txt``, ``index_features.txt`` and ``index_target.txt``."""
  path = Path(path)
  if not path.is_dir():
    raise ValueError(f"dataset folder {path} does not exist.")
  data_file = path / "data.txt"
  if not data_file.is_file():
    raise ValueError(
      f"missing file {data_file}: a dataset folder needs data.txt, index_features.txt, index_target.txt."
    )
  features = _read_indices(path / "index_features.txt")
  target = _read_indices(path / "index_target.txt")
  if len(target) != 1:
    raise ValueError(f"{path / 'index_target.txt'}: expected one target column, got {len(target)}.")
  data = _read_matrix(data_file)
  ncols = data.shape[1]
  for file, idx in (("index_features.txt", features), ("index_target.txt", target)):
    bad = [i for i in idx if not 0 <= i < ncols]
    if bad:
      raise ValueError(
        f"{path / file}: column index {bad[0]} is out of range; data.txt has {ncols} columns (0..{ncols - 1})."
      )
  if len(set(features)) != len(features):
    raise ValueError(f"{path / 'index_features.txt'}: duplicated column index.")
  if target[0] in features:
    raise ValueError(f"{path}: the target column {target[0]} is also listed as a feature.")
  return _finalise(data[:, features], data[:, target[0]], name or path.name, str(data_file))


@dataclasses.dataclass(frozen=True)
class Table:
  """A CSV file read strictly: numeric features, an optional target and an optional id column.

  Attributes:
    x: features ``(n, d)`` float64 (NaN nowhere; checked on read).
    y: target ``(n,)`` float64, NaN where the cell is blank (only with ``blank_target="allow"``), or None.
    ids: row identifiers (the id column's text, or the 1-based data row number), unique.
    feature_names: the feature columns, in file order.
    source: the file, for messages.
    text: each row's feature cells as written in the file (stripped of surrounding blanks), so
      that they can be written back verbatim (``6.4`` stays ``6.4``, not float32's
      ``6.40000010``); for a DataFrame, the shortest text of each value.
  """

  x: np.ndarray
  y: np.ndarray | None
  ids: tuple[str, ...]
  feature_names: tuple[str, ...]
  source: str
  text: tuple[tuple[str, ...], ...] = ()


def _read_text(path: Path) -> str:
  try:
    return path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first name
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8 CSV.") from None
  except OSError as e:
    raise ValueError(f"{path}: cannot read: {e.strerror or e}.") from None


def read_table(
  path: str | os.PathLike,
  *,
  target: str | None = None,
  id_column: str | None = None,
  features: Sequence[str] | None = None,
  blank_target: str = "error",
) -> Table:
  """Read a CSV file with a header row; every error names the file, the row and the column.

  Args:
    path: the file.
    target: the label column, or None for a file without labels (a pool).
    id_column: a column of unique row identifiers (text), excluded from the features.
    features: the feature columns (default: every other column).
    blank_target: ``"error"`` (every row labelled), ``"allow"`` (blank → NaN) or ``"ignore"``
      (a target column may be present, and is then neither read nor a feature).
  """
  path = Path(path)
  rows = _csv_rows(path)
  header = _csv_header(path, rows[0])
  read_target = target if blank_target != "ignore" else None
  _require_column(path, "target", read_target, header)
  _require_column(path, "id", id_column, header)
  _check_target_not_id(path, target, id_column)
  names = _feature_names(path, header, target, id_column, features)
  cols = [header.index(n) for n in names]
  t = header.index(target) if read_target else None
  i = header.index(id_column) if id_column else None
  xs, ys, ids, texts = [], [], [], []
  for lineno, row in enumerate(rows[1:], 2):
    if not row or all(not c.strip() for c in row):
      continue
    if len(row) != len(header):
      raise ValueError(f"{path}:{lineno}: ragged row with {len(row)} values, expected {len(header)} like the header.")
    values, cells = _row_features(f"{path}:{lineno}", row, header, cols)
    xs.append(values)
    texts.append(cells)
    if t is not None:
      ys.append(_row_target(f"{path}:{lineno}", row[t].strip(), target, blank_target))
    ids.append(row[i].strip() if i is not None else str(lineno - 1))
  if not xs:
    raise ValueError(f"{path}: no data rows.")
  if i is not None:
    _check_table_ids(path, ids, id_column)
  x = np.asarray(xs, np.float64).reshape(len(xs), len(cols))
  y = np.asarray(ys, np.float64) if t is not None else None
  return Table(x, y, tuple(ids), tuple(names), str(path), tuple(texts))


def _csv_rows(path: Path) -> list[list[str]]:
  """The rows of a CSV file, the header first (a missing or empty file is refused)."""
  if not path.is_file():
    raise ValueError(f"CSV file {path} does not exist.")
  rows = [row for row in csv.reader(io.StringIO(_read_text(path), newline=""))]
  if not rows:
    raise ValueError(f"{path}: the file is empty.")
  return rows


def _csv_header(path: Path, first_row: list[str]) -> list[str]:
  """The column names of a CSV file's header row: each named, none twice."""
  header = [h.strip() for h in first_row]
  if any(not h for h in header):
    raise ValueError(f"{path}: column {header.index('') + 1} of the header has no name.")
  twice = _first_repeat(header)
  if twice is not None:
    raise ValueError(f"{path}: the header names column {twice!r} twice; give every column its own name.")
  return header


def _first_repeat(names: Sequence[str]) -> str | None:
  """The first name that stands in ``names`` a second time, or None."""
  seen = set()
  for name in names:
    if name in seen:
      return name
    seen.add(name)
  return None


def _require_column(where, what: str, name: str | None, header: list[str]) -> None:
  """A named ``what`` column (target or id) is in the header (None or ``""``: nothing to check)."""
  if name and name not in header:
    raise ValueError(f"{where}: no {what} column named {name!r}; columns are {header}.")


def _check_target_not_id(where, target: str | None, id_column: str | None) -> None:
  if target and target == id_column:
    raise ValueError(f"{where}: the target and the id column are both {target!r}.")


def _feature_names(where, header: list[str], target, id_column, features: Sequence[str] | None = None) -> list[str]:
  """The feature columns: ``features`` (each in the header), or every column but the target and the id column."""
  exclude = {target, id_column} - {None, ""}
  names = [h for h in header if h not in exclude] if features is None else list(features)
  missing = [n for n in names if n not in header]
  if missing:
    raise ValueError(f"{where}: no column named {missing[0]!r}; columns are {header}.")
  if not names:
    raise ValueError(f"{where}: no feature columns (the columns are {header}).")
  return names


def _row_features(where: str, row: list[str], header: list[str], cols: list[int]):
  """A CSV row's feature values and their cells' text; a blank or non-numeric cell is refused."""
  values, cells = [], []
  for c in cols:
    cell = row[c].strip()
    if not cell:
      raise ValueError(f"{where}: column {header[c]!r} is blank; every feature needs a value.")
    values.append(_parse_finite(cell, f"{where}, column {header[c]!r}"))
    cells.append(cell)
  return values, tuple(cells)


def _row_target(where: str, cell: str, target: str, blank_target: str) -> float:
  """A CSV row's target value (its stripped cell); blank is NaN with ``blank_target="allow"``, else refused."""
  if not cell and blank_target == "allow":
    return float("nan")
  if not cell:
    raise ValueError(f"{where}: the target {target!r} is blank; label the row or remove it.")
  return _parse_finite(cell, f"{where}, column {target!r}")


def _check_table_ids(path: Path, ids: list[str], id_column: str) -> None:
  """A CSV file's ids (one per data row): none blank, each once."""
  blank = [n for n, v in enumerate(ids) if not v]
  if blank:
    raise ValueError(f"{path}: row {blank[0] + 2} has a blank id in column {id_column!r}.")
  _check_unique_ids(path, ids, f"column {id_column!r}")


def _check_unique_ids(where, ids: list[str], where_ids: str) -> None:
  """Every id once; ``where_ids`` says where they come from (``column 'id'``, ``the index``)."""
  counts = collections.Counter(ids)
  dup = [v for v, c in counts.items() if c > 1]
  if dup:
    raise ValueError(f"{where}: id {dup[0]!r} appears {counts[dup[0]]} times in {where_ids}; ids must be unique.")


def is_frame(obj) -> bool:
  """A pandas DataFrame (checked without importing pandas, which stays optional)."""
  return hasattr(obj, "columns") and hasattr(obj, "iloc") and hasattr(obj, "index")


def is_plain_index(frame) -> bool:
  """Whether a DataFrame's index is pandas' default ``0, 1, …, n-1`` (positions, not ids)."""
  index = frame.index
  if type(index).__name__ != "RangeIndex" or index.name is not None:
    return False
  return index.start == 0 and index.step == 1


def _value_text(value) -> str:
  """The shortest text of a DataFrame cell that reads back as the same number (bools as 1/0)."""
  if isinstance(value, (bool, np.bool_)):
    return "1" if value else "0"
  return str(value)


def read_frame(
  frame,
  *,
  target: str | None = None,
  id_column: str | None = None,
  index_ids: bool = False,
  blank_target: str = "error",
  source: str = "the DataFrame",
) -> Table:
  """A pandas DataFrame as a :class:`Table`, checked like :func:`read_table`; errors name the column.

  Columns are found by name (the names as text); the features are every column but the target
  and the id column, in frame order, and must be numeric (int, float or bool dtype).

  Args:
    frame: the DataFrame.
    target, blank_target: as for :func:`read_table`.
    id_column: a column of unique row ids, or the name of the frame's index (its values as text).
    index_ids: take the ids from the index (its values as text) when ``id_column`` is None.
    source: the frame's name in messages.
  """
  header = _frame_header(frame, source)
  read_target = target if blank_target != "ignore" else None
  _require_column(source, "target", read_target, header)
  _check_target_not_id(source, target, id_column)
  id_from_index = _ids_from_index(frame, header, id_column, index_ids, source)
  names = _feature_names(source, header, target, id_column)
  n = len(frame)
  if n == 0:
    raise ValueError(f"{source}: no data rows.")
  named = id_from_index or id_column is not None
  if named:
    ids = _frame_ids(frame, header, id_column, id_from_index, source)
  else:
    ids = [str(j) for j in range(1, n + 1)]
  x = np.empty((n, len(names)), np.float64)
  text_columns = []
  for c, name in enumerate(names):
    x[:, c] = _frame_numbers(frame, header, name, "feature", id_column, source)
    _check_frame_values(x[:, c], name, False, target, ids, named, source)
    text_columns.append([_value_text(v) for v in frame.iloc[:, header.index(name)].to_numpy()])
  y = None
  if read_target:
    y = _frame_numbers(frame, header, target, "target", id_column, source)
    _check_frame_values(y, target, blank_target == "allow", target, ids, named, source)
  texts = tuple(zip(*text_columns, strict=True))
  return Table(x, y, tuple(ids), tuple(names), source, texts)


def _frame_header(frame, source: str) -> list[str]:
  """A DataFrame's column names as text: one header level, each named, none twice."""
  columns = frame.columns
  if getattr(columns, "nlevels", 1) > 1:
    raise ValueError(f"{source} has several header levels (a MultiIndex); flatten the column names first.")
  header = [str(c) for c in columns]
  if any(not h.strip() for h in header):
    raise ValueError(f"{source}: column {[h.strip() for h in header].index('') + 1} has no name.")
  twice = _first_repeat(header)
  if twice is not None:
    raise ValueError(f"{source} names column {twice!r} twice; give every column its own name.")
  return header


def _ids_from_index(frame, header: list[str], id_column: str | None, index_ids: bool, source: str) -> bool:
  """Whether a DataFrame's ids are its index values: ``id_column`` names the index, or ``index_ids``."""
  if id_column is not None and id_column not in header:
    if frame.index.name is not None and str(frame.index.name) == id_column:
      return True
    raise ValueError(
      f"{source}: no id column named {id_column!r} (and the index is "
      f"{'unnamed' if frame.index.name is None else f'named {str(frame.index.name)!r}'}); columns are {header}."
    )
  return id_column is None and bool(index_ids)


def _frame_ids(frame, header: list[str], id_column: str | None, id_from_index: bool, source: str) -> list[str]:
  """A DataFrame's ids as text, from its index or its id column: none blank (or NaN), each once."""
  where_ids = "the index" if id_from_index else f"column {id_column!r}"
  values = frame.index if id_from_index else frame.iloc[:, header.index(id_column)]
  blank = np.flatnonzero(np.asarray(values.isna()))
  ids = [str(v).strip() for v in values.tolist()]
  blank = [int(b) for b in blank] + [j for j, v in enumerate(ids) if not v]
  if blank:
    raise ValueError(f"{source}: data row {min(blank) + 1} has a blank id in {where_ids}.")
  _check_unique_ids(source, ids, where_ids)
  return ids


def _frame_numbers(frame, header: list[str], name: str, what: str, id_column: str | None, source: str) -> np.ndarray:
  """A DataFrame column (``what``: ``"feature"`` or ``"target"``) as float64; a non-numeric dtype is refused."""
  column = frame.iloc[:, header.index(name)]
  kind = getattr(column.dtype, "kind", "O")
  if kind not in "biuf":
    sample = next((v for v in column.tolist() if not isinstance(v, (int, float, np.number))), None)
    example = f", e.g. {sample!r}" if sample is not None else ""
    hint = f", or pass id_column={name!r} if it holds row ids" if what == "feature" and id_column is None else ""
    raise ValueError(
      f"{source}: {what} column {name!r} is not numeric (dtype {column.dtype}{example}); every {what} must be "
      f"a number: convert the column or drop it{hint}."
    )
  try:
    return column.to_numpy(dtype=np.float64, na_value=np.nan)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{source}: {what} column {name!r} is not numeric ({e}).") from None


def _check_frame_values(values: np.ndarray, name: str, allow_nan: bool, target, ids, named: bool, source: str) -> None:
  """A DataFrame column's values: finite (NaN too if ``allow_nan``) and within float32's range.

  The first bad row is named by its id (``named``) or its 1-based data row number.
  """
  bad = ~np.isfinite(values) & ~(np.isnan(values) if allow_nan else False)
  outside = _outside_float32(values)
  if bad.any():
    j = int(np.flatnonzero(bad)[0])
    fix = "label the row or remove it" if name == target else "every feature needs a finite value"
    what = "blank (NaN)" if np.isnan(values[j]) else f"{float(values[j])!r}"
    raise ValueError(f"{source}: {_row_name(ids, named, j)}, column {name!r} is {what}; {fix}.")
  if outside.any():
    j = int(np.flatnonzero(outside)[0])
    raise ValueError(f"{source}: {_row_name(ids, named, j)}, column {name!r}: {float(values[j])!r} {_OUTSIDE_FLOAT32}")


def _row_name(ids, named: bool, j: int) -> str:
  return f"row {ids[j]!r}" if named else f"data row {j + 1}"


_FLOAT32_MAX = float(np.finfo(np.float32).max)
_OUTSIDE_FLOAT32 = (
  "is outside the range curiojax computes in (float32: about 1e-45 to 3.4e38 in magnitude); "
  "rescale the column (e.g. other units)."
)


def _outside_float32(values):
  """Where finite values lie beyond float32's range: above its maximum, or nonzero but rounding to 0."""
  with np.errstate(over="ignore", under="ignore"):
    small = (values != 0) & (np.float32(values) == 0)
  return np.isfinite(values) & ((np.abs(values) > _FLOAT32_MAX) | small)


def _parse_finite(token: str, where: str) -> float:
  """A finite number that float32 (what the model computes in) holds: not inf, not 0 by underflow."""
  value = _parse_number(token, where)
  if not np.isfinite(value):
    raise ValueError(f"{where}: {token!r} is not a finite number.")
  if _outside_float32(value):
    raise ValueError(f"{where}: {token!r} {_OUTSIDE_FLOAT32}")
  return value


def load_csv(path: str | os.PathLike, target: str, features: Sequence[str] | None = None) -> Dataset:
  """Load a CSV file with a header row; ``target`` names the label column."""
  if not target:
    raise ValueError(f"{path}: name the target column (config field 'target').")
  table = read_table(path, target=target, features=features)
  return _finalise(table.x, table.y, Path(path).stem, table.source, table.feature_names)


def load_dataset(spec: str | os.PathLike, target: str = "") -> Dataset:
  """A dataset from a name (``"concrete"``), a UCI-style folder, or a CSV file + target column."""
  spec = str(spec)
  if spec in EMBEDDED:
    return load_uci_folder(embedded_path(spec), name=spec)
  path = Path(spec)
  if path.is_dir():
    return load_uci_folder(path)
  if path.suffix.lower() == ".csv":
    return load_csv(path, target)
  if not path.exists():
    raise ValueError(
      f"dataset {spec!r} not found: give an embedded name {list(EMBEDDED)}, a folder with data.txt, or a .csv file."
    )
  raise ValueError(f"dataset {spec!r}: expected a folder with data.txt or a .csv file.")

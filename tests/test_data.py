"""Dataset loaders and oracles: values against np.loadtxt / csv, and every bad-input error."""

import numpy as np
import pytest

from curiojax.active.data import ArrayOracle, embedded_path, load_dataset, load_uci_folder


def _folder(tmp_path, rows, features=(0, 1), target=(2,)):
  d = tmp_path / "ds"
  d.mkdir()
  (d / "data.txt").write_text("\n".join(rows) + "\n")
  (d / "index_features.txt").write_text("\n".join(map(str, features)) + "\n")
  (d / "index_target.txt").write_text("\n".join(map(str, target)) + "\n")
  return d


def test_embedded_concrete_matches_loadtxt():
  ds = load_dataset("concrete")
  raw = np.loadtxt(embedded_path("concrete") / "data.txt")
  assert ds.x.shape == (1030, 8) and ds.y.shape == (1030,)
  np.testing.assert_array_equal(ds.x, raw[:, :8].astype(np.float32))
  np.testing.assert_array_equal(ds.y, raw[:, 8].astype(np.float32))
  assert ds.x.dtype == np.float32
  assert (embedded_path("concrete") / "README.md").read_text().count("CC BY 4.0") >= 1


def test_folder_selects_feature_and_target_columns(tmp_path):
  d = _folder(tmp_path, ["1 2 3 4", "5 6 7 8", "9 10 11 12"], features=(3, 0), target=(1,))
  ds = load_uci_folder(d)
  np.testing.assert_array_equal(ds.x, [[4, 1], [8, 5], [12, 9]])
  np.testing.assert_array_equal(ds.y, [2, 6, 10])
  assert load_dataset(str(d)).name == "ds"


def test_csv_named_target(tmp_path):
  p = tmp_path / "d.csv"
  p.write_text("a,y,b\n1,10,2\n3,30,4\n5,50,6\n")
  ds = load_dataset(p, target="y")
  np.testing.assert_array_equal(ds.x, [[1, 2], [3, 4], [5, 6]])
  np.testing.assert_array_equal(ds.y, [10, 30, 50])
  assert ds.feature_names == ("a", "b")


def test_array_oracle_returns_held_back_labels():
  y = np.arange(10.0) * 3
  oracle = ArrayOracle(y)
  np.testing.assert_array_equal(oracle(np.array([7, 2])), [21.0, 6.0])
  with pytest.raises(ValueError, match="outside"):
    oracle(np.array([10]))


@pytest.mark.parametrize(
  "rows, kwargs, match",
  [
    (["1 2 3", "4 5", "7 8 9"], {}, "ragged row"),
    (["1 2 3", "4 x 6"], {}, "non-numeric value 'x'"),
    (["1 2 3", "4 5 nan"], {}, "target value.*NaN"),
    (["1 2 3", "4 5 6"], {"target": (3,)}, "out of range"),
    (["1 2 3", "4 5 6"], {"features": (0, 7)}, "out of range"),
    (["1 2 3", "4 5 6"], {"target": (0,), "features": (0, 1)}, "also listed as a feature"),
    (["1 inf 3", "4 5 6"], {}, "NaN or infinite features"),
  ],
)
def test_folder_bad_input(tmp_path, rows, kwargs, match):
  d = _folder(tmp_path, rows, **kwargs)
  with pytest.raises(ValueError, match=match):
    load_dataset(str(d))


def test_missing_files(tmp_path):
  with pytest.raises(ValueError, match="not found"):
    load_dataset(str(tmp_path / "nope"))
  d = _folder(tmp_path, ["1 2 3", "4 5 6"])
  (d / "index_target.txt").unlink()
  with pytest.raises(ValueError, match="missing file.*index_target"):
    load_dataset(str(d))
  (d / "data.txt").unlink()
  with pytest.raises(ValueError, match="missing file.*data.txt"):
    load_dataset(str(d))


@pytest.mark.parametrize(
  "text, target, match",
  [
    ("a,y\n1,2\n3\n", "y", "ragged row"),
    ("a,y\n1,2\nq,4\n", "y", "non-numeric"),
    ("a,y\n1,2\n3,\n", "y", "target 'y' is blank"),
    ("a,y\n1,2\n3,4\n", "z", "no target column named 'z'"),
    ("a,y\n1,2\n3,4\n", "", "name the target column"),
    ("a,a,y\n1,2,3\n4,5,6\n", "y", "names column 'a' twice"),
    ("a,b,y\n1,,3\n4,5,6\n", "y", "column 'b' is blank"),
    ("a,y\n1,inf\n4,5\n", "y", "not a finite number"),
    ("a,,y\n1,2,3\n", "y", "column 2 of the header has no name"),
    ("a,y\n", "y", "no data rows"),
    ("", "y", "empty"),
  ],
)
def test_csv_bad_input(tmp_path, text, target, match):
  p = tmp_path / "d.csv"
  p.write_text(text)
  with pytest.raises(ValueError, match=match):
    load_dataset(p, target=target)


def test_csv_byte_order_mark_and_encoding(tmp_path):
  p = tmp_path / "bom.csv"
  p.write_bytes("\ufeffy,a\n1,2\n3,4\n".encode())  # Excel's "CSV UTF-8"
  ds = load_dataset(p, target="y")
  np.testing.assert_array_equal(ds.y, [1, 3])
  latin = tmp_path / "latin.csv"
  latin.write_bytes("a,y,caf\xe9\n1,2,3\n".encode("latin-1"))
  with pytest.raises(ValueError, match="latin.csv: not UTF-8"):
    load_dataset(latin, target="y")


def test_read_table_keeps_each_feature_cells_text(tmp_path):
  """Issue 22: suggestions.csv wrote 6.40999985 where the pool has 6.4; the reader keeps the cell's own text."""
  from curiojax.active.data import read_table

  p = tmp_path / "pool.csv"
  p.write_text("id,a,b,y\nr1, 6.4 ,1e-3,2\nr2,-0.10,3,\n")
  table = read_table(p, target="y", id_column="id", blank_target="allow")
  assert table.text == (("6.4", "1e-3"), ("-0.10", "3"))
  assert table.x[0, 0] == 6.4 and table.feature_names == ("a", "b")


def test_read_frame_by_name_with_ids_from_the_index_or_a_column():
  pd = pytest.importorskip("pandas")
  from curiojax.active.data import is_plain_index, read_frame

  frame = pd.DataFrame(
    {"a": [6.4, 0.1], "n": [3, 4], "flag": [True, False], "y": [1.0, 2.0]}, index=pd.Index(["u", "v"], name="sid")
  )
  table = read_frame(frame, target="y", index_ids=True)
  assert table.ids == ("u", "v") and table.feature_names == ("a", "n", "flag")
  assert table.text == (("6.4", "3", "1"), ("0.1", "4", "0"))
  np.testing.assert_array_equal(table.y, [1, 2])
  assert read_frame(frame, target="y", id_column="sid").ids == ("u", "v")  # id_column may name the index
  plain = frame.reset_index()
  assert is_plain_index(plain) and not is_plain_index(frame) and not is_plain_index(plain.iloc[1:])
  assert read_frame(plain, target="y", id_column="sid").ids == ("u", "v")
  assert read_frame(plain.drop(columns="sid"), target="y").ids == ("1", "2")  # no ids: data row numbers


@pytest.mark.parametrize(
  "edit, kwargs, match",
  [
    (lambda f: f.drop(columns="y"), {}, "no target column named 'y'"),
    (lambda f: f.assign(a=["x", "1"]), {}, "feature column 'a' is not numeric.*'x'"),
    (lambda f: f.assign(y=["1", "2"]), {}, "target column 'y' is not numeric"),
    (lambda f: f.set_axis(["u", "u"]), {}, "id 'u' appears 2 times in the index"),
    (lambda f: f, {"id_column": "key"}, "no id column named 'key'"),
    (lambda f: f.assign(a=[1.0, float("nan")]), {}, "row 'v', column 'a' is blank"),
    (lambda f: f.assign(a=[1.0, 1e39]), {}, "column 'a': 1e\\+39 is outside the range"),
    (lambda f: f.set_axis(["a", "a", "y"], axis=1), {}, "names column 'a' twice"),
  ],
)
def test_read_frame_bad_input_names_the_column(edit, kwargs, match):
  pd = pytest.importorskip("pandas")
  from curiojax.active.data import read_frame

  frame = pd.DataFrame({"a": [6.4, 0.1], "b": [3, 4], "y": [1.0, 2.0]}, index=pd.Index(["u", "v"]))
  with pytest.raises(ValueError, match=match):
    read_frame(edit(frame), target="y", index_ids=True, **kwargs)

"""The README's `curiojax suggest` example: the command as printed runs, and prints what the README shows.

Numbers (scores, predictions, error bars) depend on the training, so they are compared as numbers
of the same form; every word, column and line around them must be the README's.
"""

import re
from pathlib import Path

import numpy as np

from curiojax.active.data import load_dataset
from curiojax.cli import main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--config.train.epochs=15", "--config.model.hidden_sizes=8", "--config.train.minibatch_size=16"]
NUMBER = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


def _example() -> tuple[list[str], list[str]]:
  """The README's first `curiojax suggest` command (as argv) and the output block after it."""
  text = (ROOT / "README.md").read_text()
  command = re.search(r"^curiojax (suggest --labelled .*)$", text, re.M)
  output = re.search(r"```\n(rank .*?)```", text[command.end() :], re.S)
  return command.group(1).split(), output.group(1).rstrip("\n").splitlines()


def _pattern(text: str) -> re.Pattern:
  """``text`` with its numbers and ids free and any run of spaces or line breaks as any other
  (the README wraps the long lines the command prints on one), every word literal."""
  words = re.split(rf"({NUMBER}|c\d+)", " ".join(text.split()))
  literal = lambda part: r"\s+".join(re.escape(w) for w in part.split(" "))
  return re.compile("".join(rf"(?:{NUMBER}|c\d+)" if i % 2 else literal(p) for i, p in enumerate(words)) + "$")


def test_the_readmes_suggest_example_prints_what_the_readme_shows(tmp_path, monkeypatch, capsys):
  argv, shown = _example()
  ds = load_dataset("concrete")
  names = [f"f{j}" for j in range(ds.x.shape[1])]
  rng = np.random.default_rng(0)
  order = rng.permutation(len(ds.x))
  rows = lambda idx, y: [[f"c{i}", *(f"{v:g}" for v in ds.x[i]), *([f"{ds.y[i]:g}"] if y else [])] for i in idx]
  write = lambda path, header, table: path.write_text("\n".join(",".join(r) for r in [header, *table]) + "\n")
  write(tmp_path / "labelled.csv", ["id", *names, "strength"], rows(order[:30], True))
  write(tmp_path / "pool.csv", ["id", *names], rows(order[30:400], False))
  monkeypatch.chdir(tmp_path)
  assert main([*argv, *FAST]) == 0
  printed = " ".join(capsys.readouterr().out.split())
  assert _pattern("\n".join(shown)).match(printed), ("\n".join(shown), printed)

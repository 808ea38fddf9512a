"""Tabulate saved benchmark runs side by side: mean Δ log RMSE to random per dataset (issue 13's tuning).

Each column is ``RUN:STRATEGY[:LABEL]``: a results directory of ``benchmarks/active_learning/main.py``
(``--config.results_dir``) and a strategy saved there; the paired random of the same split is
read from the same directory. Prints a markdown table (mean over the splits; ``—`` where a
run lacks the dataset), then the means over the four exact-protocol datasets and over all six.

Example (the candidates on the tuning splits)::

  python benchmarks/active_learning/compare.py --splits 100,101 \\
    benchmarks/results/tuning_candidates:lcmd benchmarks/results/tuning_candidates:tangent_coverage
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # repository root

from benchmarks.active_learning.summary import DATASETS, EXACT, metric  # noqa: E402,F401  (the benchmark's own)


def load(run: str, dataset: str, split: int, strategy: str) -> dict:
  with open(os.path.join(run, dataset, f"split{split}_{strategy}.json")) as f:
    return json.load(f)


def deltas(run: str, dataset: str, strategy: str, splits) -> list[float] | None:
  """Per split, the metric minus random's on the same split; None if a file is missing."""
  try:
    return [
      metric(load(run, dataset, k, strategy)["rmse"]) - metric(load(run, dataset, k, "random")["rmse"]) for k in splits
    ]
  except FileNotFoundError:
    return None


def table(columns: list[tuple[str, str, str]], splits) -> str:
  """Markdown table of mean Δ per dataset and the two means, for ``(run, strategy, label)`` columns."""
  lines = ["| dataset | " + " | ".join(c[2] for c in columns) + " |", "|---|" + "---|" * len(columns)]
  means: dict[str, dict[str, float]] = {c[2]: {} for c in columns}
  for ds in DATASETS:
    cells = []
    for run, strategy, label in columns:
      d = deltas(run, ds, strategy, splits)
      if d is None:
        cells.append("—")
        continue
      means[label][ds] = float(np.mean(d))
      cells.append(f"{means[label][ds]:+.3f}")
    lines.append(f"| {ds} | " + " | ".join(cells) + " |")
  for name, subset in (("mean, exact (4)", EXACT), ("mean, all 6", DATASETS)):
    cells = []
    for _, _, label in columns:
      have = [means[label][ds] for ds in subset if ds in means[label]]
      cells.append(f"{np.mean(have):+.3f}" if len(have) == len(subset) else "—")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("columns", nargs="+", help="RUN:STRATEGY[:LABEL]")
  parser.add_argument("--splits", default="100,101")
  args = parser.parse_args(argv)
  columns = []
  for spec in args.columns:
    parts = spec.split(":")
    if len(parts) not in (2, 3):
      raise SystemExit(f"a column is RUN:STRATEGY[:LABEL], got {spec!r}")
    columns.append((parts[0], parts[1], parts[2] if len(parts) == 3 else parts[1]))
  print(table(columns, [int(k) for k in args.splits.split(",")]))


if __name__ == "__main__":
  main()

"""Does the tangent's accuracy change what curiosity is worth? (issue 13, tuning splits 100-101).

Tabulates two runs of ``benchmarks/active_learning/main.py`` saved under
``benchmarks/results/tuning_tangent_accuracy/``: ``certified/`` (the protocol's tangent, at most 50 CG
products, relative residuals ≤ 1e-3; with random and lcmd) and ``cg2/`` (the same with
``--config.train.finish_maxiter=2``: residuals 0.01-0.45, medians 0.14-0.25 per dataset, mostly
above the tolerance 0.1). Prints the mean Δ log RMSE to random over the two splits per dataset, the tangents'
residuals, and the means over the exact-protocol datasets and over all six.

Reproduce (about 20 minutes on 2 cores, two processes)::

  python benchmarks/active_learning/main.py \\
    --config benchmarks/active_learning/configs/benchmark.py --config.splits="(100,101)" \\
    --config.strategies='("random","lcmd","curiosity","curiosity_diverse")' \\
    --config.results_dir=benchmarks/results/tuning_tangent_accuracy/certified
  python -W ignore benchmarks/active_learning/main.py \\
    --config benchmarks/active_learning/configs/benchmark.py --config.splits="(100,101)" \\
    --config.train.finish_maxiter=2 --config.strategies='("curiosity","curiosity_diverse")' \\
    --config.results_dir=benchmarks/results/tuning_tangent_accuracy/cg2
  python benchmarks/active_learning/tangent_accuracy.py
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # repository root

from benchmarks.active_learning.compare import DATASETS, load  # noqa: E402  (the same reader and dataset order)
from benchmarks.active_learning.main import metric  # noqa: E402  (the benchmark's own metric)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "benchmarks", "results", "tuning_tangent_accuracy")
SPLITS = (100, 101)
COLUMNS = (
  ("lcmd", "certified", "lcmd"),
  ("curiosity, certified", "certified", "curiosity"),
  ("curiosity, 2 CG", "cg2", "curiosity"),
  ("curiosity_diverse, certified", "certified", "curiosity_diverse"),
  ("curiosity_diverse, 2 CG", "cg2", "curiosity_diverse"),
)


def _load(run, dataset, split, strategy):
  return load(os.path.join(HERE, run), dataset, split, strategy)


def main():
  delta = {}
  print("| dataset | " + " | ".join(c[0] for c in COLUMNS) + " | residuals, 2 CG | residuals, certified |")
  print("|---|" + "---|" * (len(COLUMNS) + 2))
  for ds in DATASETS:
    base = [metric(_load("certified", ds, k, "random")["rmse"]) for k in SPLITS]
    delta[ds] = [
      float(np.mean([metric(_load(run, ds, k, s)["rmse"]) - b for k, b in zip(SPLITS, base, strict=True)]))
      for _, run, s in COLUMNS
    ]
    res = {
      run: [
        r for k in SPLITS for s in ("curiosity", "curiosity_diverse") for r in _load(run, ds, k, s)["tangent_residual"]
      ]
      for run in ("cg2", "certified")
    }
    cells = " | ".join(f"{v:+.3f}" for v in delta[ds])
    print(
      f"| {ds} | {cells} | {np.min(res['cg2']):.2f}–{np.max(res['cg2']):.2f} (median {np.median(res['cg2']):.2f}) "
      f"| ≤ {np.max(res['certified']):.1e} |"
    )
  for label, subset in (("mean, exact protocol (4)", DATASETS[:4]), ("mean, all 6", DATASETS)):
    means = np.mean([delta[ds] for ds in subset], axis=0)
    print(f"| *{label}* | " + " | ".join(f"{v:+.3f}" for v in means) + " | | |")


if __name__ == "__main__":
  main()

"""The reference set (issue 24): Holzmüller et al.'s methods and our transductive BAIT, splits 0–4 of the six datasets.

``python benchmarks/active_learning/main.py --config benchmarks/active_learning/configs/reference_set.py``

The protocol is ``configs/benchmark.py``'s; the report gives RMSE, q99 and max error against random and LCMD.
"""

from benchmarks.active_learning.configs.benchmark import get_config as _full

STRATEGIES = (
  "random",
  "lcmd",
  "bait",
  "maxdet",
  "maxdist",
  "bait_validation",
  "bait_adjoint",
  "badge",  # k-means++
  "variance",  # top-k
)


def get_config():
  c = _full()
  c.splits = (0, 1, 2, 3, 4)
  c.strategies = STRATEGIES
  c.strategy_options = {k: v for k, v in c.strategy_options.items() if k in STRATEGIES}
  c.results_dir = "benchmarks/results/reference_set"
  return c

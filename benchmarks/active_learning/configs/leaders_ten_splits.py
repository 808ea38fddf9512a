"""The verdict run (issue 24): the leaders and LCMD on splits 0–9 of all six datasets, from the repository root.

``python benchmarks/active_learning/main.py --config benchmarks/active_learning/configs/leaders_ten_splits.py``

The report ends with each strategy's verdict against LCMD (``benchmarks/active_learning/verdict.py``):
the default changes only if a candidate leads LCMD by at least 0.01 in mean log RMSE with a paired
se of at most 0.005 and is not worse on q99. The protocol is ``configs/benchmark.py``'s.
"""

from benchmarks.active_learning.configs.benchmark import get_config as _full

# the rule compares with lcmd only; random's splits 0-4 are in the main table (run 2026-12-03, docs/benchmark.md)
STRATEGIES = ("lcmd", "validation_coverage", "validation_diverse")


def get_config():
  c = _full()
  c.splits = tuple(range(10))
  c.strategies = STRATEGIES
  c.strategy_options = {k: v for k, v in c.strategy_options.items() if k in STRATEGIES}
  c.results_dir = "benchmarks/results/verdict"
  return c

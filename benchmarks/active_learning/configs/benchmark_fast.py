"""CI smoke benchmark (< 60 s), from the repository root.

``python benchmarks/active_learning/main.py --config benchmarks/active_learning/configs/benchmark_fast.py``
"""

from benchmarks.active_learning.configs.benchmark import get_config as _full


def get_config():
  c = _full()
  c.fast = True
  c.results_dir = "/tmp/curiojax_bench_fast"
  return c

"""CI smoke benchmark: ``python benchmarks/active_learning.py --config configs/benchmark_fast.py`` (< 60 s)."""

from configs.benchmark import get_config as _full


def get_config():
  c = _full()
  c.fast = True
  c.results_dir = "/tmp/curiojax_bench_fast"
  return c

"""Benchmark config (issue 6), from the repository root:
``python benchmarks/active_learning/main.py --config benchmarks/active_learning/configs/benchmark.py``.

``--config.fast=True`` is the CI smoke run (one split of concrete, tiny pool/network, 2 rounds);
``--config.datasets='("../shared/data/uci/concrete",)'`` etc. restrict the datasets.
"""

import os

import ml_collections

UCI = os.environ.get("CURIOJAX_UCI", "../shared/data/uci")  # relative to the current directory


def get_config():
  c = ml_collections.ConfigDict()
  c.fast = False
  c.report_only = False  # True: tabulate the saved results only
  # any folder in the UCI layout, or "friedman1" (generated into friedman_dir on first use)
  c.datasets = tuple(
    os.path.join(UCI, d) for d in ("concrete", "energy", "power-plant", "wine-quality-red", "yacht")
  ) + ("friedman1",)
  c.friedman_dir = os.path.expanduser("~/.cache/curiojax/friedman1")
  c.friedman_rows = 25_000
  c.max_rows = 0  # 0: all rows
  c.splits = (0, 1, 2, 3, 4)
  c.strategies = (
    "random",
    "variance",
    "emcm",
    "badge",
    "lcmd",
    "curiosity",
    "curiosity_diverse",
    # issue 13's candidates
    "tangent_coverage",
    "validation_diverse",
    "validation_influence",
    "group_curiosity",
    "validation_coverage",  # second stop: tangent_coverage x validation_diverse (β 1, γ 0.25 as its parents)
  )
  # γ and β chosen on splits 100-101 of all six datasets, never on 0-4 (docs/benchmark.md)
  c.strategy_kwargs = ml_collections.ConfigDict(
    {"curiosity_diverse": {"gamma": 0.25}, "validation_diverse": {"gamma": 0.25}, "tangent_coverage": {"beta": 1.0}}
  )
  # protocol
  c.n_valid, c.n_initial, c.max_pool = 256, 64, 20_000
  c.rounds, c.batch_size = 12, 32
  # model and training
  c.hidden, c.sigma_w, c.sigma_b = (512, 512), 0.2, 0.2
  c.epochs, c.train_batch, c.lr = 256, 256, 0.375
  # post-hoc regularity tangent (Gauss-Newton, L2 strength, CG iterations)
  c.tangent_strength, c.tangent_maxiter = 1e-3, 50
  c.results_dir = "benchmarks/results/active_learning"
  return c

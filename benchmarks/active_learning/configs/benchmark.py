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
  c.strategy_options = ml_collections.ConfigDict(
    {"curiosity_diverse": {"gamma": 0.25}, "validation_diverse": {"gamma": 0.25}, "tangent_coverage": {"beta": 1.0}}
  )
  # protocol
  c.n_valid, c.n_initial, c.max_pool = 256, 64, 20_000
  c.rounds, c.batch_size = 12, 32
  # the learner's options, one to one (curiojax.LearnerOptions: strength, model, train):
  # the post-hoc regularity tangent's L2 strength, an NTK-parameterised MLP, and bmdal_reg's training
  c.strength = 1e-3
  c.model = ml_collections.ConfigDict({"name": "ntk_mlp", "hidden_sizes": (512, 512)})
  c.sigma_w, c.sigma_b = 0.2, 0.2  # the NTK MLP's scales (curiojax.active.models.ntk_mlp)
  c.train = ml_collections.ConfigDict(
    {
      "epochs": 256,
      "learning_rate": 0.375,
      "minibatch_size": 256,
      "learning_rate_schedule": "linear_decay",
      "drop_last": True,
      "regularised_training": False,
      "restore_best": True,
      "damping": 0.0,
      "curvature": "gauss_newton",
      "finish_maxiter": 50,  # CG products of the tangent's solve
    }
  )
  c.results_dir = "benchmarks/results/active_learning"
  return c

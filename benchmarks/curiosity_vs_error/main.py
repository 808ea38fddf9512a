"""What does the post-hoc curiosity score rank? Rank correlations on a round-0 benchmark model.

For each dataset (UCI-layout folder or ``friedman1``) and a non-test split (default 100), fit
the round-0 model of ``benchmarks/active_learning/main.py`` on the 64 initial labels (its learner,
with the protocol's options, so the tangent ``τ = −(G + sI)⁻¹θ*`` is solved at the restored
parameters) and print Spearman correlations over the pool between

- ``c = (J_xτ)²`` (the unlabelled curiosity score, up to σ²) and the squared prediction ``f(x)²``;
- ``c`` and the true squared error ``(f(x) − y)²``, next to the Laplace variance's correlation;
- ``top32``: mean squared error of the 32 top-scored points / the pool's mean.

Usage: ``python benchmarks/curiosity_vs_error/main.py [--split 100] [--fast] [dataset ...]``
(default datasets: concrete, power-plant, wine-quality-red and friedman1; ``--fast``: the CI
smoke settings of ``benchmarks/active_learning/configs/benchmark_fast.py``, a tiny network).
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repository root

from benchmarks.active_learning import main as bm  # noqa: E402
from benchmarks.active_learning.configs.benchmark import get_config  # noqa: E402
from curiojax.scoring.scores import curiosity_scores  # noqa: E402
from curiojax.strategies import SelectionContext, SketchOptions, kernels  # noqa: E402


def spearman(a, b):
  ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
  return float(np.corrcoef(ra, rb)[0, 1])


def top32(score, err2):
  return err2[np.argsort(-score)[:32]].mean() / err2.mean()


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("datasets", nargs="*", default=["concrete", "power-plant", "wine-quality-red", "friedman1"])
  parser.add_argument("--split", type=int, default=100)
  parser.add_argument("--uci", default=os.environ.get("CURIOJAX_UCI", "../shared/data/uci"))
  parser.add_argument("--fast", action="store_true")
  args = parser.parse_args(argv)
  cfg = bm.fast_config(get_config()) if args.fast else get_config()
  print(
    f"{'dataset':18s} {'pool':>6s} {'ρ(c, f²)':>9s} {'ρ(c, err²)':>11s} {'ρ(var, err²)':>13s} "
    f"{'top32 c':>8s} {'top32 var':>10s}"
  )
  for name in args.datasets:
    if name == "friedman1":
      folder = os.path.expanduser("~/.cache/curiojax/friedman1")
      if not os.path.isdir(folder):
        bm.write_friedman1(folder)
    else:
      folder = name if os.path.isdir(name) else os.path.join(args.uci, name)
    x, y = bm.load_uci_folder(folder)
    split = bm.make_split(x, y, args.split, n_valid=cfg.n_valid, n_initial=cfg.n_initial, max_pool=cfg.max_pool)
    learner = bm.split_learner(cfg, split, "curiosity")
    fit = bm.initial_fit(learner, split, seed=args.split)
    model, params, tangent = learner.model.model_fn, fit.result.params, fit.result.tangent
    f = np.asarray(model(params, split.x_pool))
    err2 = (f - split.y_pool) ** 2
    c = np.asarray(curiosity_scores(model, params, tangent, jnp.asarray(split.x_pool), heuristic="jvp")) ** 2
    c = c.reshape(-1)
    ctx = SelectionContext(model, params, None, split.x_initial, split.y_initial, split.x_pool, jax.random.key(0))
    var = np.asarray(kernels.posterior_variance(*kernels.sketched_features(ctx, SketchOptions()), 0.01)[0])[: len(f)]
    print(
      f"{os.path.basename(folder):18s} {len(f):6d} {spearman(c, f**2):+9.2f} {spearman(c, err2):+11.2f} "
      f"{spearman(var, err2):+13.2f} {top32(c, err2):8.2f} {top32(var, err2):10.2f}"
    )


if __name__ == "__main__":
  main()

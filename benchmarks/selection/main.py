"""Selection-step speed on a 20,000-point pool with the benchmark's 2×512 network (issue 13).

A selection step is what happens between two fits in ``benchmarks/active_learning/main.py``'s last
round: the tangent's solve on the labelled set (at most 50 conjugate-gradient products, as the
protocol's ``train.finish_maxiter``), the sketched gradient features of pool and labelled points,
J_xτ over the pool (separately, and in the features' pass as the tangent strategies take it), the
greedy batch choice (LCMD's labelled distances and picks)
and the transfers to the host. Each part is timed on its own (median of ``--reps`` runs after a
warm-up that compiles), then the whole step of each strategy through ``select_batch`` with the
tangent solve added, and the first call's compilation.

Run: ``python benchmarks/selection/main.py`` (``--pool N``, ``--labelled N``, ``--reps N``;
``--strategies a,b`` for the whole steps of some strategies only). Target: ≤ 0.3 s per step on
2 CPU cores. The features have the strategies' default ``SKETCH_DIM`` (512) dimensions; the last
rows repeat lcmd and tangent_coverage with other dimensions (``--other-dims``, default 256:
faster, but LCMD labelled worse with it, docs/benchmark.md).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import curiojax
from curiojax.active.models import NTKMLP
from curiojax.scoring.features import gradient_sketch, sketch_and_jvp
from curiojax.strategies import get_strategy, needs_of
from curiojax.strategies.kernels import LABELLED_BUCKET, POOL_BUCKET, SKETCH_DIM, lcmd, pad_rows_to
from curiojax.tangent.curvature import TangentSystem
from curiojax.tangent.operator import TangentOperator

TANGENT_STRATEGIES = (
  "curiosity",
  "curiosity_diverse",
  "tangent_coverage",
  "validation_influence",
  "validation_diverse",
  "validation_coverage",
  "group_curiosity",
)
# Holzmüller et al.'s other methods and the transductive BAITs (curiojax.strategies.reference)
REFERENCE_STRATEGIES = ("maxdist", "maxdet", "bait", "bait_validation", "bait_adjoint")


def timeit(fn, reps):
  t0 = time.perf_counter()
  jax.block_until_ready(fn())  # warm-up: compiles
  first = time.perf_counter() - t0
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times), first


def product_rate(rows, inner, cols, dtype, reps):
  """GFLOP/s of a ``rows × inner × cols`` product in chunks of up to 2048 rows, its input made in the same computation
  (as the sketch's are), with float32 accumulation."""
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.normal(size=(rows, inner)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(inner, cols)), jnp.float32)
  chunk = math.gcd(rows, 2048)
  mm = lambda c, b: jnp.matmul(jax.nn.relu(c).astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)
  f = jax.jit(lambda a, b: jax.lax.map(lambda c: mm(c, b), a.reshape(-1, chunk, inner)))
  t, _ = timeit(lambda: f(a, b), reps)
  return 2 * rows * inner * cols / 1e9 / t


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pool", type=int, default=20_000)
  parser.add_argument("--labelled", type=int, default=448)  # 64 + 12 rounds × 32
  parser.add_argument("--features", type=int, default=8)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--dim", type=int, default=SKETCH_DIM)
  parser.add_argument("--strategies", default=",".join(("random", "lcmd", *TANGENT_STRATEGIES, *REFERENCE_STRATEGIES)))
  parser.add_argument("--other-dims", type=lambda s: [int(d) for d in s.split(",") if d], default=[256])
  args = parser.parse_args(argv)

  model = NTKMLP((512, 512))
  rng = np.random.default_rng(0)
  x_pool = rng.normal(size=(args.pool, args.features)).astype(np.float32)
  x_lab = rng.normal(size=(args.labelled, args.features)).astype(np.float32)
  y_lab = np.sin(x_lab[:, 0]).astype(np.float32)
  params = model.init(jax.random.key(0), args.features)
  loss = curiojax.prediction_loss(model)
  batch = dict(x=jnp.asarray(x_lab), y=jnp.asarray(y_lab))
  key = jax.random.key(1)
  print(f"{jax.device_count()} {jax.devices()[0].platform} device(s); pool {args.pool}, labelled {args.labelled}, ")
  n_params = sum(p.size for p in jax.tree.leaves(params))
  print(f"2×512 NTK MLP ({n_params:,} parameters), batch {args.batch}, sketch dim {args.dim}\n")

  solve = jax.jit(
    lambda p: curiojax.exact_tangent(
      loss, p, batch, regularizer=curiojax.l2(), strength=1e-3, curvature="gauss_newton", solver="cg", maxiter=50
    )
  )
  tangent = solve(params)
  xp, mp = pad_rows_to(x_pool, POOL_BUCKET)
  xl, ml = pad_rows_to(x_lab, LABELLED_BUCKET)
  sketch = lambda x, dtype="bfloat16": gradient_sketch(model, params, x, key, dim=args.dim, compute_dtype=dtype)
  fp, fl = sketch(xp), sketch(xl)
  stacked = jax.tree.map(lambda t: t[None], tangent)
  parts = {
    "tangent solve (50 CG products)": lambda: solve(params),
    "features: pool sketch, float32": lambda: sketch(xp, "float32"),
    "features: pool sketch, bfloat16 (default)": lambda: sketch(xp),
    "features: labelled sketch": lambda: sketch(xl),
    "curiosity JVP over the pool (separate)": lambda: curiojax.curiosity_scores(
      model, params, tangent, xp, heuristic="jvp"
    ),
    "pool sketch + J_xτ in one pass": lambda: sketch_and_jvp(
      model, params, xp, key, stacked, dim=args.dim, compute_dtype="bfloat16"
    ),
    "greedy LCMD (labelled distances + picks)": lambda: lcmd(fp, jnp.asarray(mp), fl, jnp.asarray(ml), args.batch),
    "host: pad pool rows + copy back": lambda: np.asarray(jnp.asarray(pad_rows_to(x_pool, POOL_BUCKET)[0])),
  }
  print(f"{'part':44s} {'median s':>9s} {'first call s':>13s}")
  for name, fn in parts.items():
    t, first = timeit(fn, args.reps)
    print(f"{name:44s} {t:9.3f} {first:13.2f}")

  print(f"\nfloor: the products at this machine's best rate (a {xp.shape[0]}×512×{args.dim} product, chunked)")
  rates = {dtype: product_rate(xp.shape[0], 512, args.dim, dtype, args.reps) for dtype in ("bfloat16", "float32")}
  print("  product rate: " + ", ".join(f"{dtype} {rate:.0f} GFLOP/s" for dtype, rate in rates.items()))
  width, n_pool = 512, xp.shape[0]  # the 2×512 network: forward and backward through the 512×512 layer, 4 projections
  sketch_gflop = 2 * n_pool * width * (2 * width + 4 * args.dim) / 1e9
  labelled_gflop = 2 * n_pool * xl.shape[0] * args.dim / 1e9
  floor = (sketch_gflop + labelled_gflop) / rates["bfloat16"]
  print(
    f"  lcmd's products: sketch {sketch_gflop:.1f} + labelled distances {labelled_gflop:.1f} GFLOP: >= {floor:.3f} s"
  )

  print(f"\n{'whole step (tangent + select_batch)':44s} {'median s':>9s} {'first call s':>13s}  target 0.3")
  problem = TangentOperator(
    TangentSystem(loss, curiojax.l2(), "gauss_newton"), params, 1e-3, 0.0, dict(x=batch["x"], y=batch["y"])
  )
  validation = (x_lab[:256], y_lab[:256])  # the benchmark holds out 256 rows
  rows = [(name, name, {}) for name in args.strategies.split(",")]
  rows += [
    (f"{name}, dim={dim}", name, dict(dim=dim)) for dim in args.other_dims for name in ("lcmd", "tangent_coverage")
  ]
  for label, name, options in rows:
    strategy = get_strategy(name, **options)
    needs = needs_of(strategy).tangent

    def step(strategy=strategy, needs=needs):
      tau = solve(params) if needs else None
      return curiojax.select_batch(
        model,
        params,
        tau,
        x_pool,
        args.batch,
        strategy=strategy,
        x_labelled=x_lab,
        y_labelled=y_lab,
        key=key,
        problem=problem,
        validation=validation,
      )

    t, first = timeit(step, args.reps)
    print(f"{label:44s} {t:9.3f} {first:13.2f}  ratio to target {t / 0.3:.2f}")


if __name__ == "__main__":
  main()

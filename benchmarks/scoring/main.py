"""Pool-scoring speed and memory: curiosity scores versus a forward pass and per-example gradients.

2×512 ReLU MLP (8 inputs, 1 output, ~267k parameters), pool of 100k points:

- scoring time / forward time on the same pool (target ≤ 2.5);
- per-example-gradient scoring (``vmap(grad)`` then dot with ``τ``, chunked so it fits in
  memory) / our time (target ≥ 10);
- pool-scoring throughput in points per second, float32 and bfloat16 (parameters, tangent and
  pool cast; issue 13's device figures);
- scratch memory of the compiled scorer for 10⁶ points with chunking (XLA memory analysis),
  next to the same scorer unchunked, and the per-example gradients it never forms.

Run: ``python benchmarks/scoring/main.py`` (``--fast`` for a 20k pool, ``--pool N``).
Timings are medians of repeated runs after a warm-up (compilation excluded).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import curiojax

FEATURES, WIDTH = 8, 512


def mlp_fn(params, x):
  h = jax.nn.relu(x @ params["w1"] + params["b1"])
  h = jax.nn.relu(h @ params["w2"] + params["b2"])
  return h @ params["w3"] + params["b3"]


def init(key, width=WIDTH):
  k = jax.random.split(key, 3)
  dims = [(FEATURES, width), (width, width), (width, 1)]
  params = {}
  for i, (kk, (a, b)) in enumerate(zip(k, dims, strict=False), start=1):
    params[f"w{i}"] = jax.random.normal(kk, (a, b)) * np.sqrt(2.0 / a)
    params[f"b{i}"] = jnp.zeros(b)
  return params


def timeit(fn, reps):
  jax.block_until_ready(fn())  # warm-up / compile
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def per_example_gradient_scores(model_fn, chunk):
  """The slow way, as a user would write it: ``vmap(grad)`` of the per-example loss, dot with τ."""

  def ell(p, xi, yi):
    return 0.5 * jnp.sum((model_fn(p, xi[None])[0] - yi) ** 2)

  @jax.jit
  def scores(params, tangent, x, y):
    def one(xy):
      g = jax.grad(ell)(params, *xy)
      return sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(tangent), strict=False))

    return jax.lax.map(one, (x, y), batch_size=chunk)  # vmapped per-example grads, chunk at a time

  return scores


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--fast", action="store_true", help="20k pool, fewer repetitions")
  ap.add_argument("--pool", type=int, default=None)
  ap.add_argument("--chunk", type=int, default=4096)
  ap.add_argument("--width", type=int, default=WIDTH, help="hidden width (64: the prototype's network size)")
  args = ap.parse_args()
  n = args.pool or (20_000 if args.fast else 100_000)
  reps = 3 if args.fast else 5

  key = jax.random.key(0)
  params = init(key, args.width)
  n_params = sum(p.size for p in jax.tree.leaves(params))
  tangent = jax.tree.map(lambda p: 0.01 * jnp.cos(jnp.arange(p.size, dtype=p.dtype).reshape(p.shape)), params)
  x = jax.random.normal(jax.random.key(1), (n, FEATURES))
  y = jnp.sin(x[:, :1])
  print(f"devices: {jax.devices()}  |  MLP 2x{args.width} ReLU, {n_params} params, pool {n}, chunk {args.chunk}")

  forward = jax.jit(mlp_fn)
  t_fwd = timeit(lambda: forward(params, x), reps)
  chunked_fwd = jax.jit(lambda p, x: jax.lax.map(lambda c: mlp_fn(p, c), x.reshape(-1, args.chunk, FEATURES)))
  m = n // args.chunk * args.chunk
  t_fwd_chunked = timeit(lambda: chunked_fwd(params, x[:m]), reps) * n / m
  t_fwd_best = min(t_fwd, t_fwd_chunked)

  unlabelled = curiojax.make_scorer(mlp_fn, heuristic="expected_squared", chunk_size=args.chunk)
  labelled = curiojax.make_scorer(mlp_fn, heuristic="signed", chunk_size=args.chunk)
  t_unl = timeit(lambda: unlabelled(params, tangent, x, noise_variance=0.1), reps)
  t_lab = timeit(lambda: labelled(params, tangent, x, y), reps)
  padded = curiojax.scoring.scores.bucket_size(n, args.chunk)[0]

  slow = per_example_gradient_scores(mlp_fn, chunk=256)
  t_slow = timeit(lambda: slow(params, tangent, x, y), max(1, reps // 2))
  ours = labelled(params, tangent, x, y)
  err = float(jnp.max(jnp.abs(ours - slow(params, tangent, x, y))) / jnp.max(jnp.abs(ours)))

  print(f"forward pass, whole pool         {t_fwd * 1e3:9.1f} ms  (chunked: {t_fwd_chunked * 1e3:.1f} ms)")
  print(f"expected_squared scores          {t_unl * 1e3:9.1f} ms  (pool padded to {padded})")
  print(f"signed scores (labelled)         {t_lab * 1e3:9.1f} ms")
  print(f"per-example-gradient scores      {t_slow * 1e3:9.1f} ms  (max rel. diff to ours {err:.1e})")
  print(f"RATIO unlabelled scoring / forward (best of whole, chunked): {t_unl / t_fwd_best:.2f}  (target <= 2.5)")
  print(f"RATIO unlabelled scoring / forward (whole pool):            {t_unl / t_fwd:.2f}")
  print(f"RATIO per-example-gradient / signed scoring:                {t_slow / t_lab:.1f}  (target >= 10)")
  print(f"RATIO per-example-gradient / unlabelled scoring:            {t_slow / t_unl:.1f}")

  bf16 = lambda tree: jax.tree.map(lambda a: a.astype(jnp.bfloat16), tree)  # parameters, tangent and pool
  p16, tau16, x16 = bf16(params), bf16(tangent), bf16(x)
  t_unl16 = timeit(lambda: unlabelled(p16, tau16, x16, noise_variance=0.1), reps)
  s32 = unlabelled(params, tangent, x, noise_variance=0.1)
  s16 = unlabelled(p16, tau16, x16, noise_variance=0.1).astype(jnp.float32)
  rel = float(jnp.max(jnp.abs(s16 - s32)) / jnp.max(s32))
  print(f"throughput, expected_squared, float32:  {n / t_unl:12,.0f} points/s")
  print(f"throughput, expected_squared, bfloat16: {n / t_unl16:12,.0f} points/s  (max diff {rel:.1e} of the top score)")

  big = 1_000_000
  struct = jax.ShapeDtypeStruct((big, FEATURES), jnp.float32)
  for label, chunk in (("chunk 4096", args.chunk), ("chunk 16384", 16384), ("unchunked", 1 << 20)):
    scorer = curiojax.make_scorer(mlp_fn, chunk_size=chunk)
    mem = scorer.lower(params, tangent, struct).compile().memory_analysis()
    if mem is None:
      print("memory analysis not available on this backend")
      break
    print(
      f"10^6 pool, {label:12s}: compiled scratch {mem.temp_size_in_bytes / 2**20:9.1f} MiB, "
      f"output {mem.output_size_in_bytes / 2**20:.1f} MiB, pool argument {mem.argument_size_in_bytes / 2**20:.1f} MiB"
    )
  print(f"10^6 pool, per-example gradients would hold {big * n_params * 4 / 2**30:.0f} GiB")
  xb = jax.random.normal(jax.random.key(2), (big, FEATURES))
  t_big = timeit(lambda: unlabelled(params, tangent, xb), 1)
  print(f"10^6 pool scored (chunk {args.chunk}) in {t_big:.2f} s")


if __name__ == "__main__":
  main()

"""Cost of carrying the regularity tangent during training (issue: core, speed).

2×512 ReLU MLP, batch 256, Adam. Prints, per configuration, the time of a training step
with the tangent divided by the same step without it (plain value_and_grad + Adam).
Steps are timed in jitted blocks of `--block` steps (lax.fori_loop), training continuing
from block to block after a warm-up block, so the periodic re-estimates of the tangent's step
size (20 HVPs every 250 refreshes) are included in the average.

  python benchmarks/bench_tangent.py            # full
  python benchmarks/bench_tangent.py --fast     # smoke run
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import curiojax


def mlp_init(key, sizes):
  keys = jax.random.split(key, len(sizes) - 1)
  return [
    {"w": jax.random.normal(k, (a, b)) * np.sqrt(2.0 / a), "b": jnp.zeros(b)}
    for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=False)
  ]


def mlp(params, x):
  for layer in params[:-1]:
    x = jax.nn.relu(x @ layer["w"] + layer["b"])
  return (x @ params[-1]["w"] + params[-1]["b"])[:, 0]


def make_runner(tx, loss, fused, block):
  def step(carry, batch):
    params, state = carry
    if fused:
      updates, state = tx.update(None, state, params, value_fn=loss, **batch)
    else:
      grads = jax.grad(loss)(params, **batch)
      updates, state = tx.update(grads, state, params, value_fn=loss, **batch)
    return optax.apply_updates(params, updates), state

  @jax.jit
  def run(params, state, xs, ys):
    def body(i, carry):
      return step(carry, {"x": xs[i], "y": ys[i]})

    return jax.lax.fori_loop(0, block, body, (params, state))

  return run


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--fast", action="store_true")
  ap.add_argument("--block", type=int, default=250)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--inputs", type=int, default=16)
  args = ap.parse_args()
  block, repeats = (50, 2) if args.fast else (args.block, args.repeats)

  kx, kp = jax.random.split(jax.random.key(0))
  xs = jax.random.normal(kx, (block, 256, args.inputs))
  ys = jnp.sin(xs[..., 0]) + xs[..., 1] * xs[..., 2]
  params = mlp_init(kp, (args.inputs, 512, 512, 1))
  loss = curiojax.prediction_loss(mlp)
  adam = optax.adam(1e-3)
  base = optax.chain(optax.add_decayed_weights(1e-3), adam)
  configs = {
    "baseline (no tangent)": (base, False),
    "gauss_newton, every step": (
      optax.chain(curiojax.regularity_tangent("l2", 1e-3, curvature="gauss_newton", damping=1e-3), adam),
      True,
    ),
    "hessian, every step": (optax.chain(curiojax.regularity_tangent("l2", 1e-3, damping=1e-3), adam), True),
    "gauss_newton, every 8 steps": (
      optax.chain(
        curiojax.regularity_tangent("l2", 1e-3, curvature="gauss_newton", damping=1e-3, refresh_every=8), adam
      ),
      True,
    ),
    "hessian, every 8 steps": (
      optax.chain(curiojax.regularity_tangent("l2", 1e-3, damping=1e-3, refresh_every=8), adam),
      True,
    ),
    "gauss_newton, every step, grads given (unfused)": (
      optax.chain(curiojax.regularity_tangent("l2", 1e-3, curvature="gauss_newton", damping=1e-3), adam),
      False,
    ),
  }
  runners = {}
  for name, (tx, fused) in configs.items():
    run = make_runner(tx, loss, fused, block)
    out = run(params, tx.init(params), xs, ys)  # compile + warm up (first step-size estimate)
    runners[name] = [run, jax.block_until_ready(out)]
  times = {name: [] for name in configs}
  for _ in range(repeats):  # interleaved, so load on a shared machine hits all alike
    for name, entry in runners.items():
      run, carry = entry
      t0 = time.perf_counter()
      entry[1] = jax.block_until_ready(run(*carry, xs, ys))  # training continues across blocks
      times[name].append((time.perf_counter() - t0) / block)
  base_t = np.median(times["baseline (no tangent)"])
  print(
    f"device: {jax.devices()[0].platform}, MLP {args.inputs}-512-512-1, batch 256, Adam, "
    f"{block} steps x {repeats} repeats (median)"
  )
  print(f"{'configuration':50s} {'ms/step':>9s} {'ratio':>7s}")
  for name in configs:
    t = np.median(times[name])
    print(f"{name:50s} {1e3 * t:9.3f} {t / base_t:7.2f}")
  n_params = sum(p.size for p in jax.tree.leaves(params))
  print(f"extra state: one tangent = {n_params} floats (= one copy of the parameters) + 4 scalars")


if __name__ == "__main__":
  main()

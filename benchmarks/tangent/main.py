"""Cost of carrying the regularity tangent during training, and of finishing it (issues 1, 10).

1. 2×512 ReLU MLP, batch 256, Adam. Prints, per configuration, the time of a training step
   with the tangent divided by the same step without it (plain value_and_grad + Adam). Steps
   are timed in jitted blocks of `--block` steps (lax.fori_loop), training continuing from
   block to block after a warm-up block, so the periodic re-estimates of the tangent's step
   size (10 products every 250 steps) are included in the average.
2. The main job's trainer (packaged default config, embedded concrete data) at 50, 150 and
   300 labels: the time of the finishing step (`finish_tangent` on the labelled set) over the
   time of the training it follows.

  python benchmarks/tangent/main.py            # full
  python benchmarks/tangent/main.py --fast     # smoke run
"""

import argparse
import functools
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
  state = configs["gauss_newton, every step"][0].init(params)[0]
  vectors = sum(1 for f in ("tangent", "iterate", "velocity") if jax.tree.leaves(getattr(state, f)))
  print(f"tangent state: {vectors} copies of the parameters ({vectors * n_params} floats: tangent, iterate, momentum)")
  finishing_share(repeats)


def finishing_share(repeats):
  """Finishing time / training time for the main job's trainer (default config, concrete)."""
  from curiojax.active.data import load_dataset
  from curiojax.active.training import Trainer
  from curiojax.cli import options_from_config
  from curiojax.config_defaults import get_config
  from curiojax.padding import pad_rows

  cfg = get_config()
  options = options_from_config(cfg)
  data = load_dataset(cfg.dataset)
  x = (data.x - data.x.mean(0)) / data.x.std(0)
  spec = options.model.make(x.shape[1])
  trainer = Trainer(spec.model_fn, options.train)
  finish = jax.jit(lambda st, p, b: curiojax.finish_tangent(st, p, trainer.loss, b))
  perm = np.random.default_rng(0).permutation(len(x))
  capacity = 512  # the learner's padded size for the default schedule (50 + 10 × 25 labels)
  model, epochs = options.model, options.train.epochs
  print(f"\nmain job trainer ({cfg.dataset}, {model.hidden_sizes} {model.activation}, {epochs} epochs):")
  print(f"{'labels':>6s} {'fit incl. finish (s)':>20s} {'finish (s)':>11s} {'finish / training':>18s}")
  for n in (50, 150, 300):
    lab = perm[:n]
    y = (data.y[lab] - data.y[lab[:50]].mean()) / data.y[lab[:50]].std()
    xs, ys, mask = pad_rows(x[lab], capacity), pad_rows(y, capacity), pad_rows(np.ones(n, np.float32), capacity)
    batch = {"x": jnp.asarray(xs), "y": jnp.asarray(ys), "weights": jnp.asarray(mask)}
    fit = functools.partial(
      trainer.fit, spec.init(jax.random.key(n)), xs, ys, mask=mask, strength=options.strength, key=jax.random.key(1)
    )
    result = jax.block_until_ready(fit())
    jax.block_until_ready(finish(result.opt_state, result.params, batch))
    t_fit, t_fin = [], []
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fit())
      t_fit.append(time.perf_counter() - t0)
      t0 = time.perf_counter()
      jax.block_until_ready(finish(result.opt_state, result.params, batch))
      t_fin.append(time.perf_counter() - t0)
    fit_s, fin_s = np.median(t_fit), np.median(t_fin)
    print(f"{n:6d} {fit_s:20.4f} {fin_s:11.4f} {fin_s / (fit_s - fin_s):18.2f}")


if __name__ == "__main__":
  main()

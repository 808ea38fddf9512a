"""Cost of a certified tangent against plain training (issue 20).

A tangent is certified when its full-data relative residual ``‖(C + λI)τ + ρ‖/‖ρ‖`` is at most
1e-3. For three trainings, every path to one is timed end to end and printed as a ratio to
plain training (the same objective and optimizer, no tangent):

- ``default``: the documented path, ``Trainer.fit`` (plain training, then ``finish_tangent``
  with the method chosen by shape);
- ``post-hoc cg``: plain training, then unpreconditioned conjugate gradients from zero;
- ``carried 1.0`` / ``carried 0.1``: the tangent carried online over all / the last 10% of the
  steps (``TrainOptions.carry_tangent``), then finished from it;
- ``carried r8``: (the plain-JAX training) carried every step but refreshed every 8 steps.

The trainings:

- ``main 50`` / ``main 300``: the main job's trainer (``curiojax run``'s defaults, embedded
  concrete data) at 50 and 300 labels;
- ``tanh 2000``: a 2×128 tanh MLP (17,793 parameters) on 2,000 synthetic rows, minibatch 64,
  Adam, 60 epochs, ``s = λ = 1e-3`` (a plain-JAX model: no per-layer factors);
- ``ntk 448``: the benchmark's 2×512 NTK MLP (267,777 parameters) at 448 labels, the
  protocol's unregularised training.

Columns: total time / plain training, the solve's share, its products (preconditioner
applications included), the method and the residual reached.

  python benchmarks/certified/main.py           # all three trainings (about 5 minutes on 2 cores)
  python benchmarks/certified/main.py --fast    # smaller sizes, fewer epochs (CI smoke)
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import curiojax
from curiojax.active.data import load_dataset
from curiojax.active.loop import LoopOptions
from curiojax.active.training import Trainer
from curiojax.tangent.curvature import TangentSystem
from curiojax.tangent.operator import TangentOperator
from curiojax.tangent.solvers import choose_method

TOLERANCE = 1e-3
HEADER = ("training", "path", "total/plain", "solve/plain", "products", "method", "residual")


def best_time(fn, repeats):
  """Seconds of the fastest of ``repeats`` calls after one warm-up (compilation) call, and its output."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return min(times), out


def finisher(loss, batch, solver):
  """A jitted ``finish_tangent`` returning the state and its :class:`curiojax.SolveInfo`."""
  return jax.jit(
    lambda st, p: curiojax.finish_tangent(st, p, loss, batch, tol=TOLERANCE, solver=solver, return_info=True)
  )


def row(name, path, total, solve, info):
  products = int(info.products) + int(info.preconditioner_products)
  return name, path, total, solve, products, info.method, float(info.residual)


def trainer_rows(name, model_fn, params, x, y, options, repeats, strength):
  """The paths through :class:`Trainer` (the documented one and the carried ones) and a post-hoc CG."""
  key = jax.random.key(1)

  def fitter(carry):
    trainer = Trainer(model_fn, dataclasses.replace(options, carry_tangent=carry))
    return lambda solve: lambda: trainer.fit(params, x, y, strength=strength, key=key, solve_tangent=solve)

  plain = fitter(0.0)
  t_plain, result = best_time(plain(False), repeats)
  t_default, full = best_time(plain(True), repeats)
  trainer = Trainer(model_fn, options)
  loss, batch = trainer.loss, dict(x=jnp.asarray(x), y=jnp.asarray(y))
  system = TangentSystem(loss, trainer.regularizer, options.curvature)
  method = choose_method(TangentOperator(system, result.params, strength, options.damping, batch))[0]  # fit's choice
  yield (
    name,
    "default",
    t_default / t_plain,
    t_default / t_plain - 1,
    int(full.tangent_products),
    method,
    float(full.tangent_residual),
  )
  cg = finisher(loss, batch, "cg")
  t_cg, (_, info) = best_time(lambda: cg(result.opt_state, result.params), repeats)
  yield row(name, "post-hoc cg", 1 + t_cg / t_plain, t_cg / t_plain, info)
  if not options.regularised_training:
    return  # nothing is carried in unregularised training
  for share in (1.0, 0.1):
    carried = fitter(share)
    t_train, _ = best_time(carried(False), repeats)
    t_total, full = best_time(carried(True), repeats)
    yield (
      name,
      f"carried {share}",
      t_total / t_plain,
      (t_total - t_train) / t_plain,
      int(full.tangent_products),
      ("+finish"),
      float(full.tangent_residual),
    )


def standardised_concrete():
  data = load_dataset("concrete")
  return (data.x - data.x.mean(0)) / data.x.std(0), (data.y - data.y.mean()) / data.y.std()


def main_job(n, fast, repeats):
  """The main job's trainer (``curiojax run``'s defaults) on the first ``n`` rows of concrete."""
  options = LoopOptions()
  x, y = standardised_concrete()
  spec = options.model.make(x.shape[1])
  train = options.train
  if fast:
    train = dataclasses.replace(train, epochs=20)
  params = spec.init(jax.random.key(0))
  yield from trainer_rows(f"main {n}", spec.model_fn, params, x[:n], y[:n], train, repeats, options.strength)


def ntk(n, fast, repeats):
  """The benchmark's NTK MLP and training protocol (unregularised, linear decay, bmdal_reg's batches)."""
  sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the benchmark's own settings
  from benchmarks.active_learning.configs.benchmark import get_config
  from benchmarks.active_learning.main import protocol_model, protocol_options

  cfg = get_config()
  if fast:
    cfg.model.hidden_sizes, cfg.train.epochs = (64, 64), 8
  x, y = standardised_concrete()
  spec = protocol_model(cfg, x.shape[1])
  train = dataclasses.replace(protocol_options(cfg).train, restore_best=False)
  params = spec.init(jax.random.key(0))
  yield from trainer_rows(f"ntk {n}", spec.model_fn, params, x[:n], y[:n], train, repeats, cfg.strength)


def tanh_mlp(params, x):
  for layer in params[:-1]:
    x = jnp.tanh(x @ layer["w"] + layer["b"])
  return (x @ params[-1]["w"] + params[-1]["b"])[:, 0]


def tanh_data(n):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, 8)).astype(np.float32)
  y = (np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.1 * rng.normal(size=n)).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(y)


def tanh_rows(n, epochs, repeats, s=1e-3, damping=1e-3, batch=64):
  """A user's own loop: a 2×128 tanh MLP trained by Adam on minibatches, plain or carrying the tangent."""
  x, y = tanh_data(n)
  sizes = (8, 128, 128, 1)
  keys = jax.random.split(jax.random.key(0), 3)
  params = [
    {"w": jax.random.normal(k, (a, b)) / np.sqrt(a), "b": jnp.zeros(b)}
    for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
  ]
  loss = curiojax.prediction_loss(tanh_mlp)
  order = jax.random.permutation(jax.random.key(2), jnp.tile(jnp.arange(n), epochs))
  order = order[: epochs * (n // batch) * batch].reshape(-1, batch)

  def trainer(tx, fused):
    @jax.jit
    def run(params):
      def step(carry, idx):
        p, st = carry
        grads = None if fused else jax.grad(loss)(p, x[idx], y[idx])
        updates, st = tx.update(grads, st, p, value_fn=loss, x=x[idx], y=y[idx])
        return (optax.apply_updates(p, updates), st), None

      return jax.lax.scan(step, (params, tx.init(params)), order)[0]

    return run

  adam = optax.adam(1e-3)
  plain = trainer(optax.chain(optax.add_decayed_weights(s), adam), False)  # the same objective, no tangent
  t_plain, (trained, _) = best_time(lambda: plain(params), repeats)
  tangent = lambda **kw: optax.chain(
    curiojax.regularity_tangent("l2", s, curvature="gauss_newton", damping=damping, **kw), adam
  )
  data = dict(x=x, y=y)
  zero_state = tangent().init(trained)
  for solver, path in (("auto", "default"), ("cg", "post-hoc cg")):
    finish = finisher(loss, data, solver)
    t, (_, info) = best_time(lambda finish=finish: finish(zero_state, trained), repeats)
    yield row(f"tanh {n}", path, 1 + t / t_plain, t / t_plain, info)
  finish = finisher(loss, data, "auto")
  for path, kw in (("carried r1", {}), ("carried r8", {"refresh_every": 8})):
    run = trainer(tangent(**kw), True)
    t_train, (p, st) = best_time(lambda run=run: run(params), repeats)
    t, (_, info) = best_time(lambda p=p, st=st: finish(st, p), repeats)
    yield row(f"tanh {n}", path, (t_train + t) / t_plain, t / t_plain, info)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--fast", action="store_true", help="smaller sizes and fewer epochs (a smoke run)")
  parser.add_argument("--repeats", type=int, default=5, help="timed calls per path (the fastest counts)")
  args = parser.parse_args()
  repeats = 1 if args.fast else args.repeats
  runs = [main_job(50, args.fast, repeats), main_job(300, args.fast, repeats)]
  runs.append(tanh_rows(400 if args.fast else 2000, 5 if args.fast else 60, repeats))
  runs.append(ntk(448, args.fast, repeats))
  print("{:10} {:13} {:>11} {:>11} {:>8} {:>10} {:>9}".format(*HEADER))
  default = {}
  for rows in runs:
    for name, path, total, solve, products, method, residual in rows:
      print(f"{name:10} {path:13} {total:11.2f} {solve:11.2f} {products:8d} {method:>10} {residual:9.1e}", flush=True)
      if path == "default":
        default[name] = (total, residual)
  print()
  print("default path, total/plain: " + ", ".join(f"{k} {t:.2f}x (residual {r:.1e})" for k, (t, r) in default.items()))


if __name__ == "__main__":
  main()

"""Fidelity of the carried tangent in the trainings people run (issue 10).

For each training in a matrix (activation, depth, width, minibatch, optimizer and schedule,
strength s, damping λ, refresh), an MLP is trained on a synthetic 8-input regression (512
points) with ``optax.chain(regularity_tangent(..., curvature="gauss_newton"), optimizer)``,
and its tangent is compared with the exact one, ``−(JᵀJ/n + (s + λ)I)⁻¹θ`` at the trained
parameters (float64: a dense solve up to 6,000 parameters, matrix-free CG beyond). Columns:

- ``rel``, ``cos``: relative error and cosine of the online tangent to the exact one;
- ``resid``: its full-data relative residual ``‖(C + λI)τ + ρ‖/‖ρ‖``; ``est``: the state's
  estimate of it (an upper estimate; minibatch noise included);
- ``top``: shared members of the top 100 of 5,000 pool points by ``(J_xτ)²``;
- ``flag``: whether ``tangent_of`` warned (the tangent is not certified);
- ``fin.rel``, ``fin.res``: after ``finish_tangent`` on the training set; ``fin.t``: its time
  over the training time;
- ``x step``: training time with the tangent over plain training (optimizer + weight decay).

  python benchmarks/fidelity/main.py           # the full matrix (about 10 minutes on 2 cores)
  python benchmarks/fidelity/main.py --fast    # three rows, fewer epochs
"""

import argparse
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

import curiojax

N, D, POOL, TOP = 512, 8, 5000, 100
BASE = dict(act="tanh", depth=2, width=64, batch=32, opt="adam cosine", s=1e-3, damping=1e-3, refresh=1)
MATRIX = [
  {},
  {"act": "relu"},
  {"depth": 1},
  {"depth": 3},
  {"width": 32},
  {"width": 256},
  {"depth": 1, "width": 512},
  {"batch": 128},
  {"batch": N},
  {"opt": "sgd constant"},
  {"opt": "momentum step"},
  {"opt": "adam constant"},
  {"opt": "adam step"},
  {"s": 1e-4},
  {"s": 1e-2},
  {"s": 1e-1},
  {"damping": 0.0},
  {"damping": 1e-2},
  {"refresh": 8},
  {"refresh": 8, "s": 1e-2},
  {"act": "relu", "batch": N, "opt": "adam constant"},
  {"act": "relu", "depth": 3, "width": 32, "s": 1e-4, "damping": 0.0},
]


def optimizer(name, steps):
  if name == "sgd constant":
    return optax.sgd(0.05)
  if name == "momentum step":
    return optax.sgd(optax.piecewise_constant_schedule(0.01, {steps // 2: 0.1, 3 * steps // 4: 0.1}), momentum=0.9)
  if name == "adam constant":
    return optax.adam(1e-2)
  if name == "adam step":
    return optax.adam(optax.piecewise_constant_schedule(1e-2, {steps // 2: 0.1, 3 * steps // 4: 0.1}))
  return optax.adam(optax.cosine_decay_schedule(1e-2, steps))


def make_mlp(act):
  f = jnp.tanh if act == "tanh" else jax.nn.relu

  def mlp(params, x):
    for layer in params[:-1]:
      x = f(x @ layer["w"] + layer["b"])
    return (x @ params[-1]["w"] + params[-1]["b"])[:, 0]

  return mlp


def init(key, act, depth, width):
  sizes = (D,) + (width,) * depth + (1,)
  gain = np.sqrt(2.0) if act == "relu" else 1.0
  keys = jax.random.split(key, len(sizes) - 1)
  return [
    {"w": gain * jax.random.normal(k, (a, b), jnp.float32) / np.sqrt(a), "b": jnp.zeros(b, jnp.float32)}
    for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
  ]


def trainer(tx, loss, x, y, batch, epochs, *, fused):
  """All epochs in one jitted scan; ``fused``: the tangent's pass gives the gradient (``updates=None``)."""
  steps = N // batch

  @jax.jit
  def run(params, key):
    def epoch(carry, k):
      order = jax.random.permutation(k, N)[: steps * batch].reshape(steps, batch)

      def step(carry, idx):
        p, st = carry
        grads = None if fused else jax.grad(loss)(p, x[idx], y[idx])
        updates, st = tx.update(grads, st, p, value_fn=loss, x=x[idx], y=y[idx])
        return (optax.apply_updates(p, updates), st), None

      return jax.lax.scan(step, carry, order)[0], None

    return jax.lax.scan(epoch, (params, tx.init(params)), jax.random.split(key, epochs))[0]

  return run


def timed(fn, *args):
  jax.block_until_ready(fn(*args))  # compile
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - t0


def reference(mlp, params, x, s, damping):
  """``τ* = −(JᵀJ/n + (s + λ)I)⁻¹θ`` in float64 at ``params``, and a residual function."""
  with jax.enable_x64(True):
    tau, residual = _reference(mlp, params, x, s, damping)

  def residual64(v):
    with jax.enable_x64(True):
      return residual(v)

  return tau, residual64


def _reference(mlp, params, x, s, damping):
  p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
  x64 = jnp.asarray(x, jnp.float64)
  flat, unravel = ravel_pytree(p64)
  mu = s + damping
  if flat.size <= 6000:
    per_example = jax.vmap(jax.grad(lambda f, xi: mlp(unravel(f), xi[None])[0]), in_axes=(None, 0))
    jac = np.asarray(per_example(flat, x64))  # (n, d), n small backward passes (jacfwd: d × n × width)
    a = jac.T @ jac / N + mu * np.eye(flat.size)
    matvec = lambda v: a @ v
    tau = -np.linalg.solve(a, np.asarray(flat))
  else:

    @jax.jit
    def mv(v, flat, x64):  # data as arguments, not constants XLA would fold
      f = lambda q: mlp(unravel(q), x64)
      _, jv = jax.jvp(f, (flat,), (v,))
      return jax.vjp(f, flat)[1](jv)[0] / N + mu * v

    matvec = lambda v: np.asarray(mv(jnp.asarray(v, jnp.float64), flat, x64))
    solve = jax.jit(
      lambda flat, x64: jax.scipy.sparse.linalg.cg(lambda v: mv(v, flat, x64), -flat, tol=1e-11, maxiter=20000)[0]
    )
    tau = np.asarray(solve(flat, x64))
  rho = np.asarray(flat)
  residual = lambda v: float(np.linalg.norm(matvec(v) + rho) / np.linalg.norm(rho))
  return tau, residual


def run_row(cfg, epochs, pool):
  kx, kp = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (N, D), jnp.float32)
  y = jnp.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2]
  mlp = make_mlp(cfg["act"])
  loss = curiojax.prediction_loss(mlp)
  steps = epochs * (N // cfg["batch"])
  inner = optimizer(cfg["opt"], steps)
  tangent_tx = curiojax.regularity_tangent(
    "l2", cfg["s"], curvature="gauss_newton", damping=cfg["damping"], refresh_every=cfg["refresh"]
  )
  tx = optax.chain(tangent_tx, inner)
  plain = optax.chain(optax.add_decayed_weights(cfg["s"]), inner)
  params0 = init(kp, cfg["act"], cfg["depth"], cfg["width"])
  key = jax.random.key(1)
  (params, state), t_tangent = timed(trainer(tx, loss, x, y, cfg["batch"], epochs, fused=True), params0, key)
  _, t_plain = timed(trainer(plain, loss, x, y, cfg["batch"], epochs, fused=False), params0, key)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    online = curiojax.tangent_of(state)
  flagged = any(
    issubclass(w.category, (curiojax.TangentInaccurateWarning, curiojax.TangentDivergedWarning)) for w in caught
  )
  diag = curiojax.tangent_diagnostics(state)
  finish = jax.jit(lambda st, p: curiojax.finish_tangent(st, p, loss, dict(x=x, y=y)))
  finished, t_finish = timed(finish, state, params)
  tau, residual = reference(mlp, params, x, cfg["s"], cfg["damping"])
  _, unravel = ravel_pytree(params)

  def stats(tangent):
    v = np.asarray(ravel_pytree(tangent)[0], np.float64)
    if not np.all(np.isfinite(v)):
      return float("nan"), float("nan"), float("nan"), 0
    jv = lambda u: np.asarray(jax.jvp(lambda p: mlp(p, pool), (params,), (unravel(jnp.asarray(u, jnp.float32)),))[1])
    a, b = jv(v) ** 2, jv(tau) ** 2
    top = len(set(np.argsort(-a)[:TOP]) & set(np.argsort(-b)[:TOP]))
    rel = float(np.linalg.norm(v - tau) / np.linalg.norm(tau))
    cos = float(v @ tau / (np.linalg.norm(v) * np.linalg.norm(tau) + 1e-300))
    return rel, cos, residual(v), top

  rel, cos, res, top = stats(online)
  f_rel, _, f_res, _ = stats(finished[0].tangent)
  return dict(
    rel=rel,
    cos=cos,
    resid=res,
    est=diag.residual,
    top=top,
    flag=flagged,
    restarts=diag.restarts,
    diverged=diag.diverged,
    f_rel=f_rel,
    f_res=f_res,
    f_time=t_finish / t_tangent,
    overhead=t_tangent / t_plain,
    params=sum(p.size for p in jax.tree.leaves(params)),
  )


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--fast", action="store_true", help="three rows, 20 epochs")
  ap.add_argument("--epochs", type=int, default=100)
  args = ap.parse_args()
  matrix, epochs = (MATRIX[:1] + [{"batch": N}, {"refresh": 8}], 20) if args.fast else (MATRIX, args.epochs)
  pool = jax.random.normal(jax.random.key(7), (POOL, D), jnp.float32)
  print(
    f"synthetic regression, {N} points, {D} inputs; {epochs} epochs; Gauss-Newton tangent; base: "
    + ", ".join(f"{k} {v}" for k, v in BASE.items())
  )
  head = (
    f"{'training (change from base)':38s} {'params':>7s} {'rel':>7s} {'cos':>6s} {'resid':>8s} {'est':>8s} "
    f"{'top':>4s} {'flag':>5s} {'rst':>3s} {'fin.rel':>8s} {'fin.res':>8s} {'fin.t':>6s} {'x step':>6s}"
  )
  print(head)
  print("-" * len(head))
  silent = 0
  for change in matrix:
    cfg = {**BASE, **change}
    r = run_row(cfg, epochs, pool)
    name = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in change.items()) or "base"
    print(
      f"{name:38s} {r['params']:7d} {r['rel']:7.3f} {r['cos']:6.3f} {r['resid']:8.3g} {r['est']:8.3g} "
      f"{r['top']:4d} {('yes' if r['flag'] else 'no'):>5s} {r['restarts']:3d} {r['f_rel']:8.1e} {r['f_res']:8.1e} "
      f"{r['f_time']:6.2f} {r['overhead']:6.2f}",
      flush=True,
    )
    silent += (not r["resid"] <= 0.1) and not r["flag"]
  print(f"tangents handed out above the tolerance 0.1 without a signal: {silent}")


if __name__ == "__main__":
  main()

"""The tangent a user gets is the tangent (issue 10): accurate in the trainings people run, or flagged.

Every reference here is computed independently of curiojax's solvers: the Gauss-Newton matrix
``JᵀJ/n + (s + λ)I`` from per-example gradients (the Jacobian's rows), solved densely in float64 with numpy.
"""

import re
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import curiojax
from curiojax.active.data import load_dataset
from curiojax.active.training import Trainer
from curiojax.cli import options_from_config
from curiojax.config_defaults import get_config
from curiojax.padding import pad_rows

README = Path(__file__).resolve().parents[1] / "README.md"


def gauss_newton_reference(model_fn, params, x, strength, damping, weights=None):
  """``τ* = −(JᵀWJ/Σw + (s + λ)I)⁻¹θ`` (squared error, L2) and the matrix, in float64."""
  flat, unravel = ravel_pytree(params)
  per_example = jax.vmap(jax.grad(lambda f, xi: model_fn(unravel(f), xi[None])[0]), in_axes=(None, 0))
  jac = np.asarray(per_example(flat, x), np.float64)  # (n, d) Jacobian, one small backward pass per row
  w = np.ones(x.shape[0]) if weights is None else np.asarray(weights, np.float64)
  a = jac.T @ (jac * w[:, None]) / w.sum() + (strength + damping) * np.eye(flat.size)
  return -np.linalg.solve(a, np.asarray(flat, np.float64)), a


def flat64(tree):
  return np.asarray(ravel_pytree(tree)[0], np.float64)


def rel_err(a, b):
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def top_overlap(model_fn, params, x_pool, tangent, reference, k):
  """Shared members of the top-k of ``(J_x τ)²`` (the expected-squared score's ranking)."""
  _, unravel = ravel_pytree(params)
  jv = lambda v: np.asarray(
    jax.jvp(lambda p: model_fn(p, x_pool), (params,), (unravel(jnp.asarray(v, jnp.float32)),))[1]
  )
  a, b = jv(tangent) ** 2, jv(reference) ** 2
  return len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k]))


def signals(fn):
  """``(result, flagged)``: run ``fn`` recording curiojax's tangent warnings (inside jit they come via callbacks)."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = fn()
  kinds = (curiojax.TangentInaccurateWarning, curiojax.TangentDivergedWarning)
  return out, any(issubclass(w.category, kinds) for w in caught)


# -- the README's API example, as printed -------------------------------------------------------


def test_readme_example_as_printed_gives_the_exact_tangent():
  code = re.search(r"## API in one screen\s+```python\n(.*?)```", README.read_text(), re.S).group(1)
  assert "finish_tangent" in code and "check_tangent" in code
  ns = {}
  exec(compile(code, str(README), "exec"), ns)  # noqa: S102 - the documented example, verbatim
  reference, _ = gauss_newton_reference(ns["model_fn"], ns["params"], ns["x"], 1e-3, 1e-3)
  assert rel_err(flat64(ns["tau"]), reference) <= 1e-2
  assert curiojax.tangent_diagnostics(ns["state"]).exact
  assert top_overlap(ns["model_fn"], ns["params"], ns["pool"], flat64(ns["tau"]), reference, 16) >= 15


# -- the main job's trainer ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def main_job():
  """The packaged default config's model and trainer on the embedded concrete data."""
  cfg = get_config()
  options = options_from_config(cfg)
  data = load_dataset(cfg.dataset)
  x = (data.x - data.x.mean(0)) / data.x.std(0)  # the learner standardises with the pool's statistics
  spec = options.model.make(x.shape[1])
  return options, x, data.y, spec, Trainer(spec.model_fn, options.train)


@pytest.mark.parametrize(
  "labels", [50, pytest.param(150, marks=pytest.mark.slow), pytest.param(300, marks=pytest.mark.slow)]
)
def test_main_job_trainer_hands_out_the_exact_tangent(main_job, labels):
  options, x, y, spec, trainer = main_job
  perm = np.random.default_rng(labels).permutation(len(x))
  lab, pool = perm[:labels], perm[labels:]
  ys = (y[lab] - y[lab[:50]].mean()) / y[lab[:50]].std()
  capacity = 512  # the learner's padded size for 300 labels
  xs, yp, mask = pad_rows(x[lab], capacity), pad_rows(ys, capacity), pad_rows(np.ones(labels, np.float32), capacity)
  result = trainer.fit(
    spec.init(jax.random.key(labels)), xs, yp, mask=mask, strength=options.strength, key=jax.random.key(1)
  )
  reference, a = gauss_newton_reference(
    spec.model_fn, result.params, jnp.asarray(xs), options.strength, options.train.damping, mask
  )
  tangent = flat64(result.tangent)
  assert rel_err(tangent, reference) <= 1e-2
  assert top_overlap(spec.model_fn, result.params, jnp.asarray(x[pool]), tangent, reference, 25) >= 23
  # The residual it reports is the full-data residual of what it hands out.
  rho = flat64(result.params)
  true_residual = np.linalg.norm(a @ tangent + rho) / np.linalg.norm(rho)
  assert float(result.tangent_residual) <= options.train.finish_tolerance
  assert float(result.tangent_residual) == pytest.approx(true_residual, rel=0.5, abs=1e-5)


# -- the online recursion in a minibatch setting -------------------------------------------------


def mlp_init(key, sizes):
  keys = jax.random.split(key, len(sizes) - 1)
  return [
    {"w": jax.random.normal(k, (a, b)) / np.sqrt(a), "b": jnp.zeros(b)}
    for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
  ]


def make_mlp(activation):
  def mlp(params, x):
    for layer in params[:-1]:
      x = activation(x @ layer["w"] + layer["b"])
    return (x @ params[-1]["w"] + params[-1]["b"])[:, 0]

  return mlp


def train_minibatch(tx, params, x, y, loss, *, epochs, batch_size, key=0):
  n = x.shape[0]
  steps = n // batch_size

  @jax.jit
  def run(params, state, key):
    def epoch(carry, k):
      order = jax.random.permutation(k, n)[: steps * batch_size].reshape(steps, batch_size)

      def step(carry, idx):
        p, st = carry
        updates, st = tx.update(None, st, p, value_fn=loss, x=x[idx], y=y[idx])
        return (optax.apply_updates(p, updates), st), None

      return jax.lax.scan(step, carry, order)[0], None

    return jax.lax.scan(epoch, (params, state), jax.random.split(key, epochs))[0]

  return run(params, tx.init(params), jax.random.key(key))


@pytest.mark.slow  # 3,200 steps of a 2×64 MLP per case; the README example and the main job's fit cover it quickly
@pytest.mark.parametrize("strength", [1e-3, 1e-2])
@pytest.mark.parametrize("refresh_every", [1, 8])
def test_online_tangent_2x64_tanh_minibatch_is_accurate_or_flagged(strength, refresh_every):
  """Issue 10's setting: 2×64 tanh, 512 points, minibatch 32, Adam 1e-2 cosine, 200 epochs, GN, λ 1e-3."""
  kx, kp, kq = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(kx, (512, 8))
  y = jnp.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2]
  mlp = make_mlp(jnp.tanh)
  loss = curiojax.prediction_loss(mlp)
  tangent_tx = curiojax.regularity_tangent(
    "l2", strength, curvature="gauss_newton", damping=1e-3, refresh_every=refresh_every
  )
  tx = optax.chain(tangent_tx, optax.adam(optax.cosine_decay_schedule(1e-2, 200 * 16)))
  params, state = train_minibatch(tx, mlp_init(kp, (8, 64, 64, 1)), x, y, loss, epochs=200, batch_size=32)
  diag = curiojax.tangent_diagnostics(state)
  assert not diag.diverged and diag.restarts == 0, diag
  tangent, flagged = signals(lambda: flat64(curiojax.tangent_of(state)))
  reference, a = gauss_newton_reference(mlp, params, x, strength, 1e-3)
  rho = flat64(params)
  assert diag.residual >= np.linalg.norm(a @ tangent + rho) / np.linalg.norm(rho)  # an upper estimate
  rel = rel_err(tangent, reference)
  top = top_overlap(mlp, params, jax.random.normal(kq, (5000, 8)), tangent, reference, 100)
  assert (rel <= 0.1 and top >= 80) or flagged, (rel, top)
  if refresh_every == 1:  # measured 0.06-0.12 and 94-95/100 (the plain recursion: 0.21-0.51, 80-87/100)
    assert rel <= 0.2 and top >= 85, (rel, top)
  # Finishing on the training set certifies it.
  state = curiojax.finish_tangent(state, params, loss, dict(x=x, y=y), solver="cg", tol=1e-4)
  assert rel_err(flat64(curiojax.check_tangent(state)), reference) <= 1e-2


# -- never silently wrong ------------------------------------------------------------------------

HOSTILE = {
  # name: (activation, curvature, damping, strength, optimizer, input scales, batch size, steps)
  "indefinite hessian, damping 0": (jnp.tanh, "hessian", 0.0, 1e-3, optax.adam(1e-2), None, None, 1500),
  "indefinite hessian, damping 0, minibatch": (jnp.tanh, "hessian", 0.0, 1e-3, optax.adam(1e-2), None, 16, 1500),
  "learning rate too large (adam 0.3)": (jnp.tanh, "gauss_newton", 1e-3, 1e-3, optax.adam(0.3), None, 16, 1500),
  "sgd 3, params blow up": (jnp.tanh, "gauss_newton", 1e-3, 1e-3, optax.sgd(3.0), None, None, 300),
  "adam constant 1e-2, full batch (the README's training)": (
    jnp.tanh, "gauss_newton", 1e-3, 1e-3, optax.adam(1e-2), None, None, 1000,
  ),
  "s = 1e-5, damping 0": (jnp.tanh, "gauss_newton", 0.0, 1e-5, optax.adam(1e-2), None, None, 1500),
  "s = 1e-5, minibatch, relu": (jax.nn.relu, "gauss_newton", 1e-4, 1e-5, optax.adam(1e-2), None, 16, 1500),
  "raw unscaled inputs": (jnp.tanh, "gauss_newton", 1e-3, 1e-3, optax.adam(1e-2), (1e3, 1e-2, 30.0, 1.0), 16, 1500),
  "raw unscaled inputs, relu, full batch": (
    jax.nn.relu, "gauss_newton", 1e-3, 1e-3, optax.adam(1e-2), (1e3, 1e-2, 30.0, 1.0), None, 1500,
  ),
}  # fmt: skip


FAST_HOSTILE = "sgd 3, params blow up"  # 300 steps; the fast lane's case


@pytest.mark.parametrize(
  "name", [pytest.param(n, marks=() if n == FAST_HOSTILE else pytest.mark.slow) for n in sorted(HOSTILE)]
)
def test_no_tangent_is_handed_out_silently_wrong(name):
  activation, curvature, damping, strength, inner, scales, batch_size, steps = HOSTILE[name]
  kx, kp = jax.random.split(jax.random.key(3))
  x = jax.random.normal(kx, (64, 4))
  y = jnp.sin(x[:, 0]) + x[:, 1] * x[:, 2]
  if scales is not None:
    x = x * jnp.asarray(scales)
  mlp = make_mlp(activation)
  loss = curiojax.prediction_loss(mlp)
  tx = optax.chain(curiojax.regularity_tangent("l2", strength, curvature=curvature, damping=damping), inner)
  params = mlp_init(kp, (4, 16, 1))
  batch_size = batch_size or len(x)  # None: full batch
  epochs = steps * batch_size // len(x)
  (params, state), _ = signals(  # a divergence warns during training too (a jax.debug callback)
    lambda: jax.block_until_ready(train_minibatch(tx, params, x, y, loss, epochs=epochs, batch_size=batch_size))
  )
  kw = dict(regularizer="l2", strength=strength, curvature=curvature, damping=damping)
  tangent, flagged = signals(lambda: curiojax.tangent_of(state))
  truth = float(curiojax.relative_residual(loss, params, tangent, dict(x=x, y=y), **kw))
  tol = curiojax.tangent_diagnostics(state).tolerance
  try:
    curiojax.check_tangent(state)
    raised = False
  except (curiojax.TangentInaccurateError, curiojax.TangentDivergedError):
    raised = True
  if not truth <= tol:  # NaN counts as wrong
    assert flagged and raised, f"{name}: full-data residual {truth:.3g} > {tol} handed out silently"
  # The finishing step: solved to tolerance, or flagged with the residual it reached.
  state = curiojax.finish_tangent(state, params, loss, dict(x=x, y=y))
  tangent, flagged = signals(lambda: curiojax.tangent_of(state))
  truth = float(curiojax.relative_residual(loss, params, tangent, dict(x=x, y=y), **kw))
  if not truth <= tol:
    assert flagged, f"{name}: finished tangent with full-data residual {truth:.3g} handed out silently"
  else:
    assert curiojax.tangent_diagnostics(state).residual == pytest.approx(truth, rel=0.5, abs=1e-4)

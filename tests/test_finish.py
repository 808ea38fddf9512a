"""The finishing step and the certification around it (issue 10).

Oracles: the ridge closed form, and ``(JᵀJ/n + (s + λ)I)`` from per-example gradients, solved in numpy.
"""

import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import curiojax
from curiojax.tangent.solvers import conjugate_gradients

linear = lambda p, x: x @ p["w"]
LINEAR = curiojax.prediction_loss(linear)


def ridge(n=80, d=6, seed=0):
  kx, kw = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, (n, d))
  return x, x @ jax.random.normal(kw, (d,))


def ridge_tangent(x, params_w, s):
  """``τ = −(XᵀX/n + sI)⁻¹θ`` in float64 (Hessian = Gauss-Newton for a linear model)."""
  x = np.asarray(x, np.float64)
  return -np.linalg.solve(x.T @ x / len(x) + s * np.eye(x.shape[1]), np.asarray(params_w, np.float64))


def mlp(params, x):
  return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]


def mlp_params(key, d=3, width=24):
  k1, k2 = jax.random.split(key)
  return {
    "w1": jax.random.normal(k1, (d, width)) / np.sqrt(d),
    "b1": jnp.zeros(width),
    "w2": jax.random.normal(k2, (width,)) / 5,
  }


def gn_reference(params, x, mu, weights=None):
  from jax.flatten_util import ravel_pytree

  flat, unravel = ravel_pytree(params)
  jac = np.asarray(
    jax.vmap(jax.grad(lambda f, xi: mlp(unravel(f), xi[None])[0]), in_axes=(None, 0))(flat, x), np.float64
  )
  w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
  a = jac.T @ (jac * w[:, None]) / w.sum() + mu * np.eye(flat.size)
  return -np.linalg.solve(a, np.asarray(flat, np.float64))


def flat(tree):
  from jax.flatten_util import ravel_pytree

  return np.asarray(ravel_pytree(tree)[0], np.float64)


def test_conjugate_gradients_reaches_its_tolerance_and_counts_products():
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.normal(size=(40, 40)))
  a = jnp.asarray(q @ np.diag(np.logspace(-3, 1, 40)) @ q.T, jnp.float32)  # κ = 1e4
  b = jnp.asarray(rng.normal(size=40), jnp.float32)
  calls = []
  matvec = lambda v: (calls.append(1), a @ v)[1]
  x, used, _ = jax.jit(lambda b: conjugate_gradients(matvec, b, jnp.zeros(40), tol=1e-4, maxiter=500))(b)
  assert float(jnp.linalg.norm(a @ x - b) / jnp.linalg.norm(b)) <= 1e-4
  assert 1 < int(used) <= 500
  _, few, _ = conjugate_gradients(lambda v: a @ v, b, jnp.zeros(40), tol=1e-12, maxiter=7)
  assert int(few) <= 7 + 3  # the budget, plus one starting residual per restart


@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_finish_solves_the_system_the_state_carries(solver):
  """Strength and damping are read from the state (here λ = 0.05): τ = −(XᵀX/n + (s + λ)I)⁻¹θ."""
  x, y = ridge()
  tx = optax.chain(curiojax.regularity_tangent("l2", 0.02, damping=0.05), optax.sgd(0.1))
  params = {"w": jax.random.normal(jax.random.key(4), (6,))}
  state = tx.init(params)
  with pytest.raises(curiojax.TangentInaccurateError, match="finish_tangent"):
    curiojax.check_tangent(state)  # the zero tangent: residual 1
  state = curiojax.finish_tangent(state, params, LINEAR, dict(x=x, y=y), solver=solver, tol=1e-6)
  diag = curiojax.tangent_diagnostics(state)
  assert diag.exact and diag.accurate and diag.residual <= 1e-5 and diag.restarts == 0
  np.testing.assert_allclose(curiojax.check_tangent(state)["w"], ridge_tangent(x, params["w"], 0.07), rtol=1e-4)
  # Training continues from the finished tangent (it is now the recursion's start and average).
  step = jax.jit(lambda p, st: tx.update(None, st, p, value_fn=LINEAR, x=x, y=y))
  _, state2 = step(params, state)
  np.testing.assert_allclose(state2[0].tangent["w"], state[0].tangent["w"], rtol=1e-5)


@pytest.mark.slow  # an MLP Jacobian oracle; solves[dense/cg] are the quick checks
def test_finish_gauss_newton_mlp_with_padding_weights_matches_jacobian_oracle():
  kx, kp = jax.random.split(jax.random.key(1))
  x = jax.random.normal(kx, (48, 3))
  y = jnp.sin(x[:, 0])
  weights = (jnp.arange(48) < 30).astype(jnp.float32)  # a padded set: the last 18 rows are padding
  x = x.at[30:].set(5.0)  # padding rows must not count
  params = mlp_params(kp)
  loss = curiojax.prediction_loss(mlp)
  tx = optax.chain(curiojax.regularity_tangent("l2", 1e-3, curvature="gauss_newton", damping=1e-3), optax.adam(1e-2))
  reference = gn_reference(params, np.asarray(x), 2e-3, weights)
  for solver in ("dense", "cg"):
    state = curiojax.finish_tangent(tx.init(params), params, loss, dict(x=x, y=y, weights=weights), solver=solver)
    tangent = flat(curiojax.check_tangent(state))
    assert np.linalg.norm(tangent - reference) / np.linalg.norm(reference) <= 1e-2, solver


def test_finish_is_jittable_compiles_once_and_works_inside_inject_hyperparams():
  x, y = ridge()
  tx = optax.chain(curiojax.tunable_regularity_tangent("l2", 0.1), optax.sgd(0.1))
  traces = []  # one entry per trace: a retrace is what a recompile would need

  @jax.jit
  def finish(st, p):
    traces.append(1)
    return curiojax.finish_tangent(st, p, LINEAR, dict(x=x, y=y))

  params = {"w": jnp.ones(6)}
  state = finish(tx.init(params), params)
  state = finish(curiojax.set_strength(state, 0.3), {"w": -jnp.ones(6)})  # new strength, new params
  assert len(traces) == 1
  np.testing.assert_allclose(curiojax.check_tangent(state)["w"], ridge_tangent(x, -np.ones(6), 0.3), rtol=1e-4)


@pytest.mark.slow  # a second program per solver
def test_finish_several_strengths():
  x, y = ridge(d=4)
  loss = curiojax.prediction_loss(lambda p, x: x[:, :2] @ p["a"] + x[:, 2:] @ p["b"])
  s = jnp.array([0.1, 0.4])
  tx = optax.chain(curiojax.regularity_tangent(curiojax.group_l2({"a": 0, "b": 1}), s), optax.sgd(0.1))
  params = {"a": jnp.array([1.0, -1.0]), "b": jnp.array([0.5, 2.0])}
  for solver in ("dense", "cg"):
    state = curiojax.finish_tangent(tx.init(params), params, loss, dict(x=x, y=y), solver=solver, tol=1e-6)
    tangent = curiojax.check_tangent(state)
    assert tangent["a"].shape == (2, 2)
    h = np.asarray(x.T @ x / len(x), np.float64)
    theta = np.concatenate([params["a"], params["b"]])
    for k in range(2):
      rho = theta * np.repeat(np.eye(2)[k], 2)
      want = -np.linalg.solve(h + np.diag(np.repeat(np.asarray(s), 2)), rho)
      np.testing.assert_allclose(np.concatenate([tangent["a"][k], tangent["b"][k]]), want, rtol=1e-3, atol=1e-6)


def test_finish_nnx_optimizer_in_place():
  x, y = ridge(d=5)
  model = nnx.Linear(5, 1, use_bias=False, rngs=nnx.Rngs(0))
  model_fn, _ = curiojax.nnx_model_fn(model)
  loss = curiojax.prediction_loss(lambda p, x: model_fn(p, x)[:, 0])
  optimizer = nnx.Optimizer(model, optax.chain(curiojax.regularity_tangent("l2", 0.1), optax.sgd(0.1)), wrt=nnx.Param)
  _, params = curiojax.nnx_model_fn(model)
  out = curiojax.finish_tangent(optimizer, params, loss, dict(x=x, y=y))
  assert out is optimizer
  tangent = curiojax.check_tangent(optimizer)
  w = jax.tree.leaves(params)[0][:, 0]
  np.testing.assert_allclose(jax.tree.leaves(tangent)[0][:, 0], ridge_tangent(x, w, 0.1), rtol=1e-4)
  assert curiojax.tangent_diagnostics(optimizer).exact


def test_an_unreachable_tolerance_is_flagged_not_hidden():
  """Two CG products cannot solve an ill-conditioned MLP system: the state says so, loudly."""
  kx, kp = jax.random.split(jax.random.key(2))
  x = jax.random.normal(kx, (64, 3))
  params = mlp_params(kp)
  loss = curiojax.prediction_loss(mlp)
  tx = optax.chain(curiojax.regularity_tangent("l2", 1e-4, curvature="gauss_newton"), optax.adam(1e-2))
  state = curiojax.finish_tangent(tx.init(params), params, loss, dict(x=x, y=jnp.sin(x[:, 0])), solver="cg", maxiter=2)
  diag = curiojax.tangent_diagnostics(state)
  assert diag.exact and not diag.accurate and diag.residual > diag.tolerance
  with pytest.raises(curiojax.TangentInaccurateError, match="maxiter"):
    curiojax.check_tangent(state)
  with pytest.warns(curiojax.TangentInaccurateWarning, match="full-data"):
    curiojax.tangent_of(state)
  # The recorded residual is the true one.
  true = curiojax.relative_residual(
    loss, params, state[0].tangent, dict(x=x, y=jnp.sin(x[:, 0])), strength=1e-4, curvature="gauss_newton"
  )
  assert diag.residual == pytest.approx(float(true), rel=1e-3)


def test_check_tangent_tolerance_argument():
  x, y = ridge()
  tx = optax.chain(curiojax.regularity_tangent("l2", 0.1), optax.sgd(0.1))
  params = {"w": jnp.ones(6)}
  state = curiojax.finish_tangent(tx.init(params), params, LINEAR, dict(x=x, y=y), solver="cg", maxiter=3, tol=1e-9)
  residual = curiojax.tangent_diagnostics(state).residual
  assert 1e-6 < residual < 0.1
  # a finish certifies against its own tolerance: three products did not reach 1e-9, and it says so
  with pytest.raises(curiojax.TangentInaccurateError, match="above the tolerance 1e-09"):
    curiojax.check_tangent(state)
  curiojax.check_tangent(state, tol=0.1)  # a looser tolerance, asked for explicitly
  with pytest.raises(curiojax.TangentInaccurateError, match="above the tolerance"):
    curiojax.check_tangent(state, tol=residual / 2)
  with pytest.raises(ValueError, match="tol must be positive"):
    curiojax.check_tangent(state, tol=0.0)


def test_bad_finishing_arguments_get_clear_errors():
  x, y = ridge()
  params = {"w": jnp.ones(6)}
  state = optax.chain(curiojax.regularity_tangent("l2", 0.1), optax.sgd(0.1)).init(params)
  batch = dict(x=x, y=y)
  with pytest.raises(ValueError, match="Unknown solver"):
    curiojax.finish_tangent(state, params, LINEAR, batch, solver="qr")
  with pytest.raises(ValueError, match="tol must be positive"):
    curiojax.finish_tangent(state, params, LINEAR, batch, tol=-1.0)
  with pytest.raises(ValueError, match="maxiter"):
    curiojax.finish_tangent(state, params, LINEAR, batch, maxiter=0)
  with pytest.raises(TypeError, match="batch must be a dict"):
    curiojax.finish_tangent(state, params, LINEAR, (x, y))
  with pytest.raises(ValueError, match="No regularity tangent"):
    curiojax.finish_tangent(optax.sgd(0.1).init(params), params, LINEAR, batch)
  with pytest.raises(ValueError, match="tree structures"):
    curiojax.finish_tangent(state, {"w": jnp.ones(6), "b": jnp.ones(())}, LINEAR, batch)
  for bad, match in (
    (dict(momentum=1.0), "momentum"),
    (dict(averaging=0), "averaging"),
    (dict(tolerance=0.0), "tolerance"),
  ):
    with pytest.raises(ValueError, match=match):
      curiojax.regularity_tangent("l2", 0.1, **bad)


@pytest.mark.slow  # a full training
def test_trainer_warns_when_finishing_cannot_certify():
  from curiojax.active.training import Trainer, TrainOptions

  x = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)
  spec = curiojax.make_model("mlp", in_features=2, hidden_sizes=(256, 256))  # > 1024 parameters: CG
  trainer = Trainer(spec.model_fn, TrainOptions(epochs=5, damping=0.0, finish_maxiter=2))
  with pytest.warns(curiojax.TangentInaccurateWarning, match="labelled set"):
    result = trainer.fit(spec.init(jax.random.key(0)), x, np.sin(x[:, 0]), strength=1e-5, key=jax.random.key(1))
  assert float(result.tangent_residual) > 0.1


@pytest.mark.slow  # a fresh float64 process
def test_float64_finish(run_float64):
  run_float64(
    textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optax, curiojax
    x = jax.random.normal(jax.random.key(0), (60, 4)); y = x.sum(1)
    loss = curiojax.prediction_loss(lambda p, x: x @ p)
    tx = optax.chain(curiojax.regularity_tangent("l2", 1e-3), optax.adam(1e-2))
    p = jnp.ones(4); st = tx.init(p)
    assert st[0].tangent.dtype == jnp.float64
    for solver in ("dense", "cg"):
      out = curiojax.finish_tangent(st, p, loss, dict(x=x, y=y), solver=solver, tol=1e-12)
      tau = curiojax.check_tangent(out, tol=1e-10)
      assert tau.dtype == jnp.float64 and out[0].residual.dtype == jnp.float64
      exact = -np.linalg.solve(np.asarray(x.T @ x) / 60 + 1e-3 * np.eye(4), np.ones(4))
      assert np.abs(np.asarray(tau) - exact).max() / np.abs(exact).max() < 1e-9, solver
    print("ok")
  """)
  )


def test_no_warning_for_a_certified_tangent():
  x, y = ridge()
  tx = optax.chain(curiojax.regularity_tangent("l2", 0.1), optax.sgd(0.2))
  params = {"w": jnp.zeros(6)}
  step = jax.jit(lambda p, st: tx.update(None, st, p, value_fn=LINEAR, x=x, y=y))
  state = tx.init(params)
  for _ in range(300):
    u, state = step(params, state)
    params = optax.apply_updates(params, u)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    curiojax.tangent_of(state)  # full batch, converged: the online estimate certifies it
  assert curiojax.tangent_diagnostics(state).accurate

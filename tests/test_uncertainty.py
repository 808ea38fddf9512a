"""The predictive standard deviation: dense oracles for the posterior, leave-one-out by refitting, calibration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import curiojax
from curiojax.active.models import NTKMLP
from curiojax.scoring.uncertainty import calibrate, laplace_posterior
from curiojax.tangent.curvature import TangentSystem
from curiojax.tangent.operator import TangentOperator


def operator(model_fn, params, x, y, s, damping=0.0, weights=None, curvature="gauss_newton", loss="squared_error"):
  system = TangentSystem(curiojax.prediction_loss(model_fn, loss), curiojax.l2(), curvature)
  batch = dict(x=x, y=y) if weights is None else dict(x=x, y=y, weights=weights)
  return TangentOperator(system, params, s, damping, batch)


def linear(p, x):
  return x @ p


def ridge(x, y, mu, n):
  """argmin Σ½(xθ − y)²/n + μ½‖θ‖² (n fixed: a left-out row keeps the others' weights)."""
  return np.linalg.solve(x.T @ x / n + mu * np.eye(x.shape[1]), x.T @ y / n)


def test_linear_model_matches_the_dense_posterior_and_refitted_leave_one_out():
  rng = np.random.default_rng(0)
  n, d, mu = 30, 5, 0.05
  x = rng.normal(size=(n, d))
  y = x @ rng.normal(size=d) + 0.3 * rng.normal(size=n)
  theta = ridge(x, y, mu, n)
  op = operator(linear, jnp.asarray(theta, jnp.float32), jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), mu)
  post = laplace_posterior(op)
  # e(x) = x (XᵀX/n + μI)⁻¹ xᵀ / n, the dense formula
  x_new = rng.normal(size=(7, d)) * 3
  dense = np.einsum("ij,jk,ik->i", x_new, np.linalg.inv(x.T @ x / n + mu * np.eye(d)), x_new) / n
  np.testing.assert_allclose(post.epistemic(x_new), dense, rtol=2e-3)
  # the leave-one-out residuals are those of refitting without the row
  refit = np.array([y[i] - x[i] @ ridge(np.delete(x, i, 0), np.delete(y, i), mu, n) for i in range(n)])
  np.testing.assert_allclose(post.loo_residuals, refit, rtol=2e-3, atol=1e-4)
  np.testing.assert_array_less(0, post.std(x_new))
  np.testing.assert_allclose(post.spread(x_new) ** 2, post.noise + post.scale * dense, rtol=5e-3)


def test_padded_rows_change_nothing():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(20, 3)), jnp.float32)
  y = jnp.sin(x[:, 0])
  model = NTKMLP((8,))
  params = model.init(jax.random.key(0), 3)
  plain = laplace_posterior(operator(model, params, x, y, 1e-2))
  xp = jnp.concatenate([x, jnp.zeros((12, 3))])
  yp = jnp.concatenate([y, jnp.zeros(12)])
  padded = laplace_posterior(operator(model, params, xp, yp, 1e-2, weights=jnp.r_[jnp.ones(20), jnp.zeros(12)]))
  probe = jnp.asarray(rng.normal(size=(5, 3)) * 2, jnp.float32)
  np.testing.assert_allclose(padded.std(probe), plain.std(probe), rtol=1e-4)


def test_factored_and_generic_models_agree():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.uniform(-1, 1, size=(24, 2)), jnp.float32)
  model = NTKMLP((16, 16))
  params = model.init(jax.random.key(1), 2)
  generic = lambda p, x: model(p, x)  # no gradient_factors: per-example gradients
  probe = jnp.asarray(rng.uniform(-3, 3, size=(9, 2)), jnp.float32)
  a = laplace_posterior(operator(model, params, x, jnp.sin(3 * x[:, 0]), 1e-3, 1e-3))
  b = laplace_posterior(operator(generic, params, x, jnp.sin(3 * x[:, 0]), 1e-3, 1e-3))
  np.testing.assert_allclose(a.epistemic(probe), b.epistemic(probe), rtol=1e-3)


def test_the_models_uncertainty_grows_away_from_the_data():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.uniform(-1, 1, size=(40, 2)), jnp.float32)
  model = lambda p, x: jnp.tanh(x @ p["w"] + p["b"]) @ p["v"]
  keys = jax.random.split(jax.random.key(1), 3)
  params = {"w": jax.random.normal(keys[0], (2, 32)), "b": jax.random.normal(keys[1], (32,))}
  params["v"] = jax.random.normal(keys[2], (32,)) / 6
  post = laplace_posterior(operator(model, params, x, jnp.sin(3 * x[:, 0]), 1e-3, 1e-3))
  near = jnp.asarray(rng.uniform(-1, 1, size=(50, 2)), jnp.float32)
  spread = [np.median(post.epistemic(near * f)) for f in (1, 2, 4)]
  assert 5 * spread[0] < spread[1] < spread[2]


def test_calibration_recovers_noise_and_scale_and_a_constant_spread_is_all_noise():
  rng = np.random.default_rng(3)
  g = rng.uniform(0, 3, 20_000)
  a, b, dof = calibrate(rng.normal(size=g.size) * np.sqrt(0.2 + 1.5 * g), g)
  assert abs(a - 0.2) < 0.03 and abs(b - 1.5) < 0.1 and dof >= 20
  a, b, dof = calibrate(rng.normal(size=5000) * 0.5, np.zeros(5000))  # no spread: the variance is a
  assert abs(a - 0.25) < 0.02
  a, b, dof = calibrate(rng.standard_t(4, size=5000) * 0.5, np.zeros(5000))  # heavy tails are seen
  assert 3 <= dof <= 6 and abs(a - 0.25) < 0.03
  with pytest.raises(ValueError, match="at least one"):
    calibrate([], [])


def test_coverage_on_a_noisy_function_is_near_nominal():
  """Gaussian noise on a smooth function, held-out rows inside the data's range: about 68% / 95%."""
  rng = np.random.default_rng(4)
  f = lambda x: np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] ** 2
  x_pool = rng.uniform(-2, 2, size=(2000, 2))
  y_pool = f(x_pool) + 0.3 * rng.normal(size=2000)
  learner = curiojax.Learner(
    x_pool, options=curiojax.LearnerOptions(train=curiojax.TrainOptions(epochs=200)), strategy="random"
  )
  state = learner.init(jax.random.key(0), labelled=np.arange(150), labels=y_pool[:150])
  state, fit = learner.fit(state)
  y = y_pool[150:]
  inside = {
    level: np.mean((lo <= y) & (y <= hi))
    for level in (0.68, 0.95)
    for lo, hi in [learner.interval(state, fit, x_pool[150:], level)]
  }
  assert 0.6 < inside[0.68] < 0.76 and 0.9 < inside[0.95] < 0.99, inside


def test_learner_suggestion_carries_prediction_and_std_in_the_targets_units():
  rng = np.random.default_rng(5)
  x_pool = rng.normal(size=(120, 3)) * [1.0, 100.0, 0.01] + [0.0, 500.0, 0.0]  # unscaled inputs
  y_pool = 1000.0 + 50.0 * np.tanh(x_pool[:, 0]) + rng.normal(size=120)
  learner = curiojax.Learner(
    x_pool,
    options=curiojax.LearnerOptions(
      model=curiojax.ModelOptions(hidden_sizes=(16,), activation="relu"), train=curiojax.TrainOptions(epochs=60)
    ),
  )
  state = learner.init(jax.random.key(1), labelled=np.arange(20), labels=y_pool[:20])
  state, batch = learner.ask(state, 6)
  assert batch.prediction.shape == batch.std.shape == (6,)
  assert np.all(np.isfinite(batch.std)) and np.all(batch.std > 0)
  np.testing.assert_allclose(batch.prediction, learner.predict(state, batch.fit, x_pool[batch.indices]), rtol=1e-6)
  assert 900 < np.median(batch.prediction) < 1100 and np.median(batch.std) < 100  # the target's units
  mean, std = learner.predict(state, batch.fit, x_pool[batch.indices], return_std=True)
  np.testing.assert_allclose(std, batch.std, rtol=1e-5)
  with pytest.raises(TypeError, match="return_std"):
    learner.predict(state, batch.fit, x_pool[:2], return_std="yes")


def test_a_hessian_learner_still_gets_a_gauss_newton_posterior_and_bad_operators_are_refused():
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.normal(size=(10, 2)), jnp.float32)
  y = x[:, 0]
  params = jnp.zeros(2)
  with pytest.raises(ValueError, match="Gauss-Newton"):
    laplace_posterior(operator(linear, params, x, y, 1e-2, curvature="hessian"))
  with pytest.raises(ValueError, match="at least 3"):
    laplace_posterior(operator(linear, params, x[:2], y[:2], 1e-2))
  post = laplace_posterior(operator(linear, params, x, y, 1e-2))
  with pytest.raises(ValueError, match="non-empty"):
    post.std(jnp.zeros((0, 2)))
  x_pool = rng.normal(size=(50, 2))
  train = curiojax.TrainOptions(epochs=10, curvature="hessian", damping=1e-2)
  options = curiojax.LearnerOptions(model=curiojax.ModelOptions(hidden_sizes=(8,)), train=train)
  learner = curiojax.Learner(x_pool, options=options, strategy="random")
  state = learner.init(jax.random.key(0), labelled=np.arange(8), labels=x_pool[:8, 0])
  state, batch = learner.ask(state, 2)
  assert np.all(batch.std > 0)


def test_float64_matches_the_dense_posterior_to_float64_accuracy(run_float64):
  run_float64("""
    import jax.numpy as jnp, numpy as np, curiojax
    from curiojax.scoring.uncertainty import laplace_posterior
    from curiojax.tangent.curvature import TangentSystem
    from curiojax.tangent.operator import TangentOperator
    rng = np.random.default_rng(7)
    n, d, mu = 25, 4, 1e-4
    x = rng.normal(size=(n, d)); y = x @ np.arange(4.0) + rng.normal(size=n)
    theta = np.linalg.solve(x.T @ x / n + mu * np.eye(d), x.T @ y / n)
    system = TangentSystem(curiojax.prediction_loss(lambda p, x: x @ p), curiojax.l2(), "gauss_newton")
    batch = dict(x=jnp.asarray(x), y=jnp.asarray(y))
    post = laplace_posterior(TangentOperator(system, jnp.asarray(theta), mu, 0.0, batch))
    probe = rng.normal(size=(6, d))
    dense = np.einsum("ij,jk,ik->i", probe, np.linalg.inv(x.T @ x / n + mu * np.eye(d)), probe) / n
    assert np.allclose(post.epistemic(probe), dense, rtol=1e-8), (post.epistemic(probe), dense)
    print("ok")
  """)


def test_a_second_pool_of_the_same_padded_size_does_not_recompile(compilations):
  rng = np.random.default_rng(8)
  x = jnp.asarray(rng.normal(size=(12, 2)), jnp.float32)
  post = laplace_posterior(operator(linear, jnp.ones(2), x, x[:, 0], 1e-2))
  post.std(rng.normal(size=(9, 2)))
  with compilations() as names:
    post.std(rng.normal(size=(10, 2)))  # padded to its size class, 10 rows, as the first
  assert not names, names


def test_intervals_are_nested_and_a_student_t_is_wider_in_its_tails():
  rng = np.random.default_rng(9)
  x = jnp.asarray(rng.normal(size=(60, 2)), jnp.float32)
  y = x[:, 0] + jnp.asarray(rng.standard_t(3, size=60), jnp.float32) * 0.3  # heavy-tailed noise
  theta = jnp.asarray(ridge(np.asarray(x), np.asarray(y), 1e-2, 60), jnp.float32)
  post = laplace_posterior(operator(linear, theta, x, y, 1e-2))
  probe = rng.normal(size=(4, 2))
  h68, h95 = post.half_width(probe, 0.68), post.half_width(probe, 0.95)
  assert np.all(0 < h68) and np.all(h68 < h95)
  assert post.dof < np.inf  # the tails were seen
  assert np.all(h95 / post.spread(probe) > 1.97)  # wider than a Gaussian's 1.96
  with pytest.raises(ValueError, match="level"):
    post.half_width(probe, 1.5)

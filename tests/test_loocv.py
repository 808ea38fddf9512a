"""Leave-one-out CV: closed form and influence approximation against brute-force refits."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import curiojax


def _poly_data(n=15, degree=5, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1, 1, n)
  y = np.sin(np.pi * x) + 0.1 * rng.normal(size=n)
  return x, np.stack([x**k for k in range(degree + 1)], 1), y


def _refit_without(phi, y, i, s):
  """Brute force: drop point i's term, keep the 1/n and s (the module's convention)."""
  n = phi.shape[0]
  keep = np.arange(n) != i
  a = phi[keep].T @ phi[keep] / n + s * np.eye(phi.shape[1])
  return np.linalg.solve(a, phi[keep].T @ y[keep] / n)


def _brute_loo_residuals(phi, y, s):
  return np.array([y[i] - phi[i] @ _refit_without(phi, y, i, s) for i in range(len(y))])


def test_closed_form_equals_brute_force_refits():
  _, phi, y = _poly_data()
  s = 1e-3
  loo = curiojax.loocv_linear(phi.astype(np.float32), y.astype(np.float32), s)
  brute = _brute_loo_residuals(phi, y, s)
  np.testing.assert_allclose(loo.residuals, brute, rtol=2e-3, atol=1e-5)
  np.testing.assert_allclose(loo.mse, np.mean(brute**2), rtol=2e-3)
  np.testing.assert_allclose(loo.predictions, y - brute, rtol=2e-3, atol=1e-5)
  # Leverages: the diagonal of Φ(ΦᵀΦ + nsI)⁻¹Φᵀ.
  hat = phi @ np.linalg.solve(phi.T @ phi + len(y) * s * np.eye(phi.shape[1]), phi.T)
  np.testing.assert_allclose(loo.leverages, np.diag(hat), rtol=1e-4, atol=1e-6)


def test_log_strength_and_grid_agree_with_single_evaluations():
  _, phi, y = _poly_data(seed=1)
  phi, y = jnp.asarray(phi, jnp.float32), jnp.asarray(y, jnp.float32)
  log_grid = jnp.linspace(-10.0, 0.0, 11)
  best, errors = curiojax.loocv_grid(phi, y, log_grid, log_strength=True)
  singles = [float(curiojax.loocv_linear(phi, y, float(jnp.exp(g))).mse) for g in log_grid]
  np.testing.assert_allclose(errors, singles, rtol=1e-4)
  assert float(best) == float(log_grid[int(np.argmin(singles))])
  np.testing.assert_allclose(
    curiojax.loocv_linear(phi, y, -3.0, log_strength=True).mse,
    curiojax.loocv_linear(phi, y, float(np.exp(-3.0))).mse,
    rtol=1e-5,
  )


def test_multi_output_is_the_sum_over_outputs():
  _, phi, y = _poly_data(seed=2)
  y2 = np.stack([y, np.cos(y)], 1)
  both = curiojax.loocv_linear(phi, y2, 1e-2)
  cols = [curiojax.loocv_linear(phi, y2[:, j], 1e-2) for j in range(2)]
  np.testing.assert_allclose(both.mse, sum(float(c.mse) for c in cols), rtol=1e-5)
  np.testing.assert_allclose(both.residuals[:, 1], cols[1].residuals, rtol=1e-5, atol=1e-6)


def test_influence_is_exact_for_a_linear_model():
  _, phi, y = _poly_data(seed=3, degree=3)
  n, s = len(y), 1e-2
  theta = np.linalg.solve(phi.T @ phi / n + s * np.eye(4), phi.T @ y / n)
  loss = curiojax.prediction_loss(lambda p, x: x @ p["w"])
  loo = curiojax.loocv_influence(
    loss,
    {"w": jnp.asarray(theta, jnp.float32)},
    jnp.asarray(phi, jnp.float32),
    jnp.asarray(y, jnp.float32),
    regularizer=curiojax.l2(),
    strength=s,
  )
  brute = _brute_loo_residuals(phi, y, s)
  np.testing.assert_allclose(loo.residuals, brute, rtol=2e-3, atol=1e-5)
  closed = curiojax.loocv_linear(phi, y, s)
  np.testing.assert_allclose(loo.leverages, closed.leverages, rtol=1e-3, atol=1e-6)
  # Without the downdate, the plain influence function under-shoots by the factor (1 − h).
  plain = curiojax.loocv_influence(
    loss,
    {"w": jnp.asarray(theta, jnp.float32)},
    jnp.asarray(phi, jnp.float32),
    jnp.asarray(y, jnp.float32),
    regularizer=curiojax.l2(),
    strength=s,
    correction="none",
  )
  r = y - phi @ theta
  np.testing.assert_allclose(
    plain.residuals, r + (brute - r) * (1 - np.asarray(closed.leverages)), rtol=2e-3, atol=1e-5
  )


def _net(p, x):
  return jnp.tanh(x[:, None] * p["a"] + p["b"]) @ p["c"] + p["d"]


@jax.jit
def _refit(params, x, y, w, s):
  """Newton's method on mean(w·½(f − y)²)·(weights not renormalised) + s·½‖θ‖², from params."""
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  f = lambda v: jnp.sum(w * 0.5 * (_net(unravel(v), x) - y) ** 2) / x.shape[0] + s * 0.5 * jnp.sum(v**2)
  newton = lambda _, v: v - jnp.linalg.solve(jax.hessian(f)(v), jax.grad(f)(v))
  return unravel(jax.lax.fori_loop(0, 20, newton, flat))


def test_influence_matches_brute_force_on_a_nonlinear_model():
  rng = np.random.default_rng(4)
  n, s = 20, 1e-2
  x = jnp.asarray(rng.uniform(-2, 2, n), jnp.float32)
  y = jnp.asarray(np.tanh(1.5 * np.asarray(x) - 0.3) + 0.05 * rng.normal(size=n), jnp.float32)
  init = {"a": jnp.array([1.5, 0.5]), "b": jnp.array([-0.3, 0.0]), "c": jnp.array([1.0, 0.1]), "d": jnp.zeros(())}
  theta = _refit(init, x, y, jnp.ones(n), s)
  loss = curiojax.prediction_loss(_net)
  loo = curiojax.loocv_influence(loss, theta, x, y, regularizer=curiojax.l2(), strength=s)
  brute = np.array(
    [float(y[i] - _net(_refit(theta, x, y, jnp.ones(n).at[i].set(0.0), s), x[i : i + 1])[0]) for i in range(n)]
  )
  r = np.asarray(y - _net(theta, x))
  # Compare the leave-one-out corrections e_i − r_i (the part the approximation supplies).
  err = np.linalg.norm(np.asarray(loo.residuals) - brute) / np.linalg.norm(brute - r)
  assert err < 0.1, err
  plain = curiojax.loocv_influence(loss, theta, x, y, regularizer=curiojax.l2(), strength=s, correction="none")
  err_plain = np.linalg.norm(np.asarray(plain.residuals) - brute) / np.linalg.norm(brute - r)
  assert err < err_plain


@pytest.mark.slow  # a fresh float64 process
def test_degree_nine_worked_example_in_float64(run_float64):
  """method.md's setting (n = 20, degree 9, log strength): closed form = refits to 1e-8, in x64."""
  code = textwrap.dedent("""
    import numpy as np, jax, curiojax
    assert jax.numpy.ones(1).dtype == np.float64
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 20); y = np.sin(np.pi * x) + 0.1 * rng.normal(size=20)
    phi = np.stack([x**k for k in range(10)], 1)
    for log_s in (-12.0, -6.0, 0.0):
      s = np.exp(log_s)
      loo = curiojax.loocv_linear(phi, y, log_s, log_strength=True)
      brute = []
      for i in range(20):
        keep = np.arange(20) != i
        th = np.linalg.solve(phi[keep].T @ phi[keep] / 20 + s * np.eye(10), phi[keep].T @ y[keep] / 20)
        brute.append(y[i] - phi[i] @ th)
      np.testing.assert_allclose(loo.residuals, brute, rtol=1e-7, atol=1e-9)
    print("ok")
  """)
  run_float64(code, timeout=120, JAX_PLATFORMS="cpu")


def test_bad_inputs():
  _, phi, y = _poly_data()
  with pytest.raises(ValueError, match=r"\(n, p\)"):
    curiojax.loocv_linear(phi[:, 0], y, 0.1)
  with pytest.raises(ValueError, match="y must have shape"):
    curiojax.loocv_linear(phi, y[:-1], 0.1)
  with pytest.raises(ValueError, match="NaN"):
    curiojax.loocv_linear(phi, np.where(np.arange(len(y)) == 3, np.nan, y), 0.1)
  with pytest.raises(ValueError, match=">= 0"):
    curiojax.loocv_linear(phi, y, -0.1)
  with pytest.raises(ValueError, match="1-D grid"):
    curiojax.loocv_grid(phi, y, [])
  loss = curiojax.prediction_loss(lambda p, x: x @ p)
  with pytest.raises(ValueError, match="correction"):
    curiojax.loocv_influence(loss, jnp.zeros(6), phi, y, correction="exact")
  with pytest.raises(TypeError, match="prediction_loss"):
    curiojax.loocv_influence(lambda p, x, y: 0.0, jnp.zeros(6), phi, y)
  with pytest.raises(ValueError, match="non-empty leading axis"):  # a scalar x, not an IndexError
    curiojax.loocv_influence(loss, jnp.zeros(6), jnp.float32(1.0), y)


def test_ridge_fit_and_polynomial_features():
  x, phi, y = _poly_data(seed=5)
  np.testing.assert_allclose(curiojax.polynomial_features(x, 5), phi, rtol=1e-5, atol=1e-6)
  s = 1e-2
  expected = np.linalg.solve(phi.T @ phi / len(y) + s * np.eye(6), phi.T @ y / len(y))
  np.testing.assert_allclose(curiojax.ridge_fit(phi, y, s), expected, rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(curiojax.ridge_fit(phi, y, np.log(s), log_strength=True), expected, rtol=1e-3, atol=1e-5)
  with pytest.raises(ValueError, match="degree"):
    curiojax.polynomial_features(x, -1)

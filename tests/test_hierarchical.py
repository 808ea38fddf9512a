"""Multi-user model: tangents for the shared and per-user strengths vs finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import curiojax

U, D = 3, 3
exact_tangent = jax.jit(
  curiojax.exact_tangent, static_argnums=0, static_argnames=("regularizer", "curvature", "solver")
)


def _data(seed=0, sizes=(12, 6, 3)):
  rng = np.random.default_rng(seed)
  theta0 = rng.normal(size=D)
  users = np.concatenate([np.full(m, u) for u, m in enumerate(sizes)])
  phi = rng.normal(size=(len(users), D))
  deltas = 0.5 * rng.normal(size=(U, D))
  y = np.einsum("nd,nd->n", phi, theta0 + deltas[users]) + 0.3 * rng.normal(size=len(users))
  return users, phi, y


def _design(users, phi):
  """Flat params [θ₀, δ_0, …, δ_{U−1}]: user u's row has φ in the θ₀ block and in δ_u's block."""
  a = np.zeros((len(users), D * (1 + U)))
  a[:, :D] = phi
  for i, u in enumerate(users):
    a[i, D * (1 + u) : D * (2 + u)] = phi[i]
  return a


def _fit(users, phi, y, strengths):
  """θ*(s) in float64: strengths (s₀, s_user_0, …) per block."""
  a, n = _design(users, phi), len(y)
  diag = np.repeat(np.asarray(strengths, float), D)
  return np.linalg.solve(a.T @ a / n + np.diag(diag), a.T @ y / n)


def _to_tree(flat):
  return {
    "shared": {"w": jnp.asarray(flat[:D], jnp.float32)},
    "users": {"w": jnp.asarray(flat[D:].reshape(U, D), jnp.float32)},
  }


MODEL = curiojax.hierarchical_model_fn(lambda p, x: x @ p["w"])
LOSS = curiojax.prediction_loss(MODEL)


@pytest.mark.parametrize("per_user", [False, True])
def test_exact_multi_user_tangents_match_finite_differences(per_user):
  users, phi, y = _data()
  s = np.array([0.05, 0.3, 0.1, 0.6]) if per_user else np.array([0.05, 0.3])
  blocks = (lambda s: s) if per_user else (lambda s: np.array([s[0]] + [s[1]] * U))
  theta = _fit(users, phi, y, blocks(s))
  reg = curiojax.hierarchical_l2(per_user=per_user)
  batch = dict(x=curiojax.with_user(jnp.asarray(users), jnp.asarray(phi, jnp.float32)), y=jnp.asarray(y, jnp.float32))
  tau = exact_tangent(LOSS, _to_tree(theta), batch, regularizer=reg, strength=jnp.asarray(s, jnp.float32))
  assert tau["users"]["w"].shape == (len(s), U, D)
  eps = 1e-5
  for k in range(len(s)):
    e = np.eye(len(s))[k] * eps
    fd = (_fit(users, phi, y, blocks(s + e)) - _fit(users, phi, y, blocks(s - e))) / (2 * eps)
    got = np.concatenate([tau["shared"]["w"][k], tau["users"]["w"][k].ravel()])
    np.testing.assert_allclose(got, fd, rtol=1e-3, atol=1e-3 * np.abs(fd).max())


@pytest.mark.slow  # a long carried-tangent training; the exact tangents are the quick checks
def test_carried_tangents_and_per_hyperparameter_curiosity():
  """Training carries both tangents; curiosity_scores gives d f(x)/ds_k for every candidate."""
  users, phi, y = _data(seed=1)
  s = np.array([0.05, 0.3])
  blocks = lambda s: np.array([s[0]] + [s[1]] * U)
  reg = curiojax.hierarchical_l2()
  batch = dict(x=curiojax.with_user(jnp.asarray(users), jnp.asarray(phi, jnp.float32)), y=jnp.asarray(y, jnp.float32))
  tx = optax.chain(curiojax.regularity_tangent(reg, jnp.asarray(s, jnp.float32)), optax.sgd(0.2))

  def step(carry, _):
    p, st = carry
    u, st = tx.update(None, st, p, value_fn=LOSS, **batch)
    return (optax.apply_updates(p, u), st), None

  params = curiojax.hierarchical_params({"w": jnp.zeros(D)}, U)
  (params, state), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=3000)
  theta = _fit(users, phi, y, blocks(s))
  np.testing.assert_allclose(params["shared"]["w"], theta[:D], rtol=1e-3, atol=1e-4)
  tau = curiojax.tangent_of(state)
  # Candidates: one new point per user; the oracle is d f_u(x)/ds_k by retraining at s ± ε.
  rng = np.random.default_rng(5)
  cand_users, cand_phi = np.arange(U), rng.normal(size=(U, D))
  x_cand = curiojax.with_user(jnp.asarray(cand_users), jnp.asarray(cand_phi, jnp.float32))
  scores = curiojax.curiosity_scores(MODEL, params, tau, x_cand, heuristic="jvp")
  assert scores.shape == (U, 2)
  eps = 1e-5
  for k in range(2):
    e = np.eye(2)[k] * eps
    fd_theta = (_fit(users, phi, y, blocks(s + e)) - _fit(users, phi, y, blocks(s - e))) / (2 * eps)
    fd = _design(cand_users, cand_phi) @ fd_theta
    np.testing.assert_allclose(scores[:, k], fd, rtol=1e-2, atol=1e-2 * np.abs(fd).max())


def test_model_and_regularizer_values():
  users, phi, y = _data(seed=2)
  flat = np.random.default_rng(0).normal(size=D * (1 + U))
  params = _to_tree(flat)
  x = curiojax.with_user(jnp.asarray(users), jnp.asarray(phi, jnp.float32))
  np.testing.assert_allclose(MODEL(params, x), _design(users, phi) @ flat, rtol=1e-5, atol=1e-5)
  s = np.array([0.2, 0.7])
  expected = 0.5 * s[0] * np.sum(flat[:D] ** 2) + 0.5 * s[1] * np.sum(flat[D:] ** 2)
  np.testing.assert_allclose(curiojax.hierarchical_l2()(params, s), expected, rtol=1e-5)
  log_reg = curiojax.hierarchical_l2(log_strength=True)
  np.testing.assert_allclose(log_reg(params, np.log(s)), expected, rtol=1e-5)
  per = np.array([0.2, 0.1, 0.5, 0.9])
  expected_per = 0.5 * per[0] * np.sum(flat[:D] ** 2) + sum(
    0.5 * per[1 + u] * np.sum(flat[D * (1 + u) : D * (2 + u)] ** 2) for u in range(U)
  )
  np.testing.assert_allclose(curiojax.hierarchical_l2(per_user=True)(params, per), expected_per, rtol=1e-5)
  agg = curiojax.per_user_scores(np.array([1.0, 5.0, 2.0, 0.5]), np.array([0, 0, 2, 2]), 3)
  assert agg[0] == 5.0 and agg[1] == -np.inf and agg[2] == 2.0
  mean = curiojax.per_user_scores(np.array([1.0, 5.0, 2.0, 0.5]), np.array([0, 0, 2, 2]), 3, reduce="mean")
  assert mean[0] == 3.0 and np.isnan(mean[1]) and mean[2] == 1.25
  u_back, f_back = curiojax.split_user(x)
  np.testing.assert_array_equal(u_back, users)
  np.testing.assert_allclose(f_back, phi, rtol=1e-6)


def test_bad_inputs():
  params = curiojax.hierarchical_params({"w": jnp.zeros(D)}, U)
  with pytest.raises(ValueError, match=r"\(2,\)"):
    curiojax.hierarchical_l2()(params, jnp.ones(3))
  with pytest.raises(ValueError, match="1 \\+ num_users"):
    curiojax.hierarchical_l2(per_user=True)(params, jnp.ones(2))
  with pytest.raises(TypeError, match="integer"):
    curiojax.with_user(jnp.array([0.0, 1.0]), jnp.ones((2, D)))
  with pytest.raises(ValueError, match="shape"):
    curiojax.with_user(jnp.array([0, 1, 2]), jnp.ones((2, D)))
  with pytest.raises(ValueError, match="num_users"):
    curiojax.hierarchical_params({"w": jnp.zeros(D)}, 0)
  with pytest.raises(ValueError, match="reduce"):
    curiojax.per_user_scores(np.ones(2), np.zeros(2, int), 1, reduce="median")
  with pytest.raises(ValueError, match=r"\[0, 2\)"):
    curiojax.per_user_scores(np.ones(2), np.array([0, 2]), 2)
  with pytest.raises(ValueError, match="strength must be >= 0"):
    curiojax.regularity_tangent(curiojax.hierarchical_l2(), strength=jnp.array([0.1, -0.1]))
  with pytest.raises(ValueError, match="strength must be >= 0"):
    curiojax.regularity_tangent(curiojax.group_l2({"w": 0}), strength=jnp.array([-0.1]))

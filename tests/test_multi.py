"""Several hyperparameters: forward multi-tangent curiosities equal the adjoint computation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import curiojax

exact_tangent = jax.jit(
  curiojax.exact_tangent, static_argnums=0, static_argnames=("regularizer", "curvature", "solver")
)


def _mlp(p, x):
  return jnp.tanh(x @ p["layer1"]["w"] + p["layer1"]["b"]) @ p["layer2"]["w"] + p["layer2"]["b"]


def _setup(seed=0, n=40):
  k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
  params = {
    "layer1": {"w": jax.random.normal(k1, (3, 8)) / 2, "b": jnp.zeros(8)},
    "layer2": {"w": jax.random.normal(k2, (8,)) / 3, "b": jnp.zeros(())},
  }
  x = jax.random.normal(k3, (n, 3))
  y = jnp.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] + 0.1 * jax.random.normal(k4, (n,))
  return params, x, y


LOSS = curiojax.prediction_loss(_mlp)


def _rel(a, b):
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.mark.parametrize("curvature, damping", [("gauss_newton", 1e-3), ("hessian", 0.0)])
def test_per_layer_forward_equals_adjoint(curvature, damping):
  """Per-layer strengths (group_l2): forward c_k = ∇ℓᵀτ_k vs adjoint −λᵀρ_k, rel ≤ 1e-4."""
  params, x, y = _setup()
  groups = curiojax.layer_groups(params)
  assert groups == {"layer1": 0, "layer2": 1}
  reg, s = curiojax.group_l2(groups), jnp.array([0.05, 0.2])
  # Train to a minimum (the Hessian variant needs a positive definite H there).
  batch = dict(x=x, y=y)
  tx = optax.adam(1e-2)
  objective = jax.grad(lambda p: LOSS(p, **batch) + reg(p, s))

  def step(carry, _):
    p, st = carry
    u, st = tx.update(objective(p), st, p)
    return (optax.apply_updates(p, u), st), None

  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=1500)
  tau = exact_tangent(LOSS, params, batch, regularizer=reg, strength=s, curvature=curvature, damping=damping)
  xq, yq = x[:10] + 0.3, y[:10] - 0.2
  fwd = curiojax.signed_curiosities(LOSS, params, tau, xq, yq)
  assert fwd.shape == (10, 2)
  adj = curiojax.adjoint_curiosities(
    LOSS, params, batch, xq, yq, regularizer=reg, strength=s, curvature=curvature, damping=damping
  )
  for k in range(2):
    assert _rel(adj[:, k], fwd[:, k]) <= 1e-4, (k, _rel(adj[:, k], fwd[:, k]))
  adj_cg = curiojax.adjoint_curiosities(
    LOSS,
    params,
    batch,
    xq,
    yq,
    regularizer=reg,
    strength=s,
    curvature=curvature,
    damping=damping,
    solver="cg",
    tol=1e-7,
    maxiter=500,
  )
  assert _rel(adj_cg, fwd) <= 1e-3


def test_forward_is_the_per_example_gradient_dot_tangent():
  """signed_curiosities is ∇ℓ(zᵢ)ᵀτ_k (oracle: explicit per-example gradients), scalar and k."""
  params, x, y = _setup(seed=1)
  reg = curiojax.group_l2(curiojax.layer_groups(params))
  batch = dict(x=x, y=y)
  tau = exact_tangent(
    LOSS, params, batch, regularizer=reg, strength=jnp.array([0.1, 0.3]), curvature="gauss_newton", damping=1e-2
  )
  grads = curiojax.per_example_gradients(LOSS, params, x[:6], y[:6])
  flat = lambda t: jax.flatten_util.ravel_pytree(t)[0]
  g = jax.vmap(flat)(grads)
  expected = jnp.stack([g @ flat(jax.tree.map(lambda t, k=k: t[k], tau)) for k in range(2)], 1)
  np.testing.assert_allclose(
    curiojax.signed_curiosities(LOSS, params, tau, x[:6], y[:6]), expected, rtol=1e-4, atol=1e-7
  )
  one = jax.tree.map(lambda t: t[0], tau)
  np.testing.assert_allclose(
    curiojax.signed_curiosities(LOSS, params, one, x[:6], y[:6]), expected[:, 0], rtol=1e-4, atol=1e-7
  )


def test_scalar_strength_adjoint_matches_ridge_closed_form(compilations):
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(30, 4)), rng.normal(size=30)
  s = 0.1
  h = x.T @ x / 30 + s * np.eye(4)
  theta = np.linalg.solve(h, x.T @ y / 30)
  xq, yq = rng.normal(size=(5, 4)), rng.normal(size=5)
  expected = ((xq @ theta - yq)[:, None] * xq) @ (-np.linalg.solve(h, theta))  # ∇ℓᵀτ, τ = −H⁻¹θ
  loss = curiojax.prediction_loss(lambda p, x: x @ p)
  adj = curiojax.adjoint_curiosities(loss, jnp.asarray(theta, jnp.float32), dict(x=x, y=y), xq, yq, strength=s)
  assert adj.shape == (5,)
  np.testing.assert_allclose(adj, expected, rtol=1e-4, atol=1e-6)
  # the default regularizer "l2" is one object, so a second call reuses the compiled solve
  with compilations() as names:
    curiojax.adjoint_curiosities(loss, jnp.asarray(theta, jnp.float32), dict(x=x, y=y), xq, yq, strength=s)
  assert not [n for n in names if "_adjoint" in n], names


def test_bad_inputs():
  params, x, y = _setup()
  with pytest.raises(TypeError, match="non-empty dict"):
    curiojax.layer_groups([1, 2])
  with pytest.raises(TypeError, match="prediction_loss"):
    curiojax.signed_curiosities(_mlp, params, params, x, y)
  with pytest.raises(ValueError, match="leading axis"):
    curiojax.signed_curiosities(LOSS, params, params, x, y[:-1])
  with pytest.raises(ValueError, match="solver"):
    curiojax.adjoint_curiosities(LOSS, params, dict(x=x, y=y), x, y, solver="lu")

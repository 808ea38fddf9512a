"""Hypergradient ``∇L_valᵀτ`` against finite differences of retrained models; online tuning of s."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import curiojax
from curiojax.tangent.state import align_tangent


def _ridge_data(seed=0, n=40, d=6, noise=0.5, n_val=None):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=d)
  n_val = n if n_val is None else n_val
  x = rng.normal(size=(n + n_val, d))
  y = x @ w + noise * rng.normal(size=n + n_val)
  return x[:n], y[:n], x[n:], y[n:]


def _ridge_fit(x, y, s):
  """θ*(s) for F = mean ½(xθ − y)² + ½ Σ_j s_j θ_j² (s scalar or per-coordinate), float64."""
  n, d = x.shape
  return np.linalg.solve(x.T @ x / n + np.diag(np.broadcast_to(s, (d,))), x.T @ y / n)


def _val_loss64(xv, yv, theta):
  return 0.5 * np.mean((xv @ theta - yv) ** 2)


LINEAR = curiojax.prediction_loss(lambda p, x: x @ p["w"])
# The reference solvers, compiled (eagerly they trace their loops op by op).
exact_tangent = jax.jit(
  curiojax.exact_tangent, static_argnums=0, static_argnames=("regularizer", "curvature", "solver", "maxiter")
)
finish_tangent = jax.jit(curiojax.finish_tangent, static_argnums=2, static_argnames=("maxiter", "solver"))


def test_hypergradient_ridge_matches_central_differences():
  x, y, xv, yv = _ridge_data()
  s, eps = 0.3, 1e-4
  theta = _ridge_fit(x, y, s)
  fd = (_val_loss64(xv, yv, _ridge_fit(x, y, s + eps)) - _val_loss64(xv, yv, _ridge_fit(x, y, s - eps))) / (2 * eps)
  params = {"w": jnp.asarray(theta, jnp.float32)}
  batch = dict(x=jnp.asarray(x, jnp.float32), y=jnp.asarray(y, jnp.float32))
  tau = exact_tangent(LINEAR, params, batch, regularizer=curiojax.l2(), strength=s)
  g = curiojax.hypergradient(LINEAR, params, tau, dict(x=jnp.asarray(xv, jnp.float32), y=jnp.asarray(yv, jnp.float32)))
  assert g.shape == ()
  assert abs(float(g) - fd) <= 1e-3 * abs(fd), (float(g), fd)


def test_hypergradient_of_carried_tangent_ridge():
  """The tangent carried through training gives the same hypergradient (1e-3)."""
  x, y, xv, yv = _ridge_data(seed=1)
  s, eps = 0.2, 1e-4
  fd = (_val_loss64(xv, yv, _ridge_fit(x, y, s + eps)) - _val_loss64(xv, yv, _ridge_fit(x, y, s - eps))) / (2 * eps)
  tx = optax.chain(curiojax.regularity_tangent(curiojax.l2(), s), optax.sgd(0.3))
  batch = dict(x=jnp.asarray(x, jnp.float32), y=jnp.asarray(y, jnp.float32))

  def step(carry, _):
    params, state = carry
    updates, state = tx.update(None, state, params, value_fn=LINEAR, **batch)
    return (optax.apply_updates(params, updates), state), None

  params = {"w": jnp.zeros(x.shape[1])}
  (params, state), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=600)
  g = curiojax.hypergradient(
    LINEAR, params, curiojax.tangent_of(state), dict(x=jnp.asarray(xv, jnp.float32), y=jnp.asarray(yv, jnp.float32))
  )
  assert abs(float(g) - fd) <= 1e-3 * abs(fd), (float(g), fd)


def test_hypergradient_vector_strength_per_group():
  """k strengths (group_l2): k partial derivatives, each against its own finite difference."""
  x, y, xv, yv = _ridge_data(seed=2, d=6)
  s = np.array([0.1, 0.5])
  coord = np.array([0, 0, 0, 1, 1, 1])
  params = {
    "a": jnp.asarray(_ridge_fit(x, y, s[coord])[:3], jnp.float32),
    "b": jnp.asarray(_ridge_fit(x, y, s[coord])[3:], jnp.float32),
  }
  model = curiojax.prediction_loss(lambda p, x: x[:, :3] @ p["a"] + x[:, 3:] @ p["b"])
  reg = curiojax.group_l2({"a": 0, "b": 1})
  batch = dict(x=jnp.asarray(x, jnp.float32), y=jnp.asarray(y, jnp.float32))
  tau = exact_tangent(model, params, batch, regularizer=reg, strength=jnp.asarray(s, jnp.float32))
  g = curiojax.hypergradient(model, params, tau, dict(x=jnp.asarray(xv, jnp.float32), y=jnp.asarray(yv, jnp.float32)))
  assert g.shape == (2,)
  eps = 1e-4
  for k in range(2):
    e = np.eye(2)[k] * eps
    fd = (
      _val_loss64(xv, yv, _ridge_fit(x, y, (s + e)[coord])) - _val_loss64(xv, yv, _ridge_fit(x, y, (s - e)[coord]))
    ) / (2 * eps)
    assert abs(float(g[k]) - fd) <= 1e-3 * abs(fd), (k, float(g[k]), fd)


# -- small MLP, Gauss-Newton with damping -----------------------------------------------------


def _mlp(p, x):
  h = jnp.tanh(x @ p["w1"] + p["b1"])
  return h @ p["w2"] + p["b2"]


def _mlp_init(key, d_in=2, width=6):
  k1, k2 = jax.random.split(key)
  return {
    "w1": jax.random.normal(k1, (d_in, width)) / np.sqrt(d_in),
    "b1": jnp.zeros(width),
    "w2": jax.random.normal(k2, (width,)) / np.sqrt(width),
    "b2": jnp.zeros(()),
  }


MLP = curiojax.prediction_loss(_mlp)


@functools.partial(jax.jit, static_argnames="steps")
def _newton_polish(params, s, batch, steps=8):
  """Converge θ*(s) tightly: Newton steps with the dense Hessian of F (tiny model)."""
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  f = lambda v: MLP(unravel(v), **batch) + s * 0.5 * jnp.sum(v**2)
  newton = lambda _, v: v - jnp.linalg.solve(jax.hessian(f)(v), jax.grad(f)(v))
  return unravel(jax.lax.fori_loop(0, steps, newton, flat))


def test_hypergradient_mlp_gauss_newton_damped_matches_retraining():
  """MLP: GGN tangent (damping 1e-4) carried through training vs retraining at s ± ε.

  Compared: ``∇L_valᵀτ`` with τ the GGN tangent carried by the optimizer (polished by CG on
  the same damped GGN system at the trained θ), against central differences of the
  validation loss of the MLP retrained to convergence (same init, then Newton-polished) at
  ``s ± ε``. The data come from a teacher MLP with small noise, so the residuals are small and
  the GGN is close to the Hessian: within 5e-2 relative (1.2% here). ``s`` is kept well away
  from the values where pruned hidden units make the Hessian singular (there θ*(s) bifurcates
  and no finite difference is meaningful).
  """
  key_t, key_x, key_n, key_i = jax.random.split(jax.random.key(0), 4)
  teacher = _mlp_init(key_t, width=6)
  x = jax.random.normal(key_x, (96, 2))
  y = _mlp(teacher, x) + 0.05 * jax.random.normal(key_n, (96,))
  batch, val = dict(x=x[:48], y=y[:48]), dict(x=x[48:], y=y[48:])
  s, damping, eps = 3e-2, 1e-4, 1e-3
  tx = optax.chain(
    curiojax.regularity_tangent(curiojax.l2(), s, curvature="gauss_newton", damping=damping), optax.adam(1e-2)
  )

  def step(carry, _):
    params, state = carry
    updates, state = tx.update(None, state, params, value_fn=MLP, **batch)
    return (optax.apply_updates(params, updates), state), None

  init = _mlp_init(key_i)
  (params, state), _ = jax.lax.scan(step, (init, tx.init(init)), None, length=3000)
  params = _newton_polish(params, s, batch)
  with warnings.catch_warnings():  # the online tangent may be uncertified; compared below all the same
    warnings.simplefilter("ignore", curiojax.TangentInaccurateWarning)
    carried = curiojax.tangent_of(state)
  state = finish_tangent(state, params, MLP, batch, maxiter=200, solver="cg")
  tau = curiojax.check_tangent(state, tol=1e-3)
  g = float(curiojax.hypergradient(MLP, params, tau, val))
  plus = _newton_polish(params, s + eps, batch)
  minus = _newton_polish(params, s - eps, batch)
  fd = (float(MLP(plus, **val)) - float(MLP(minus, **val))) / (2 * eps)
  assert abs(g - fd) <= 5e-2 * abs(fd), (g, fd)
  # The carried tangent alone (no polish) is as good: training converged, so did the tangent.
  g_carried = float(curiojax.hypergradient(MLP, params, carried, val))
  assert abs(g_carried - fd) <= 5e-2 * abs(fd), (g_carried, fd)
  # And the exact-Hessian tangent agrees with retraining much more tightly (a sharper oracle).
  tau_h = exact_tangent(MLP, params, batch, regularizer=curiojax.l2(), strength=s)
  g_h = float(curiojax.hypergradient(MLP, params, tau_h, val))
  assert abs(g_h - fd) <= 5e-3 * abs(fd), (g_h, fd)


# -- online tuning ------------------------------------------------------------------------------


def test_online_tuning_ridge_reaches_grid_optimum():
  x, y, xv, yv = _ridge_data(seed=3, n=20, d=10, noise=3.0, n_val=200)
  grid = np.logspace(-4, 1, 101)
  val_losses = [_val_loss64(xv, yv, _ridge_fit(x, y, s)) for s in grid]
  s_grid = grid[int(np.argmin(val_losses))]
  assert 1e-3 < s_grid < 5.0, s_grid  # interior optimum, else the test says nothing

  batch = dict(x=jnp.asarray(x, jnp.float32), y=jnp.asarray(y, jnp.float32))
  val = dict(x=jnp.asarray(xv, jnp.float32), y=jnp.asarray(yv, jnp.float32))
  tx = optax.chain(curiojax.tunable_regularity_tangent(curiojax.l2(), 1e-3), optax.sgd(0.2))
  every = 20

  def step(carry, t):
    params, state = carry
    updates, state = tx.update(None, state, params, value_fn=LINEAR, **batch)
    params = optax.apply_updates(params, updates)
    state = jax.lax.cond(
      t % every == every - 1,
      lambda st: curiojax.tune_strength(st, params, LINEAR, val, learning_rate=20.0, max_step=0.3)[0],
      lambda st: st,
      state,
    )
    return (params, state), curiojax.get_strength(state)

  params = {"w": jnp.zeros(x.shape[1])}
  (params, state), trace = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(4000))
  s_online = float(curiojax.get_strength(state))
  assert s_grid / 1.5 <= s_online <= 1.5 * s_grid, (s_online, s_grid)
  assert curiojax.tangent_diagnostics(state).diverged is False


def test_set_strength_takes_effect_without_recompiling():
  x, y, _, _ = _ridge_data(seed=4)
  batch = dict(x=jnp.asarray(x, jnp.float32), y=jnp.asarray(y, jnp.float32))
  tx = curiojax.tunable_regularity_tangent(curiojax.l2(), 0.1)
  params = {"w": jnp.ones(x.shape[1])}

  traces = []  # one entry per trace: a retrace is what a recompile would need

  @jax.jit
  def grads(params, state):
    traces.append(1)
    return tx.update(None, state, params, value_fn=LINEAR, **batch)[0]

  state = tx.init(params)
  g1 = grads(params, state)
  state2 = curiojax.set_strength(state, 0.5)
  assert float(curiojax.get_strength(state2)) == pytest.approx(0.5)
  g2 = grads(params, state2)
  np.testing.assert_allclose(g2["w"] - g1["w"], 0.4 * np.ones(x.shape[1]), rtol=1e-5)
  assert len(traces) == 1


def test_bad_inputs():
  params = {"w": jnp.zeros(3)}
  with pytest.raises(ValueError, match="tree structures"):
    curiojax.hypergradient(LINEAR, params, {"v": jnp.zeros(3)}, dict(x=jnp.ones((2, 3)), y=jnp.ones(2)))
  with pytest.raises(ValueError, match="leading axis"):
    align_tangent(params, {"w": jnp.zeros((2, 4))})
  with pytest.raises(TypeError, match="val_batch must be a dict"):
    curiojax.hypergradient(LINEAR, params, params, [jnp.ones((2, 3)), jnp.ones(2)])
  plain = optax.chain(curiojax.regularity_tangent(curiojax.l2(), 0.1), optax.sgd(0.1)).init(params)
  with pytest.raises(ValueError, match="tunable_regularity_tangent"):
    curiojax.get_strength(plain)
  tunable = curiojax.tunable_regularity_tangent(curiojax.l2(), 0.1).init(params)
  with pytest.raises(ValueError, match="shape"):
    curiojax.set_strength(tunable, jnp.ones(2))
  with pytest.raises(ValueError, match="learning_rate"):
    curiojax.tune_strength(tunable, params, LINEAR, dict(x=jnp.ones((2, 3)), y=jnp.ones(2)), learning_rate=-1.0)


def test_strength_handling_lives_in_the_tangent_package():
  """One implementation, re-exported: extensions/ and the top level hand out the tangent package's functions."""
  import importlib

  ext = importlib.import_module("curiojax.extensions.hypergradient")  # the module, not its function
  strength = importlib.import_module("curiojax.tangent.strength")

  for name in ("get_strength", "set_strength", "tunable_regularity_tangent"):
    assert getattr(ext, name) is getattr(strength, name) is getattr(curiojax, name)

"""Oracle and conformance tests for the regularity tangent (issue: core)."""

import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

import curiojax

linear = lambda p, x: x @ p["w"]


def ridge_data(n=200, d=20, seed=0):
  kx, kw, ke = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, (n, d))
  y = x @ jax.random.normal(kw, (d,)) + 0.1 * jax.random.normal(ke, (n,))
  return x, y


def ridge_closed_form(x, y, s):
  """θ*(s) and τ = −H⁻¹θ* for F = ½ mean (xθ − y)² + s·½‖θ‖², in float64."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  h = x.T @ x / len(x) + s * np.eye(x.shape[1])
  theta = np.linalg.solve(h, x.T @ y / len(x))
  return theta, -np.linalg.solve(h, theta)


def train(tx, params, steps, **batch):
  """Full-batch training with the fused path, as one jitted loop."""
  loss = batch.pop("loss", curiojax.prediction_loss(linear))

  @jax.jit
  def run(params, state):
    def body(_, carry):
      params, state = carry
      updates, state = tx.update(None, state, params, value_fn=loss, **batch)
      return optax.apply_updates(params, updates), state

    return jax.lax.fori_loop(0, steps, body, (params, state))

  return run(params, tx.init(params))


def cosine_and_rel(a, b):
  a, b = np.asarray(ravel_pytree(a)[0], np.float64), np.asarray(ravel_pytree(b)[0], np.float64)
  return a @ b / np.linalg.norm(a) / np.linalg.norm(b), np.linalg.norm(a - b) / np.linalg.norm(b)


INNER = {
  "sgd": optax.sgd(optax.exponential_decay(0.5, 1000, 0.3)),
  "momentum": optax.sgd(optax.exponential_decay(0.1, 1000, 0.3), momentum=0.9),
  "adam": optax.adam(optax.exponential_decay(0.05, 500, 0.3)),
}


@pytest.mark.parametrize("strength", [1e-3, 1e-1])
@pytest.mark.parametrize("inner", sorted(INNER))
def test_ridge_tangent_matches_closed_form(strength, inner):
  x, y = ridge_data()
  tx = optax.chain(curiojax.regularity_tangent(curiojax.l2(), strength=strength), INNER[inner])
  params, state = train(tx, {"w": jnp.zeros(20)}, 4000, x=x, y=y)
  theta_star, tau_star = ridge_closed_form(x, y, strength)
  np.testing.assert_allclose(params["w"], theta_star, rtol=1e-3, atol=1e-5)
  cos, rel = cosine_and_rel(curiojax.tangent_of(state)["w"], tau_star)
  assert cos >= 0.9999 and rel <= 1e-3, (cos, rel)
  assert not curiojax.tangent_diagnostics(state).diverged


def test_ill_conditioned_polynomial_carried_then_polished():
  xs = np.linspace(-1, 1, 40)
  phi = np.stack([xs**j for j in range(10)], 1)
  y = np.sin(np.pi * xs) + 0.1 * np.random.default_rng(0).normal(size=40)
  s = 1e-4
  h = phi.T @ phi / 40 + s * np.eye(10)
  assert np.linalg.cond(h) >= 1e4
  x, yj = jnp.asarray(phi, jnp.float32), jnp.asarray(y, jnp.float32)
  tx = optax.chain(
    curiojax.regularity_tangent(curiojax.l2(), strength=s), optax.adam(optax.exponential_decay(0.02, 5000, 0.3))
  )
  params, state = train(tx, {"w": jnp.zeros(10)}, 20000, x=x, y=yj)
  theta_star, tau_star = ridge_closed_form(phi, y, s)
  loss = curiojax.prediction_loss(linear)
  state = curiojax.finish_tangent(state, params, loss, dict(x=x, y=yj), solver="cg", maxiter=200, tol=1e-6)
  finished = curiojax.check_tangent(state, tol=1e-3)
  _, rel = cosine_and_rel(finished["w"], tau_star)
  assert rel <= 1e-2, rel
  residual = curiojax.relative_residual(loss, params, finished, dict(x=x, y=yj), regularizer=curiojax.l2(), strength=s)
  assert residual < 1e-3
  assert float(residual) == pytest.approx(curiojax.tangent_diagnostics(state).residual, rel=1e-2, abs=1e-6)


def mlp_init(key, sizes=(8, 64, 64, 1)):
  keys = jax.random.split(key, len(sizes) - 1)
  return [
    {"w": jax.random.normal(k, (a, b)) / np.sqrt(a), "b": jnp.zeros(b)}
    for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
  ]


def mlp(params, x):
  for layer in params[:-1]:
    x = jnp.tanh(x @ layer["w"] + layer["b"])
  return (x @ params[-1]["w"] + params[-1]["b"])[:, 0]


def test_mlp_gauss_newton_tangent_matches_exact_solve():
  kx, kp = jax.random.split(jax.random.key(1))
  x = jax.random.normal(kx, (512, 8))
  y = jnp.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2]
  loss = curiojax.prediction_loss(mlp)
  kw = dict(regularizer=curiojax.l2(), strength=1e-2, curvature="gauss_newton", damping=1e-2)
  tx = optax.chain(
    curiojax.regularity_tangent(kw["regularizer"], kw["strength"], curvature="gauss_newton", damping=kw["damping"]),
    optax.adam(optax.exponential_decay(3e-3, 1000, 0.3)),
  )
  params, state = train(tx, mlp_init(kp), 3000, x=x, y=y, loss=loss)
  exact = curiojax.exact_tangent(loss, params, dict(x=x, y=y), solver="cg", tol=1e-7, maxiter=3000, **kw)
  cos, _ = cosine_and_rel(curiojax.tangent_of(state), exact)
  assert cos >= 0.99, cos


def test_finite_difference_retraining_matches_jvp():
  """f(θ*(s+ε), x) − f(θ*(s−ε), x) ≈ 2ε·J_xτ for held-out x, τ carried during training."""
  x, y = ridge_data()
  x_test = jax.random.normal(jax.random.key(5), (30, 20))
  s, eps = 1e-1, 1e-3
  tx = optax.chain(curiojax.regularity_tangent(curiojax.l2(), strength=s), INNER["sgd"])
  params, state = train(tx, {"w": jnp.zeros(20)}, 4000, x=x, y=y)
  jvp = jax.jvp(lambda p: linear(p, x_test), (params,), (curiojax.tangent_of(state),))[1]
  plus, _ = ridge_closed_form(x, y, s + eps)
  minus, _ = ridge_closed_form(x, y, s - eps)
  fd = np.asarray(x_test, np.float64) @ (plus - minus)
  np.testing.assert_allclose(2 * eps * np.asarray(jvp), fd, rtol=1e-2, atol=1e-2 * np.abs(fd).max())


@pytest.mark.slow  # a fresh float64 process
def test_finite_difference_on_convex_nonquadratic_model(run_float64):
  """Huber loss (convex, not quadratic): retraining by L-BFGS at s ± ε in float64."""
  code = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optax, curiojax
    x = jax.random.normal(jax.random.key(0), (100, 5))
    y = x @ jnp.arange(1.0, 6.0) + jax.random.normal(jax.random.key(1), (100,))
    loss = curiojax.prediction_loss(lambda p, x: x @ p, curiojax.huber(0.5))
    @jax.jit
    def fit(s):
      f = lambda p: loss(p, x, y) + curiojax.l2()(p, s)
      opt = optax.lbfgs(); vg = optax.value_and_grad_from_state(f)
      def body(_, carry):
        p, st = carry
        v, g = vg(p, state=st)
        u, st = opt.update(g, st, p, value=v, grad=g, value_fn=f)
        return optax.apply_updates(p, u), st
      p0 = jnp.zeros(5)
      return jax.lax.fori_loop(0, 100, body, (p0, opt.init(p0)))[0]
    s, eps = 0.1, 1e-4
    p = fit(s)
    assert p.dtype == jnp.float64
    tau = curiojax.exact_tangent(loss, p, dict(x=x, y=y), regularizer=curiojax.l2(), strength=s)
    tx = optax.chain(curiojax.regularity_tangent(curiojax.l2(), s), optax.set_to_zero())
    st = tx.init(p)
    step = jax.jit(lambda st: tx.update(None, st, p, value_fn=loss, x=x, y=y)[1])
    for _ in range(300):
      st = step(st)
    carried = curiojax.tangent_of(st)
    x_test = jax.random.normal(jax.random.key(2), (20, 5))
    fd = x_test @ (fit(s + eps) - fit(s - eps)) / (2 * eps)
    for t in (tau, carried):
      err = np.abs(np.asarray(x_test @ t) - np.asarray(fd)).max() / np.abs(np.asarray(fd)).max()
      assert err < 1e-2, err
    print("ok")
  """)
  run_float64(code)


def test_frozen_parameters_sgd_recursion_equals_lissa():
  x, y = ridge_data(n=64, d=6)
  batches = {"x": x.reshape(8, 8, 6), "y": y.reshape(8, 8)}
  params = {"w": jax.random.normal(jax.random.key(3), (6,))}
  loss = curiojax.prediction_loss(linear)
  eta = 0.25
  plain = dict(tangent_learning_rate=eta, momentum=0.0, averaging=1)  # the plain SGDF recursion
  tx = optax.chain(curiojax.regularity_tangent(curiojax.l2(), 0.1, **plain), optax.set_to_zero())
  step = jax.jit(lambda st, b: tx.update(None, st, params, value_fn=loss, **b))
  state = tx.init(params)
  _, iterates = curiojax.lissa(
    loss, params, batches, scale=1 / eta, regularizer=curiojax.l2(), strength=0.1, return_iterates=True
  )
  # an oracle that shares no code with either: v ← v − η((H_t + sI)v + θ), H_t = jax.hessian
  theta, v = np.asarray(params["w"], np.float64), np.zeros(6)
  for t in range(8):
    batch = {k: b[t] for k, b in batches.items()}
    updates, state = step(state, batch)
    chex.assert_trees_all_equal(updates, {"w": jnp.zeros(6)})
    np.testing.assert_allclose(state[0].iterate["w"], iterates["w"][t], rtol=1e-6, atol=1e-7)
    h = np.asarray(jax.hessian(lambda w, b=batch: loss({"w": w}, **b))(params["w"]), np.float64)
    v = v - eta * ((h + 0.1 * np.eye(6)) @ v + theta)
    np.testing.assert_allclose(iterates["w"][t], v, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("batch_size", [4, 64])
def test_heavy_ball_averaged_recursion_follows_method_md(batch_size):
  """Frozen params, fixed step: iterate, momentum, average, hand-out and estimate follow docs/method.md.

  The oracle shares no code with the library: Hessians by ``jax.hessian``, the recursion in numpy.
  """
  from curiojax.tangent.recursion import ITERATE_WINDOW
  from curiojax.tangent.state import handed_out
  from curiojax.tangent.transform import EVALUATE_EVERY, RESIDUAL_WINDOW

  x, y = ridge_data(n=64, d=6)
  batches = {"x": x.reshape(-1, batch_size, 6), "y": y.reshape(-1, batch_size)}
  params = {"w": jax.random.normal(jax.random.key(3), (6,))}
  loss = curiojax.prediction_loss(linear)
  alpha, beta, window, s = 0.05, 0.9, 30, 0.1
  tx = optax.chain(
    curiojax.regularity_tangent("l2", s, tangent_learning_rate=alpha, momentum=beta, averaging=window),
    optax.set_to_zero(),
  )
  step = jax.jit(lambda st, b: tx.update(None, st, params, value_fn=loss, **b)[1])
  state = tx.init(params)
  theta = np.asarray(params["w"], np.float64)
  v, m, avg, follow, estimate2 = np.zeros(6), np.zeros(6), np.zeros(6), False, 1.0
  for t in range(3 * EVALUATE_EVERY):
    batch = {k: b[t % len(b)] for k, b in batches.items()}
    state = step(state, batch)
    a = np.asarray(jax.hessian(lambda w, b=batch: loss({"w": w}, **b))(params["w"]), np.float64) + s * np.eye(6)
    r = a @ v + theta
    avg = avg + max(1 / (t + 1), 1 / window) * (v - avg)
    psi2 = (np.linalg.norm(r) / np.linalg.norm(theta)) ** 2
    if t % EVALUATE_EVERY == 0:  # the average's residual on the same minibatch, paired with the iterate's
      psi_bar2 = (np.linalg.norm(a @ avg + theta) / np.linalg.norm(theta)) ** 2
      follow = psi2 < 0.5 * psi_bar2
      measured = psi2 if follow else psi_bar2
      estimate2 = measured if t == 0 else estimate2 + (measured - estimate2) / RESIDUAL_WINDOW
    elif follow:
      estimate2 = estimate2 + (psi2 - estimate2) / ITERATE_WINDOW
    m = beta * m + r
    v = v - alpha * m
    np.testing.assert_allclose(state[0].iterate["w"], v, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(state[0].velocity["w"], m, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(state[0].tangent["w"], avg, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(handed_out(state[0])["w"], v if follow else avg, rtol=1e-4, atol=1e-6)
    assert float(state[0].residual) == pytest.approx(np.sqrt(estimate2), rel=1e-4)
  assert curiojax.tangent_diagnostics(state).restarts == 0


def test_trains_exactly_like_add_decayed_weights():
  x, y = ridge_data(n=50, d=5)
  loss = curiojax.prediction_loss(linear)
  params = {"w": jnp.ones(5)}
  ours = optax.chain(curiojax.regularity_tangent(curiojax.l2(), 0.3), optax.adam(1e-2))
  ref = optax.chain(optax.add_decayed_weights(0.3), optax.adam(1e-2))
  p1, s1, p2, s2 = params, ours.init(params), params, ref.init(params)
  for _ in range(5):
    g = jax.grad(loss)(p1, x, y)
    u1, s1 = ours.update(g, s1, p1, value_fn=loss, x=x, y=y)
    u2, s2 = ref.update(jax.grad(loss)(p2, x, y), s2, p2)
    p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    chex.assert_trees_all_close(p1, p2, rtol=1e-6)
  # The fused path (updates=None) computes the same gradient itself.
  g_fused, _ = ours.update(None, ours.init(params), params, value_fn=loss, x=x, y=y)
  g_given, _ = ours.update(jax.grad(loss)(params, x, y), ours.init(params), params, value_fn=loss, x=x, y=y)
  chex.assert_trees_all_close(g_fused, g_given, rtol=1e-5)


def test_state_is_stable_and_second_step_does_not_recompile():
  x, y = ridge_data(n=32, d=4)
  loss = curiojax.prediction_loss(linear)
  tx = optax.chain(curiojax.regularity_tangent("l2", 0.1, refresh_every=2), optax.sgd(0.1))
  params = {"w": jnp.zeros(4)}
  state0 = tx.init(params)

  def step(params, state, x, y):
    updates, state = tx.update(None, state, params, value_fn=loss, x=x, y=y, unknown_extra=1.0)
    return optax.apply_updates(params, updates), state

  p_eager, s_eager = step(params, state0, x, y)
  traces = []  # one entry per trace: a retrace is what a recompile would need

  @jax.jit
  def jitted(*args):
    traces.append(1)
    return step(*args)

  p1, s1 = jitted(params, state0, x, y)
  p2, s2 = jitted(p1, s1, x + 1.0, y)
  assert len(traces) == 1
  for s in (s_eager, s1, s2):
    chex.assert_trees_all_equal_structs(s, state0)
    chex.assert_trees_all_equal_shapes_and_dtypes(s, state0)
  chex.assert_trees_all_close(s_eager, s1, rtol=1e-5)


def test_inject_hyperparams_strength_changes_without_recompiling():
  x, y = ridge_data(n=100, d=5)
  loss = curiojax.prediction_loss(linear)
  tx = optax.chain(
    optax.inject_hyperparams(curiojax.regularity_tangent, static_args=("regularizer",))(
      regularizer=curiojax.l2(), strength=0.1
    ),
    optax.sgd(0.5),
  )

  traces = []  # one entry per trace: a retrace is what a recompile would need

  @jax.jit
  def run(params, state):
    traces.append(1)

    def body(_, carry):
      params, state = carry
      updates, state = tx.update(None, state, params, value_fn=loss, x=x, y=y)
      return optax.apply_updates(params, updates), state

    return jax.lax.fori_loop(0, 2000, body, (params, state))

  params, state = run({"w": jnp.zeros(5)}, tx.init({"w": jnp.zeros(5)}))
  for s in (0.1, 0.5):
    state[0].hyperparams["strength"] = jnp.full_like(state[0].hyperparams["strength"], s)
    params, state = run(params, state)
    _, tau_star = ridge_closed_form(x, y, s)
    _, rel = cosine_and_rel(curiojax.tangent_of(state)["w"], tau_star)
    assert rel < 1e-3, (s, rel)
  assert len(traces) == 1


def test_nnx_optimizer_carries_the_tangent():
  x, y = ridge_data(n=100, d=5)
  model = nnx.Linear(5, 1, use_bias=False, rngs=nnx.Rngs(0))
  model_fn, _ = curiojax.nnx_model_fn(model)
  loss = curiojax.prediction_loss(lambda p, x: model_fn(p, x)[:, 0])
  optimizer = nnx.Optimizer(model, optax.chain(curiojax.regularity_tangent("l2", 0.1), optax.sgd(0.5)), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, x, y):
    grads = nnx.grad(lambda m: loss(nnx.state(m, nnx.Param), x, y))(model)
    optimizer.update(model, grads, value_fn=loss, x=x, y=y)

  for _ in range(800):
    step(model, optimizer, x, y)
  tau = curiojax.tangent_of(optimizer)
  _, tau_star = ridge_closed_form(x, y, 0.1)
  _, rel = cosine_and_rel(jax.tree.leaves(tau)[0][:, 0], tau_star)
  assert rel < 1e-3


def test_vector_strength_carries_one_tangent_per_hyperparameter():
  x, y = ridge_data(n=100, d=4)
  loss = curiojax.prediction_loss(lambda p, x: x[:, :2] @ p["a"] + x[:, 2:] @ p["b"])
  reg = curiojax.group_l2({"a": 0, "b": 1})
  s = jnp.array([0.1, 0.3])
  tx = optax.chain(curiojax.regularity_tangent(reg, s), optax.sgd(0.5))
  params, state = train(tx, {"a": jnp.zeros(2), "b": jnp.zeros(2)}, 3000, x=x, y=y, loss=loss)
  carried = curiojax.tangent_of(state)
  assert carried["a"].shape == (2, 2)
  exact = curiojax.exact_tangent(loss, params, dict(x=x, y=y), regularizer=reg, strength=s)
  chex.assert_trees_all_close(carried, exact, rtol=1e-3, atol=1e-5)
  # Each tangent is the derivative of θ* in its own strength (closed form, finite differences).
  h0 = np.asarray(x.T @ x / 100, np.float64)
  fit = lambda s: np.linalg.solve(h0 + np.diag(np.repeat(s, 2)), np.asarray(x.T @ y / 100, np.float64))
  for k in range(2):
    e = np.eye(2)[k] * 1e-4
    fd = (fit(np.asarray(s) + e) - fit(np.asarray(s) - e)) / 2e-4
    np.testing.assert_allclose(np.concatenate([exact["a"][k], exact["b"][k]]), fd, rtol=1e-3, atol=1e-4)


def test_log_strength_form():
  x, y = ridge_data(n=80, d=3)
  loss = curiojax.prediction_loss(linear)
  params = {"w": jnp.array([0.3, -0.2, 0.5])}
  log_s = jnp.log(0.2)
  t_log = curiojax.exact_tangent(
    loss, params, dict(x=x, y=y), regularizer=curiojax.l2(log_strength=True), strength=log_s
  )
  t_lin = curiojax.exact_tangent(loss, params, dict(x=x, y=y), regularizer=curiojax.l2(), strength=0.2)
  chex.assert_trees_all_close(t_log, jax.tree.map(lambda t: 0.2 * t, t_lin), rtol=1e-4)  # d/dlog s = s d/ds


def test_dense_and_cg_agree_and_gauss_newton_equals_hessian_for_linear_models():
  x, y = ridge_data(n=60, d=6)
  loss = curiojax.prediction_loss(linear)
  params = {"w": jax.random.normal(jax.random.key(0), (6,))}
  kw = dict(regularizer=curiojax.l2(), strength=0.05, damping=0.01)
  dense = curiojax.exact_tangent(loss, params, dict(x=x, y=y), solver="dense", **kw)
  cg = curiojax.exact_tangent(loss, params, dict(x=x, y=y), solver="cg", **kw)
  ggn = curiojax.exact_tangent(loss, params, dict(x=x, y=y), solver="dense", curvature="gauss_newton", **kw)
  h = np.asarray(x.T @ x / 60, np.float64) + 0.06 * np.eye(6)
  expected = -np.linalg.solve(h, np.asarray(params["w"], np.float64))
  for t in (dense, cg, ggn):
    np.testing.assert_allclose(t["w"], expected, rtol=1e-4)
    assert curiojax.relative_residual(loss, params, t, dict(x=x, y=y), **kw) < 1e-4


def test_too_large_tangent_step_backs_off_and_recovers():
  """A fixed step 50× too large: the recursion restarts with half the step until stable, then converges."""
  x, y = ridge_data(n=50, d=5)
  loss = curiojax.prediction_loss(linear)
  tx = optax.chain(curiojax.regularity_tangent("l2", 0.1, tangent_learning_rate=50.0), optax.set_to_zero())
  params = {"w": jnp.ones(5)}
  state = tx.init(params)
  step = jax.jit(lambda st: tx.update(None, st, params, value_fn=loss, x=x, y=y)[1])
  for _ in range(1500):
    state = step(state)
  diag = curiojax.tangent_diagnostics(state)
  assert 1 <= diag.restarts <= 6 and not diag.diverged, diag
  assert diag.step_size == pytest.approx(50.0 * 0.5**diag.restarts)
  h = np.asarray(x.T @ x / 50, np.float64) + 0.1 * np.eye(5)
  _, rel = cosine_and_rel(curiojax.check_tangent(state)["w"], -np.linalg.solve(h, np.ones(5)))
  assert rel < 1e-3, rel


def test_indefinite_curvature_diverges_loudly_and_is_frozen():
  """Damping 0 on an indefinite Hessian: every back-off fails, so the tangent is flagged and frozen."""
  x, _ = ridge_data(n=50, d=5)
  concave = lambda p, x: -0.5 * jnp.mean(jnp.square(x @ p["w"]))  # Hessian −XᵀX/n, indefinite with s = 0.1
  tx = optax.chain(curiojax.regularity_tangent("l2", 0.1), optax.set_to_zero())
  params = {"w": jnp.ones(5)}
  state = tx.init(params)
  step = jax.jit(lambda st: tx.update(None, st, params, value_fn=concave, x=x)[1])
  with pytest.warns(curiojax.TangentDivergedWarning, match="indefinite"):
    for _ in range(3000):
      state = step(state)
    jax.block_until_ready(state)
  diag = curiojax.tangent_diagnostics(state)
  assert diag.diverged and diag.restarts == 7 and not diag.accurate
  frozen = state[0].tangent
  assert np.all(np.isfinite(frozen["w"]))
  state = step(state)
  chex.assert_trees_all_equal(state[0].tangent, frozen)
  with pytest.raises(curiojax.TangentDivergedError, match="diverged"):
    curiojax.check_tangent(state)
  with pytest.warns(curiojax.TangentDivergedWarning):
    curiojax.tangent_of(state)


def test_bad_input_gets_clear_errors():
  x, y = ridge_data(n=10, d=3)
  loss = curiojax.prediction_loss(linear)
  tx = curiojax.regularity_tangent("l2", 0.1)
  params = {"w": jnp.zeros(3)}
  state = tx.init(params)
  with pytest.raises(TypeError, match="value_fn"):
    tx.update(None, state, params, x=x, y=y)
  with pytest.raises(ValueError, match="params"):
    tx.update(None, state, None, value_fn=loss, x=x, y=y)
  with pytest.raises(ValueError, match="tree structure"):
    tx.update({"v": jnp.zeros(3)}, state, params, value_fn=loss, x=x, y=y)
  with pytest.raises(ValueError, match="tree structure"):
    tx.update(None, state, {"w": jnp.zeros(3), "b": jnp.zeros(())}, value_fn=loss, x=x, y=y)
  with pytest.raises(ValueError, match="strength must be >= 0"):
    curiojax.regularity_tangent("l2", -0.1)
  with pytest.raises(ValueError, match="finite"):
    curiojax.regularity_tangent("l2", float("nan"))
  with pytest.raises(ValueError, match="Unknown curvature"):
    curiojax.regularity_tangent("l2", 0.1, curvature="fisher")
  with pytest.raises(ValueError, match="Unknown regularizer"):
    curiojax.regularity_tangent("l1", 0.1)
  with pytest.raises(TypeError, match="prediction_loss"):
    curiojax.regularity_tangent("l2", 0.1, curvature="gauss_newton").update(
      None, state, params, value_fn=lambda p, x, y: jnp.sum(p["w"]), x=x, y=y
    )
  with pytest.raises(ValueError, match="Unknown solver"):
    curiojax.exact_tangent(loss, params, dict(x=x, y=y), solver="qr")
  curiojax.regularity_tangent(curiojax.l2(log_strength=True), -3.0)  # negative log-strength is fine


@pytest.mark.slow  # a fresh float64 process
def test_float64_path(run_float64):
  code = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optax, curiojax
    x = jax.random.normal(jax.random.key(0), (100, 4)); y = x.sum(1)
    loss = curiojax.prediction_loss(lambda p, x: x @ p)
    tx = optax.chain(curiojax.regularity_tangent("l2", 0.1), optax.sgd(0.5))
    p = jnp.zeros(4); st = tx.init(p)
    step = jax.jit(lambda p, st: tx.update(None, st, p, value_fn=loss, x=x, y=y))
    for _ in range(600):
      u, st = step(p, st); p = optax.apply_updates(p, u)
    tau = curiojax.tangent_of(st)
    assert tau.dtype == jnp.float64 and st[0].step_size.dtype == jnp.float64
    h = np.asarray(x.T @ x / 100) + 0.1 * np.eye(4)
    exact = -np.linalg.solve(h, np.linalg.solve(h, np.asarray(x.T @ y / 100)))
    assert np.abs(np.asarray(tau) - exact).max() / np.abs(exact).max() < 1e-10
    print("ok")
  """)
  run_float64(code)


def test_per_group_weights_and_masks_match_closed_form():
  """R = s·½ Σ_g w_g‖θ_g‖²: H = XᵀX/n + s·diag(w), ρ = w ⊙ θ; a boolean mask is w ∈ {0, 1}."""
  x, y = ridge_data(n=80, d=4)
  loss = curiojax.prediction_loss(lambda p, x: x[:, :2] @ p["a"] + x[:, 2:] @ p["b"])
  params = {"a": jnp.array([0.5, -1.0]), "b": jnp.array([2.0, 0.3])}
  for weights, w in (({"a": 3.0, "b": 0.5}, [3.0, 3.0, 0.5, 0.5]), ({"a": True, "b": False}, [1, 1, 0, 0])):
    tau = curiojax.exact_tangent(loss, params, dict(x=x, y=y), regularizer=curiojax.l2(weights), strength=0.2)
    h = np.asarray(x.T @ x / 80, np.float64) + 0.2 * np.diag(w)
    theta = np.concatenate([params["a"], params["b"]])
    expected = -np.linalg.solve(h, np.asarray(w) * theta)
    np.testing.assert_allclose(np.concatenate([tau["a"], tau["b"]]), expected, rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="prefix of params"):
    curiojax.l2({"c": 1.0})(params, 0.1)


def test_refreshing_every_k_steps_converges_to_the_same_tangent():
  x, y = ridge_data()
  tx = optax.chain(curiojax.regularity_tangent("l2", 0.1, refresh_every=4), INNER["sgd"])
  params, state = train(tx, {"w": jnp.zeros(20)}, 4000, x=x, y=y)
  _, tau_star = ridge_closed_form(x, y, 0.1)
  cos, rel = cosine_and_rel(curiojax.tangent_of(state)["w"], tau_star)
  assert cos >= 0.9999 and rel <= 1e-3, (cos, rel)
  assert curiojax.tangent_diagnostics(state).count == 4000

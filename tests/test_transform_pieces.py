"""The pieces of ``regularity_tangent`` (issues 20, 21): the accessors, the recursion's bound, the messages.

Each bug test reproduces a case that went wrong before the transformation was split: an iterate that
grew 1e17-fold while ``diverged`` stayed False, a Gauss-Newton divergence blamed on an indefinite
Hessian, half-precision parameters that went NaN with no signal for four updates, a negative strength
accepted by ``set_strength``, raw errors from ``apply_if_finite`` and from ``check_tangent`` under jit.
"""

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import curiojax
from curiojax.tangent import recursion
from curiojax.tangent.access import find_tangent_state, finished_state, replace_tangent_state, strength_of
from curiojax.tangent.diagnostics import DivergenceFacts, divergence_message
from curiojax.tangent.state import handed_out

LINEAR = curiojax.prediction_loss(lambda p, x: x @ p["w"])
X = jax.random.normal(jax.random.key(0), (64, 6))
Y = X @ jnp.arange(6.0)


def _norm(tree):
  return float(jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))))


def _minibatch_run(tx, loss, params, x, y, steps, batch=16, seed=1):
  """Train on a fresh random minibatch every step; yield (params, state) after each update."""

  @jax.jit
  def step(params, state, key):
    idx = jax.random.choice(key, x.shape[0], (batch,), replace=False)
    updates, state = tx.update(None, state, params, value_fn=loss, x=x[idx], y=y[idx])
    return optax.apply_updates(params, updates), state

  state, key = tx.init(params), jax.random.key(seed)
  for _ in range(steps):
    key, sub = jax.random.split(key)
    params, state = step(params, state, sub)
    yield params, state


# -- the accessors --------------------------------------------------------------------------------


def test_find_and_replace_in_a_chain_under_inject_hyperparams_and_jit():
  tx = optax.chain(curiojax.tunable_regularity_tangent("l2", 0.1), optax.adam(1e-2))
  params = {"w": jnp.ones(6)}
  state = curiojax.set_strength(tx.init(params), 0.5)
  found = find_tangent_state(state)
  assert float(found.strength) == 0.5 and float(jax.jit(strength_of)(state)) == 0.5  # the injected one
  done = finished_state(found, {"w": jnp.full(6, 2.0)}, jnp.float32(1e-4))
  assert done.exact and not done.diverged and int(done.restarts) == 0 and not done.follow_iterate
  chex.assert_trees_all_equal_shapes_and_dtypes(done, found)
  chex.assert_trees_all_equal(done.iterate, done.tangent, {"w": jnp.full(6, 2.0)})
  new = jax.jit(replace_tangent_state)(state, done)
  chex.assert_trees_all_equal_structs(new, state)
  assert bool(find_tangent_state(new).exact) and float(curiojax.get_strength(new)) == 0.5
  assert bool(finished_state(found, done.tangent, jnp.float32(jnp.nan)).diverged)


def test_replace_updates_an_nnx_optimizer_in_place():
  model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.chain(curiojax.regularity_tangent("l2", 0.1), optax.sgd(0.1)), wrt=nnx.Param)
  state = jax.tree.map(
    lambda v: v.get_value(), find_tangent_state(optimizer), is_leaf=lambda v: hasattr(v, "get_value")
  )
  done = finished_state(state, jax.tree.map(jnp.ones_like, state.tangent), jnp.float32(1e-4))
  assert replace_tangent_state(optimizer, done) is optimizer
  assert bool(find_tangent_state(optimizer).exact.get_value())
  assert float(strength_of(optimizer)) == pytest.approx(0.1)


def test_none_or_several_tangent_states_are_named():
  with pytest.raises(ValueError, match="No regularity tangent"):
    find_tangent_state(optax.sgd(0.1).init({"w": jnp.ones(2)}))
  two = optax.chain(curiojax.regularity_tangent("l2", 0.1), curiojax.regularity_tangent("l2", 0.2))
  with pytest.raises(ValueError, match="Found 2 regularity tangents"):
    replace_tangent_state(two.init({"w": jnp.ones(2)}), None)


# -- growth the backward error cannot see ----------------------------------------------------------


def test_curvature_floor_is_the_bound_that_holds():
  f32 = jnp.float32
  assert float(recursion.curvature_floor(curiojax.l2(), "gauss_newton", 0.1, 1e-3, f32)) == pytest.approx(0.101)
  assert float(recursion.curvature_floor(curiojax.l2(log_strength=True), "gauss_newton", 0.0, 0.5, f32)) == 1.5
  assert float(recursion.curvature_floor(curiojax.l2({"a": True, "b": False}), "gauss_newton", 0.1, 1e-3, f32)) == (
    pytest.approx(1e-3)
  )  # a parameter without a penalty: only the damping bounds C + λI below
  assert float(recursion.curvature_floor(curiojax.l2(), "hessian", 0.1, 1e-3, f32)) == 0  # may be indefinite


def test_restart_point_drops_an_average_beyond_the_bound():
  rho = {"w": jnp.ones(4)}  # ‖ρ‖ = 2, μ = 0.5: ‖τ‖ ≤ 4
  inside, kept = recursion.restart_point({"w": jnp.full(4, 1.5)}, rho, jnp.float32(0.5), stacked=False)
  assert bool(kept) and float(inside["w"][0]) == 1.5
  blown, kept = recursion.restart_point({"w": jnp.full(4, 1e15)}, rho, jnp.float32(0.5), stacked=False)
  assert not bool(kept) and float(jnp.abs(blown["w"]).max()) == 0.0
  nan, kept = recursion.restart_point({"w": jnp.full(4, jnp.nan)}, rho, jnp.float32(0.0), stacked=False)
  assert not bool(kept) and float(jnp.abs(nan["w"]).max()) == 0.0


def test_heavy_ball_growth_on_changing_minibatches_is_caught():
  """A step the heavy ball cannot take (αλ_max = 5 > 2(1 + β)): before, the iterate grew ~1e17-fold
  over the bound ‖ρ‖/(s + λ) while the backward error, normalised by the iterate, stayed flat."""
  s = 0.1
  lmax = float(jnp.linalg.eigvalsh(X.T @ X / 64)[-1]) + s
  tx = optax.chain(
    curiojax.regularity_tangent("l2", s, curvature="gauss_newton", tangent_learning_rate=5.0 / lmax), optax.sgd(0.05)
  )
  worst = 0.0
  for params, state in _minibatch_run(tx, LINEAR, {"w": jnp.zeros(6)}, X, Y, 300):
    st = find_tangent_state(state)
    bound = _norm(params) / s  # ρ = θ for l2
    worst = max(worst, _norm(st.iterate) / bound)
    assert _norm(handed_out(st)) <= recursion.BOUND_MARGIN * bound * 1.01  # what a user is handed
  assert worst < 10 * recursion.BOUND_MARGIN, worst  # one step past the bound, then a restart
  assert int(st.restarts) >= 1


def _mlp(p, x):
  h = jnp.tanh(x @ p["w1"] + p["b1"])
  h = jnp.tanh(h @ p["w2"] + p["b2"])
  return h @ p["w3"] + p["b3"]


def _mlp_problem(n=400, d=8, width=64):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  y = jnp.asarray(np.sin(np.asarray(x) @ rng.normal(size=d)) + 0.1 * rng.normal(size=n), jnp.float32)
  k = jax.random.split(jax.random.key(0), 3)
  params = {
    "w1": jax.random.normal(k[0], (d, width)) / np.sqrt(d),
    "b1": jnp.zeros(width),
    "w2": jax.random.normal(k[1], (width, width)) / np.sqrt(width),
    "b2": jnp.zeros(width),
    "w3": jax.random.normal(k[2], (width,)) / np.sqrt(width),
    "b3": jnp.zeros(()),
  }
  return curiojax.prediction_loss(_mlp), params, x, y


def test_mlp_minibatch_adamw_keeps_the_tangent_within_its_bound():
  """2×64 tanh MLP, 400 rows, minibatch 16 drawn every step, adamw, Gauss-Newton, s = λ = 1e-3.

  With a tangent step too large for some minibatches the iterate must restart, never run away; the
  handed-out tangent stays within a small multiple of ‖ρ‖/(s + λ) at every step.
  """
  loss, params, x, y = _mlp_problem()
  mu = 2e-3
  system = curiojax.TangentSystem(loss, curiojax.l2(), "gauss_newton")
  product = lambda v: system.curvature_product(params, 1e-3, 1e-3, v, dict(x=x, y=y))
  lmax = float(recursion.power_iteration(product, params, jax.random.key(0), 30))
  tangent = curiojax.regularity_tangent(
    "l2", 1e-3, curvature="gauss_newton", damping=1e-3, tangent_learning_rate=6.0 / lmax
  )
  tx = optax.chain(tangent, optax.adamw(1e-2))
  worst_iterate = worst_tangent = 0.0
  for theta, state in _minibatch_run(tx, loss, params, x, y, 1500):
    st = find_tangent_state(state)
    bound = _norm(theta) / mu
    worst_iterate = max(worst_iterate, _norm(st.iterate) / bound)
    worst_tangent = max(worst_tangent, _norm(st.tangent) / bound)
  assert worst_tangent <= recursion.BOUND_MARGIN * 1.01, worst_tangent
  assert worst_iterate < 10 * recursion.BOUND_MARGIN, worst_iterate
  assert np.isfinite(_norm(st.tangent))


# -- messages built from what the state shows ------------------------------------------------------


def test_divergence_message_names_gauss_newton_and_kappa_not_an_indefinite_hessian():
  facts = DivergenceFacts(
    count=358,
    residual=272.0,
    cause=recursion.GROWING,
    params_finite=True,
    param_scale=0.9,
    curvature_max=4e3,
    strength=1e-3,
    damping=1e-3,
    curvature="gauss_newton",
    dtype="float32",
  )
  message = divergence_message(facts)
  assert "curvature='gauss_newton'" in message and "damping 0.001" in message and "κ ≈ 2e+06" in message
  assert "hessian" not in message and "damping 0)" not in message and "indefinite" not in message
  assert "unscaled inputs" in message  # κ beyond what float32 resolves
  hessian = divergence_message(facts._replace(cause=recursion.INDEFINITE, curvature="hessian", damping=0.0))
  assert "indefinite curvature (curvature='hessian' on a non-convex model, damping 0)" in hessian
  half = divergence_message(facts._replace(params_finite=False, dtype="bfloat16"))
  assert "training diverged, not the tangent" in half and "bfloat16" in half


def test_gauss_newton_on_unscaled_inputs_diverges_with_the_true_facts():
  """Before: 'Likely cause: an indefinite curvature (curvature='hessian' ..., damping 0)'."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(0, 1e3, size=(200, 5)), jnp.float32)  # unscaled inputs, values up to 1e3
  y = x @ jnp.ones(5) / 1e3
  mlp = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
  params = {
    "w1": jax.random.normal(jax.random.key(1), (5, 16)) / 3,
    "w2": jax.random.normal(jax.random.key(2), (16,)) / 4,
  }
  tx = optax.chain(curiojax.regularity_tangent("l2", 1e-3, curvature="gauss_newton", damping=1e-3), optax.adam(1e-3))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    *_, (_, state) = _minibatch_run(tx, curiojax.prediction_loss(mlp), params, x, y, 600, seed=0)
    jax.effects_barrier()
  diverged = [str(w.message) for w in caught if issubclass(w.category, curiojax.TangentDivergedWarning)]
  assert curiojax.tangent_diagnostics(state).diverged and len(diverged) == 1, diverged
  message = diverged[0]
  assert "curvature='gauss_newton'" in message and "damping 0.001" in message and "κ ≈" in message, message
  assert "hessian" not in message and "damping 0)" not in message, message
  assert "λ̂_max(C + λI) = 0 " not in message  # the estimate the failing refresh used, not the reset one


@pytest.mark.parametrize(
  ("dtype", "optimizer"), [(jnp.float16, optax.adam(1e-2)), (jnp.bfloat16, optax.sgd(1e4))], ids=["float16", "bfloat16"]
)
def test_half_precision_parameters_that_go_nan_are_flagged_at_once(dtype, optimizer):
  """float16 Adam: eps underflows and a dead input's 0/0 turns the parameters NaN (bfloat16: a step that
  overflows); before, the tangent restarted six times before saying anything."""
  x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
  x[:, 2] = 0  # a dead input: zero gradient, zero second moment
  x, y = jnp.asarray(x, dtype), jnp.asarray(x @ np.array([1.0, -2.0, 0.5]), dtype)
  tx = optax.chain(curiojax.regularity_tangent("l2", 0.1), optimizer)
  loss = curiojax.prediction_loss(lambda p, x: x @ p["w"])
  step = jax.jit(lambda p, st: tx.update(None, st, p, value_fn=loss, x=x, y=y))
  params, state = {"w": jnp.zeros(3, dtype)}, tx.init({"w": jnp.zeros(3, dtype)})
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for update in range(40):  # noqa: B007 (named in the failure message)
      finite = bool(np.isfinite(np.asarray(params["w"], np.float32)).all())
      updates, state = step(params, state)
      params = optax.apply_updates(params, updates)
      if not finite:
        break
    jax.effects_barrier()
  assert not finite, "the training was meant to diverge"
  assert curiojax.tangent_diagnostics(state).diverged, f"no signal at update {update}, the first with NaN params"
  messages = [str(w.message) for w in caught if issubclass(w.category, curiojax.TangentDivergedWarning)]
  assert len(messages) == 1 and jnp.dtype(dtype).name in messages[0] and "training diverged" in messages[0]


# -- clear errors where a combination cannot work -------------------------------------------------


def test_set_strength_refuses_a_negative_strength_for_l2():
  params = {"w": jnp.ones(3)}
  state = curiojax.tunable_regularity_tangent("l2", 0.1).init(params)
  with pytest.raises(ValueError, match="strength must be >= 0.*log_strength=True"):
    curiojax.set_strength(state, -1.0)
  with pytest.raises(ValueError, match="finite"):
    curiojax.set_strength(state, float("nan"))
  signed = curiojax.tunable_regularity_tangent(curiojax.l2(log_strength=True), 0.1).init(params)
  assert float(curiojax.get_strength(curiojax.set_strength(signed, -1.0))) == -1.0  # a log strength may be negative


def test_updates_none_inside_apply_if_finite_says_to_pass_gradients():
  tx = optax.apply_if_finite(optax.chain(curiojax.regularity_tangent("l2", 0.1), optax.sgd(0.1)), 3)
  params = {"w": jnp.zeros(6)}
  with pytest.raises(TypeError, match="inside optax.apply_if_finite.*Pass the gradients"):
    tx.update(None, tx.init(params), params, value_fn=LINEAR, x=X, y=Y)
  grads = jax.grad(LINEAR)(params, X, Y)
  updates, _ = tx.update(grads, tx.init(params), params, value_fn=LINEAR, x=X, y=Y)  # the way that works
  assert np.isfinite(_norm(updates))


def test_check_tangent_inside_jit_is_a_clear_error():
  state = optax.chain(curiojax.regularity_tangent("l2", 0.1), optax.sgd(0.1)).init({"w": jnp.zeros(6)})
  with pytest.raises(TypeError, match="check_tangent is host-side.*outside the jitted function"):
    jax.jit(curiojax.check_tangent)(state)
  with pytest.raises(TypeError, match="tangent_diagnostics is host-side"):
    jax.jit(lambda s: curiojax.tangent_diagnostics(s).residual)(state)
  chex.assert_trees_all_equal(jax.jit(curiojax.tangent_of)(state), {"w": jnp.zeros(6)})  # the jit-safe reader

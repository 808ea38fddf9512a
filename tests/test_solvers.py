"""The tangent's linear operator and its solvers chosen by shape (issue 20).

Oracles: ``(Ĵᵀ Ĵ + (s + λ)I)`` from per-example gradients, assembled and solved in numpy float64,
for ReLU and tanh networks of two widths, unscaled inputs, small strength and damping, padding
rows, a loss with a varying curvature (Huber), the factored (NTK MLP) and generic Gram paths.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import curiojax
from curiojax.active.models import NTKMLP
from curiojax.tangent import dataspace
from curiojax.tangent.curvature import TangentSystem
from curiojax.tangent.operator import TangentOperator
from curiojax.tangent.regularizers import get_regularizer
from curiojax.tangent.solvers import choose_method, solve


def mlp(activation):
  act = jnp.tanh if activation == "tanh" else jax.nn.relu

  def f(params, x):
    for layer in params[:-1]:
      x = act(x @ layer["w"] + layer["b"])
    return (x @ params[-1]["w"] + params[-1]["b"])[:, 0]

  return f


def mlp_params(key, sizes):
  keys = jax.random.split(key, len(sizes) - 1)
  return [
    {"w": jax.random.normal(k, (a, b)) / np.sqrt(a), "b": 0.1 * jax.random.normal(k, (b,))}
    for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
  ]


def data(n, d, scale=1.0, seed=0):
  rng = np.random.default_rng(seed)
  x = (rng.normal(size=(n, d)) * scale).astype(np.float32)
  y = (np.sin(x[:, 0] / scale) + 0.1 * rng.normal(size=n)).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(y)


def oracle_matrix(model_fn, params, x, y, mu, weights=None, loss=curiojax.squared_error):
  """``Jᵀ diag(wᵢℓ''ᵢ/Σw) J + μI`` in float64 from per-example gradients."""
  flat, unravel = ravel_pytree(params)
  jac = np.asarray(
    jax.vmap(jax.grad(lambda f, xi: model_fn(unravel(f), xi[None])[0]), in_axes=(None, 0))(flat, x), np.float64
  )
  preds = model_fn(params, x)
  curv = np.asarray(jax.vmap(jax.grad(jax.grad(loss)))(preds, y), np.float64)
  w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
  b = w * curv / w.sum()
  return jac.T @ (jac * b[:, None]) + mu * np.eye(flat.size)


def operator(model_fn, params, x, y, s, damping, weights=None, loss="squared_error"):
  batch = dict(x=x, y=y) if weights is None else dict(x=x, y=y, weights=weights)
  system = TangentSystem(curiojax.prediction_loss(model_fn, loss), get_regularizer("l2"), "gauss_newton")
  return TangentOperator(system, params, s, damping, batch)


def rel(a, b):
  a, b = np.asarray(ravel_pytree(a)[0], np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize(("activation", "width", "scale"), [("relu", 16, 30.0), ("tanh", 48, 1.0)])
def test_data_space_solve_matches_numpy_and_reports_its_residual_honestly(activation, width, scale):
  """s = λ = 1e-4, padding rows with weight 0, inputs scaled and unscaled (×30, κ up to 6e7).

  The tangent matches numpy's float64 solve to 1e-5 in every case. Where κ·eps exceeds the
  tolerance (ReLU, ×30) float32 cannot measure a residual below it: the solve reports what it
  reached, so the tangent is flagged rather than certified, never certified when it is not.
  """
  model_fn = mlp(activation)
  x, y = data(40, 3, scale=scale)
  weights = jnp.asarray(np.r_[np.ones(32), np.zeros(8)], jnp.float32)
  params = mlp_params(jax.random.key(1), (3, width, width, 1))
  op = operator(model_fn, params, x, y, 1e-4, 1e-4, weights)
  a = oracle_matrix(model_fn, params, x, y, 2e-4, weights)
  inverse = dataspace.data_space_inverse(op, rows=40)
  v = jax.tree.map(lambda p: jax.random.normal(jax.random.key(2), p.shape), params)
  assert rel(inverse(v), np.linalg.solve(a, np.asarray(ravel_pytree(v)[0]))) < 2e-2  # float32 Woodbury
  tau, info = solve(op, jax.tree.map(jnp.negative, op.rho()), tol=1e-4)
  b = -np.asarray(ravel_pytree(params)[0], np.float64)
  assert info.method == "data_space" and info.rows == 40
  assert rel(tau, np.linalg.solve(a, b)) < 1e-5
  true = np.linalg.norm(a @ np.asarray(ravel_pytree(tau)[0], np.float64) - b) / np.linalg.norm(b)
  assert float(info.residual) > 1e-4 or true <= 2e-4  # certified only when true
  if scale == 1.0:
    assert float(info.residual) <= 1e-4 and int(info.products) <= 10  # an exact preconditioner: a few steps


def test_data_space_with_a_varying_loss_curvature():
  """Huber: ℓ'' is 1 inside δ and 0 outside, so rows drop out of the Gram matrix."""
  model_fn = mlp("tanh")
  x, y = data(48, 3)
  y = y.at[:10].add(5.0)  # outliers beyond δ = 1
  params = mlp_params(jax.random.key(3), (3, 32, 1))
  op = operator(model_fn, params, x, y, 1e-3, 1e-3, loss=curiojax.huber(1.0))
  tau, info = solve(op, jax.tree.map(jnp.negative, op.rho()), method="data_space", tol=1e-5)
  a = oracle_matrix(model_fn, params, x, y, 2e-3, loss=curiojax.huber(1.0))
  assert float(info.residual) <= 1e-5
  assert rel(tau, -np.linalg.solve(a, np.asarray(ravel_pytree(params)[0]))) < 1e-3


def test_factored_gram_equals_the_generic_one():
  model = NTKMLP((24, 24))
  params = model.init(jax.random.key(0), 4)
  x, _ = data(30, 4)
  generic = lambda p, x: model(p, x)  # the same function without gradient_factors
  np.testing.assert_allclose(
    dataspace.cross_gram(model, params, x), dataspace.cross_gram(generic, params, x), rtol=1e-4, atol=1e-5
  )


def test_a_subsampled_preconditioner_cuts_the_products_of_cg():
  """Many rows, small s + λ: the preconditioner on a quarter of the rows, against plain CG."""
  model_fn = mlp("tanh")
  x, y = data(512, 4)
  params = mlp_params(jax.random.key(4), (4, 64, 64, 1))
  op = operator(model_fn, params, x, y, 1e-4, 1e-4)
  rhs = jax.tree.map(jnp.negative, op.rho())
  inverse = dataspace.data_space_inverse(op, rows=128)
  assert inverse.x.shape[0] == 128
  from curiojax.tangent.solvers import _solve

  sub = _solve(op, rhs, None, "data_space", 128, 1e-3, 2000, False)
  plain = _solve(op, rhs, None, "cg", 0, 1e-3, 2000, False)
  assert float(sub[1]) <= 1e-3 and float(plain[1]) <= 1e-3
  assert int(sub[2]) + int(sub[3]) < 0.5 * int(plain[2])  # products + preconditioner applications
  assert rel(sub[0], np.asarray(ravel_pytree(plain[0])[0])) < 1e-2


def test_methods_are_chosen_by_shape():
  x, y = data(64, 3)
  small = mlp_params(jax.random.key(0), (3, 8, 1))
  assert choose_method(operator(mlp("tanh"), small, x, y, 1e-3, 0.0)) == ("data_space", 64)
  hessian = TangentOperator(
    TangentSystem(curiojax.prediction_loss(mlp("tanh")), curiojax.l2()), small, 1e-3, 0.0, dict(x=x, y=y)
  )
  assert choose_method(hessian)[0] == "dense"  # a Hessian, 41 parameters
  big = mlp_params(jax.random.key(0), (3, 64, 64, 1))
  assert choose_method(TangentOperator(hessian.system, big, 1e-3, 0.0, dict(x=x, y=y)))[0] == "cg"
  two_outputs = lambda p, x: jnp.stack([mlp("tanh")(p, x)] * 2, axis=1)
  op = TangentOperator(
    TangentSystem(
      curiojax.prediction_loss(two_outputs, lambda f, t: jnp.sum((f - t) ** 2)), curiojax.l2(), "gauss_newton"
    ),
    big,
    1e-3,
    0.0,
    dict(x=x, y=jnp.stack([y, y], 1)),
  )
  assert choose_method(op)[0] == "cg"
  with pytest.raises(ValueError, match="data_space.*gauss_newton"):
    choose_method(hessian, "data_space")
  with pytest.raises(ValueError, match="Unknown solver"):
    choose_method(hessian, "qr")


@pytest.mark.parametrize("method", ["dense", "data_space", "cg"])
def test_a_warm_start_worse_than_zero_is_dropped(method):
  model_fn = mlp("relu")
  x, y = data(32, 3)
  params = mlp_params(jax.random.key(5), (3, 16, 1))
  op = operator(model_fn, params, x, y, 1e-3, 1e-3)
  rhs = jax.tree.map(jnp.negative, op.rho())
  _, from_zero = solve(op, rhs, method=method)
  blown_up = jax.tree.map(lambda r: 1e6 * jnp.ones_like(r), rhs)
  tau, info = solve(op, rhs, method=method, x0=blown_up)
  assert float(info.residual) <= 1e-3
  assert int(info.products) <= int(from_zero.products)


@pytest.mark.parametrize(("dtype", "solver"), [(jnp.bfloat16, "dense"), (jnp.float16, "auto")])
def test_half_precision_parameters_are_solved_in_float32(dtype, solver):
  """Once a LAPACK NotImplementedError: the solve runs in float32 and the tangent comes back in ``dtype``."""
  model_fn = mlp("tanh")
  x, y = data(32, 3)
  params = jax.tree.map(lambda p: p.astype(dtype), mlp_params(jax.random.key(6), (3, 16, 1)))
  tx = optax.chain(curiojax.regularity_tangent("l2", 1e-2, curvature="gauss_newton", damping=1e-3), optax.adam(1e-3))
  loss = curiojax.prediction_loss(model_fn)
  state = curiojax.finish_tangent(tx.init(params), params, loss, dict(x=x, y=y), solver=solver)
  tau = curiojax.check_tangent(state)
  assert all(t.dtype == dtype for t in jax.tree.leaves(tau))
  up = jax.tree.map(lambda p: p.astype(jnp.float32), params)
  want = -np.linalg.solve(oracle_matrix(model_fn, up, x, y, 1.1e-2), np.asarray(ravel_pytree(up)[0]))
  assert rel(jax.tree.map(lambda t: t.astype(jnp.float32), tau), want) < 2e-2  # half-precision rounding


def test_a_finish_that_misses_its_tolerance_says_so():
  """The finish certifies against its own tol: 2 products cannot reach 1e-6 and check_tangent raises."""
  model_fn = mlp("tanh")
  x, y = data(200, 3, scale=10.0)
  params = mlp_params(jax.random.key(7), (3, 64, 64, 1))
  tx = optax.chain(curiojax.regularity_tangent("l2", 1e-4, curvature="gauss_newton", damping=1e-4), optax.adam(1e-3))
  loss = curiojax.prediction_loss(model_fn)
  state, info = curiojax.finish_tangent(
    tx.init(params), params, loss, dict(x=x, y=y), solver="cg", maxiter=2, tol=1e-6, return_info=True
  )
  assert float(info.residual) > 1e-6 and int(info.products) <= 2 + 3
  d = curiojax.tangent_diagnostics(state)
  assert d.exact and d.tolerance == pytest.approx(1e-6) and not d.accurate
  with pytest.raises(curiojax.TangentInaccurateError, match="finishing solve stopped before its tolerance"):
    curiojax.check_tangent(state)


def test_a_second_solve_of_the_same_shapes_does_not_compile_again():
  compiles = []
  jax.monitoring.register_event_duration_secs_listener(
    lambda event, *_, **__: compiles.append(event) if event == "/jax/core/compile/backend_compile_duration" else None
  )
  model_fn = mlp("tanh")
  x, y = data(64, 3)
  ops = [operator(model_fn, mlp_params(jax.random.key(i), (3, 32, 1)), x, y, 1e-3 * (i + 1), 1e-3) for i in range(2)]
  solve(ops[0], jax.tree.map(jnp.negative, ops[0].rho()))
  before = len(compiles)
  tau, info = solve(ops[1], jax.tree.map(jnp.negative, ops[1].rho()))
  assert float(info.residual) <= 1e-3
  assert len(compiles) == before


@pytest.mark.parametrize(
  ("activation", "scale", "carry"), [("relu", 1.0, 0.0), ("tanh", 100.0, 0.0), ("tanh", 1.0, 0.3)]
)
def test_the_trainers_tangent_is_the_exact_one_or_flagged(activation, scale, carry):
  """The documented path (plain Adam with a decaying rate on minibatches, then the solve), and a
  carried one: the tangent matches numpy's solve at the trained parameters whenever it is
  certified, and is flagged (a warning) when it is not."""
  import warnings

  from curiojax.active.models import make_model
  from curiojax.active.training import Trainer, TrainOptions

  spec = make_model("mlp", 3, hidden_sizes=(16, 16), activation=activation)
  x, y = data(56, 3, scale=scale)
  options = TrainOptions(epochs=30, minibatch_size=16, learning_rate_schedule="linear_decay", carry_tangent=carry)
  trainer = Trainer(spec.model_fn, options)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    result = trainer.fit(spec.init(jax.random.key(0)), x, y, strength=1e-3, key=jax.random.key(1))
  flagged = any(issubclass(w.category, curiojax.TangentInaccurateWarning) for w in caught)
  certified = float(result.tangent_residual) <= options.finish_tolerance
  assert certified != flagged
  assert np.isnan(float(result.online_residual)) == (carry == 0)
  a = oracle_matrix(spec.model_fn, result.params, x, y, 1e-3 + options.damping)
  want = -np.linalg.solve(a, np.asarray(ravel_pytree(result.params)[0], np.float64))
  if certified:
    assert rel(result.tangent, want) < 1e-2
  assert 0 < int(result.tangent_products) <= options.finish_maxiter


def test_the_system_keywords_have_one_home_and_misspellings_are_refused():
  """exact_tangent, dense_curvature, relative_residual, lissa and adjoint_curiosities take the
  system's keywords through TangentOperator.build: same defaults everywhere, and a misspelt or
  foreign keyword is a TypeError naming it (never silently ignored)."""
  x = jax.random.normal(jax.random.key(0), (20, 3))
  loss = curiojax.prediction_loss(lambda p, x: x @ p)
  batch, params = dict(x=x, y=x[:, 0]), jnp.zeros(3)
  dense = curiojax.dense_curvature(loss, params, batch)
  ridge = x.T @ x / 20 + 1e-2 * jnp.eye(3)  # squared error's Hessian (½ mean) plus the default l2 strength
  np.testing.assert_allclose(dense, ridge, rtol=1e-5, atol=1e-6)
  tau = curiojax.exact_tangent(loss, params, batch)
  assert float(curiojax.relative_residual(loss, params, tau, batch)) < 1e-4
  for call in (
    lambda: curiojax.exact_tangent(loss, params, batch, strenght=1.0),
    lambda: curiojax.dense_curvature(loss, params, batch, strenght=1.0),
    lambda: curiojax.adjoint_curiosities(loss, params, batch, x[:2], x[:2, 0], strenght=1.0),
  ):
    with pytest.raises(TypeError, match="strenght"):
      call()
  with pytest.raises(TypeError, match="value_fn must be callable"):
    curiojax.exact_tangent("not a function", params, batch)
  with pytest.raises(TypeError, match="batch must be a dict"):
    curiojax.exact_tangent(loss, params, [x])

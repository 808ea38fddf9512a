"""Baseline strategies and sketched gradient features: oracles on tiny problems."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import curiojax  # noqa: F401  (registers the strategies)
from curiojax import baselines
from curiojax.benchmark import NTKMLP
from curiojax.features import gradient_kernel, gradient_sketch
from curiojax.strategies import SelectionContext, get_strategy

STRATEGIES = ["variance", "emcm", "badge", "lcmd", "curiosity_diverse"]


@pytest.fixture(scope="module")
def problem():
  model = NTKMLP(hidden=(16, 16))
  params = model.init(jax.random.key(0), 3)
  rng = np.random.default_rng(0)
  x_lab = rng.normal(size=(10, 3)).astype(np.float32)
  x_pool = rng.normal(size=(40, 3)).astype(np.float32)
  tangent = jax.tree.map(lambda p: -p, params)
  return model, params, tangent, x_lab, x_pool


def _ctx(problem, key=0, pool=None):
  model, params, tangent, x_lab, x_pool = problem
  pool = x_pool if pool is None else pool
  return SelectionContext(
    model, params, tangent, x_lab, np.zeros(len(x_lab), np.float32), pool, jax.random.key(key), noise_variance=0.1
  )


@pytest.mark.parametrize("name", STRATEGIES)
def test_batch_size_distinct_in_pool_and_deterministic(problem, name):
  strategy = get_strategy(name, dim=32)
  a = strategy.select(_ctx(problem, key=3), 7)
  b = get_strategy(name, dim=32).select(_ctx(problem, key=3), 7)
  assert a.shape == (7,) and len(set(a.tolist())) == 7
  assert a.min() >= 0 and a.max() < 40  # indices into the unlabelled pool only
  np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError):
    strategy.select(_ctx(problem), 41)


@pytest.mark.parametrize("name", ["badge", "lcmd"])
def test_copies_of_labelled_points_are_not_picked(problem, name):
  # pool rows identical to labelled rows sit at distance 0 from a centre: never chosen
  _, _, _, x_lab, x_pool = problem
  pool = np.concatenate([x_lab, x_pool[:20]])
  for key in range(3):
    idx = get_strategy(name, dim=32).select(_ctx(problem, key=key, pool=pool), 10)
    assert np.all(idx >= len(x_lab))


def test_gradient_factors_are_exact_per_example_gradients(problem):
  model, params, _, _, x_pool = problem
  x = jnp.asarray(x_pool[:5])
  grads = jax.vmap(jax.grad(lambda p, xi: model(p, xi[None])[0]), in_axes=(None, 0))(params, x)
  for layer, (u, d) in zip(grads, model.gradient_factors(params, x), strict=False):
    outer = u[:, :, None] * d[:, None, :]  # (n, fan_in + 1, fan_out): weight rows, then bias
    np.testing.assert_allclose(outer[:, :-1], layer["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outer[:, -1], layer["b"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("factored", [True, False])
def test_sketch_is_unbiased_for_the_gradient_kernel(problem, factored):
  model, params, _, _, x_pool = problem
  x = x_pool[:4]
  fn = model if factored else (lambda p, xx: model(p, xx))
  exact = gradient_kernel(model, params, x, x)
  sketches = [np.asarray(gradient_sketch(fn, params, x, jax.random.key(s), dim=2048)) for s in range(8)]
  k_hat = np.mean([f @ f.T for f in sketches], axis=0)
  scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)))
  assert np.max(np.abs(k_hat - exact) / scale) < 0.12


def _numpy_lcmd(fp, fl, k):
  """bmdal_reg's LargestClusterMaxDist (TP mode), written naively."""
  d = ((fp[:, None] - fl[None]) ** 2).sum(-1)
  min_d, closest = d.min(1), d.argmin(1)
  sel = []
  for i in range(k):
    sums = np.bincount(closest, weights=min_d, minlength=len(fl) + k)
    score = np.where(sums[closest] == sums.max(), min_d, -np.inf)
    score[sel] = -np.inf
    j = int(np.argmax(score))
    sel.append(j)
    dj = ((fp - fp[j]) ** 2).sum(-1)
    new = dj < min_d
    closest[new], min_d[new] = len(fl) + i, dj[new]
    min_d[j] = 0.0
  return sel


def test_lcmd_matches_reference_algorithm():
  rng = np.random.default_rng(1)
  fp = rng.normal(size=(60, 5)).astype(np.float64)
  fl = rng.normal(size=(7, 5))
  want = _numpy_lcmd(fp.copy(), fl, 9)
  fpp, mp = baselines._pad(fp, 64)
  flp, ml = baselines._pad(fl, 8)
  got = baselines._lcmd(jnp.asarray(fpp), jnp.asarray(mp), jnp.asarray(flp), jnp.asarray(ml), 9)
  assert np.asarray(got).tolist() == want


def test_variance_matches_dense_posterior():
  rng = np.random.default_rng(2)
  fp, fl = rng.normal(size=(30, 6)), rng.normal(size=(5, 6))
  s = np.mean((fl**2).sum(1))
  noise = 0.01
  a = fl.T @ fl / s + noise * np.eye(6)
  want = noise * np.einsum("nd,nd->n", fp / np.sqrt(s), np.linalg.solve(a, fp.T / np.sqrt(s)).T)
  # kernel form: k(x,x) − k(x,L)(K_LL + σ²I)⁻¹k(L,x), scaled features
  kp, kl = fp / np.sqrt(s), fl / np.sqrt(s)
  kernel_form = (kp**2).sum(1) - np.einsum(
    "nl,nl->n", kp @ kl.T, np.linalg.solve(kl @ kl.T + noise * np.eye(5), kl @ kp.T).T
  )
  np.testing.assert_allclose(want, kernel_form, rtol=1e-6)
  fpp, mp = baselines._pad(fp, 32)
  flp, ml = baselines._pad(fl, 8)
  got, _ = baselines._posterior_variance(jnp.asarray(fpp), jnp.asarray(mp), jnp.asarray(flp), jnp.asarray(ml), noise)
  np.testing.assert_allclose(np.asarray(got)[:30], want, rtol=2e-3, atol=1e-6)


def test_deflated_greedy_topk_at_gamma_zero_and_skips_copies():
  rng = np.random.default_rng(3)
  fp = rng.normal(size=(20, 8)).astype(np.float32)
  fp[1] = fp[0]  # a duplicate of the best point
  scores = np.linspace(2.0, 1.0, 20).astype(np.float32)
  scores[1] = scores[0] - 1e-3
  fpp, mp = baselines._pad(fp, 32)
  flp, ml = baselines._pad(np.zeros((0, 8)), 8)
  sp = np.zeros(32, np.float32)
  sp[:20] = scores
  args = (jnp.asarray(sp), jnp.asarray(fpp), jnp.asarray(mp), jnp.asarray(flp), jnp.asarray(ml))
  plain = np.asarray(baselines._deflated_greedy(*args, 0.0, 0.1, 5))
  assert plain.tolist() == [0, 1, 2, 3, 4]
  diverse = np.asarray(baselines._deflated_greedy(*args, 1.0, 1e-4, 5))
  assert diverse[0] == 0 and 1 not in diverse.tolist()


def test_emcm_is_sqrt_variance_times_gradient_norm(problem):
  model, params, _, x_lab, x_pool = problem
  ctx = _ctx(problem)
  fp, mp, fl, ml = baselines._features(ctx, 32, 2048)
  var, diag = baselines._posterior_variance(fp, mp, fl, ml, 0.01)
  want = np.argsort(-np.asarray(jnp.sqrt(var * diag))[:40])[:5]
  got = get_strategy("emcm", dim=32).select(ctx, 5)
  assert sorted(got.tolist()) == sorted(want.tolist())


def test_bad_options_raise():
  with pytest.raises(ValueError):
    get_strategy("curiosity_diverse", gamma=-1.0)
  with pytest.raises(ValueError):
    get_strategy("variance", noise=0.0)
  with pytest.raises(ValueError):
    gradient_sketch(lambda p, x: x @ p, jnp.ones(2), jnp.ones(2), jax.random.key(0))

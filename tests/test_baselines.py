"""Baseline strategies and sketched gradient features: oracles on tiny problems."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from curiojax.active.models import NTKMLP
from curiojax.scoring.features import gradient_kernel, gradient_sketch
from curiojax.strategies import SelectionContext, SketchOptions, get_strategy, kernels

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
  a = strategy.select(_ctx(problem, key=3), 7).indices
  b = get_strategy(name, sketch={"dim": 32}).select(_ctx(problem, key=3), 7).indices
  assert a.shape == (7,) and len(set(a.tolist())) == 7
  assert a.min() >= 0 and a.max() < 40  # indices into the unlabelled pool only
  np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="larger than the unlabelled pool"):
    strategy.select(_ctx(problem), 41)


@pytest.mark.parametrize("name", STRATEGIES)
def test_next_round_smaller_pool_does_not_recompile(problem, name, compilations):
  _, _, _, _, x_pool = problem
  get_strategy(name, dim=32).select(_ctx(problem, pool=x_pool), 5)
  with compilations() as names:
    get_strategy(name, dim=32).select(_ctx(problem, pool=x_pool[:-5]), 5)
  assert names == []


@pytest.mark.parametrize("name", ["badge", "lcmd"])
def test_copies_of_labelled_points_are_not_picked(problem, name):
  # pool rows identical to labelled rows sit at distance 0 from a centre: never chosen
  _, _, _, x_lab, x_pool = problem
  pool = np.concatenate([x_lab, x_pool[:20]])
  for key in range(3):
    idx = get_strategy(name, dim=32).select(_ctx(problem, key=key, pool=pool), 10).indices
    assert np.all(idx >= len(x_lab))


def test_gradient_factors_are_exact_per_example_gradients(problem):
  model, params, _, _, x_pool = problem
  x = jnp.asarray(x_pool[:5])
  grads = jax.vmap(jax.grad(lambda p, xi: model(p, xi[None])[0]), in_axes=(None, 0))(params, x)
  for layer, (u, d) in zip(grads, model.gradient_factors(params, x), strict=True):
    outer = u[:, :, None] * d[:, None, :]  # (n, fan_in + 1, fan_out): weight rows, then bias
    np.testing.assert_allclose(outer[:, :-1], layer["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outer[:, -1], layer["b"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # many sketch draws; the exact per-example gradient factors are the quick check
@pytest.mark.parametrize("factored", [True, False])
def test_sketch_is_unbiased_for_the_gradient_kernel(problem, factored):
  model, params, _, _, x_pool = problem
  x = x_pool[:4]
  fn = model if factored else (lambda p, xx: model(p, xx))
  exact = gradient_kernel(model, params, x, x)
  sketches = [np.asarray(gradient_sketch(fn, params, x, jax.random.key(s), dim=2048)) for s in range(64)]
  k_hat = np.mean([f @ f.T for f in sketches], axis=0)
  scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)))
  assert np.max(np.abs(k_hat - exact) / scale) < 0.05  # a 10% bias gives ~0.1; the sampling error is < 0.01


def _numpy_lcmd(fp, fl, k, w=None):
  """bmdal_reg's LargestClusterMaxDist (TP mode), written naively; ``w`` weights the scored distances."""
  w = np.ones(len(fp)) if w is None else w
  d = ((fp[:, None] - fl[None]) ** 2).sum(-1)
  min_d, closest = d.min(1), d.argmin(1)
  sel = []
  for i in range(k):
    sums = np.bincount(closest, weights=w * min_d, minlength=len(fl) + k)
    score = np.where(sums[closest] == sums.max(), w * min_d, -np.inf)
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
  fpp, mp = kernels.pad_rows_to(fp, 64)
  flp, ml = kernels.pad_rows_to(fl, 8)
  got = kernels.lcmd(jnp.asarray(fpp), jnp.asarray(mp), jnp.asarray(flp), jnp.asarray(ml), 9)
  assert np.asarray(got).tolist() == want
  w = rng.gamma(0.5, size=60)  # skewed weights, as curiosities are
  want_w = _numpy_lcmd(fp.copy(), fl, 9, w)
  assert want_w != want  # the weights matter on this problem
  wp = jnp.zeros(64).at[:60].set(w)
  got_w = kernels.lcmd(jnp.asarray(fpp), jnp.asarray(mp), jnp.asarray(flp), jnp.asarray(ml), 9, wp)
  assert np.asarray(got_w).tolist() == want_w


def test_lcmd_scores_are_each_picks_squared_distance_to_its_nearest_centre(problem):
  ctx = _ctx(problem)
  selection = get_strategy("lcmd", dim=32).select(ctx, 6)
  picked = selection.indices
  fp, _, fl, ml = kernels.sketched_features(ctx, SketchOptions(32))
  fp, fl = np.asarray(fp, np.float64)[: len(ctx.x_pool)], np.asarray(fl, np.float64)[np.asarray(ml)]
  want = []
  for i, j in enumerate(picked):  # nearest labelled point or earlier pick, when j was chosen
    centres = np.concatenate([fl, fp[picked[:i]]])
    want.append(((centres - fp[j]) ** 2).sum(-1).min())
  np.testing.assert_allclose(selection.scores, want, rtol=1e-4, atol=1e-6)
  assert selection.top_score is None and np.isnan(selection.direction_residual)
  assert get_strategy("lcmd").criterion.startswith("coverage")


def test_weighted_kmeanspp_samples_proportionally_to_weight_times_distance():
  # first pick, one labelled centre at the origin: P(j) ∝ w_j·‖φ_j‖²
  rng = np.random.default_rng(4)
  fp = rng.normal(size=(6, 3))
  w = np.array([0.0, 1.0, 2.0, 4.0, 0.5, 3.0])
  p = w * (fp**2).sum(1)
  p /= p.sum()
  fpp, mp = kernels.pad_rows_to(fp, 8)
  flp, ml = kernels.pad_rows_to(np.zeros((1, 3)), 8)
  args = (jnp.asarray(fpp), jnp.asarray(mp), jnp.asarray(flp), jnp.asarray(ml))
  wp = jnp.zeros(8).at[:6].set(w)
  first = jax.vmap(lambda k: kernels.kmeanspp(*args, k, 1, wp)[0])(jax.random.split(jax.random.key(0), 4000))
  freq = np.bincount(np.asarray(first), minlength=8)[:6] / 4000
  assert freq[0] == 0.0  # zero weight: never sampled
  np.testing.assert_allclose(freq, p, atol=0.03)


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
  fpp, mp = kernels.pad_rows_to(fp, 32)
  flp, ml = kernels.pad_rows_to(fl, 8)
  got, _ = kernels.posterior_variance(jnp.asarray(fpp), jnp.asarray(mp), jnp.asarray(flp), jnp.asarray(ml), noise)
  np.testing.assert_allclose(np.asarray(got)[:30], want, rtol=2e-3, atol=1e-6)


def test_curiosity_diverse_is_lcmd_weighted_by_normalised_curiosity(problem):
  model, params, tangent, _, x_pool = problem
  ctx = _ctx(problem)
  # the features of the one pass that also gives J_xτ (float32 factors; tested against jax.jvp)
  fp, mp, fl, ml, _, _ = kernels.sketched_features(ctx, SketchOptions(32), jax.tree.map(lambda t: t[None], tangent))
  jvp = np.asarray(jax.jvp(lambda p: model(p, jnp.asarray(x_pool)), (params,), (tangent,))[1], np.float64)
  c = jvp**2 / np.mean(jvp**2)
  n = len(x_pool)
  fpn, fln = np.asarray(fp, np.float64)[:n], np.asarray(fl, np.float64)[np.asarray(ml)]
  for gamma in (0.5, 2.0):
    want = _numpy_lcmd(fpn.copy(), fln, 6, c**gamma)
    got = get_strategy("curiosity_diverse", gamma=gamma, dim=32).select(ctx, 6)
    assert got.indices.tolist() == want
  # γ = 0 is LCMD on the same features
  lcmd = get_strategy("curiosity_diverse", gamma=0.0, dim=32).select(ctx, 6).indices
  assert lcmd.tolist() == _numpy_lcmd(fpn.copy(), fln, 6)


def test_curiosity_diverse_reports_a_diverged_tangent(problem):
  model, params, tangent, x_lab, x_pool = problem
  bad = jax.tree.map(lambda t: jnp.full_like(t, jnp.nan), tangent)
  ctx = SelectionContext(model, params, bad, x_lab, np.zeros(len(x_lab)), x_pool, jax.random.key(0))
  with pytest.raises(ValueError, match="diverged"):
    get_strategy("curiosity_diverse", dim=32).select(ctx, 3)


def test_emcm_is_sqrt_variance_times_gradient_norm(problem):
  model, params, _, x_lab, x_pool = problem
  ctx = _ctx(problem)
  fp, mp, fl, ml = kernels.sketched_features(ctx, SketchOptions(32))
  var, diag = kernels.posterior_variance(fp, mp, fl, ml, 0.01)
  want = np.argsort(-np.asarray(jnp.sqrt(var * diag))[:40])[:5]
  got = get_strategy("emcm", dim=32).select(ctx, 5)
  assert sorted(got.indices.tolist()) == sorted(want.tolist())
  np.testing.assert_allclose(got.scores, np.asarray(jnp.sqrt(var * diag))[got.indices], rtol=1e-5)


def test_bad_options_raise():
  with pytest.raises(ValueError, match="gamma must be finite and >= 0"):
    get_strategy("curiosity_diverse", gamma=-1.0)
  with pytest.raises(TypeError, match="no option.*noise.*options are"):
    get_strategy("curiosity_diverse", noise=0.1)  # not an option of this strategy
  with pytest.raises(ValueError, match="noise must be finite and > 0"):
    get_strategy("variance", noise=0.0)
  with pytest.raises(ValueError, match="non-empty batch"):
    gradient_sketch(lambda p, x: x @ p, jnp.ones(2), jnp.ones(2), jax.random.key(0))

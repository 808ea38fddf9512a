"""Curiosity scores against their definitions computed the slow way (per-example gradients)."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import curiojax
from curiojax.tangent.losses import gaussian_nll, huber, squared_error

N, D, OUT = 37, 3, 2


def mlp_fn(params, x):
  h = jnp.tanh(x @ params["w1"] + params["b1"])
  return h @ params["w2"] + params["b2"]


def _tree_like(key, params, scale=1.0, k=None):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  shape = lambda p: p.shape if k is None else (k,) + p.shape
  return jax.tree.unflatten(
    treedef, [scale * jax.random.normal(kk, shape(p)) for kk, p in zip(keys, leaves, strict=True)]
  )


def _mlp(out=OUT):
  k1, k2 = jax.random.split(jax.random.key(0))
  params = {
    "w1": jax.random.normal(k1, (D, 8)) / 2,
    "b1": jnp.full(8, 0.1),
    "w2": jax.random.normal(k2, (8, out)) / 3,
    "b2": jnp.zeros(out),
  }
  return mlp_fn, params


class _Net(nnx.Module):
  def __init__(self, rngs):
    self.l1 = nnx.Linear(D, 8, rngs=rngs)
    self.l2 = nnx.Linear(8, OUT, rngs=rngs)

  def __call__(self, x):
    return self.l2(nnx.relu(self.l1(x)) + 0.1 * jnp.sin(x[:, :1]))


def _nnx():
  return curiojax.nnx_model_fn(_Net(nnx.Rngs(1)))


MODELS = {"mlp": _mlp, "nnx": _nnx}


def _data(out=OUT, n=N):
  kx, ky = jax.random.split(jax.random.key(2))
  return jax.random.normal(kx, (n, D)), jax.random.normal(ky, (n, out))


def _per_example_scores(model_fn, params, tangent, x, y, loss):
  """The slow way: per-example parameter gradients dotted with τ."""

  def ell(p, xi, yi):
    return loss(model_fn(p, xi[None])[0], yi)

  grads = jax.vmap(jax.grad(ell), in_axes=(None, 0, 0))(params, x, y)
  return jax.vmap(
    lambda g: sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(tangent), strict=True))
  )(grads)


def _per_example_jvp(model_fn, params, tangent, x):
  """The slow way: per-example Jacobians ∂f(x)/∂θ contracted with τ."""
  jac = jax.vmap(jax.jacrev(lambda p, xi: model_fn(p, xi[None])[0]), in_axes=(None, 0))(params, x)
  return sum(
    jnp.einsum("no...,...->no", j, t) for j, t in zip(jax.tree.leaves(jac), jax.tree.leaves(tangent), strict=True)
  )


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.max(np.abs(a - b)) / np.max(np.abs(b))


@pytest.mark.parametrize("model", sorted(MODELS))
def test_labelled_heuristics_equal_per_example_gradients(model):
  model_fn, params = MODELS[model]()
  tangent = _tree_like(jax.random.key(3), params, 0.3)
  x, y = _data()
  for loss_name, loss in (("squared_error", squared_error), ("huber", huber())):
    slow = _per_example_scores(model_fn, params, tangent, x, y, loss)
    for h, f in (("signed", lambda c: c), ("squared", jnp.square), ("magnitude", jnp.abs)):
      if loss is not squared_error and h != "signed":
        continue  # the other loss only changes ∂ℓ/∂f, checked by the signed score
      fast = curiojax.curiosity_scores(model_fn, params, tangent, x, y, heuristic=h, loss=loss_name, chunk_size=16)
      assert fast.shape == (N,)
      assert _rel(fast, f(slow)) <= 1e-4, (loss_name, h)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_jvp_equals_per_example_jacobian(model):
  model_fn, params = MODELS[model]()
  tangent = _tree_like(jax.random.key(4), params, 0.3)
  x, _ = _data()
  fast = curiojax.curiosity_scores(model_fn, params, tangent, x, heuristic="jvp", chunk_size=8)
  assert fast.shape == (N, OUT)
  assert _rel(fast, _per_example_jvp(model_fn, params, tangent, x)) <= 1e-4


def _expected_squared_oracle(model_fn, params, tangent, x, sigma2):
  """E_y[c²] for y ~ f + σε from per-example gradients: c is affine in y, so
  E[c²] = c(f)² + Σ_o σ²_o (∂c/∂y_o)², both from the per-example-gradient score."""

  def c(xi, yi):
    return _per_example_scores(model_fn, params, tangent, xi[None], yi[None], squared_error)[0]

  preds = model_fn(params, x)
  c0 = jax.vmap(c)(x, preds)
  dc = jax.vmap(jax.jacfwd(c, argnums=1))(x, preds)
  return c0**2 + jnp.sum(sigma2 * dc**2, axis=-1)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_expected_squared_equals_expectation_of_per_example_score(model):
  model_fn, params = MODELS[model]()
  tangent = _tree_like(jax.random.key(5), params, 0.3)
  x, _ = _data()
  sigma2 = jnp.array([0.3, 1.7])  # per-output noise variance
  fast = curiojax.curiosity_scores(model_fn, params, tangent, x, noise_variance=sigma2, chunk_size=16)
  assert _rel(fast, _expected_squared_oracle(model_fn, params, tangent, x, sigma2)) <= 1e-4
  # σ²(x) as a function of x, per example.
  fn = lambda xb: 0.5 + xb[:, 0] ** 2
  fast_fn = curiojax.make_scorer(model_fn, noise_variance=fn, chunk_size=16)(params, tangent, x)
  oracle = _expected_squared_oracle(model_fn, params, tangent, x, 1.0) * fn(x)
  assert _rel(fast_fn, oracle) <= 1e-4


def _assert_within_monte_carlo_error(exact, samples):
  """``exact`` within 4 standard errors of the mean of ``samples`` (axis 0)."""
  samples = np.asarray(samples, np.float64)
  mean, se = samples.mean(0), samples.std(0) / np.sqrt(samples.shape[0])
  assert np.all(np.abs(np.asarray(exact) - mean) <= 4 * se), (np.asarray(exact), mean, se)


def test_expected_squared_monte_carlo():
  """Loose check of E_y[c²] by sampling y ~ f + σε and per-example gradients."""
  model_fn, params = _mlp()
  tangent = _tree_like(jax.random.key(6), params, 0.3)
  x, _ = _data(n=5)
  sigma2, samples = 0.4, 20000
  preds = model_fn(params, x)
  eps = jax.random.normal(jax.random.key(7), (samples,) + preds.shape)
  ys = preds + jnp.sqrt(sigma2) * eps
  c = jax.vmap(lambda y: _per_example_scores(model_fn, params, tangent, x, y, squared_error))(ys)
  fast = curiojax.curiosity_scores(model_fn, params, tangent, x, noise_variance=sigma2)
  _assert_within_monte_carlo_error(fast, c**2)


def test_gaussian_nll_expected_squared_is_exact_expectation():
  """(μ, log v) model: E_y[c²] with y ~ N(μ, v), exact by 5-point Gauss-Hermite (c² is a
  degree-4 polynomial in y), against per-example gradients at the nodes."""
  model_fn, params = _mlp(out=2)
  tangent = _tree_like(jax.random.key(8), params, 0.3)
  x, _ = _data(n=11)
  preds = model_fn(params, x)
  t, w = np.polynomial.hermite.hermgauss(5)
  ys = preds[None, :, 0] + np.sqrt(2.0) * t[:, None] * jnp.exp(0.5 * preds[None, :, 1])
  c = jax.vmap(lambda y: _per_example_scores(model_fn, params, tangent, x, y, gaussian_nll))(ys)
  oracle = jnp.sum(w[:, None] / np.sqrt(np.pi) * c**2, axis=0)
  fast = curiojax.curiosity_scores(model_fn, params, tangent, x, loss="gaussian_nll")
  assert _rel(fast, oracle) <= 1e-4


def test_other_loss_expected_squared_by_quadrature_matches_monte_carlo():
  model_fn, params = _mlp()
  tangent = _tree_like(jax.random.key(9), params, 0.3)
  x, _ = _data(n=4)
  sigma2, samples = 2.0, 40000
  preds = model_fn(params, x)
  ys = preds + jnp.sqrt(sigma2) * jax.random.normal(jax.random.key(10), (samples,) + preds.shape)
  c = jax.vmap(lambda y: _per_example_scores(model_fn, params, tangent, x, y, huber()))(ys)
  fast = curiojax.curiosity_scores(model_fn, params, tangent, x, loss="huber", noise_variance=sigma2)
  _assert_within_monte_carlo_error(fast, c**2)
  # A given E[∇ℓ∇ℓᵀ] is used as is: σ²I reproduces the squared-error score.
  cov = curiojax.make_scorer(model_fn, loss="huber", gradient_covariance=lambda f: 0.7 * jnp.eye(OUT))
  plain = curiojax.curiosity_scores(model_fn, params, tangent, x, noise_variance=0.7)
  assert _rel(cov(params, tangent, x), plain) <= 1e-5


def test_several_tangents_one_pass():
  model_fn, params = _mlp()
  tangents = _tree_like(jax.random.key(11), params, 0.3, k=3)
  x, y = _data()
  for h in ("signed", "expected_squared", "jvp"):
    many = curiojax.curiosity_scores(model_fn, params, tangents, x, y, heuristic=h, chunk_size=16)
    assert many.shape == ((N, 3) if h != "jvp" else (N, 3, OUT))
    for j in range(3):
      one = curiojax.curiosity_scores(
        model_fn, params, jax.tree.map(lambda t, j=j: t[j], tangents), x, y, heuristic=h, chunk_size=16
      )
      np.testing.assert_allclose(many[:, j], one, rtol=1e-5, atol=1e-7)


def test_jvp_equals_finite_difference_retraining_on_ridge():
  """J_x τ = d f(θ*(s), x)/ds: closed-form ridge θ*(s) = (ΦᵀΦ/n + sI)⁻¹Φᵀy/n retrained at s ± ε."""
  rng = np.random.default_rng(0)
  n, p, s, eps = 40, 5, 0.3, 1e-4
  phi, y = rng.normal(size=(n, p)), rng.normal(size=n)
  theta = lambda s: np.linalg.solve(phi.T @ phi / n + s * np.eye(p), phi.T @ y / n)
  model_fn = lambda params, x: x @ params["w"]
  params = {"w": jnp.asarray(theta(s), jnp.float32)}
  loss = curiojax.prediction_loss(model_fn)
  tangent = curiojax.exact_tangent(
    loss,
    params,
    {"x": jnp.asarray(phi, jnp.float32), "y": jnp.asarray(y, jnp.float32)},
    regularizer=curiojax.l2(),
    strength=s,
    solver="dense",
  )
  pool = rng.normal(size=(300, p))
  fd = pool @ (theta(s + eps) - theta(s - eps)) / (2 * eps)
  fast = curiojax.curiosity_scores(model_fn, params, tangent, pool.astype(np.float32), heuristic="jvp", chunk_size=64)
  assert _rel(fast, fd) <= 1e-4


def test_chunking_and_buckets_reuse_one_compilation():
  model_fn, params = _mlp()
  tangent = _tree_like(jax.random.key(12), params, 0.3)
  x, _ = _data(n=700)
  scorer = curiojax.make_scorer(model_fn, chunk_size=64, bucket="pow2")
  a = scorer(params, tangent, x[:300])  # 300 and 400 both pad to 512 = 64·2³
  b = scorer(params, tangent, x[:400])
  assert scorer.trace_count == 1
  scorer(params, tangent, x[:700])  # next bucket: 1024
  assert scorer.trace_count == 2
  whole = curiojax.make_scorer(model_fn, chunk_size=4096)(params, tangent, x[:400])
  np.testing.assert_allclose(b, whole, rtol=1e-6)
  np.testing.assert_allclose(a, whole[:300], rtol=1e-6)
  geometric = curiojax.make_scorer(model_fn, chunk_size=64)  # 4 sizes per octave
  geometric(params, tangent, x[:290])
  geometric(params, tangent, x[:320])  # both 5 chunks of 64
  assert geometric.trace_count == 1
  assert curiojax.scoring.scores.bucket_size(300, 64, bucket="pow2") == (512, 64)
  assert [curiojax.scoring.scores.bucket_size(64 * m, 64)[0] // 64 for m in (8, 9, 11, 13, 15, 17)] == [
    8,
    10,
    12,
    14,
    16,
    20,
  ]
  assert curiojax.scoring.scores.bucket_size(5, 64) == (5, 5)  # the size class of 5 rows: 5
  assert curiojax.scoring.scores.bucket_size(300, 64, bucket="chunk") == (320, 64)
  # The one padding policy: a pool smaller than a chunk is padded to its size class, and a
  # pool already padded to its size is not padded again.
  bucket = curiojax.scoring.scores.bucket_size
  assert bucket(2560, 4096)[0] == curiojax.padding.size_class(2560) == 2560
  assert all(bucket(bucket(n, 64)[0], 64)[0] == bucket(n, 64)[0] for n in (1, 5, 63, 65, 300, 1000, 5000))


def test_a_second_pool_of_the_same_padded_size_does_not_recompile(compilations):
  model_fn, params = _mlp()
  tangent = _tree_like(jax.random.key(12), params, 0.3)
  x, _ = _data(n=320)
  scorer = curiojax.make_scorer(model_fn, chunk_size=64)
  scorer(params, tangent, x[:290])
  with compilations() as names:
    scorer(params, tangent, x[:300])  # 290 and 300 rows: both 5 chunks of 64
  assert not [name for name in names if "_padded_scores" in name], names


class _DeclaredSquaredError:
  """A user loss that is ½‖f − y‖² and says so."""

  closed_form = "squared_error"

  def __call__(self, prediction, target):
    return 0.5 * jnp.sum(jnp.square(prediction - target))


def test_expected_squared_dispatches_on_the_declared_closed_form(monkeypatch):
  from curiojax.scoring import heuristics

  model_fn, params = _mlp()
  tangent = _tree_like(jax.random.key(5), params, 0.3)
  x, _ = _data()
  calls = []
  for name, form in list(heuristics.CLOSED_FORMS.items()):
    monkeypatch.setitem(
      heuristics.CLOSED_FORMS, name, lambda *a, form=form, name=name, **kw: calls.append(name) or form(*a, **kw)
    )
  quadrature = heuristics._quadrature_form
  monkeypatch.setattr(
    heuristics, "_quadrature_form", lambda *a, **kw: calls.append("quadrature") or quadrature(*a, **kw)
  )
  declared = curiojax.curiosity_scores(model_fn, params, tangent, x, loss=_DeclaredSquaredError(), chunk_size=16)
  assert set(calls) == {"squared_error"}  # a user loss declaring the property gets the closed form (traced)
  builtin = curiojax.curiosity_scores(model_fn, params, tangent, x, loss="squared_error", chunk_size=16)
  np.testing.assert_allclose(declared, builtin, rtol=1e-6)
  undeclared = lambda f, y: 0.5 * jnp.sum(jnp.square(f - y))  # the same loss, undeclared
  calls.clear()
  generic = curiojax.curiosity_scores(model_fn, params, tangent, x, loss=undeclared, chunk_size=16)
  assert set(calls) == {"quadrature"}  # no property: the generic path
  np.testing.assert_allclose(generic, builtin, rtol=1e-4)  # quadrature is exact for squared error


def test_the_callers_mask_is_honoured():
  model_fn, params = _mlp()
  tangent = _tree_like(jax.random.key(6), params, 0.3)
  x, y = _data()
  x = np.asarray(x).copy()
  x[3] = np.nan  # masked: never checked, never reaches the model
  mask = np.zeros(N, bool)
  mask[[3, 10, 20]] = True
  clean = np.asarray(x).copy()
  clean[3] = 0.0
  for h in ("expected_squared", "signed", "jvp"):
    scorer = curiojax.make_scorer(model_fn, heuristic=h, chunk_size=16)
    scores = np.asarray(scorer(params, tangent, x, y, mask=mask))
    full = np.asarray(scorer(params, tangent, clean, y))
    fill = np.isnan(scores[mask]).all() if h == "jvp" else (scores[mask] == -np.inf).all()
    assert fill, (h, scores[mask])
    np.testing.assert_allclose(scores[~mask], full[~mask], rtol=1e-6)
  # A caller that padded its pool itself (to the scorer's size, padding masked) is not padded again.
  scorer = curiojax.make_scorer(model_fn, chunk_size=16)
  size = scorer.padded_size(N)
  padded, pad_mask = curiojax.padding.pad_rows(clean, size), np.arange(size) >= N
  np.testing.assert_allclose(
    np.asarray(scorer(params, tangent, padded, mask=pad_mask))[:N], scorer(params, tangent, clean)
  )
  assert scorer.padded_size(size) == size
  with pytest.raises(ValueError, match="mask must be boolean"):
    scorer(params, tangent, clean, mask=np.zeros(N, int))
  with pytest.raises(ValueError, match="mask must be boolean"):
    scorer(params, tangent, clean, mask=np.zeros(N + 1, bool))


def test_no_module_level_cache_keeps_the_model_alive(compilations):
  import gc
  import weakref

  _, params = _mlp()
  tangent = _tree_like(jax.random.key(7), params, 0.3)
  x, _ = _data()

  def model_fn(p, x):
    return mlp_fn(p, x)

  ref = weakref.ref(model_fn)
  curiojax.curiosity_scores(model_fn, params, tangent, x, chunk_size=16)
  with compilations() as names:  # the one-shot form reuses the scorer attached to model_fn
    curiojax.curiosity_scores(model_fn, params, tangent, x[:-2], chunk_size=16)  # the same padded size
  assert not [name for name in names if "_padded_scores" in name], names
  scorer = curiojax.make_scorer(model_fn, chunk_size=16)
  scorer(params, tangent, x)
  del model_fn, scorer
  gc.collect()
  assert ref() is None  # the compiled scorer died with the Scorer, and with it the model


def test_million_point_pool_is_chunked_with_bounded_memory():
  model_fn = lambda p, x: x @ p["w"] + p["b"]
  params = {"w": jnp.array([1.0, -2.0, 0.5, 3.0]), "b": jnp.array(0.1)}
  tangent = {"w": jnp.array([0.2, 0.1, -0.3, 0.05]), "b": jnp.array(-0.1)}
  scorer = curiojax.make_scorer(model_fn, chunk_size=1 << 14)
  temp = {}
  for n in (1 << 16, 1 << 20):
    mem = scorer.lower(params, tangent, jax.ShapeDtypeStruct((n, 4), jnp.float32)).compile().memory_analysis()
    if mem is None:
      pytest.skip("backend gives no memory analysis")
    temp[n] = mem.temp_size_in_bytes
  # Scratch memory is set by the chunk, not by the pool (a per-example anything would be ≥ 4 MB).
  assert temp[1 << 20] <= temp[1 << 16] + 4096, temp
  assert temp[1 << 20] < 4 * (1 << 20)
  x = np.random.default_rng(0).normal(size=(1_000_000, 4)).astype(np.float32)
  scores = scorer(params, tangent, x, noise_variance=0.5)
  assert scores.shape == (1_000_000,)
  sub = x[::9973]
  np.testing.assert_allclose(np.asarray(scores)[::9973], 0.5 * (sub @ np.asarray(tangent["w"]) - 0.1) ** 2, rtol=1e-4)


def test_noise_variance_from_residuals():
  model_fn, params = _mlp()
  x, y = _data()
  r = np.asarray(model_fn(params, x) - y)
  np.testing.assert_allclose(curiojax.noise_variance(model_fn, params, x, y), np.mean(r**2), rtol=1e-5)
  np.testing.assert_allclose(
    curiojax.noise_variance(model_fn, params, x, y, per_output=True, ddof=2), np.sum(r**2, 0) / (N - 2), rtol=1e-5
  )


# -- bad input --------------------------------------------------------------------------------


@pytest.fixture
def setup():
  model_fn, params = _mlp()
  x, y = _data()
  return model_fn, params, _tree_like(jax.random.key(13), params, 0.3), np.asarray(x), np.asarray(y)


def test_nonfinite_pool_rows_raise_or_are_excluded(setup):
  model_fn, params, tangent, x, y = setup
  x = x.copy()
  x[[3, 10, 11]] = np.nan
  x[20, 1] = np.inf
  with pytest.raises(ValueError, match=r"4 pool rows with NaN/Inf.*nonfinite='exclude'"):
    curiojax.curiosity_scores(model_fn, params, tangent, x)
  s = curiojax.curiosity_scores(model_fn, params, tangent, x, nonfinite="exclude", chunk_size=8)
  bad = np.zeros(N, bool)
  bad[[3, 10, 11, 20]] = True
  assert np.all(np.isneginf(np.asarray(s)[bad])) and np.all(np.isfinite(np.asarray(s)[~bad]))
  clean = curiojax.curiosity_scores(model_fn, params, tangent, np.where(bad[:, None], 0, x))
  np.testing.assert_allclose(np.asarray(s)[~bad], np.asarray(clean)[~bad], rtol=1e-6)
  picked = curiojax.select_top_k(s, N - 4)
  assert not set(picked.tolist()) & {3, 10, 11, 20}
  with pytest.raises(ValueError, match="only 33 of 37"):
    curiojax.select_top_k(s, N - 3)


def test_nonfinite_labels(setup):
  model_fn, params, tangent, x, y = setup
  y = y.copy()
  y[5, 0] = np.nan
  with pytest.raises(ValueError, match="1 labels with NaN/Inf"):
    curiojax.curiosity_scores(model_fn, params, tangent, x, y, heuristic="signed")
  s = curiojax.curiosity_scores(model_fn, params, tangent, x, y, heuristic="squared", nonfinite="exclude")
  assert np.isneginf(np.asarray(s)[5]) and np.isfinite(np.asarray(s)[:5]).all()


def test_nonfinite_parameters_and_overflowing_rows_are_never_silent(setup):
  """A NaN weight, or a finite row the model overflows on, raises by default; 'exclude' gives -inf."""
  model_fn, params, tangent, x, y = setup
  leaves = jax.tree.leaves(params)
  leaves[0] = leaves[0].at[(0,) * leaves[0].ndim].set(jnp.nan)  # one NaN weight
  broken = jax.tree.unflatten(jax.tree.structure(params), leaves)
  with pytest.raises(ValueError, match="parameters have 1 non-finite"):
    curiojax.curiosity_scores(model_fn, broken, tangent, x)

  exp_model = lambda p, x: jnp.exp(x @ p["w"])  # overflows float32 for large inputs
  p, t = {"w": jnp.ones(3)}, {"w": jnp.full(3, 0.1)}
  pool = np.zeros((10, 3), np.float32)
  pool[4] = 100.0  # finite, but exp(300) = inf in float32
  with pytest.raises(ValueError, match="1 pool rows with finite features .* overflows"):
    curiojax.curiosity_scores(exp_model, p, t, pool)
  s = np.asarray(curiojax.curiosity_scores(exp_model, p, t, pool, nonfinite="exclude"))
  assert np.isneginf(s[4]) and np.isfinite(np.delete(s, 4)).all()
  assert 4 not in curiojax.select_top_k(s, 9).tolist()


def test_inside_jit_the_error_names_the_traceable_mode(setup):
  model_fn, params, tangent, x, y = setup
  with pytest.raises(ValueError, match="inside jax.jit.*nonfinite='exclude'"):
    jax.jit(lambda p, t, x: curiojax.curiosity_scores(model_fn, p, t, x))(params, tangent, x)
  inside = jax.jit(lambda p, t, x: curiojax.curiosity_scores(model_fn, p, t, x, nonfinite="exclude"))(
    params, tangent, x
  )
  np.testing.assert_allclose(inside, curiojax.curiosity_scores(model_fn, params, tangent, x), rtol=1e-5)


def test_bad_shapes_and_options(setup):
  model_fn, params, tangent, x, y = setup
  with pytest.raises(ValueError, match=r"feature shape \(5,\)"):
    curiojax.curiosity_scores(model_fn, params, tangent, np.zeros((10, 5), np.float32))
  scorer = curiojax.make_scorer(model_fn)
  scorer(params, tangent, x)
  with pytest.raises(ValueError, match=r"feature shape \(4,\).*last scored features of shape \(3,\)"):
    scorer(params, tangent, np.zeros((10, 4), np.float32))
  with pytest.raises(ValueError, match="empty"):
    curiojax.curiosity_scores(model_fn, params, tangent, np.zeros((0, D), np.float32))
  with pytest.raises(ValueError, match="y has 36 rows .* 37"):
    curiojax.curiosity_scores(model_fn, params, tangent, x, y[:-1], heuristic="signed")
  with pytest.raises(ValueError, match="needs labels"):
    curiojax.curiosity_scores(model_fn, params, tangent, x, heuristic="signed")
  with pytest.raises(ValueError, match="Unknown heuristic 'curious'"):
    curiojax.make_scorer(model_fn, heuristic="curious")
  with pytest.raises(TypeError, match="heuristic must be a string"):
    curiojax.make_scorer(model_fn, heuristic=3)
  with pytest.raises(ValueError, match="nonfinite"):
    curiojax.curiosity_scores(model_fn, params, tangent, x, nonfinite="ignore")
  with pytest.raises(ValueError, match="different tree structures"):
    curiojax.curiosity_scores(model_fn, params, {"w1": tangent["w1"]}, x)
  with pytest.raises(ValueError, match="leading axis k"):
    curiojax.curiosity_scores(model_fn, params, jax.tree.map(lambda t: t[..., None], tangent), x)
  with pytest.raises(ValueError, match="non-finite entries"):
    curiojax.curiosity_scores(model_fn, params, jax.tree.map(lambda t: t * jnp.nan, tangent), x)
  with pytest.raises(ValueError, match="noise_variance must be finite"):
    curiojax.curiosity_scores(model_fn, params, tangent, x, noise_variance=-1.0)
  with pytest.raises(ValueError, match="chunk_size"):
    curiojax.make_scorer(model_fn, chunk_size=0)


def test_float64_path_in_subprocess(run_float64):
  code = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, curiojax
    model_fn = lambda p, x: jnp.tanh(x @ p["w"]) @ p["v"]
    p = {"w": jnp.linspace(-1, 1, 12).reshape(3, 4), "v": jnp.linspace(0.5, -0.5, 4)}
    t = {"w": jnp.cos(jnp.arange(12.0)).reshape(3, 4), "v": jnp.sin(jnp.arange(4.0))}
    x = jnp.asarray(np.random.default_rng(0).normal(size=(50, 3))); y = jnp.sin(x[:, 0])
    s = curiojax.curiosity_scores(model_fn, p, t, x, y, heuristic="signed", chunk_size=16)
    g = jax.vmap(jax.grad(lambda p, xi, yi: 0.5 * (model_fn(p, xi[None])[0] - yi) ** 2), (None, 0, 0))(p, x, y)
    slow = jnp.einsum("nij,ij->n", g["w"], t["w"]) + g["v"] @ t["v"]
    assert s.dtype == jnp.float64, s.dtype
    assert float(jnp.max(jnp.abs(s - slow))) < 1e-12 * float(jnp.max(jnp.abs(slow)))
    print("ok")
  """)
  run_float64(code, timeout=120, XLA_FLAGS="")


def test_noise_variance_defaults_to_training_residuals():
  model_fn, params = _mlp()
  tangent = _tree_like(jax.random.key(12), params, 0.3)
  x, y = _data()
  x_train, y_train = x[:20], y[:20] + 0.5
  residual = np.asarray(model_fn(params, x_train) - y_train, np.float64)  # (20, OUT)
  sigma2 = np.mean(residual**2)  # mean over points and outputs
  np.testing.assert_allclose(curiojax.noise_variance(model_fn, params, x_train, y_train), sigma2, rtol=1e-5)
  unit = curiojax.curiosity_scores(model_fn, params, tangent, x)
  estimated = curiojax.curiosity_scores(model_fn, params, tangent, x, training_data=(x_train, y_train))
  np.testing.assert_allclose(estimated, sigma2 * np.asarray(unit), rtol=1e-5)
  with pytest.raises(TypeError, match="training_data"):
    curiojax.curiosity_scores(model_fn, params, tangent, x, training_data=x_train)


def test_nnx_natural_call_needs_no_conversions():
  """``curiosity_scores(model_fn, nnx.state(model, nnx.Param), tangent_of(optimizer.opt_state), pool)`` works."""
  import optax
  from flax import nnx

  class MLP(nnx.Module):
    def __init__(self, rngs):
      self.hidden = nnx.Linear(2, 8, rngs=rngs)
      self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
      return self.out(jnp.tanh(self.hidden(x)))[:, 0]

  model = MLP(nnx.Rngs(0))
  model_fn, _ = curiojax.nnx_model_fn(model)
  loss = curiojax.prediction_loss(model_fn)
  tx = optax.chain(curiojax.regularity_tangent("l2", 1e-2, curvature="gauss_newton", damping=1e-3), optax.adam(1e-2))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = jax.random.normal(jax.random.key(0), (64, 2))
  y = jnp.sin(x[:, 0])

  @nnx.jit
  def step(model, optimizer):
    grads = nnx.grad(lambda m: loss(nnx.state(m, nnx.Param), x, y))(model)
    optimizer.update(model, grads, value_fn=loss, x=x, y=y)

  for _ in range(50):
    step(model, optimizer)
  curiojax.finish_tangent(optimizer, nnx.state(model, nnx.Param), loss, dict(x=x, y=y))
  pool = jax.random.normal(jax.random.key(1), (30, 2))
  scores = curiojax.curiosity_scores(
    model_fn, nnx.state(model, nnx.Param), curiojax.tangent_of(optimizer.opt_state), pool
  )
  # The same numbers from plain pytrees, converted by hand.
  _, params = curiojax.nnx_model_fn(model)
  tangent = jax.tree.unflatten(jax.tree.structure(params), jax.tree.leaves(curiojax.check_tangent(optimizer)))
  np.testing.assert_allclose(scores, curiojax.curiosity_scores(model_fn, params, tangent, pool), rtol=1e-6)
  assert np.all(np.isfinite(np.asarray(scores))) and float(jnp.max(scores)) > 0


def test_a_model_equal_to_an_older_one_that_dies_mid_call_is_still_the_one_called():
  """Compiled functions are shared by equal models (the store is keyed by equality, like jax's
  static arguments), but each call runs the caller's own model: an equal, older model dying
  before the trace must not leave the trace calling nothing (it did, in a benchmark run)."""
  import dataclasses
  import gc

  from curiojax.scoring.attached import jit_with_model

  @dataclasses.dataclass(frozen=True)
  class Linear:  # equal by fields, hashable, weakly referenceable: like a model spec
    scale: float

    def __call__(self, params, x):
      return self.scale * x @ params

  double = lambda model_fn, params, x: 2 * model_fn(params, x)
  older, newer = Linear(3.0), Linear(3.0)
  jit_with_model(double, older)(jnp.ones(2), jnp.ones((1, 2)))
  handed = jit_with_model(double, newer)  # what the equal older model built
  del older
  gc.collect()
  np.testing.assert_allclose(handed(jnp.ones(2), jnp.ones((5, 2))), 12.0)  # a new shape: traced now

"""MaxDist, MaxDet, BAIT and the transductive BAITs (issue 24): oracles on tiny problems.

Each strategy is checked against a plain numpy implementation of its definition (dense kernel
matrices, posteriors solved afresh with np.linalg at every step) on the features that
``sketched_features`` returns, so the sketch is not what is tested.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from curiojax.active.models import NTKMLP
from curiojax.strategies import SelectionContext, SketchOptions, curiosity_diverse, get_strategy, kernels, needs_of
from curiojax.strategies import reference as ref

DIM = 12
K = 6  # one batch size throughout: each other size would compile the loops again
NAMES = ["maxdist", "maxdet", "bait", "bait_validation", "bait_adjoint"]


@pytest.fixture(scope="module")
def problem():
  model = NTKMLP(hidden=(8, 8))
  params = model.init(jax.random.key(0), 3)
  rng = np.random.default_rng(0)
  x_lab = rng.normal(size=(8, 3)).astype(np.float32)
  x_pool = rng.normal(size=(60, 3)).astype(np.float32)
  x_val = rng.normal(size=(10, 3)).astype(np.float32)
  return dict(model=model, params=params, x_lab=x_lab, x_pool=x_pool, validation=(x_val, np.sin(x_val[:, 0])))


@pytest.fixture(scope="module", autouse=True)
def adjoint(problem):
  """A fixed stand-in for the validation adjoint ``a`` that ``bait_adjoint`` reads: its solve is tested in
  test_tangent_strategies.py, and compiling it here would double this file's time."""
  rng = np.random.default_rng(5)
  a = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=(1, *p.shape)), p.dtype), problem["params"])
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(curiosity_diverse, "selection_directions", lambda ctx, direction: (a, 0.25))
    yield a


def _ctx(p, key=0, pool=None, labelled=None, validation="default"):
  x_lab = p["x_lab"] if labelled is None else labelled
  return SelectionContext(
    p["model"],
    p["params"],
    None,
    x_lab,
    np.zeros(len(x_lab), np.float32),
    p["x_pool"] if pool is None else pool,
    jax.random.key(key),
    validation=p["validation"] if validation == "default" else validation,
  )


def _features(ctx, directions=None):
  """Pool, labelled and validation features as float64 host arrays (the validation rows sketched as a pool)."""
  got = kernels.sketched_features(ctx, SketchOptions(DIM), directions)
  fp, mp, fl, ml = (np.asarray(a) for a in got[:4])
  val = SelectionContext(ctx.model_fn, ctx.params, None, ctx.x_labelled, None, ctx.validation[0], ctx.key)
  ft, mt = (np.asarray(a) for a in kernels.sketched_features(val, SketchOptions(DIM))[:2])  # as the targets are
  f64 = lambda a, m: a[m].astype(np.float64)
  return f64(fp, mp), f64(fl, ml), f64(ft, mt), got


# -- numpy references, from the definitions ------------------------------------------------------


def _np_maxdist(fp, fl, k):
  d = ((fp[:, None] - fl[None]) ** 2).sum(-1).min(1) if len(fl) else (fp**2).sum(1)
  sel, scores = [], []
  for i in range(k):
    score = d.copy()
    score[sel] = -np.inf
    j = int(np.argmax(score))
    sel.append(j), scores.append(d[j])
    dj = ((fp - fp[j]) ** 2).sum(-1)
    d = dj if (i == 0 and not len(fl)) else np.minimum(d, dj)
  return sel, scores


def _scale(fp, fl):
  return 1 / np.sqrt(np.mean((fl**2).sum(1)) if len(fl) else np.mean((fp**2).sum(1)))


def _posterior(kernel, observed, noise):
  """The GP posterior covariance given noisy observations at the rows ``observed``."""
  if not observed:
    return kernel
  ko = kernel[:, observed]
  return kernel - ko @ np.linalg.solve(kernel[np.ix_(observed, observed)] + noise * np.eye(len(observed)), ko.T)


def _np_maxdet(fp, fl, k, noise=0.01):
  f = np.concatenate([fp, fl]) * _scale(fp, fl)
  kernel, n = f @ f.T, len(fp)
  labelled, sel, scores = list(range(n, len(f))), [], []
  for _ in range(k):
    var = np.diag(_posterior(kernel, labelled + sel, noise))[:n].copy()
    var[sel] = -np.inf
    j = int(np.argmax(var))
    sel.append(j), scores.append(var[j])
  return sel, scores


def _np_bait(fp, fl, ft, k, backward, noise=0.01, w=None, pool_target=False):
  """Greedy BAIT on V(S) = Σ_t k_S(t, t): add argmax w·(V(S) − V(S ∪ x)); then remove argmin w·(V(S ∖ x) − V(S))."""
  f = np.concatenate([fp, fl, ft]) * _scale(fp, fl)
  kernel, n, nl = f @ f.T, len(fp), len(fl)
  labelled = list(range(n, n + nl))
  target = list(range(n + nl)) if pool_target else list(range(n + nl, len(f)))
  w = np.ones(n) if w is None else w
  v = lambda s: np.trace(_posterior(kernel, labelled + s, noise)[np.ix_(target, target)])
  sel, scores = [], []
  for _ in range(2 * k if backward else k):
    base = v(sel)
    gain = np.array([-np.inf if x in sel else w[x] * (base - v(sel + [x])) for x in range(n)])
    sel.append(int(np.argmax(gain))), scores.append(gain.max())
  if not backward:
    return sel, scores
  cost = lambda s: [w[x] * (v([y for y in s if y != x]) - v(s)) for x in s]
  while len(sel) > k:
    sel.pop(int(np.argmin(cost(sel))))
  return sel, cost(sel)


# -- the strategies against the references ------------------------------------------------------


def _check(selection, want, rtol=1e-4):
  idx, scores = want
  assert selection.indices.tolist() == idx
  np.testing.assert_allclose(selection.scores, scores, rtol=rtol, atol=1e-6 * np.max(np.abs(scores)))


@pytest.mark.parametrize("labelled", [True, False])
def test_maxdist_and_maxdet_match_the_definitions(problem, labelled):
  ctx = _ctx(problem, labelled=None if labelled else np.zeros((0, 3), np.float32))
  fp, fl, _, _ = _features(ctx)
  _check(get_strategy("maxdist", dim=DIM).select(ctx, K), _np_maxdist(fp, fl, K))
  _check(get_strategy("maxdet", dim=DIM).select(ctx, K), _np_maxdet(fp, fl, K), rtol=1e-3)
  _check(get_strategy("maxdet", noise=0.3, dim=DIM).select(ctx, K), _np_maxdet(fp, fl, K, 0.3), rtol=1e-3)


@pytest.mark.parametrize("backward", [False, True])
def test_bait_and_bait_validation_match_the_definitions(problem, backward):
  ctx = _ctx(problem)
  fp, fl, ft, _ = _features(ctx)
  for name, pool_target in (("bait", True), ("bait_validation", False)):
    got = get_strategy(name, backward=backward, dim=DIM).select(ctx, K)
    want = _np_bait(fp, fl, ft, K, backward, pool_target=pool_target)
    _check(got, want, rtol=2e-3)
    if backward:  # the backward steps change the batch on this problem
      assert sorted(want[0]) != sorted(_np_bait(fp, fl, ft, K, False, pool_target=pool_target)[0])


def test_bait_adjoint_weights_the_reductions_by_the_normalised_influence(problem, adjoint):
  ctx, a = _ctx(problem), adjoint
  fp, fl, ft, _ = _features(ctx, a)
  model, params = problem["model"], problem["params"]
  jvp = jax.jvp(lambda q: model(q, jnp.asarray(ctx.x_pool)), (params,), (jax.tree.map(lambda t: t[0], a),))[1]
  c = np.asarray(jvp, np.float64) ** 2
  for gamma in (0.0, 1.0):
    got = get_strategy("bait_adjoint", gamma=gamma, backward=False, dim=DIM).select(ctx, K)
    _check(got, _np_bait(fp, fl, ft, K, False, w=(c / c.mean()) ** gamma), rtol=2e-3)
  assert got.direction_residual == 0.25  # the direction's solve's, passed on


def test_validation_features_share_the_pools_projection(problem):
  # the validation rows sketched as targets are the rows the pool's sketch would give them
  ctx = _ctx(problem)
  _, _, ft, _ = _features(ctx)
  strategy = get_strategy("bait_validation", dim=DIM)
  got, mask = strategy.targets(ctx, None, None, None, None)
  np.testing.assert_allclose(np.asarray(got)[np.asarray(mask)], ft, rtol=1e-6)
  assert int(np.sum(mask)) == 10


# -- the protocol: distinct in-pool picks, padding, no labelled points, no recompilation ------------


@pytest.mark.parametrize("name", NAMES)
def test_distinct_in_pool_deterministic_and_without_labelled_points(problem, name):
  a = get_strategy(name, dim=DIM).select(_ctx(problem, key=3), K)
  b = get_strategy(name, sketch={"dim": DIM}).select(_ctx(problem, key=3), K)
  assert len(set(a.indices.tolist())) == K and 0 <= a.indices.min() and a.indices.max() < 60
  np.testing.assert_array_equal(a.indices, b.indices)
  assert np.all(np.isfinite(a.scores))
  none = get_strategy(name, dim=DIM).select(_ctx(problem, labelled=np.zeros((0, 3), np.float32)), K)
  assert len(set(none.indices.tolist())) == K and none.indices.max() < 60
  with pytest.raises(ValueError, match="larger than the unlabelled pool"):
    get_strategy(name, dim=DIM).select(_ctx(problem), 61)


def test_padded_rows_are_never_picked_even_when_they_would_win():
  rng = np.random.default_rng(2)
  fp = np.zeros((64, 4), np.float32)
  fp[:20] = rng.normal(size=(20, 4))
  fp[20:] = 100.0  # padding that would win every criterion if it were read
  mp = jnp.arange(64) < 20
  fl, ml = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32), jnp.arange(8) < 3
  fp = jnp.asarray(fp)
  picks = [
    ref.maxdist(fp, mp, fl, ml, 20)[0],
    ref.maxdet(fp, mp, fl, ml, 0.01, 20)[0],
    ref.bait(fp, mp, fl, ml, fp, mp, jnp.ones(64), 0.01, 10, True)[0],  # forward through the whole pool
  ]
  for idx in picks:  # the whole real pool, each row once
    assert len(set(np.asarray(idx).tolist())) == len(idx) and np.asarray(idx).max() < 20


@pytest.mark.parametrize("name", NAMES)
def test_next_round_in_the_same_size_class_does_not_recompile(problem, name, compilations):
  x_pool, x_lab = problem["x_pool"], problem["x_lab"]
  get_strategy(name, dim=DIM).select(_ctx(problem, pool=x_pool), K)
  with compilations() as names:
    get_strategy(name, dim=DIM).select(_ctx(problem, key=1, pool=x_pool[:-4], labelled=x_lab[:-3]), K)
  assert names == []


def test_bad_options_and_missing_validation_raise(problem):
  for name in ("maxdet", "bait", "bait_validation", "bait_adjoint"):
    for noise in (0.0, -1.0, float("nan")):
      with pytest.raises(ValueError, match="noise must be finite and > 0"):
        get_strategy(name, noise=noise)
  with pytest.raises(ValueError, match="gamma must be finite and >= 0"):
    get_strategy("bait_adjoint", gamma=-0.5)
  with pytest.raises(ValueError, match="backward must be True or False"):
    get_strategy("bait", backward="yes")
  with pytest.raises(TypeError, match="no option.*noise"):
    get_strategy("maxdist", noise=0.1)
  for name in ("bait_validation", "bait_adjoint"):
    assert needs_of(get_strategy(name)).validation
    for validation in (None, (np.zeros((0, 3), np.float32), np.zeros(0, np.float32))):
      with pytest.raises(ValueError, match="needs ctx.validation"):
        get_strategy(name, dim=DIM).select(_ctx(problem, validation=validation), 3)
  assert not needs_of(get_strategy("bait")).validation and needs_of(get_strategy("bait_adjoint")).problem
  assert all(get_strategy(name).criterion for name in NAMES)

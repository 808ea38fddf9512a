"""Hostile inputs, by category: each case gives a correct result or a documented error that names the problem.

Each case is a function that either returns normally (the library handled the input correctly,
checked inside the case) or raises; ``expect`` is ``None`` for the former and ``(type,
message fragment)`` for the latter. No case may pass silently: a case whose expectation is an
error fails when the call returns.
"""

import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import curiojax
from curiojax.active import persistence
from curiojax.active.learner import options_from_flat

D = 3
X = np.random.default_rng(0).normal(size=(16, D)).astype(np.float32)
Y = (X @ np.array([1.0, -2.0, 0.5], np.float32)).astype(np.float32)
LINEAR = lambda p, x: x @ p["w"]
PARAMS = {"w": jnp.ones(D)}
TANGENT = {"w": jnp.full(D, 0.1)}


def _step(params=PARAMS, tx=None, value_fn=None, **batch):
  """One update of the tangent chain; returns the new (params, state)."""
  tx = tx or optax.chain(curiojax.regularity_tangent("l2", 0.1), optax.sgd(0.01))
  value_fn = value_fn or curiojax.prediction_loss(LINEAR)
  state = tx.init(params)
  batch = batch or dict(x=X, y=Y)
  updates, state = tx.update(None, state, params, value_fn=value_fn, **batch)
  return optax.apply_updates(params, updates), state


def _scores(x=X, params=PARAMS, tangent=TANGENT, model_fn=LINEAR, **kw):
  return np.asarray(curiojax.curiosity_scores(model_fn, params, tangent, x, **kw))


def _finite_scores(**kw):
  s = _scores(**kw)
  assert np.isfinite(s).all()


def _wrapped_step(wrap):
  """Two steps of a wrapped tangent chain fed gradients (wrappers that inspect updates need them)."""
  loss = curiojax.prediction_loss(LINEAR)
  tx = wrap(optax.chain(curiojax.regularity_tangent("l2", 0.1), optax.sgd(0.01)))
  params, state = PARAMS, tx.init(PARAMS)
  for _ in range(2):
    grads = jax.grad(loss)(params, X, Y)
    updates, state = tx.update(grads, state, params, value_fn=loss, x=X, y=Y)
    params = optax.apply_updates(params, updates)
  assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(params))


def _warns_uncertified(state):
  with pytest.warns(curiojax.TangentInaccurateWarning, match="finish_tangent"):
    curiojax.tangent_of(state)


def _uci(data="1 2 3\n4 5 6\n7 8 9\n", features="0\n1\n", target="2\n", drop=()):
  """A UCI-layout folder with the given file contents (bytes or text); ``drop``: files left out."""
  folder = tempfile.mkdtemp()
  for name, content in (("data.txt", data), ("index_features.txt", features), ("index_target.txt", target)):
    if name not in drop:
      with open(os.path.join(folder, name), "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode())
  return curiojax.load_dataset(folder)


def _csv(content, target="y"):
  path = os.path.join(tempfile.mkdtemp(), "data.csv")
  with open(path, "wb") as f:
    f.write(content if isinstance(content, bytes) else content.encode())
  return curiojax.load_dataset(path, target)


def _csv_ok(content, x, y):
  ds = _csv(content)
  np.testing.assert_array_equal(ds.x, np.asarray(x, np.float32))
  np.testing.assert_array_equal(ds.y, np.asarray(y, np.float32))


def _half_precision_steps(dtype, opt):
  """Steps with half-precision params keep their dtype and stay finite (the state follows the params)."""
  loss = curiojax.prediction_loss(lambda p, x: x.astype(p["w"].dtype) @ p["w"])
  tx = optax.chain(curiojax.regularity_tangent("l2", 0.1), opt)
  params = {"w": jnp.ones(D, dtype)}
  state = tx.init(params)
  step = jax.jit(lambda p, st: tx.update(None, st, p, value_fn=loss, x=X, y=Y.astype(dtype)))
  for _ in range(5):
    updates, state = step(params, state)
    params = optax.apply_updates(params, updates)
  assert params["w"].dtype == dtype and np.isfinite(np.asarray(params["w"], np.float32)).all()


def _training_that_diverges():
  """A learning rate that sends the parameters to inf: the warning blames the training, not the tangent."""
  tx = optax.chain(curiojax.regularity_tangent("l2", 0.1), optax.sgd(1e3))
  loss = curiojax.prediction_loss(LINEAR)
  step = jax.jit(lambda p, st: tx.update(None, st, p, value_fn=loss, x=X, y=Y))
  params, state = PARAMS, tx.init(PARAMS)
  with pytest.warns(curiojax.TangentDivergedWarning, match="training diverged, not the tangent"):
    for _ in range(40):
      updates, state = step(params, state)
      params = optax.apply_updates(params, updates)
    jax.effects_barrier()


def _chain_order(chain, expect_warning):
  """Gradients fed to a chain: the tangent placed after the optimizer is named, placed first it is quiet."""
  import warnings

  loss = curiojax.prediction_loss(LINEAR)
  tx = chain(curiojax.regularity_tangent("l2", 0.1))
  params, state = {"w": jnp.zeros(D)}, tx.init({"w": jnp.zeros(D)})
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(2):
      updates, state = tx.update(jax.grad(loss)(params, X, Y), state, params, value_fn=loss, x=X, y=Y)
      params = optax.apply_updates(params, updates)
    jax.effects_barrier()
  named = [w for w in caught if issubclass(w.category, curiojax.TangentMisplacedWarning)]
  assert len(named) == (1 if expect_warning else 0), [str(w.message) for w in caught]
  if expect_warning:
    assert "must come first" in str(named[0].message)


POOL = np.random.default_rng(1).uniform(-2, 2, size=(60, 2)).astype(np.float32)
FAST = dict(epochs=3, hidden_sizes=(8,))


def _options(**flat):
  """LearnerOptions from flat field names (training and model fields found in their sections)."""
  return options_from_flat(curiojax.LearnerOptions, {**FAST, **flat})


def _learner(**options):
  learner = curiojax.Learner(POOL, options=_options(**options), strategy="random")
  return learner, learner.init(jax.random.key(0), labelled=[0, 1, 2, 3], labels=[0.1, 0.2, 0.3, 0.4])


def _tell(indices, labels, **kw):
  learner, state = _learner()
  return learner.tell(state, indices, labels, **kw)


def _save_into_a_file():
  learner, state = _learner()
  path = os.path.join(tempfile.mkdtemp(), "file")
  open(path, "w").close()
  learner.save(path, state)


def _load_damaged_learner():
  learner, state = _learner()
  folder = tempfile.mkdtemp()
  learner.save(folder, state)
  arrays = [f for f in os.listdir(folder) if f.startswith("arrays-")][0]
  with open(os.path.join(folder, arrays), "r+b") as f:
    f.truncate(100)
  curiojax.Learner.load(folder)


def _suggest(labelled, pool, **kw):
  folder = tempfile.mkdtemp()
  for name, text in (("lab.csv", labelled), ("pool.csv", pool)):
    with open(os.path.join(folder, name), "w") as f:
      f.write(text)
  kw = {"target": "y", "k": 1, "state": os.path.join(folder, "state"), **kw}
  kw.setdefault("options", _options())
  try:
    return curiojax.suggest(os.path.join(folder, "lab.csv"), os.path.join(folder, "pool.csv"), **kw)
  finally:  # every suggest case here is an error: nothing may have been saved
    assert not os.path.exists(os.path.join(folder, "state", "state.json"))


def _suggest_out_onto(name):
  """--out naming an input: refused before anything is written; the input is intact."""
  folder = tempfile.mkdtemp()
  for fname, text in (("lab.csv", LAB), ("pool.csv", POOLCSV)):
    with open(os.path.join(folder, fname), "w") as f:
      f.write(text)
  try:
    curiojax.suggest(
      os.path.join(folder, "lab.csv"),
      os.path.join(folder, "pool.csv"),
      target="y",
      k=1,
      id_column="id",
      state=os.path.join(folder, "state"),
      out=os.path.join(folder, name),
      options=_options(),
    )
  finally:
    with open(os.path.join(folder, "lab.csv")) as f:
      assert f.read() == LAB
    assert not os.path.exists(os.path.join(folder, "state"))


def _top_k_exact_integers():
  big = np.array([2**24, 2**24 + 1, 2**24 + 3, 2**24 + 2], np.int64)  # float32 ties them in pairs
  np.testing.assert_array_equal(curiojax.select_top_k(big, 4), [2, 3, 1, 0])
  np.testing.assert_array_equal(curiojax.select_top_k(big, 1, mask=np.array([False, False, True, False])), [3])


LAB = "id,a,b,y\nr1,0,0,1\nr2,1,0,2\nr3,0,1,3\n"
POOLCSV = "id,a,b\np1,2,2\np2,3,1\np3,1,3\n"


def _lock(path, deny=False):
  from unittest import mock

  denied = mock.patch("os.open", side_effect=PermissionError(13, "Permission denied")) if deny else mock.MagicMock()
  with denied, persistence.workdir_lock(path):
    pass


def _under_a_file():
  path = os.path.join(tempfile.mkdtemp(), "file")
  open(path, "w").close()
  return os.path.join(path, "run")


def _half_precision_adam_underflow():
  """float16 Adam: eps underflows, 0/0 on a dead input gives NaN; the warning names half precision, not the tangent."""
  x = X.astype(np.float16)
  x[:, 2] = 0  # a dead input: zero gradient, zero second moment
  tx = optax.chain(curiojax.regularity_tangent("l2", 0.1), optax.adam(1e-2))
  loss = curiojax.prediction_loss(LINEAR)
  step = jax.jit(lambda p, st: tx.update(None, st, p, value_fn=loss, x=x, y=Y.astype(np.float16)))
  params = {"w": jnp.zeros(D, jnp.float16)}
  state = tx.init(params)
  with pytest.warns(curiojax.TangentDivergedWarning, match="float16: in half precision Adam's eps"):
    for _ in range(40):
      updates, state = step(params, state)
      params = optax.apply_updates(params, updates)
    jax.effects_barrier()


class _Returns:
  """A strategy of one's own that returns a fixed array, whatever is asked."""

  def __init__(self, picked):
    self.picked = picked

  def select(self, ctx, k):
    return self.picked


def _own_strategy(picked, via_learner=False):
  if via_learner:
    learner = curiojax.Learner(POOL, options=_options(), strategy=_Returns(picked))
    state = learner.init(jax.random.key(0), labelled=[0, 1, 2, 3], labels=[0.1, 0.2, 0.3, 0.4])
    return learner.ask(state, 3)
  return curiojax.select_batch(LINEAR, PARAMS, None, X, 3, strategy=_Returns(picked))


def _pool(rows):
  x = X.copy()
  for i, v in rows.items():
    x[i] = v
  return x


CASES = {
  # -- dtypes -----------------------------------------------------------------------------------
  "int params leaf": (lambda: _step(params={"w": jnp.ones(D), "step": jnp.int32(0)}), (TypeError, "floating-point")),
  "all-int params": (lambda: _step(params={"w": jnp.ones(D, jnp.int32)}), (TypeError, "floating-point")),
  "float64 pool on float32 params": (lambda: _finite_scores(x=X.astype(np.float64)), None),
  "float16 pool": (lambda: _finite_scores(x=X.astype(np.float16)), None),
  "bfloat16 params": (lambda: _finite_scores(params={"w": jnp.ones(D, jnp.bfloat16)}), None),
  "int pool is scored as float": (
    lambda: np.testing.assert_allclose(_scores(x=np.ones((4, D), np.int32)), _scores(x=np.ones((4, D), np.float32))),
    None,
  ),
  "string pool": (lambda: _scores(x=np.array([["a"] * D])), (TypeError, "must be numeric")),
  "float16 params train": (lambda: _half_precision_steps(jnp.float16, optax.sgd(1e-2)), None),
  "bfloat16 params train with adam": (lambda: _half_precision_steps(jnp.bfloat16, optax.adam(1e-2)), None),
  "training that diverges is named": (_training_that_diverges, None),
  "float16 adam underflow is named": (_half_precision_adam_underflow, None),
  # -- tree shapes ------------------------------------------------------------------------------
  "tangent with another tree": (lambda: _scores(tangent={"v": jnp.ones(D)}), (ValueError, "tree structure")),
  "tangent with a wrong leaf shape": (
    lambda: _scores(tangent={"w": jnp.ones(D + 1)}),
    (ValueError, "tangent leaves must have the params' shapes"),
  ),
  "update with params of another tree": (
    lambda: optax.chain(curiojax.regularity_tangent("l2", 0.1), optax.sgd(0.1)).update(
      None,
      optax.chain(curiojax.regularity_tangent("l2", 0.1), optax.sgd(0.1)).init(PARAMS),
      {"w": jnp.ones(D), "b": jnp.zeros(())},
      value_fn=curiojax.prediction_loss(LINEAR),
      x=X,
      y=Y,
    ),
    (ValueError, "tree structure"),
  ),
  "None params": (lambda: curiojax.regularity_tangent("l2", 0.1).init(None), (ValueError, "params")),
  # -- model output shapes vs labels ------------------------------------------------------------
  "model (n, 2) vs labels (n,)": (
    lambda: _step(value_fn=curiojax.prediction_loss(lambda p, x: jnp.stack([x @ p["w"]] * 2, -1))),
    (ValueError, "output has shape (16, 2)"),
  ),
  "model (n, 1) vs labels (n,)": (
    lambda: _step(value_fn=curiojax.prediction_loss(lambda p, x: (x @ p["w"])[:, None])),
    (ValueError, "f(x)[..., 0]"),
  ),
  "model (n,) vs labels (n, 1)": (lambda: _step(x=X, y=Y[:, None]), (ValueError, "labels have shape (16, 1)")),
  "huber with mismatched labels": (
    lambda: _step(value_fn=curiojax.prediction_loss(LINEAR, curiojax.huber(1.0)), x=X, y=Y[:, None]),
    (ValueError, "labels have shape"),
  ),
  "gaussian_nll needs two outputs": (
    lambda: _step(value_fn=curiojax.prediction_loss(LINEAR, "gaussian_nll")),
    (ValueError, "needs outputs of shape (16, 2)"),
  ),
  "weights of the wrong length": (lambda: _step(x=X, y=Y, weights=jnp.ones(5)), (ValueError, "one entry per example")),
  "x and y of different lengths": (lambda: _step(x=X, y=Y[:5]), (ValueError, "labels have shape (5,)")),
  # -- batch names ------------------------------------------------------------------------------
  "weight= for weights=": (lambda: _step(x=X, y=Y, weight=jnp.ones(16)), (TypeError, "did you mean weights=")),
  "ys= for y=": (lambda: _step(x=X, ys=Y), (TypeError, "did you mean y=")),
  "X= for x=": (lambda: _step(X=X, y=Y), (TypeError, "did you mean x=")),
  "unrelated extra name is ignored": (lambda: _step(x=X, y=Y, epoch=3), None),
  # -- pool contents ----------------------------------------------------------------------------
  "NaN pool row": (lambda: _scores(x=_pool({2: np.nan})), (ValueError, "1 pool rows with NaN/Inf")),
  "Inf pool row": (lambda: _scores(x=_pool({5: np.inf})), (ValueError, "NaN/Inf")),
  "NaN pool row excluded": (
    lambda: np.testing.assert_array_equal(np.isneginf(_scores(x=_pool({2: np.nan}), nonfinite="exclude"))[2], True),
    None,
  ),
  "overflowing pool row": (
    lambda: _scores(x=_pool({1: 100.0}), model_fn=lambda p, x: jnp.exp(x @ p["w"])),
    (ValueError, "overflows"),
  ),
  "empty pool": (lambda: _scores(x=np.zeros((0, D), np.float32)), (ValueError, "empty")),
  "pool of the wrong width": (lambda: _scores(x=np.zeros((4, D + 2), np.float32)), (ValueError, "feature shape")),
  "1-D pool": (lambda: _scores(x=np.zeros(D, np.float32)), (ValueError, "feature shape ()")),
  "NaN weight in params": (
    lambda: _scores(params={"w": jnp.array([1.0, jnp.nan, 1.0])}),
    (ValueError, "parameters have 1 non-finite"),
  ),
  "NaN in the tangent": (lambda: _scores(tangent={"w": jnp.array([jnp.nan, 0, 0])}), (ValueError, "tangent has 1")),
  "unknown nonfinite mode": (lambda: _scores(nonfinite="ignore"), (ValueError, "nonfinite")),
  "unknown heuristic": (lambda: _scores(heuristic="curious"), (ValueError, "Unknown heuristic")),
  # -- chunk sizes and masks --------------------------------------------------------------------
  "chunk larger than the pool": (
    lambda: np.testing.assert_allclose(_scores(chunk_size=4096), _scores(), rtol=1e-6),
    None,
  ),
  "chunk of one row": (lambda: np.testing.assert_allclose(_scores(chunk_size=1), _scores(), rtol=1e-6), None),
  "chunk of zero": (lambda: _scores(chunk_size=0), (ValueError, "chunk")),
  "top-k with an int mask": (
    lambda: curiojax.select_top_k(np.arange(8.0), 2, mask=np.zeros(8, np.int32)),
    (TypeError, "boolean"),
  ),
  "top-k with a short mask": (
    lambda: curiojax.select_top_k(np.arange(8.0), 2, mask=np.zeros(3, bool)),
    (ValueError, "mask must have shape (8,)"),
  ),
  "top-k of integers above 2**24 is exact": (_top_k_exact_integers, None),
  "top-k of strings": (lambda: curiojax.select_top_k(np.array(["a", "b"]), 1), (TypeError, "real numbers")),
  "top-k inside jit": (
    lambda: jax.jit(lambda s: curiojax.select_top_k(s, 2))(jnp.arange(5.0)),
    (ValueError, "cannot be called inside jax.jit"),
  ),
  "select_batch inside jit": (
    lambda: jax.jit(lambda pool: curiojax.select_batch(LINEAR, PARAMS, TANGENT, pool, 2, strategy="random"))(
      jnp.asarray(X)
    ),
    (TypeError, "select_batch is host-side"),
  ),
  "signed scores: two outputs vs 1-D labels": (
    lambda: _scores(x=X[:5], y=Y[:5], heuristic="signed", model_fn=lambda p, x: jnp.stack([x @ p["w"]] * 2, -1)),
    (ValueError, "the model's output has shape (5, 2) but the labels have shape (5,)"),
  ),
  "noise_variance per pool row": (
    lambda: _scores(noise_variance=np.ones(16)),
    (ValueError, "noise_variance has shape (16,); give a scalar or one value per model output"),
  ),
  "noise_variance (n, 1)": (lambda: _scores(noise_variance=np.ones((16, 1))), (ValueError, "noise_variance has shape")),
  "scorer with nonfinite='raise' inside jit": (
    lambda: jax.jit(lambda x: curiojax.make_scorer(LINEAR, nonfinite="raise")(PARAMS, TANGENT, x))(X),
    (ValueError, "nonfinite='exclude'"),
  ),
  "CSV 1e39 cell": (lambda: _csv("a,y\n1,2\n1e39,4\n"), (ValueError, "data.csv:3, column 'a': '1e39' is outside")),
  "CSV 1e-50 cell": (lambda: _csv("a,y\n1,2\n1e-50,4\n"), (ValueError, "column 'a': '1e-50' is outside")),
  "UCI 1e39 feature": (
    lambda: _uci(data="1 2 3\n4 1e39 6\n7 8 9\n"),
    (ValueError, "NaN or infinite features (or beyond float32's 3.4e38)"),
  ),
  "top-k with k = 0": (lambda: curiojax.select_top_k(np.arange(8.0), 0), (ValueError, "k must be")),
  "top-k larger than the pool": (lambda: curiojax.select_top_k(np.arange(8.0), 9), (ValueError, "k must be")),
  "top-k with everything masked": (
    lambda: curiojax.select_top_k(np.arange(8.0), 1, mask=np.ones(8, bool)),
    (ValueError, "only 0 of 8 points can be selected (8 masked"),
  ),
  # -- inside the user's transformations --------------------------------------------------------
  "scores inside jit, default mode": (
    lambda: jax.jit(lambda x: curiojax.curiosity_scores(LINEAR, PARAMS, TANGENT, x))(X),
    (ValueError, "nonfinite='exclude'"),
  ),
  "scores inside jit, exclude mode": (
    lambda: np.testing.assert_allclose(
      jax.jit(lambda x: curiojax.curiosity_scores(LINEAR, PARAMS, TANGENT, x, nonfinite="exclude"))(X),
      _scores(),
      rtol=1e-6,
    ),
    None,
  ),
  "tangent step under jit twice": (lambda: [jax.jit(_step)() for _ in range(2)], None),
  # -- optax wrappers ---------------------------------------------------------------------------
  "inside inject_hyperparams": (
    lambda: _step(tx=optax.chain(curiojax.tunable_regularity_tangent(curiojax.l2(), 0.1), optax.sgd(0.01))),
    None,
  ),
  "inside apply_if_finite (gradients passed)": (lambda: _wrapped_step(lambda tx: optax.apply_if_finite(tx, 3)), None),
  "inside MultiSteps (gradients passed)": (lambda: _wrapped_step(lambda tx: optax.MultiSteps(tx, 2)), None),
  "tangent_of through MultiSteps warns on a fresh state": (
    lambda: _warns_uncertified(
      optax.MultiSteps(optax.chain(curiojax.regularity_tangent("l2", 0.1), optax.sgd(0.01)), 2).init(PARAMS)
    ),
    None,
  ),
  "tangent after adam": (lambda: _chain_order(lambda t: optax.chain(optax.adam(1e-2), t), True), None),
  "tangent after sgd": (lambda: _chain_order(lambda t: optax.chain(optax.sgd(1e-2), t), True), None),
  "tangent first, then adam": (lambda: _chain_order(lambda t: optax.chain(t, optax.adam(1e-2)), False), None),
  "clipping, tangent, adam": (
    lambda: _chain_order(lambda t: optax.chain(optax.clip_by_global_norm(1.0), t, optax.adam(1e-2)), False),
    None,
  ),
  "tangent inside optax.masked": (
    lambda: _chain_order(lambda t: optax.chain(optax.masked(t, {"w": True}), optax.sgd(1e-2)), False),
    None,
  ),
  "two tangents in one chain": (
    lambda: curiojax.tangent_of(
      optax.chain(curiojax.regularity_tangent("l2", 0.1), curiojax.regularity_tangent("l2", 0.2)).init(PARAMS)
    ),
    (ValueError, "expected one"),
  ),
  "no tangent in the state": (lambda: curiojax.tangent_of(optax.sgd(0.1).init(PARAMS)), (ValueError, "No regularity")),
  "get_strength without inject_hyperparams": (
    lambda: curiojax.get_strength(curiojax.regularity_tangent("l2", 0.1).init(PARAMS)),
    (ValueError, "tunable_regularity_tangent"),
  ),
  # -- options ----------------------------------------------------------------------------------
  "negative strength": (lambda: curiojax.regularity_tangent("l2", -1.0), (ValueError, "strength")),
  "NaN strength": (lambda: curiojax.regularity_tangent("l2", float("nan")), (ValueError, "finite")),
  "inf damping": (lambda: curiojax.regularity_tangent("l2", 0.1, damping=float("inf")), (ValueError, "damping")),
  "unknown curvature": (lambda: curiojax.regularity_tangent("l2", 0.1, curvature="fisher"), (ValueError, "Unknown")),
  "unknown regularizer": (lambda: curiojax.regularity_tangent("l1", 0.1), (ValueError, "Unknown regularizer")),
  "unknown loss": (lambda: curiojax.prediction_loss(LINEAR, "hinge"), (ValueError, "Unknown loss")),
  "model_fn not callable": (lambda: curiojax.prediction_loss(3), (TypeError, "callable")),
  "inf learning rate": (lambda: curiojax.TrainOptions(learning_rate=float("inf")), (ValueError, "learning_rate")),
  "NaN damping option": (lambda: curiojax.TrainOptions(damping=float("nan")), (ValueError, "damping")),
  "zero epochs": (lambda: curiojax.TrainOptions(epochs=0), (ValueError, "epochs")),
  "float epochs": (lambda: curiojax.TrainOptions(epochs=2.5), (ValueError, "epochs")),
  "unknown strategy": (lambda: curiojax.get_strategy("oracle"), (ValueError, "Unknown strategy")),
  "misspelled strategy option": (lambda: curiojax.get_strategy("lcmd", gama=1.0), (TypeError, "gama")),
  "unknown model": (lambda: curiojax.make_model("transformer", 3), (ValueError, "Unknown model")),
  # -- UCI folders -----------------------------------------------------------------------------
  "UCI index inf": (lambda: _uci(features="0\ninf\n"), (ValueError, "not an integer column index")),
  "UCI index nan": (lambda: _uci(features="nan\n"), (ValueError, "not an integer column index")),
  "UCI index 1.5": (lambda: _uci(features="1.5\n"), (ValueError, "not an integer column index")),
  "UCI index text": (lambda: _uci(target="y\n"), (ValueError, "is not a column index")),
  "UCI index out of range": (lambda: _uci(features="0\n7\n"), (ValueError, "out of range")),
  "UCI index negative": (lambda: _uci(features="-1\n"), (ValueError, "out of range")),
  "UCI duplicated feature": (lambda: _uci(features="0\n0\n"), (ValueError, "duplicated")),
  "UCI target is a feature": (lambda: _uci(features="0\n2\n"), (ValueError, "also listed as a feature")),
  "UCI two targets": (lambda: _uci(target="1\n2\n"), (ValueError, "one target column")),
  "UCI empty index file": (lambda: _uci(features=""), (ValueError, "no column index")),
  "UCI ragged data": (lambda: _uci(data="1 2 3\n4 5\n"), (ValueError, "ragged row")),
  "UCI text in data": (lambda: _uci(data="1 2 3\n4 x 6\n"), (ValueError, "x")),
  "UCI inf in data": (
    lambda: _uci(data="1 2 3\n4 5 inf\n7 8 9\n"),
    (ValueError, "data.txt: 1 target value(s) are NaN or infinite"),
  ),
  "UCI empty data": (lambda: _uci(data=""), (ValueError, "no data rows")),
  "UCI non-UTF-8 data": (lambda: _uci(data=b"1 2 3\n\xff\xfe 5 6\n"), (ValueError, "not a UTF-8 text file")),
  "UCI non-UTF-8 index": (lambda: _uci(features=b"\xff\n"), (ValueError, "not a UTF-8 text file")),
  "UCI missing index file": (lambda: _uci(drop=("index_target.txt",)), (ValueError, "missing file")),
  "UCI missing data file": (lambda: _uci(drop=("data.txt",)), (ValueError, "missing file")),
  "UCI folder that does not exist": (
    lambda: curiojax.load_dataset("/nonexistent/folder"),
    (ValueError, "'/nonexistent/folder' not found"),
  ),
  # -- CSV files --------------------------------------------------------------------------------
  "CSV duplicate column names": (lambda: _csv("a,a,y\n1,2,3\n4,5,6\n"), (ValueError, "a")),
  "CSV with a byte-order mark": (lambda: _csv_ok("\ufeffa,y\n1,2\n3,4\n", [[1], [3]], [2, 4]), None),
  "CSV non-UTF-8": (lambda: _csv(b"a,y\n1,2\n\xff,4\n"), (ValueError, "UTF-8")),
  "CSV blank cell": (lambda: _csv("a,y\n1,2\n,4\n"), (ValueError, "data.csv:3: column 'a' is blank")),
  "CSV inf cell": (
    lambda: _csv("a,y\n1,2\ninf,4\n"),
    (ValueError, "data.csv:3, column 'a': 'inf' is not a finite number"),
  ),
  "CSV nan target": (lambda: _csv("a,y\n1,2\n3,nan\n"), (ValueError, "nan")),
  "CSV text cell": (lambda: _csv("a,y\n1,2\nred,4\n"), (ValueError, "red")),
  "CSV missing target column": (lambda: _csv("a,b\n1,2\n3,4\n"), (ValueError, "y")),
  "CSV header only": (lambda: _csv("a,y\n"), (ValueError, "no data rows")),
  "CSV empty file": (lambda: _csv(""), (ValueError, "the file is empty")),
  "CSV ragged row": (
    lambda: _csv("a,y\n1,2\n3,4,5\n"),
    (ValueError, "data.csv:3: ragged row with 3 values, expected 2"),
  ),
  # -- inside the user's vmap and grad --------------------------------------------------------
  "scores under vmap over pools": (
    lambda: np.testing.assert_allclose(
      jax.vmap(lambda x: curiojax.curiosity_scores(LINEAR, PARAMS, TANGENT, x, nonfinite="exclude"))(
        jnp.stack([X, 2 * X])
      )[1],
      _scores(x=2 * X),
      rtol=1e-5,
    ),
    None,
  ),
  "grad of scores w.r.t. the pool": (
    lambda: np.testing.assert_array_equal(
      np.isfinite(
        jax.grad(lambda x: curiojax.curiosity_scores(LINEAR, PARAMS, TANGENT, x, nonfinite="exclude").sum())(
          jnp.asarray(X)
        )
      ),
      True,
    ),
    None,
  ),
  # -- the learner: tell, save, load ----------------------------------------------------------
  "tell NaN label": (lambda: _tell([10], [np.nan]), (ValueError, "labels have NaN or infinite values")),
  "tell inf label": (lambda: _tell([10], [np.inf]), (ValueError, "labels have NaN or infinite values")),
  "tell index past the pool": (lambda: _tell([60], [1.0]), (ValueError, "out of range")),
  "tell negative index": (lambda: _tell([-1], [1.0]), (ValueError, "out of range")),
  "tell duplicated index": (lambda: _tell([10, 10], [1.0, 2.0]), (ValueError, "duplicated")),
  "tell float index": (lambda: _tell([1.5], [1.0]), (ValueError, "integer")),
  "tell an index labelled already": (lambda: _tell([0], [1.0]), (ValueError, "labelled already")),
  "tell more labels than indices": (
    lambda: _tell([10], [1.0, 2.0]),
    (ValueError, "labels have shape (2,), expected (1,)"),
  ),
  "tell text labels": (lambda: _tell([10], ["high"]), (ValueError, "labels must be numbers")),
  "tell outside rows of another width": (
    lambda: _tell([], [], x_outside=np.ones((2, 3)), y_outside=np.ones(2)),
    (ValueError, "x_outside has 3 columns, the pool has 2"),
  ),
  "ask for more than the pool": (lambda: _learner()[0].ask(_learner()[1], 100), (ValueError, "unlabelled")),
  "ask for zero": (lambda: _learner()[0].ask(_learner()[1], 0), (ValueError, "k")),
  "init with one label": (
    lambda: curiojax.Learner(POOL).init(jax.random.key(0), labelled=[0], labels=[1.0]),
    (ValueError, "at least 2"),
  ),
  "init with labelled rows of another width": (
    lambda: curiojax.Learner(POOL).init(jax.random.key(0), x_labelled=np.ones((3, 5)), y_labelled=np.ones(3)),
    (ValueError, "columns"),
  ),
  "save into a file": (_save_into_a_file, (ValueError, "cannot create the folder")),
  "load a damaged learner": (_load_damaged_learner, (ValueError, "truncated or corrupted")),
  "load a folder without a learner": (lambda: curiojax.Learner.load(tempfile.mkdtemp()), (ValueError, "no state.json")),
  "learner with an unknown strategy": (
    lambda: curiojax.Learner(POOL, strategy="bogus"),
    (ValueError, "Unknown strategy"),
  ),
  "learner options: inf strength": (lambda: curiojax.LearnerOptions(strength=float("inf")), (ValueError, "strength")),
  "learner options: zero width": (lambda: curiojax.ModelOptions(hidden_sizes=(0,)), (ValueError, "hidden")),
  "learner options: unknown activation": (lambda: _learner(activation="swish"), (ValueError, "activation")),
  "learner options: misspelled strategy option": (
    lambda: curiojax.Learner(POOL, strategy="curiosity_diverse", strategy_options={"gama": 1}),
    (TypeError, "gama"),
  ),
  "learner options: strategy options not a dict": (
    lambda: curiojax.Learner(POOL, strategy_options=3),
    (TypeError, "strategy_options"),
  ),
  "learner options: unknown curvature": (lambda: _learner(curvature="fisher"), (ValueError, "curvature")),
  "learner options: negative learning rate": (lambda: _learner(learning_rate=-1.0), (ValueError, "learning_rate")),
  # -- select_batch on one's own model --------------------------------------------------------
  "select_batch without a tangent": (
    lambda: curiojax.select_batch(LINEAR, PARAMS, None, X, 2, strategy="curiosity"),
    (ValueError, "tangent"),
  ),
  "select_batch larger than the pool": (
    lambda: curiojax.select_batch(LINEAR, PARAMS, TANGENT, X, 17),
    (ValueError, "larger than the unlabelled pool (16 points)"),
  ),
  "select_batch k = 0": (
    lambda: curiojax.select_batch(LINEAR, PARAMS, TANGENT, X, 0),
    (ValueError, "batch size must be >= 1"),
  ),
  "select_batch unknown strategy": (
    lambda: curiojax.select_batch(LINEAR, PARAMS, TANGENT, X, 2, strategy="oracle"),
    (ValueError, "Unknown strategy"),
  ),
  "own strategy: duplicated indices": (lambda: _own_strategy(np.array([1, 1, 2])), (ValueError, "duplicated")),
  "own strategy: too few indices": (lambda: _own_strategy(np.array([1, 2])), (ValueError, "returned 2 indices")),
  "own strategy: out of range": (lambda: _own_strategy(np.array([1, 2, 99])), (ValueError, "out of range")),
  "own strategy: float indices": (lambda: _own_strategy(np.array([1.0, 2.0, 3.0])), (ValueError, "integer")),
  "own strategy: a selection with too few scores": (
    lambda: _own_strategy(curiojax.strategies.Selection(np.array([1, 2, 3]), np.ones(2))),
    (ValueError, "expected 3 numbers, one per pick"),
  ),
  "own strategy: needs not a Needs": (
    lambda: curiojax.Learner(POOL, strategy=type("Mine", (_Returns,), {"needs": True})(np.arange(3))),
    (TypeError, "needs must be a curiojax.strategies.Needs"),
  ),
  "strategy: sketch options not a dict": (
    lambda: curiojax.get_strategy("lcmd", sketch=512),
    (TypeError, "sketch must be SketchOptions or a dict"),
  ),
  "strategy: misspelled sketch option": (
    lambda: curiojax.get_strategy("lcmd", sketch={"dims": 512}),
    (TypeError, "sketch has no option(s) ['dims']"),
  ),
  "own strategy in a learner: duplicated": (
    lambda: _own_strategy(np.array([5, 5, 6]), via_learner=True),
    (ValueError, "'_Returns' returned duplicated"),
  ),
  "select_batch random gives distinct indices": (
    lambda: np.testing.assert_equal(len(set(curiojax.select_batch(LINEAR, PARAMS, None, X, 8, strategy="random"))), 8),
    None,
  ),
  # -- suggest on CSV files -------------------------------------------------------------------
  "suggest: missing target column": (
    lambda: _suggest(LAB.replace(",y", ",z"), POOLCSV, id_column="id"),
    (ValueError, "y"),
  ),
  "suggest: pool columns differ": (
    lambda: _suggest(LAB, POOLCSV.replace("id,a,b", "id,a,c"), id_column="id"),
    (ValueError, "only in"),
  ),
  "suggest: duplicate pool ids": (
    lambda: _suggest(LAB, POOLCSV.replace("p2", "p1"), id_column="id"),
    (ValueError, "id 'p1' appears 2 times in column 'id'"),
  ),
  "suggest: text cell in the pool": (
    lambda: _suggest(LAB, POOLCSV.replace("3,1", "3,x"), id_column="id"),
    (ValueError, "pool.csv:3, column 'b': non-numeric value 'x'"),
  ),
  "suggest: blank feature": (
    lambda: _suggest(LAB, POOLCSV.replace("3,1", "3,"), id_column="id"),
    (ValueError, "pool.csv:3: column 'b' is blank"),
  ),
  "suggest: k larger than the pool": (
    lambda: _suggest(LAB, POOLCSV, id_column="id", k=4),
    (ValueError, "asked for 4 rows, but only 3 pool rows are unlabelled"),
  ),
  "suggest: k = 0": (lambda: _suggest(LAB, POOLCSV, id_column="id", k=0), (ValueError, "k")),
  "suggest: unknown strategy": (
    lambda: _suggest(LAB, POOLCSV, id_column="id", strategy="oracle"),
    (ValueError, "Unknown strategy 'oracle'"),
  ),
  "suggest: no target named": (lambda: _suggest(LAB, POOLCSV, id_column="id", target=""), (ValueError, "target")),
  "suggest: unknown id column": (lambda: _suggest(LAB, POOLCSV, id_column="key"), (ValueError, "key")),
  "suggest: --out is the labelled file": (lambda: _suggest_out_onto("lab.csv"), (ValueError, "is the labelled file")),
  "suggest: --out is the pool file": (lambda: _suggest_out_onto("pool.csv"), (ValueError, "is the pool file")),
  "suggest: --out in the state folder": (
    lambda: _suggest_out_onto("state/state.json"),
    (ValueError, "inside the state folder"),
  ),
  "suggest: numeric ids without an id column": (
    lambda: _suggest(LAB.replace("r", ""), POOLCSV.replace("p", "")),
    (ValueError, "column 'id' looks like row ids"),
  ),
  "suggest: string ids without an id column": (
    lambda: _suggest(LAB.replace("id,", "code,"), POOLCSV.replace("id,", "code,")),
    (ValueError, "pass --id-column code"),
  ),
  "suggest: a typo'd id with a pool row's features": (
    lambda: _suggest(LAB + "P2,3,1,4\n", POOLCSV, id_column="id"),
    (ValueError, "row 'P2' matches no pool id, but its features equal those of unlabelled pool row 'p2'"),
  ),
  "suggest: two labelled rows on one pool row": (
    lambda: _suggest("a,b,y\n2,2,1\n2,2,5\n0,0,1\n", "a,b\n2,2\n3,1\n1,3\n"),
    (ValueError, "data rows 1 and 2 both have the features of pool row 1"),
  ),
  "suggest: a 1e39 feature": (
    lambda: _suggest(LAB, POOLCSV.replace("3,1", "1e39,1"), id_column="id"),
    (ValueError, "pool.csv:3, column 'a': '1e39' is outside the range"),
  ),
  "suggest: a 1e39 label": (
    lambda: _suggest(LAB.replace(",3\n", ",1e39\n"), POOLCSV, id_column="id"),
    (ValueError, "lab.csv:4, column 'y': '1e39' is outside the range"),
  ),
  # -- work directories and disks -------------------------------------------------------------
  "work directory under a file": (lambda: _lock(_under_a_file()), (ValueError, "cannot use the folder")),
  "work directory without permission": (
    lambda: _lock(tempfile.mkdtemp(), deny=True),
    (ValueError, "Permission denied"),
  ),
  "state saved under a file": (
    lambda: persistence.save_state(_under_a_file(), {}, {}, tag=1),
    (ValueError, "cannot create the folder"),
  ),
  # -- the simulated loop's options ------------------------------------------------------------
  "loop: NaN strength": (lambda: curiojax.LoopOptions(strength=float("nan")), (ValueError, "strength")),
  "loop: inf learning rate": (
    lambda: curiojax.LoopOptions(train=curiojax.TrainOptions(learning_rate=float("inf"))),
    (ValueError, "learning_rate"),
  ),
  "loop: zero batch size": (lambda: curiojax.LoopOptions(batch_size=0), (ValueError, "batch_size")),
  "loop: negative rounds": (lambda: curiojax.LoopOptions(rounds=-1), (ValueError, "rounds")),
  "loop: test fraction above 1": (lambda: curiojax.LoopOptions(test_fraction=1.5), (ValueError, "test_fraction")),
  "loop: no strategies": (lambda: curiojax.LoopOptions(strategies=()), (ValueError, "strategies is empty")),
  "loop: duplicated strategies": (lambda: curiojax.LoopOptions(strategies=("random", "random")), (ValueError, "dupl")),
  "loop: unknown strategy": (lambda: curiojax.LoopOptions(strategies=("random", "oracle")), (ValueError, "oracle")),
  "loop: stop ratio 1": (lambda: curiojax.LoopOptions(stop_ratio=1.0), (ValueError, "stop_ratio")),
  # -- the learner ------------------------------------------------------------------------------
  "learner pool with NaN": (lambda: curiojax.Learner(_pool({0: np.nan})), (ValueError, "NaN or infinite")),
  "learner with an empty pool": (
    lambda: curiojax.Learner(np.zeros((0, D))),
    (ValueError, "x_pool must be a non-empty (n, d) array, got shape (0, 3)"),
  ),
  "learner with a 1-D pool": (
    lambda: curiojax.Learner(np.zeros(5)),
    (ValueError, "x_pool must be a non-empty (n, d) array, got shape (5,)"),
  ),
}


SLOW_CASES = {  # whole trainings (6-36 s each on a loaded machine); "tangent after sgd" stays in the fast lane
  "clipping, tangent, adam",
  "own strategy in a learner: duplicated",
  "inside MultiSteps (gradients passed)",
  "inside apply_if_finite (gradients passed)",
  "float16 adam underflow is named",
  "bfloat16 params train with adam",
  "tangent first, then adam",
  "tangent after adam",
  "tangent inside optax.masked",
}


@pytest.mark.parametrize(
  "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_CASES else n for n in sorted(CASES)]
)
def test_hostile_input(name):
  call, expect = CASES[name]
  if expect is None:
    call()
    return
  kind, fragment = expect
  with pytest.raises(kind) as info:
    call()
  assert fragment in str(info.value), f"{name}: {info.value}"
  assert type(info.value).__module__ != "jax.errors", f"{name}: a raw JAX error: {info.value}"

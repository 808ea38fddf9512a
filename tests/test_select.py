"""select_top_k against a brute-force sort on the host."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import curiojax


def test_top_k_matches_brute_force_with_mask():
  rng = np.random.default_rng(0)
  for n in (1, 7, 100, 1000):
    scores = rng.normal(size=n).astype(np.float32)
    mask = rng.random(n) < 0.3
    k = max(1, int((~mask).sum()) // 2)
    if (~mask).sum() == 0:
      mask[0] = False
    brute = [i for i in np.argsort(-scores, kind="stable") if not mask[i]][:k]
    got = curiojax.select_top_k(jnp.asarray(scores), k, mask=mask)
    assert isinstance(got, np.ndarray)
    assert got.tolist() == brute
    assert curiojax.select_top_k(scores, k, mask=jnp.asarray(mask)).tolist() == brute


def test_nan_and_neginf_scores_are_never_selected():
  scores = np.array([np.nan, 1.0, -np.inf, 0.5, 2.0], np.float32)
  assert curiojax.select_top_k(scores, 3).tolist() == [4, 1, 3]
  with pytest.raises(ValueError, match=r"k=4 but only 3 of 5 .*0 masked, 2 unmasked with NaN/-inf"):
    curiojax.select_top_k(scores, 4)


def test_bad_input():
  scores = np.arange(6.0)
  with pytest.raises(ValueError, match=r"k=3 but only 2 of 6 .*4 masked"):
    curiojax.select_top_k(scores, 3, mask=np.array([1, 1, 0, 1, 0, 1], bool))
  with pytest.raises(TypeError, match="mask must be boolean"):
    curiojax.select_top_k(scores, 1, mask=np.array([0, 2]))
  with pytest.raises(ValueError, match=r"shape \(6,\)"):
    curiojax.select_top_k(scores, 1, mask=np.zeros(5, bool))
  with pytest.raises(ValueError, match="between 1 and the pool size 6"):
    curiojax.select_top_k(scores, 7)
  with pytest.raises(ValueError, match="between 1"):
    curiojax.select_top_k(scores, 0)
  with pytest.raises(TypeError, match="k must be an int"):
    curiojax.select_top_k(scores, 2.0)
  with pytest.raises(ValueError, match="empty"):
    curiojax.select_top_k(np.zeros(0), 1)
  with pytest.raises(ValueError, match="must be 1-D"):
    curiojax.select_top_k(np.zeros((4, 2)), 1)


def test_padding_is_one_rule_for_numpy_and_device_arrays():
  """``curiojax.padding.pad_rows``: appended rows hold ``value``, device arrays stay on device."""
  from curiojax.padding import next_pow2, pad_rows, round_up

  assert [next_pow2(n) for n in (0, 1, 2, 3, 1000)] == [1, 1, 2, 4, 1024]
  assert [round_up(n, 512) for n in (0, 1, 512, 513)] == [512, 512, 512, 1024]
  a = np.arange(6.0).reshape(3, 2)
  out = pad_rows(a, 5)
  assert isinstance(out, np.ndarray) and out.shape == (5, 2)
  np.testing.assert_array_equal(out[:3], a)
  np.testing.assert_array_equal(out[3:], 0)
  mask = pad_rows(jnp.zeros(3, bool), 4, value=True)
  assert isinstance(mask, jax.Array) and mask.tolist() == [False, False, False, True]
  with pytest.raises(ValueError, match="do not fit"):
    pad_rows(a, 2)


# -- the strategy protocol: Selection, Needs, SketchOptions -----------------------------------------

# What each registered strategy reads besides the pool and the labelled set.
NEEDS = {  # name: (model, tangent, validation, problem)
  "random": (False, False, False, False),
  "variance": (True, False, False, False),
  "emcm": (True, False, False, False),
  "badge": (True, False, False, False),
  "lcmd": (True, False, False, False),
  "curiosity": (True, True, False, False),
  "curiosity_diverse": (True, True, False, False),
  "tangent_coverage": (True, True, False, False),
  "validation_diverse": (True, False, True, True),
  "validation_coverage": (True, True, True, True),
  "validation_influence": (True, False, True, True),
  "group_curiosity": (True, False, False, True),
}


def _pool_ctx(n=10):
  from curiojax.strategies import SelectionContext

  return SelectionContext(None, None, None, np.zeros((0, 2)), np.zeros(0), np.zeros((n, 2)), jax.random.key(0))


def test_each_registered_strategy_declares_its_needs():
  from curiojax.strategies import STRATEGIES, Needs, get_strategy, needs_of

  assert set(NEEDS) <= set(STRATEGIES)
  for name, (model, tangent, validation, problem) in NEEDS.items():
    assert needs_of(get_strategy(name)) == Needs(model, tangent, validation, problem), name
  # a direction changes what a strategy reads, with no mutation: the options are frozen
  assert needs_of(get_strategy("curiosity_diverse", direction="validation")) == Needs(validation=True, problem=True)
  assert needs_of(get_strategy("curiosity", direction="groups")) == Needs(problem=True)
  with pytest.raises(AttributeError):
    get_strategy("curiosity").direction = "validation"


def test_objects_that_declare_no_needs_get_the_tangent():
  from curiojax.strategies import Needs, needs_of

  class Plain:
    def select(self, ctx, k):
      return np.arange(k)

  class Older:  # the attributes of earlier versions are still honoured
    needs_tangent, needs_validation = False, True

  assert needs_of(Plain()).tangent and not needs_of(Plain()).validation
  assert needs_of(Older()) == Needs(tangent=False, validation=True, problem=True)
  Plain.needs = {"tangent": False}
  with pytest.raises(TypeError, match="needs must be a curiojax.strategies.Needs"):
    needs_of(Plain())


def test_a_plain_index_array_from_ones_own_strategy_is_wrapped():
  from curiojax.strategies import Selection, select_batch, select_checked

  class Mine:
    def select(self, ctx, k):
      return np.arange(k)[::-1]

  got = select_checked(Mine(), _pool_ctx(), 3)
  assert isinstance(got, Selection) and got.indices.dtype == np.int64 and got.indices.tolist() == [2, 1, 0]
  assert got.scores.dtype == np.float32 and np.isnan(got.scores).all()
  assert got.top_score is None and np.isnan(got.direction_residual)
  assert select_batch(None, None, None, np.zeros((10, 2)), 3, strategy=Mine()).tolist() == [2, 1, 0]


@pytest.mark.parametrize(
  "returned, match",
  [
    (lambda k: np.arange(k + 1), "returned 4 indices, expected 3"),
    (lambda k: np.zeros(k, int), "duplicated indices"),
    (lambda k: np.arange(k) + 9, r"out of range \[0, 10\)"),
    (lambda k: np.arange(k, dtype=float), "expected a 1-D integer index array"),
    (lambda k: ("Selection", np.arange(k), np.ones(k + 1)), r"scores float64 of shape \(4,\); expected 3 numbers"),
    (lambda k: ("Selection", np.arange(k), np.array(["a"] * k)), "expected 3 numbers"),
    (lambda k: ("Selection", np.arange(k + 1), np.ones(k + 1)), "returned 4 indices"),
  ],
)
def test_selections_are_checked(returned, match):
  from curiojax.strategies import Selection, select_checked

  class Bad:
    def select(self, ctx, k):
      got = returned(k)
      return Selection(np.asarray(got[1]), np.asarray(got[2])) if isinstance(got, tuple) else got

  with pytest.raises(ValueError, match=match):
    select_checked(Bad(), _pool_ctx(), 3, "bad")


def test_selection_top_score_and_scores_come_back_as_numbers():
  from curiojax.strategies import Selection, select_checked

  class Good:
    def select(self, ctx, k):
      return Selection.of(jnp.arange(k), jnp.linspace(3.0, 1.0, k), top_score=jnp.float32(3.0))

  got = select_checked(Good(), _pool_ctx(), 3)
  assert got.top_score == 3.0 and isinstance(got.top_score, float)
  np.testing.assert_allclose(got.scores, [3.0, 2.0, 1.0])


def test_sketch_options_by_dict_flat_keywords_or_dataclass():
  import dataclasses
  import json

  from curiojax.strategies import SketchOptions, get_strategy
  from curiojax.strategies.kernels import SKETCH_CHUNK, SKETCH_COMPUTE_DTYPE, SKETCH_DIM

  assert SketchOptions() == SketchOptions(SKETCH_DIM, SKETCH_CHUNK, SKETCH_COMPUTE_DTYPE)
  by_dict = get_strategy("curiosity_diverse", gamma=0.5, sketch={"dim": 256})
  assert by_dict.sketch == SketchOptions(dim=256) == get_strategy("lcmd", dim=256).sketch
  assert get_strategy("lcmd", sketch=SketchOptions(dim=8, chunk_size=4)).sketch.chunk_size == 4
  options = dataclasses.asdict(by_dict)
  assert options == {"sketch": {"dim": 256, "chunk_size": SKETCH_CHUNK, "compute_dtype": SKETCH_COMPUTE_DTYPE},
                     "gamma": 0.5, "direction": "tangent"}  # fmt: skip
  assert get_strategy("curiosity_diverse", **json.loads(json.dumps(options))) == by_dict  # a round trip through JSON
  with pytest.raises(TypeError, match=r"sketch has no option\(s\) \['size'\]"):
    get_strategy("lcmd", sketch={"size": 8})
  with pytest.raises(TypeError, match=r"inside sketch="):
    get_strategy("lcmd", sketch={"dim": 8}, chunk_size=4)
  with pytest.raises(TypeError, match=r"no option\(s\) \['dim'\]"):
    get_strategy("curiosity", dim=8)  # top-k curiosity does not sketch
  with pytest.raises(TypeError, match=r"no option\(s\) \['gamma'\]"):
    get_strategy("lcmd", gamma=1.0)
  with pytest.raises(ValueError, match="dim must be an integer >= 1"):
    get_strategy("lcmd", sketch={"dim": 0})
  with pytest.raises(TypeError, match="sketch must be SketchOptions or a dict"):
    get_strategy("lcmd", sketch=256)

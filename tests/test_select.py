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

"""Top-k selection on device: ``jax.lax.top_k`` over masked scores, one transfer at the end.

Excluded points (already labelled, or rows the scorer excluded) get ``-inf`` before the
top-k, so they are never chosen; scores that are NaN or ``-inf`` (the scorer's mark for
excluded rows) count as excluded too. Scores are padded to their size class
(``curiojax.padding.size_class``, padding masked) so that rounds with slightly different
pool sizes reuse one compilation.

Example:
  >>> import numpy as np
  >>> select_top_k(np.array([0.1, 3.0, 2.0, 5.0]), 2, mask=np.array([False, False, False, True])).tolist()
  [1, 2]
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from curiojax.padding import pad_rows, size_class


@functools.partial(jax.jit, static_argnames=("k",))
def _top_k(scores, mask, k):
  finite = ~jnp.isnan(scores) & (scores > -jnp.inf)
  keep = ~mask & finite
  _, idx = jax.lax.top_k(jnp.where(keep, scores, -jnp.inf), k)
  counts = jnp.stack([jnp.sum(keep), jnp.sum(mask), jnp.sum(~mask & ~finite)]).astype(jnp.int32)
  return idx, counts


def _top_k_exact(scores: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
  """Integer (or boolean) scores ranked exactly on the host: highest first, ties by lower index."""
  selectable = np.flatnonzero(~mask)
  if k > len(selectable):
    raise ValueError(
      f"k={k} but only {len(selectable)} of {len(scores)} points can be selected ({int(mask.sum())} masked); "
      "lower k or unmask points."
    )
  values = scores[selectable]
  order = np.lexsort((selectable, ~values))  # ~v: decreasing in v for every integer type, without overflow
  return selectable[order[:k]].astype(np.int32)


def select_top_k(scores, k: int, *, mask=None) -> np.ndarray:
  """Indices of the ``k`` highest scores, excluding masked points; a host ``np.ndarray``.

  Args:
    scores: ``(n,)`` scores (device or host array). For ``(n, k)`` multi-tangent scores,
      combine or pick a column first (e.g. ``scores.sum(-1)`` or ``scores[:, j]``).
    k: how many indices to return, ``1 ≤ k ≤`` number of selectable points.
    mask: optional boolean ``(n,)``, ``True`` = excluded (already labelled, unavailable).

  Returns:
    ``(k,)`` int indices into ``scores``, highest score first.
  """
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
    raise TypeError(f"k must be an int, got {type(k).__name__}.")
  if isinstance(scores, jax.core.Tracer) or isinstance(mask, jax.core.Tracer):
    raise ValueError(
      "select_top_k runs on the host (it checks k against the selectable points and returns a numpy array), "
      "so it cannot be called inside jax.jit / vmap; call it outside, or use jax.lax.top_k inside."
    )
  if not isinstance(scores, jax.Array):
    scores = np.asarray(scores)
  if not any(jnp.issubdtype(scores.dtype, t) for t in (jnp.integer, jnp.floating, jnp.bool_)):
    raise TypeError(f"scores must be real numbers (float, int or bool), got dtype {scores.dtype}.")
  if scores.ndim != 1:
    raise ValueError(
      f"scores must be 1-D (n,), got shape {scores.shape}; for (n, k) multi-tangent scores "
      "combine or pick a column first (scores.sum(-1) or scores[:, j])."
    )
  n = scores.shape[0]
  if n == 0:
    raise ValueError("scores is empty: there is nothing to select from.")
  if mask is None:
    mask = np.zeros(n, bool)
  else:
    if not isinstance(mask, jax.Array):
      mask = np.asarray(mask)
    if mask.dtype != bool:
      raise TypeError(
        f"mask must be boolean (True = excluded), got dtype {mask.dtype}; from indices "
        "build one with m = np.zeros(n, bool); m[idx] = True."
      )
    if mask.shape != (n,):
      raise ValueError(f"mask must have shape ({n},) like the scores, got {mask.shape}.")
  if k < 1 or k > n:
    raise ValueError(f"k must be between 1 and the pool size {n}, got {k}.")
  if not jnp.issubdtype(scores.dtype, jnp.floating):  # exact: float32 would tie integers above 2**24
    return _top_k_exact(np.asarray(scores), np.asarray(mask), k)
  size = size_class(n)
  scores, mask = pad_rows(scores, size), pad_rows(mask, size, value=True)  # padding is masked
  idx, counts = jax.device_get(_top_k(scores, mask, k=int(k)))  # the one transfer
  selectable, masked, nonfinite = (int(c) for c in counts)
  masked -= size - n
  if k > selectable:
    raise ValueError(
      f"k={k} but only {selectable} of {n} points can be selected ({masked} masked, "
      f"{nonfinite} unmasked with NaN/-inf scores); lower k or unmask points."
    )
  return np.asarray(idx)

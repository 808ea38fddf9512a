"""Padded shapes: jitted code compiles once per size class, not once per pool or labelled-set size.

Every padded array in the package comes from here: rows are appended (zeros, or ``value``)
up to a size class, and callers mask the appended rows. Size classes: the next power of two
(:func:`next_pow2`, one compilation per doubling) or a multiple of a bucket
(:func:`round_up`); :func:`curiojax.scoring.scores.bucket_size` refines these for pools.

Example:
  >>> import numpy as np
  >>> next_pow2(5), round_up(5, 4)
  (8, 8)
  >>> pad_rows(np.ones((3, 2)), 4)[:, 0]
  array([1., 1., 1., 0.])
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def next_pow2(n: int) -> int:
  """Smallest power of two ``≥ n`` (1 for ``n ≤ 1``): the padded size that keeps compilations few."""
  return 1 << max(0, int(n) - 1).bit_length()


def round_up(n: int, multiple: int) -> int:
  """The smallest multiple of ``multiple`` that is ``≥ n``, and at least one ``multiple``."""
  return max(multiple, -(-int(n) // multiple) * multiple)


def pad_rows(a, size: int, value=0):
  """``a`` with rows of ``value`` appended along axis 0 up to ``size`` rows.

  A ``jax.Array`` stays on its device (``jnp.pad``); anything else becomes a NumPy array.
  Raises ``ValueError`` when ``a`` already has more than ``size`` rows.
  """
  a = a if isinstance(a, jax.Array) else np.asarray(a)
  n = a.shape[0]
  if n > size:
    raise ValueError(f"{n} rows do not fit in a padded size of {size}.")
  if n == size:
    return a
  widths = [(0, size - n)] + [(0, 0)] * (a.ndim - 1)
  pad = jnp.pad if isinstance(a, jax.Array) else np.pad
  return pad(a, widths, constant_values=value)

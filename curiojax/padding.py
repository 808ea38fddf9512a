"""Padded shapes: jitted code compiles once per size class, not once per pool or labelled-set size.

Every padded array in the package comes from here: rows are appended (zeros, or ``value``)
up to a size class, and callers mask the appended rows. **The policy** is :func:`size_class`:
four sizes per doubling (``2^j·{1, 5/4, 6/4, 7/4}``), so at most 25% of a padded array is
padding and a pool growing from ``n`` to ``2n`` compiles at most four times. ``multiple``
rounds a class up to whole chunks or devices. :func:`next_pow2` and :func:`round_up` are the
arithmetic under it.

Example:
  >>> import numpy as np
  >>> size_class(2560), size_class(5), size_class(100, multiple=64)
  (2560, 5, 128)
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


def size_class(n: int, multiple: int = 1) -> int:
  """The padded size of ``n`` rows: the smallest ``2^j·{1, 5/4, 6/4, 7/4}`` ``≥ n`` (sizes up to 4
  are their own class), rounded up to a multiple of ``multiple`` (module docstring)."""
  n = max(int(n), 1)
  if n > 4:
    base = next_pow2(n) // 2
    n = next(size for size in (base * q // 4 for q in (5, 6, 7, 8)) if size >= n)
  return round_up(n, multiple) if multiple > 1 else n


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

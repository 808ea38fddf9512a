"""Argument checks shared by the option dataclasses and model builders."""

from __future__ import annotations

import numpy as np


def check_int(name: str, value, low: int) -> int:
  """``value`` as an ``int`` if it is an integer (not a bool, not a float) ``≥ low``; else ``ValueError``."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
  return int(value)

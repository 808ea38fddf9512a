"""Argument checks shared by the option dataclasses and model builders."""

from __future__ import annotations

import numpy as np


def check_bool(name: str, value) -> bool:
  """``value`` if it is a ``bool`` (not 0/1, not a string); else ``TypeError``."""
  if not isinstance(value, bool):
    raise TypeError(f"{name} must be True or False, got {value!r}.")
  return value


def check_int(name: str, value, low: int) -> int:
  """``value`` as an ``int`` if it is an integer (not a bool, not a float) ``≥ low``; else ``ValueError``."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
  return int(value)

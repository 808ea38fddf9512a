"""Regularizers ``R(params, s)`` with a strength ``s`` (the hyperparameter the tangent follows).

The training objective is ``F(θ, s) = mean data loss + R(θ, s)``; the tangent needs
``∇_θR``, ``∇²_θR`` and the mixed term ``ρ = ∂_s∇_θR``, all obtained by autodiff, so any
differentiable callable ``R(params, s) -> scalar`` is a regularizer.

``s`` is a scalar (one tangent) or a 1-D array of ``k`` strengths (``k`` tangents, one per
hyperparameter, e.g. per-layer strengths).

Example:
  >>> import jax.numpy as jnp
  >>> R = l2()
  >>> float(R({"w": jnp.array([3.0, 4.0])}, 0.1))
  1.25
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Regularizer = Callable[[Any, jax.Array], jax.Array]


def _weighted_half_sq_norms(params, weights) -> list[jax.Array]:
  leaves = jax.tree.leaves(params)
  if weights is None:
    w_leaves = [1.0] * len(leaves)
  else:
    try:
      w_leaves = jax.tree.leaves(jax.tree.broadcast(weights, params))
    except ValueError as e:  # tree structure mismatch
      raise ValueError(f"l2 weights must be a pytree prefix of params (floats or booleans per group): {e}") from None
  return [0.5 * jnp.sum(jnp.asarray(w, p.dtype) * jnp.square(p)) for p, w in zip(leaves, w_leaves, strict=False)]


@dataclasses.dataclass(frozen=True, eq=False)
class L2:
  """``s · ½ Σ_g w_g ‖θ_g‖²`` (``eˢ`` instead of ``s`` when ``log_strength``); see :func:`l2`."""

  weights: Any = None
  log_strength: bool = False

  @property
  def requires_nonnegative_strength(self) -> bool:
    return not self.log_strength

  def __call__(self, params, strength):
    scale = jnp.exp(strength) if self.log_strength else strength
    return scale * sum(_weighted_half_sq_norms(params, self.weights))


def l2(weights: Any = None, *, log_strength: bool = False) -> L2:
  """Ridge penalty ``s · ½ Σ_g w_g ‖θ_g‖²`` (or ``eˢ · …`` with ``log_strength=True``).

  Args:
    weights: optional pytree (a prefix of params) of per-group multipliers or a boolean
      mask selecting which groups are penalised; default every parameter, weight 1.
    log_strength: use ``R = eˢ · ½‖θ‖²`` so ``s`` lives on the log scale (the form used
      by the paper's polynomial example; ``d/ds`` then equals ``d/d log λ``).

  Returns:
    ``R(params, s)``; ``ρ = ∂_s∇R`` is ``w ⊙ θ`` (times ``eˢ`` in the log form).
  """
  return L2(weights, log_strength)


def group_l2(groups: Any, *, log_strength: bool = False) -> Regularizer:
  """One strength per parameter group: ``R = Σ_k s_k · ½ Σ_{g∈k} ‖θ_g‖²``.

  Args:
    groups: pytree prefix of params with an integer group index per leaf (e.g.
      ``{"layer1": 0, "layer2": 1}``); ``s`` is then a vector with one entry per group,
      and the tangent transformation carries one tangent per entry.
    log_strength: strengths on the log scale, ``e^{s_k}``.
  """

  def regularizer(params, strength):
    strength = jnp.atleast_1d(strength)
    scale = jnp.exp(strength) if log_strength else strength
    group_leaves = jax.tree.leaves(jax.tree.broadcast(groups, params))
    norms = _weighted_half_sq_norms(params, None)
    return sum(scale[int(g)] * n for g, n in zip(group_leaves, norms, strict=False))

  regularizer.requires_nonnegative_strength = not log_strength
  return regularizer


# One instance per name: jitted functions take the regularizer as a static argument, and a fresh
# ``L2`` (compared by identity) on every call would compile them again each time.
_NAMED = {"l2": l2(), "log_l2": l2(log_strength=True)}


def get_regularizer(regularizer: str | Regularizer) -> Regularizer:
  """``"l2"``/``"log_l2"`` by name, or a callable ``R(params, s)`` passed through."""
  if callable(regularizer):
    return regularizer
  if regularizer not in _NAMED:
    raise ValueError(f"Unknown regularizer {regularizer!r}; choose one of {sorted(_NAMED)} or pass R(params, s).")
  return _NAMED[regularizer]

"""The state :func:`~curiojax.regularity_tangent` carries, and reading trees out of it.

:class:`RegularityTangentState` is a typed ``NamedTuple`` (optax's ``<Factory>State``); its
static :class:`TangentSettings` say which system the tangent solves, so that finishing and
certifying read it from the state instead of repeating the arguments. :func:`align_tangent`
and :func:`restructure` put a tangent in the parameters' tree structure (flax NNX containers
included); :func:`handed_out` is the vector a state hands out.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from curiojax.tangent.regularizers import Regularizer


@dataclasses.dataclass(frozen=True)
class TangentSettings:
  """What the tangent solves, carried statically in the state (no leaves, never traced).

  :func:`curiojax.finish_tangent` reads it (with the strength and damping in the state), so
  finishing always solves the system that training carried.
  """

  regularizer: Regularizer
  curvature: str


jax.tree_util.register_static(TangentSettings)


class RegularityTangentState(NamedTuple):
  """State of :func:`curiojax.regularity_tangent` (tangent leaves ``(k, *shape)`` for ``k`` strengths).

  Scalars are in the parameters' floating dtype unless noted.
  """

  tangent: Any  # like params (k, *shape): τ̄, the average of the iterates; handed out unless follow_iterate.
  iterate: Any  # like params (k, *shape): v, the recursion's current iterate.
  velocity: Any  # like params (k, *shape): m, heavy-ball momentum of the residuals.
  count: jax.Array  # () int32: updates seen.
  refreshes: jax.Array  # () int32: tangent refreshes since the last (re)start.
  step_size: jax.Array  # () float: α in use (0 before the first estimate).
  curvature_max: jax.Array  # () float: λ̂_max(C + λI) (0: estimate at the next refresh).
  residual: jax.Array  # () float: relative residual of the handed-out tangent: an upper estimate, or exact.
  backward_error: jax.Array  # () float: φ² = ‖r‖²/(‖ρ‖ + λ̂‖v‖)², averaged over the last few refreshes.
  best_backward_error: jax.Array  # () float: lowest φ since the last restart (slowly forgotten; inf: none).
  rayleigh: jax.Array  # () float: vᵀ(C_B + λI)v/‖v‖² along the iterate, averaged over the last few refreshes.
  follow_iterate: jax.Array  # () bool: hand out the iterate (clearly better at the last evaluation).
  exact: jax.Array  # () bool: residual is a full-data residual (set by finish_tangent).
  restarts: jax.Array  # () int32: back-offs so far.
  diverged: jax.Array  # () bool, sticky: unstable after max_restarts back-offs, or non-finite; frozen.
  strength: jax.Array  # () or (k,) float: s in use.
  damping: jax.Array  # () float: λ in use.
  tolerance: jax.Array  # () float: residual above which the tangent is flagged.
  averaging: jax.Array  # () int32: the averaging window W, in refreshes.
  settings: TangentSettings  # static: regularizer, curvature.


def _pure(x):
  """Unwrap flax NNX variables (``nnx.Optimizer.opt_state``) into plain arrays."""
  if hasattr(x, "get_value"):
    return x.get_value()
  if hasattr(x, "value") and not isinstance(x, jax.Array):
    return x.value
  return x


def _is_variable(x) -> bool:
  return hasattr(x, "get_value")


def _pure_tree(tree):
  return jax.tree.map(_pure, tree, is_leaf=_is_variable)


def handed_out(state: RegularityTangentState):
  """The tangent a state hands out: the average ``τ̄``, or the iterate where it measured better."""
  follow = _pure(state.follow_iterate)
  return jax.tree.map(lambda a, v: jnp.where(follow, v, a), _pure_tree(state.tangent), _pure_tree(state.iterate))


def align_tangent(params, tangent) -> tuple[Any, Any, int | None]:
  """``(params, tangent, k)``: both as plain arrays in ``params``' tree structure, and the tangent count.

  ``k`` is None for one tangent shaped like params, else the common leading axis of ``k``
  stacked tangents. flax NNX containers are accepted as they come (``nnx.state(model,
  nnx.Param)`` with its ``Param`` variables, a tangent from an ``nnx.Optimizer``'s state):
  variables are unwrapped, and a tangent with the params' key paths under other containers is
  put in the params' structure; tangent leaves take the params' dtypes. Otherwise a
  ``ValueError`` shows both structures.
  """
  if tangent is None:
    raise ValueError("tangent is None: train with curiojax.regularity_tangent and pass curiojax.tangent_of(opt_state).")
  params, tangent = _pure_tree(params), _pure_tree(tangent)
  p_def, t_def = jax.tree.structure(params), jax.tree.structure(tangent)
  p_shapes = [tuple(np.shape(x)) for x in jax.tree.leaves(params)]
  t_shapes = [tuple(np.shape(x)) for x in jax.tree.leaves(tangent)]
  if len(p_shapes) != len(t_shapes):
    raise ValueError(f"tangent and params have different tree structures; got\n  params:  {p_def}\n  tangent: {t_def}")
  if p_shapes == t_shapes:
    k = None
  elif all(len(t) == len(p) + 1 and t[1:] == p for p, t in zip(p_shapes, t_shapes, strict=True)) and (
    len({t[0] for t in t_shapes}) == 1
  ):
    k = t_shapes[0][0]
  else:
    raise ValueError(
      "tangent leaves must have the params' shapes (one tangent) or carry one leading axis k "
      f"(k tangents); got tangent shapes {t_shapes} for params {p_shapes}."
    )
  if p_def != t_def:  # the same leaves under other containers (nnx.State vs dict): same paths, same order
    paths = lambda tree: [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    if paths(params) != paths(tangent):
      raise ValueError(
        f"tangent and params have different tree structures; got\n  params:  {p_def}\n  tangent: {t_def}"
      )
    tangent = jax.tree.unflatten(p_def, jax.tree.leaves(tangent))
  # a JVP needs tangent dtypes equal to the primals' (a float32 tangent of bfloat16 params, say)
  cast = lambda p, t: t if jnp.result_type(t) == jnp.result_type(p) else jnp.asarray(t, jnp.result_type(p))
  tangent = jax.tree.map(cast, params, tangent)
  return params, tangent, k


def restructure(tangent, like, *, stacked: bool = False):
  """``tangent``'s leaves in ``like``'s tree structure (a flax ``nnx.State`` vs a plain dict, say)."""
  if jax.tree.structure(tangent) == jax.tree.structure(like):
    return tangent
  _, tangent, _ = align_tangent(like, tangent)
  return tangent

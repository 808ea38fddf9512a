"""Finding and replacing the tangent's state inside any optimizer state (optax's tree utilities).

An optimizer state holds one :class:`RegularityTangentState` somewhere: alone, in an
``optax.chain``, under ``optax.inject_hyperparams`` (whose ``hyperparams`` override the strength
and damping of the state it wraps), inside other wrappers (``MultiSteps``, ``masked``), or in a
flax ``nnx.Optimizer`` (its ``opt_state``, whose leaves are variables updated in place). These
functions are the one way the package reads and writes it; all are pure and jit-safe for optax
states.

Example:
  >>> import jax.numpy as jnp, optax, curiojax
  >>> from curiojax.tangent.access import find_tangent_state, strength_of
  >>> tx = optax.chain(curiojax.tunable_regularity_tangent("l2", 0.1), optax.adam(1e-2))
  >>> state = curiojax.set_strength(tx.init({"w": jnp.ones(3)}), 0.5)
  >>> float(strength_of(state)), find_tangent_state(state).settings.curvature
  (0.5, 'hessian')
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from curiojax.tangent.state import RegularityTangentState, _is_variable, _pure, _pure_tree

_NAME = RegularityTangentState.__name__
_INJECTED = ("strength", "damping")  # the tangent's arguments inject_hyperparams may carry


def _is_tangent_state(_, value) -> bool:
  return isinstance(value, RegularityTangentState)


def _optax_state(opt_state):
  """The optax state itself (an ``nnx.Optimizer`` holds it in ``.opt_state``)."""
  if hasattr(opt_state, "opt_state") and not isinstance(opt_state, tuple):
    return opt_state.opt_state
  return opt_state


def _located(opt_state):
  """``(path, state)`` of the unique tangent state in an optax state."""
  found = optax.tree.get_all_with_path(opt_state, _NAME, filtering=_is_tangent_state)
  if not found:
    raise ValueError(
      "No regularity tangent in this optimizer state: build the optimizer with "
      "optax.chain(curiojax.regularity_tangent(...), ...)."
    )
  if len(found) > 1:
    raise ValueError(f"Found {len(found)} regularity tangents in this optimizer state; expected one.")
  return found[0]


def _hyperparams_over(opt_state, path) -> dict:
  """The ``hyperparams`` of the ``inject_hyperparams`` state that wraps the state at ``path`` ({} if none)."""

  def wraps(hyper_path, _):
    *parent, key = hyper_path
    inner = getattr(key, "tuple_name", None)
    return inner is not None and tuple(path) == (*parent, optax.tree_utils.NamedTupleKey(inner, "inner_state"))

  found = optax.tree.get_all_with_path(opt_state, "hyperparams", filtering=wraps)
  return found[0][1] if found else {}


def find_tangent_state(opt_state) -> RegularityTangentState:
  """The unique :class:`RegularityTangentState` in any optimizer state, with the strength in force.

  Under ``optax.inject_hyperparams`` the strength and damping in force are the injected ones
  (:func:`curiojax.set_strength` changes them between updates): they are copied into the
  returned state. For an ``nnx.Optimizer`` the leaves are its variables.

  Raises:
    ValueError: no tangent state, or more than one.
  """
  opt_state = _optax_state(opt_state)
  path, state = _located(opt_state)
  hyperparams = _hyperparams_over(opt_state, path)
  for name in _INJECTED:
    if name in hyperparams:
      value = hyperparams[name]
      value = value if _is_variable(value) else jnp.asarray(value, _pure(getattr(state, name)).dtype)
      state = state._replace(**{name: value})
  return state


def replace_tangent_state(opt_state, new_state: RegularityTangentState):
  """``opt_state`` with its tangent state replaced by ``new_state`` (the injected hyperparams untouched).

  An optax state is rebuilt (``optax.tree.set``) and returned; an ``nnx.Optimizer`` (or its
  ``opt_state``) has its variables set in place and is returned as given.
  """
  inner = _optax_state(opt_state)
  _, old = _located(inner)
  variables = jax.tree.leaves(old, is_leaf=_is_variable)
  if any(_is_variable(v) for v in variables):  # nnx: the same leaves, set in place
    values = jax.tree.leaves(_pure_tree(new_state))
    for var, value in zip(variables, values, strict=True):
      var.set_value(value)
    return opt_state
  return optax.tree.set(inner, _is_tangent_state, **{_NAME: new_state})


def finished_state(state: RegularityTangentState, tangent, residual) -> RegularityTangentState:
  """The state after a solve to ``tangent`` with full-data relative residual ``residual``.

  The solution becomes both the average and the iterate (momentum zero, a full averaging
  window, no restarts), handed out as the average; the residual is exact; a non-finite
  residual marks the tangent diverged. Dtypes are the state's.
  """
  state = _pure_tree(state)
  residual = jnp.asarray(residual)
  finished = state._replace(
    tangent=tangent,
    iterate=tangent,
    velocity=jax.tree.map(jnp.zeros_like, tangent),
    refreshes=state.averaging,
    residual=residual,
    exact=jnp.asarray(True),
    restarts=jnp.zeros_like(state.restarts),
    follow_iterate=jnp.asarray(False),
    diverged=~jnp.isfinite(residual),
  )
  return optax.tree.cast_like(finished, other_tree=state)


def strength_of(opt_state) -> jax.Array:
  """The strength ``s`` in force (the injected one under ``inject_hyperparams``), as an array; jit-safe."""
  return _pure(find_tangent_state(opt_state).strength)


_tangent_state = find_tangent_state  # the former private name

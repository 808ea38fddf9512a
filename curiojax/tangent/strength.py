"""The strength ``s`` as optimizer state: :func:`tunable_regularity_tangent`, :func:`get_strength`,
:func:`set_strength`.

``optax.inject_hyperparams`` keeps ``s`` (and the damping) as arrays in the state, so a new
value never recompiles the training step; :func:`curiojax.tune_strength` steps it along the
hypergradient. :func:`curiojax.tangent.access.strength_of` reads the strength in force from any
tangent state, injected or not.

Example:
  >>> import jax.numpy as jnp, optax, curiojax
  >>> tx = optax.chain(curiojax.tunable_regularity_tangent("l2", 0.1), optax.sgd(0.1))
  >>> state = curiojax.set_strength(tx.init({"w": jnp.ones(3)}), 0.5)
  >>> float(curiojax.get_strength(state))
  0.5
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from curiojax.tangent.access import find_tangent_state
from curiojax.tangent.regularizers import Regularizer
from curiojax.tangent.transform import check_strength_sign, regularity_tangent

_STATIC = (
  "regularizer",
  "curvature",
  "tangent_learning_rate",
  "momentum",
  "averaging",
  "refresh_every",
  "power_iterations",
  "step_size_every",
  "tolerance",
  "max_restarts",
  "seed",
)


def tunable_regularity_tangent(
  regularizer: str | Regularizer = "l2", strength: float | jax.Array = 1e-2, **kwargs
) -> optax.GradientTransformationExtraArgs:
  """:func:`curiojax.regularity_tangent` with ``strength`` and ``damping`` injected as state.

  ``optax.inject_hyperparams(curiojax.regularity_tangent, static_args=...)`` with the right
  static arguments: the strength then sits in ``state.hyperparams["strength"]`` and can be
  read and set (:func:`get_strength`, :func:`set_strength`, :func:`curiojax.tune_strength`)
  without recompiling the training step. Keyword arguments are those of ``regularity_tangent``.
  """
  return optax.inject_hyperparams(regularity_tangent, static_args=_STATIC)(
    regularizer=regularizer, strength=strength, **kwargs
  )


def _injected(path, _) -> bool:
  """True below an ``inject_hyperparams`` state's ``hyperparams`` (not the tangent state's own field)."""
  return any(getattr(k, "name", None) == "hyperparams" for k in path)


def _injected_strength(opt_state):
  found = optax.tree.get_all_with_path(opt_state, "strength", filtering=_injected)
  if len(found) != 1:
    raise ValueError(
      f"Expected one injected regularity tangent in the optimizer state, found {len(found)}: build "
      "the optimizer with optax.chain(curiojax.tunable_regularity_tangent(...), ...)."
    )
  return found[0][1]


def get_strength(opt_state) -> jax.Array:
  """The current strength ``s`` of a :func:`tunable_regularity_tangent` in any chain state."""
  return _injected_strength(opt_state)


def set_strength(opt_state, strength):
  """A copy of ``opt_state`` with the injected strength replaced (same dtype; no recompile).

  Raises:
    ValueError: no injected strength, a shape other than the carried one, or (for a concrete
      value) a non-finite strength or a negative one for a regularizer that needs ``s ≥ 0``.
  """
  old = _injected_strength(opt_state)
  new = jnp.asarray(strength, old.dtype)
  if new.shape != old.shape:
    raise ValueError(f"strength has shape {new.shape}, the optimizer carries shape {old.shape}.")
  if not isinstance(new, jax.core.Tracer):
    if not bool(jnp.all(jnp.isfinite(new))):
      raise ValueError(f"strength must be finite, got {strength!r}.")
    check_strength_sign(find_tangent_state(opt_state).settings.regularizer, strength)
  return optax.tree.set(opt_state, _injected, strength=new)

"""Hierarchical / multi-user models: a shared ``θ₀`` plus a deviation ``δ_u`` per user.

User ``u`` predicts with ``f(θ₀ + δ_u, x)``; the regularizer pulls the shared part and the
deviations toward zero with their own strengths (``method.md``, "Multi-user"):

    R = s₀·½‖θ₀‖² + s₁·½ Σ_u ‖δ_u‖²        (strength vector (s₀, s₁): two tangents), or
    R = s₀·½‖θ₀‖² + Σ_u s_u·½‖δ_u‖²         (``per_user=True``: 1 + U tangents).

``τ_{s₁}`` says how every user's model moves when users are made more alike; a query from
user ``u`` moves the other users' predictions through ``θ₀``, which the tangents measure. The
curiosity of a user's candidate point for every hyperparameter is one JVP per tangent
(``curiojax.curiosity_scores`` with ``k`` tangents returns ``(n, k)``).

Inputs carry the user index in column 0 (:func:`with_user`), so the model is an ordinary
``model_fn(params, x)`` on arrays that every curiojax function (scorer, selection, losses)
accepts.

Example:
  >>> import jax.numpy as jnp, curiojax
  >>> base = lambda p, x: x @ p["w"]
  >>> params = hierarchical_params({"w": jnp.zeros(3)}, num_users=4)
  >>> model_fn = hierarchical_model_fn(base)
  >>> x = with_user(jnp.array([0, 3]), jnp.ones((2, 3)))
  >>> model_fn(params, x).shape, params["users"]["w"].shape
  ((2,), (4, 3))
  >>> float(hierarchical_l2()(params, jnp.array([0.1, 1.0])))
  0.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from curiojax.tangent.regularizers import group_l2


def hierarchical_params(base_params, num_users: int, *, key: jax.Array | None = None, scale: float = 0.0):
  """``{"shared": θ₀, "users": δ}`` with ``δ`` leaves stacked on a leading axis ``num_users``.

  Args:
    base_params: parameters of the single-user model (become ``θ₀``).
    num_users: ``U``.
    key, scale: optional random initialisation ``δ ~ scale·N(0, 1)`` (default zeros).
  """
  if int(num_users) != num_users or num_users < 1:
    raise ValueError(f"num_users must be a positive integer, got {num_users!r}.")
  num_users = int(num_users)
  zeros = jax.tree.map(lambda p: jnp.zeros((num_users,) + jnp.shape(p), jnp.result_type(p)), base_params)
  if key is not None and scale:
    leaves, treedef = jax.tree.flatten(zeros)
    keys = jax.random.split(key, len(leaves))
    zeros = treedef.unflatten(
      [scale * jax.random.normal(k, z.shape, z.dtype) for k, z in zip(keys, leaves, strict=True)]
    )
  return {"shared": base_params, "users": zeros}


def with_user(user, x) -> jax.Array:
  """Inputs for :func:`hierarchical_model_fn`: the user index as column 0, then ``x`` flattened."""
  x = jnp.asarray(x)
  user = jnp.asarray(user)
  if user.shape != x.shape[:1]:
    raise ValueError(f"user must have shape (n,) matching x's leading axis {x.shape[:1]}, got {user.shape}.")
  if not jnp.issubdtype(user.dtype, jnp.integer):
    raise TypeError(f"user must hold integer user indices, got dtype {user.dtype}.")
  dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.result_type(float)
  return jnp.concatenate([user[:, None].astype(dtype), x.reshape(x.shape[0], -1).astype(dtype)], axis=1)


def split_user(x) -> tuple[jax.Array, jax.Array]:
  """Inverse of :func:`with_user` for flat features: ``(user indices, features)``."""
  return jnp.round(x[:, 0]).astype(jnp.int32), x[:, 1:]


def hierarchical_model_fn(model_fn: Callable, feature_shape: tuple[int, ...] | None = None) -> Callable:
  """``f_h(params, x) = f(θ₀ + δ_{u(x)}, features(x))`` for inputs built by :func:`with_user`.

  Args:
    model_fn: batched single-user model ``model_fn(θ, x)``.
    feature_shape: per-example feature shape to restore (default: flat vectors).

  Returns:
    A batched ``model_fn(params, x)`` over ``{"shared", "users"}`` params.
  """
  if not callable(model_fn):
    raise TypeError(f"model_fn must be callable, got {type(model_fn).__name__}.")

  def fn(params, x):
    user, feats = split_user(x)
    if feature_shape is not None:
      feats = feats.reshape((feats.shape[0],) + tuple(feature_shape))
    shared, users = params["shared"], params["users"]

    def one(u, xi):
      theta = jax.tree.map(lambda s, d: s + d[u], shared, users)
      return model_fn(theta, xi[None])[0]

    return jax.vmap(one)(user, feats)

  return fn


def hierarchical_l2(*, per_user: bool = False, log_strength: bool = False) -> Callable[[Any, jax.Array], jax.Array]:
  """``R = s₀·½‖θ₀‖² + s₁·½Σ_u‖δ_u‖²`` (strength ``(2,)``), or per-user ``s_u`` (``(1 + U,)``).

  Args:
    per_user: one strength per user's deviation; the strength vector is then
      ``(s_shared, s_user_0, …, s_user_{U−1})``.
    log_strength: strengths on the log scale (``e^{s_k}``).
  """

  two_groups = group_l2({"shared": 0, "users": 1}, log_strength=log_strength)

  def regularizer(params, strength):
    strength = jnp.asarray(strength)
    if not per_user:
      if strength.shape != (2,):
        raise ValueError(f"hierarchical strengths must have shape (2,) = (shared, users), got {strength.shape}.")
      return two_groups(params, strength)
    scale = jnp.exp(strength) if log_strength else strength
    shared = 0.5 * sum(jnp.sum(jnp.square(p)) for p in jax.tree.leaves(params["shared"]))
    per = 0.5 * sum(jnp.sum(jnp.square(d).reshape(d.shape[0], -1), axis=1) for d in jax.tree.leaves(params["users"]))
    if scale.shape != (1 + per.shape[0],):
      want = (1 + per.shape[0],)
      raise ValueError(f"per-user strengths must have shape (1 + num_users,) = {want}, got {scale.shape}.")
    return scale[0] * shared + jnp.sum(scale[1:] * per)

  regularizer.requires_nonnegative_strength = not log_strength
  return regularizer


def per_user_scores(scores, user, num_users: int, *, reduce: str = "max") -> np.ndarray:
  """Aggregate per-point scores by user: ``(num_users, *rest)`` with ``"max"``, ``"sum"``, ``"mean"``.

  Users with no points get ``-inf`` (max), ``0`` (sum) or ``nan`` (mean).
  """
  scores, user = np.asarray(scores), np.asarray(user)
  if reduce not in ("max", "sum", "mean"):
    raise ValueError(f"Unknown reduce {reduce!r}; choose 'max', 'sum' or 'mean'.")
  if user.shape != scores.shape[:1]:
    raise ValueError(f"user must have shape {scores.shape[:1]}, got {user.shape}.")
  if user.size and (user.min() < 0 or user.max() >= num_users):
    raise ValueError(f"user indices must lie in [0, {num_users}), got {user.min()}..{user.max()}.")
  out = np.full((num_users,) + scores.shape[1:], -np.inf if reduce == "max" else 0.0)
  (np.maximum if reduce == "max" else np.add).at(out, user, scores)  # one pass, no loop over users
  if reduce == "mean":
    count = np.bincount(user, minlength=num_users).reshape((-1,) + (1,) * (scores.ndim - 1))
    with np.errstate(invalid="ignore"):
      out = out / count  # 0/0 = nan for users with no points
  return out

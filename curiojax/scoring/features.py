"""Sketched per-example gradient features ``φ(x) ≈ S ∇_θ f(θ, x)`` for kernel-based baselines.

BADGE, LCMD, the Laplace variance and EMCM work with the empirical NTK
``k(x, x') = ∇_θf(x)ᵀ∇_θf(x')``, represented by a random projection to ``dim`` (512)
features with ``E[φ(x)ᵀφ(x')] = k(x, x')`` (Holzmüller et al., JMLR 2023, "grad → rp(512)").

Two paths (our choice, documented):

- **Factored (fast, default when available).** For a dense layer ``z_l = u_l W_l`` the
  per-example gradient is the outer product ``u_l ⊗ δ_l`` (``u_l``: the layer's input with
  its scale and a bias column, ``δ_l = ∂f/∂z_l``). Its sketch is the tensor sketch
  ``(u_l G_l) ⊙ (δ_l H_l) / √dim`` with Gaussian ``G_l, H_l``, summed over layers, as in
  ``bmdal_reg`` (ProductFeatureMap.sketch). Cost ``O(n·(fan_in + fan_out)·dim)`` per layer;
  no per-example gradient is formed. Used when ``model_fn`` has a
  ``gradient_factors(params, x) -> [(u_l, δ_l)]`` method (e.g.
  :class:`curiojax.active.models.NTKMLP`).
- **Generic.** ``vmap(grad)`` over chunks of ``chunk_size`` points, each leaf projected by
  its own Gaussian matrix ``(leaf_size, dim)/√dim``. Memory ``O(chunk·d + d·dim)``: fine for
  models up to ~10⁵ parameters, slow beyond.

Example:
  >>> import jax, jax.numpy as jnp
  >>> f = lambda p, x: x @ p["w"]
  >>> phi = gradient_sketch(f, {"w": jnp.ones(3)}, jnp.eye(3), jax.random.key(0), dim=64)
  >>> phi.shape
  (3, 64)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def _check_x(x) -> jax.Array:
  x = jnp.asarray(x)
  if x.ndim < 2 or x.shape[0] == 0:
    raise ValueError(f"x must be a non-empty batch of inputs (n, ...), got shape {x.shape}.")
  return x


def _factored_sketch(factors, key, dim):
  out = 0.0
  for i, (u, d) in enumerate(factors):
    kg, kh = jax.random.split(jax.random.fold_in(key, i))
    g = jax.random.normal(kg, (u.shape[1], dim), u.dtype)
    h = jax.random.normal(kh, (d.shape[1], dim), d.dtype)
    out = out + (u @ g) * (d @ h)
  return out / math.sqrt(dim)


def _generic_sketch(model_fn, params, x, key, dim):
  single = lambda p, xi: model_fn(p, xi[None])[0]
  grads = jax.vmap(jax.grad(single), in_axes=(None, 0))(params, x)
  leaves = jax.tree.leaves(grads)
  out = 0.0
  for i, g in enumerate(leaves):
    g = g.reshape(g.shape[0], -1)
    proj = jax.random.normal(jax.random.fold_in(key, i), (g.shape[1], dim), g.dtype)
    out = out + g @ proj
  return out / math.sqrt(dim)


def gradient_sketch(model_fn: Callable, params, x, key, *, dim: int = 512, chunk_size: int = 2048) -> jax.Array:
  """Sketched gradient features ``φ(x)`` of shape ``(n, dim)`` (module docstring).

  Args:
    model_fn: batched scalar-output ``model_fn(params, x) -> (n,)``; if it has a
      ``gradient_factors`` method the factored path is used.
    params: parameters at which to take gradients.
    x: inputs ``(n, ...)``.
    key: PRNG key of the projection (use the same key for pool and labelled points).
    dim: sketch dimension.
    chunk_size: points per chunk (bounds memory).

  Returns:
    ``φ`` with ``E[φφᵀ] = ∇fᵀ∇f`` (the empirical NTK).
  """
  x = _check_x(x)
  if dim < 1:
    raise ValueError(f"dim must be >= 1, got {dim}.")
  return _sketch_jit(model_fn, params, x, key, dim, chunk_size)


def _sketch_impl(model_fn, params, x, key, dim, chunk_size):
  n = x.shape[0]
  chunk = min(chunk_size, n)
  pad = (-n) % chunk
  xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
  if hasattr(model_fn, "gradient_factors"):
    fn = lambda xc: _factored_sketch(model_fn.gradient_factors(params, xc), key, dim)
  else:
    fn = lambda xc: _generic_sketch(model_fn, params, xc, key, dim)
  out = jax.lax.map(fn, xp.reshape(-1, chunk, *x.shape[1:]))
  return out.reshape(-1, dim)[:n]


_sketch_jit = jax.jit(_sketch_impl, static_argnums=(0, 4, 5))


def gradient_kernel(model_fn: Callable, params, x1, x2) -> np.ndarray:
  """Exact empirical NTK ``∇f(x1)ᵀ∇f(x2)`` (small models; an oracle for tests)."""
  single = lambda p, xi: model_fn(p, xi[None])[0]
  flat = lambda x: jnp.concatenate(
    [
      g.reshape(g.shape[0], -1)
      for g in jax.tree.leaves(jax.vmap(jax.grad(single), in_axes=(None, 0))(params, jnp.asarray(x)))
    ],
    axis=1,
  )
  return np.asarray(flat(x1) @ flat(x2).T)

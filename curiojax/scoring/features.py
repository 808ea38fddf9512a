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
  no per-example gradient is formed. The projections are drawn once per call, outside the
  loop over chunks. Used when ``model_fn`` has a
  ``gradient_factors(params, x, dtype) -> [(u_l, δ_l)]`` method (e.g.
  :class:`curiojax.active.models.NTKMLP`; ``dtype`` is its products' input type). With a
  ``factor_matrices(v) -> [M_l]`` method as well, :func:`sketch_and_jvp` takes ``J_x v`` from
  the same factors.
- **Generic.** ``vmap(grad)`` over chunks of ``chunk_size`` points, each leaf projected by
  its own Gaussian matrix ``(leaf_size, dim)/√dim``, drawn once per call. Memory ``O(chunk·d + d·dim)``: fine for
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

from curiojax.padding import pad_rows, round_up
from curiojax.scoring.attached import jit_with_model


def _check_x(x) -> jax.Array:
  x = jnp.asarray(x)
  if x.ndim < 2 or x.shape[0] == 0:
    raise ValueError(f"x must be a non-empty batch of inputs (n, ...), got shape {x.shape}.")
  return x


COMPUTE_DTYPES = ("float32", "bfloat16")


def _mm(a, b, dtype):
  """``a @ b`` with inputs cast to ``dtype`` and float32 accumulation."""
  return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def _projections(key, shapes, dim, dtype):
  """Gaussian ``(G_l, H_l)`` for each layer's ``(u_l, δ_l)`` widths, drawn once per call."""
  out = []
  for i, (n_u, n_d) in enumerate(shapes):
    kg, kh = jax.random.split(jax.random.fold_in(key, i))
    out.append((jax.random.normal(kg, (n_u, dim)).astype(dtype), jax.random.normal(kh, (n_d, dim)).astype(dtype)))
  return out


def _factored_chunk(model_fn, params, xc, projections, matrices, dtype):
  """Sketch and ``J_x v`` of one chunk from the gradient factors (one forward and backward pass).

  With directions the factors are float32, so that ``J_x v`` is; only the projections use ``dtype``.
  """
  sketch, jvp = 0.0, 0.0
  factor_dtype = dtype if matrices[0] is None else jnp.float32
  factors = model_fn.gradient_factors(params, xc, factor_dtype)
  for (u, d), (g, h), m in zip(factors, projections, matrices, strict=True):
    sketch = sketch + _mm(u, g, dtype) * _mm(d, h, dtype)
    if m is not None:  # m: (k, fan_in + 1, fan_out); J_x v_k = Σ_l rowsum((u M_lk) ⊙ δ_l), in float32
      k, n_u, n_d = m.shape
      um = (u @ jnp.moveaxis(m, 0, 1).reshape(n_u, k * n_d)).reshape(-1, k, n_d)
      jvp = jvp + jnp.sum(um * d[:, None, :], axis=-1)
  return sketch, jvp


def _jvp_chunk(model_fn, params, xc, directions):
  """``J_x v_k`` of one chunk by forward mode, one column per stacked direction."""
  along = lambda v: jax.jvp(lambda p: model_fn(p, xc).reshape(-1), (params,), (v,))[1]
  return jax.vmap(along, out_axes=1)(directions)


def _leaf_projections(key, params, dim):
  """One Gaussian ``(leaf size, dim)`` per parameter leaf (the generic path's), drawn once per call."""
  return [
    jax.random.normal(jax.random.fold_in(key, i), (p.size, dim), p.dtype) for i, p in enumerate(jax.tree.leaves(params))
  ]


def _generic_chunk(model_fn, params, xc, projections, directions):
  single = lambda p, xi: model_fn(p, xi[None])[0]
  grads = jax.vmap(jax.grad(single), in_axes=(None, 0))(params, xc)
  sketch = 0.0
  for g, projection in zip(jax.tree.leaves(grads), projections, strict=True):
    sketch = sketch + g.reshape(g.shape[0], -1) @ projection
  return sketch, (0.0 if directions is None else _jvp_chunk(model_fn, params, xc, directions))


def _sketch_impl(model_fn, params, x, key, directions, dim, chunk_size, compute_dtype):
  n = x.shape[0]
  chunk = min(chunk_size, n)
  xp = pad_rows(x, round_up(n, chunk))  # whole chunks; x itself comes in at the caller's padded size
  dtype = jnp.dtype(compute_dtype)
  if hasattr(model_fn, "gradient_factors"):
    shapes = [(u.shape[1], d.shape[1]) for u, d in jax.eval_shape(model_fn.gradient_factors, params, x[:1])]
    projections = _projections(key, shapes, dim, dtype)  # outside the chunk loop: drawn once
    fused = directions is not None and hasattr(model_fn, "factor_matrices")
    matrices = jax.vmap(model_fn.factor_matrices)(directions) if fused else [None] * len(shapes)

    def fn(xc):
      sketch, jvp = _factored_chunk(model_fn, params, xc, projections, matrices, dtype)
      if directions is not None and not fused:  # factors but no factor_matrices: forward mode
        jvp = _jvp_chunk(model_fn, params, xc, directions)
      return sketch, jvp

  else:
    projections = _leaf_projections(key, params, dim)  # outside the chunk loop: drawn once
    fn = lambda xc: _generic_chunk(model_fn, params, xc, projections, directions)
  sketch, jvp = jax.lax.map(fn, xp.reshape(-1, chunk, *x.shape[1:]))
  sketch = sketch.reshape(-1, dim)[:n] / math.sqrt(dim)
  return sketch, (None if directions is None else jvp.reshape(-1, jvp.shape[-1])[:n])


def _sketch_jit(model_fn, *args):
  """:func:`_sketch_impl` jitted for ``model_fn`` (attached to it weakly: no global cache keeps it)."""
  return jit_with_model(_sketch_impl, model_fn, static_argnums=(4, 5, 6))(*args)


def check_sketch_options(dim, chunk_size, compute_dtype) -> tuple[int, int, str]:
  """``(dim, chunk_size, compute_dtype)`` checked: integers >= 1 and a known dtype, else ``ValueError``."""
  for name, value in (("dim", dim), ("chunk_size", chunk_size)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
  if compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f"Unknown compute_dtype {compute_dtype!r}; choose one of {COMPUTE_DTYPES}.")
  return int(dim), int(chunk_size), compute_dtype


def gradient_sketch(
  model_fn: Callable, params, x, key, *, dim: int = 512, chunk_size: int = 2048, compute_dtype: str = "float32"
) -> jax.Array:
  """Sketched gradient features ``φ(x)`` of shape ``(n, dim)`` (module docstring).

  Args:
    model_fn: batched scalar-output ``model_fn(params, x) -> (n,)``; if it has a
      ``gradient_factors`` method the factored path is used.
    params: parameters at which to take gradients.
    x: inputs ``(n, ...)``.
    key: PRNG key of the projection (use the same key for pool and labelled points).
    dim: sketch dimension.
    chunk_size: points per chunk (bounds memory).
    compute_dtype: the factored path's matrix-product inputs, ``"float32"`` or ``"bfloat16"``
      (float32 accumulation; the rounding, about 0.5% of ``φ``, is far below the sketch's own
      ``1/√dim`` error); faster where the hardware has bfloat16 units
      (``benchmarks/selection/main.py`` measures it).

  Returns:
    ``φ`` with ``E[φφᵀ] = ∇fᵀ∇f`` (the empirical NTK).
  """
  options = check_sketch_options(dim, chunk_size, compute_dtype)
  return _sketch_jit(model_fn, params, _check_x(x), key, None, *options)[0]


def sketch_and_jvp(
  model_fn: Callable,
  params,
  x,
  key,
  directions,
  *,
  dim: int = 512,
  chunk_size: int = 2048,
  compute_dtype: str = "float32",
) -> tuple[jax.Array, jax.Array]:
  """``φ(x)`` and ``J_x v_k = ∇_θf(x)ᵀv_k`` for ``k`` directions, in one pass over ``x``.

  A selection step needs both the features and the derivative of the prediction along the
  tangent (or another direction); for a model with ``gradient_factors`` and
  ``factor_matrices`` (``curiojax.active.models.NTKMLP``) the JVPs come from the same
  factors, ``Σ_l rowsum((u_l M_l) ⊙ δ_l)``, at the cost of one product per layer and in float32
  whatever ``compute_dtype``. Other models take ``jax.jvp`` per chunk.

  Args:
    model_fn, params, x, key, dim, chunk_size, compute_dtype: as :func:`gradient_sketch`.
    directions: parameter-shaped pytree whose leaves carry a leading axis ``k``.

  Returns:
    ``(φ, J)`` of shapes ``(n, dim)`` and ``(n, k)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda p, x: x @ p["w"]
    >>> phi, jv = sketch_and_jvp(f, {"w": jnp.ones(3)}, jnp.eye(3), jax.random.key(0), {"w": jnp.ones((1, 3))}, dim=8)
    >>> phi.shape, jv[:, 0].tolist()
    ((3, 8), [1.0, 1.0, 1.0])
  """
  options = check_sketch_options(dim, chunk_size, compute_dtype)
  return _sketch_jit(model_fn, params, _check_x(x), key, directions, *options)


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

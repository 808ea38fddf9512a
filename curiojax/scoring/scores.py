"""Curiosity scores over a pool: every heuristic from one forward-mode JVP along the tangent.

With the regularity tangent ``τ = dθ*/ds`` (``method.md``), the labelled curiosity of a
point ``z = (x, y)`` is

    c(z) = ∇_θℓ(z, θ*)ᵀ τ = ∇_fℓ(f(θ*, x), y) · (J_x τ),

because ``∇_θℓ = J_xᵀ ∇_fℓ``. ``J_x τ`` for a whole batch of ``x`` is ONE JVP of the model
along ``τ`` (``jax.jvp``), and ``∇_fℓ`` lives in output space, so no per-example gradient
is ever formed. The heuristics (``HEURISTICS``):

- ``"jvp"``: ``J_x τ = d f(θ*(s), x) / ds``, how fast the prediction at ``x`` moves when the
  regularizer is tightened; shape ``(n, *out)`` (``(n, k, *out)`` for ``k`` tangents).
- ``"signed"``: ``c(z)``; needs labels. ``c > 0``: ``z`` pulls the model toward more
  complexity. Use for ranking labelled points (data valuation, hypergradients: the sum of
  ``c`` over a validation set is ``dL_val/ds``).
- ``"squared"``: ``c(z)²``; ``"magnitude"``: ``|c(z)|`` (labelled influence, sign dropped).
- ``"expected_squared"`` (default, unlabelled active learning): ``E_y[c²]
  = (J_xτ)ᵀ E[∇_fℓ ∇_fℓᵀ] (J_xτ)`` under the model's predictive distribution of ``y``:
    * squared error, ``y ~ f + σε``: ``σ²(x) ‖J_x τ‖²`` (``σ²`` a scalar, a per-output
      vector, or a function ``σ²(x)``; default 1, which ranks the same as any scalar);
    * ``gaussian_nll`` (the model predicts ``(μ, log v)``): the Fisher information,
      ``(J_xτ)_μ² / v + ½ (J_xτ)_{log v}²``; ``noise_variance`` is not used;
    * ``gradient_covariance=M`` given: ``(J_xτ)ᵀ M(f) (J_xτ)`` with ``M(f)`` the ``p×p``
      matrix ``E[∇_fℓ ∇_fℓᵀ]`` for one prediction (``p`` = outputs per example);
    * any other loss: ``y ~ N(f, σ²)`` per output and Gauss-Hermite quadrature in output
      space, assuming the loss is a sum over outputs (exact for squared error, an
      approximation for Huber).

Several tangents (leaves with a leading axis ``k``, from a vector of strengths) are one
``vmap`` of the JVP over ``k``: one pass, scores ``(n, k)``.

The formulas are the pure functions of :mod:`curiojax.scoring.heuristics`; the closed forms
are chosen by what the loss declares (``loss.closed_form``), not by which function it is.
A :class:`Scorer` only checks its inputs, pads, chunks and shards. Pools are padded to the
package's size class (``curiojax.padding.size_class`` per device, in whole chunks) with
a validity mask (the caller's ``mask`` excluded too) and scored in fixed chunks by a
``lax.scan``: one compilation serves every pool size in a class, and memory is set by the
chunk, not the pool. The compiled function lives on the scorer and dies with it. With a ``mesh`` the pool is sharded
``NamedSharding(mesh, P("data"))`` and each device scores its own rows (``shard_map``),
params and tangent replicated.

Example:
  >>> import jax, jax.numpy as jnp
  >>> model_fn = lambda p, x: jnp.tanh(x @ p["w"])
  >>> params = {"w": jnp.ones((3, 2))}; tangent = {"w": -0.1 * jnp.ones((3, 2))}
  >>> x = jax.random.normal(jax.random.key(0), (1000, 3))
  >>> curiosity_scores(model_fn, params, tangent, x).shape
  (1000,)
  >>> scorer = make_scorer(model_fn, heuristic="signed", chunk_size=256)
  >>> scorer(params, tangent, x, jnp.zeros((1000, 2))).shape
  (1000,)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from curiojax.padding import next_pow2, pad_rows, round_up, size_class
from curiojax.scoring.attached import attached
from curiojax.scoring.heuristics import HEURISTIC_FNS, HEURISTICS, LABELLED_HEURISTICS, hermite_rule, jvp_along
from curiojax.tangent.losses import Loss, check_prediction_shape, closed_form, get_loss
from curiojax.tangent.state import align_tangent

__all__ = ["HEURISTICS", "LABELLED_HEURISTICS", "Scorer", "bucket_size", "curiosity_scores", "make_scorer"]

NONFINITE = ("raise", "exclude")
_ROWS = {  # rows per device for m = ⌈n/D⌉ rows and a chunk c: all on top of curiojax.padding
  "geometric": lambda m, c: size_class(m, multiple=c),  # the package's size class (≤ 25% padding)
  "pow2": lambda m, c: c * next_pow2(-(-m // c)),  # a power of two of chunks (≤ 2× padding)
  "chunk": lambda m, c: round_up(m, c),  # whole chunks (one compilation per pool size in chunks)
}
BUCKETS = tuple(_ROWS)


def bucket_size(n: int, chunk_size: int, num_devices: int = 1, bucket: str = "geometric") -> tuple[int, int]:
  """Padded pool size and chunk for ``n`` points: ``(padded_n, chunk)``.

  Per device ``m = ⌈n/D⌉`` rows in chunks of ``c = min(chunk_size, size_class(m))``
  (``next_pow2(m)`` for ``"pow2"``), padded to ``size_class(m, multiple=c)`` (``"geometric"``,
  the default: four sizes per doubling, at most 25% padding), to ``c·2^j`` (``"pow2"``) or to
  whole chunks (``"chunk"``). Idempotent: a pool already padded to its size is not padded again.
  """
  per_device = -(-n // num_devices)
  chunk = min(chunk_size, next_pow2(per_device) if bucket == "pow2" else size_class(per_device))
  return num_devices * _ROWS[bucket](per_device, chunk), chunk


class Scorer:
  """A reusable, jitted pool scorer: ``scorer(params, tangent, x, y=None, mask=None) -> scores``.

  Built by :func:`make_scorer`. It checks its inputs at the boundary, pads, chunks and
  shards, and calls the pure heuristics of :mod:`curiojax.scoring.heuristics`. The jitted
  function is created once in ``__init__`` and held by the scorer only (no module-level
  cache): pools of one padded size reuse one compilation, and dropping the scorer frees
  it and ``model_fn``. ``trace_count`` counts how often it was traced (compiled).
  """

  def __init__(
    self,
    model_fn: Callable,
    *,
    heuristic: str = "expected_squared",
    loss: str | Loss = "squared_error",
    noise_variance: float | jax.Array | Callable | None = None,
    gradient_covariance: Callable | None = None,
    chunk_size: int = 4096,
    bucket: str = "geometric",
    mesh: jax.sharding.Mesh | None = None,
    nonfinite: str = "raise",
    quadrature_points: int = 32,
  ):
    if not callable(model_fn):
      raise TypeError(f"model_fn must be callable model_fn(params, x), got {type(model_fn).__name__}.")
    if not isinstance(heuristic, str):
      raise TypeError(f"heuristic must be a string, one of {HEURISTICS}; got {type(heuristic).__name__}.")
    if heuristic not in HEURISTICS:
      raise ValueError(f"Unknown heuristic {heuristic!r}; choose one of {HEURISTICS}.")
    if not isinstance(chunk_size, (int, np.integer)) or isinstance(chunk_size, bool) or chunk_size < 1:
      raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    if bucket not in BUCKETS:
      raise ValueError(f"Unknown bucket {bucket!r}; choose one of {BUCKETS}.")
    _check_nonfinite(nonfinite)
    if gradient_covariance is not None and not callable(gradient_covariance):
      raise TypeError("gradient_covariance must be a callable M(prediction) -> (p, p) array.")
    if mesh is not None and "data" not in mesh.axis_names:
      raise ValueError(f"mesh must have a 'data' axis (curiojax.data_mesh()), got axes {mesh.axis_names}.")
    self.model_fn = model_fn
    self.heuristic = heuristic
    self.loss = get_loss(loss)
    self.noise_fn = noise_variance if callable(noise_variance) else None
    self.noise_variance = None if callable(noise_variance) else noise_variance
    self.gradient_covariance = gradient_covariance
    self.chunk_size = int(chunk_size)
    self.bucket = bucket
    self.mesh = mesh
    self.nonfinite = nonfinite
    self.quadrature = hermite_rule(quadrature_points)
    self.trace_count = 0
    self._checked: dict = {}
    self._feature_shape = None
    self._jitted = jax.jit(self._padded_scores, static_argnames=("k",))

  # -- the traced computation: pad, chunk, shard; the formulas are in heuristics.py -------

  def _padded_scores(self, params, tangent, x, y, valid, sigma2, k):
    """Scores of a padded pool, plus counts of non-finite inputs and outputs.

    ``[bad x rows, bad y rows, finite rows with a non-finite score (overflow), bad tangent
    entries, bad parameter entries]``.
    """
    self.trace_count += 1  # Python side effect: runs once per trace (compilation).
    nonfinite_entries = lambda tree: sum(
      jnp.sum(~jnp.isfinite(t)) for t in jax.tree.leaves(tree) if jnp.issubdtype(t.dtype, jnp.inexact)
    )
    global_counts = jnp.stack([nonfinite_entries(tangent), nonfinite_entries(params)]).astype(jnp.int32)
    if self.mesh is None:
      scores, counts = self._local_scores(params, tangent, x, y, valid, sigma2, k)
    else:
      spec = P("data")
      fn = jax.shard_map(
        functools.partial(self._local_scores, k=k, axis_name="data"),
        mesh=self.mesh,
        in_specs=(P(), P(), spec, spec, spec, P()),
        out_specs=(spec, P()),
      )
      scores, counts = fn(params, tangent, x, y, valid, sigma2)
    return scores, jnp.concatenate([counts, global_counts])

  def _local_scores(self, params, tangent, x, y, valid, sigma2, k, axis_name=None):
    n = x.shape[0]
    chunk = min(self.chunk_size, n)
    m = n // chunk
    split = lambda a: None if a is None else a.reshape((m, chunk) + a.shape[1:])

    def body(_, inputs):
      xc, yc, vc = inputs

      def compute(_):
        scores, bad_x, bad_y, bad_s = self._chunk_scores(params, tangent, xc, yc, vc, sigma2, k)
        return scores, jnp.stack([bad_x, bad_y, bad_s])

      # Chunks made only of padding (or masked rows) skip the model: what they would give anyway.
      shapes = jax.eval_shape(compute, None)
      fill = jnp.nan if self.heuristic == "jvp" else -jnp.inf

      def skip(_):
        # Derived from the chunk's mask so that, under shard_map, both branches vary alike.
        zero = jnp.sum(vc, dtype=shapes[1].dtype) * 0
        scores = jnp.broadcast_to((zero + fill).astype(shapes[0].dtype), shapes[0].shape)
        return scores, jnp.broadcast_to(zero, shapes[1].shape)

      return None, jax.lax.cond(jnp.any(vc), compute, skip, None)

    _, (scores, counts) = jax.lax.scan(body, None, (split(x), split(y), split(valid)))
    counts = jnp.sum(counts, axis=0)
    if axis_name is not None:
      counts = jax.lax.psum(counts, axis_name)
    return scores.reshape((n,) + scores.shape[2:]), counts

  def _chunk_scores(self, params, tangent, x, y, valid, sigma2, k):
    x_ok = _finite_rows(x)
    ok = valid & x_ok
    bad_x = jnp.sum(valid & ~x_ok, dtype=jnp.int32)
    bad_y = jnp.zeros((), jnp.int32)
    if y is not None:
      y_ok = _finite_rows(y)
      bad_y = jnp.sum(valid & ~y_ok, dtype=jnp.int32)
      ok = ok & y_ok
      y = jnp.where(_expand(ok, y), y, jnp.zeros_like(y))
    x = jnp.where(_expand(ok, x), x, jnp.zeros_like(x))  # excluded rows never touch the model
    preds, jt = jvp_along(self.model_fn, params, tangent, x, k)  # jt: (c, k', *out)
    s = HEURISTIC_FNS[self.heuristic](
      jt,
      preds,
      loss=self.loss,
      y=y,
      sigma2=self._sigma2(x, sigma2, preds) if self.heuristic == "expected_squared" else None,
      gradient_covariance=self.gradient_covariance,
      quadrature=self.quadrature,
    )
    overflow = ok & ~_finite_rows(s)  # finite inputs whose prediction or score overflowed
    fill = jnp.nan if self.heuristic == "jvp" else -jnp.inf
    s = jnp.where(_expand(ok & ~overflow, s), s, fill)
    return (s if k is not None else s[:, 0]), bad_x, bad_y, jnp.sum(overflow, dtype=jnp.int32)

  def _sigma2(self, x, sigma2, like):
    """``σ²`` broadcast against ``like`` (shape ``(c, *out)``)."""
    if self.noise_fn is not None:
      s2 = jnp.asarray(self.noise_fn(x), like.dtype)
      if s2.ndim == 1:
        s2 = s2.reshape((-1,) + (1,) * (like.ndim - 1))
      return jnp.broadcast_to(s2, like.shape)
    return jnp.broadcast_to(sigma2.astype(like.dtype), like.shape)

  # -- the boundary -----------------------------------------------------------------------

  def __call__(self, params, tangent, x, y=None, *, mask=None, noise_variance=None, nonfinite: str | None = None):
    """Scores for every row of the pool ``x``.

    Args:
      params: trained parameters.
      tangent: ``τ`` shaped like params, or leaves ``(k, *shape)`` for ``k`` tangents.
      x: pool, ``(n, *features)`` (host or device array). A caller that pads its pool itself
        (to :meth:`padded_size`, with ``mask`` on the padding) is not padded again.
      y: labels ``(n, ...)``, needed by ``"signed"``, ``"squared"``, ``"magnitude"``
        (ignored by the unlabelled heuristics).
      mask: optional boolean ``(n,)``, ``True`` = excluded (padding, already labelled): those
        rows never reach the model, are not checked, and score ``-inf`` (``NaN`` for ``"jvp"``).
      noise_variance: ``σ²`` for this call (scalar or per-output); overrides the scorer's.
      nonfinite: ``"raise"`` (default from the scorer): NaN/Inf in the pool, labels,
        parameters or tangent, or a finite row whose score overflows, raise ``ValueError``
        saying which; needs concrete inputs. ``"exclude"`` (traceable, for use inside
        ``jax.jit``): such rows get score ``-inf`` (``NaN`` for ``"jvp"``), never selected.

    Returns:
      ``(n,)`` scores for one tangent, ``(n, k)`` for ``k``; ``"jvp"`` gives ``(n, *out)``
      / ``(n, k, *out)``. A device array (sharded over the mesh if there is one).
    """
    nonfinite = _check_nonfinite(self.nonfinite if nonfinite is None else nonfinite)
    params, tangent, k = align_tangent(params, tangent)
    x, y, valid = self._check_pool(x, y, mask)
    sigma2 = self._check_sigma2(noise_variance, self._check_shapes(params, x, y))
    n = x.shape[0]
    padded = self.padded_size(n)
    x, y, valid = pad_rows(x, padded), (None if y is None else pad_rows(y, padded)), pad_rows(valid, padded, False)
    if self.mesh is not None:
      pool, repl = NamedSharding(self.mesh, P("data")), NamedSharding(self.mesh, P())
      x, y, valid = jax.device_put((x, y, valid), pool)
      params, tangent, sigma2 = jax.device_put((params, tangent, sigma2), repl)
    scores, counts = self._jitted(params, tangent, x, y, valid, sigma2, k=k)
    if nonfinite == "raise":
      _raise_nonfinite(counts, n)
    return scores if padded == n else scores[:n]

  def padded_size(self, n: int) -> int:
    """The padded pool size for ``n`` rows (``bucket_size`` over the scorer's devices)."""
    return bucket_size(n, self.chunk_size, 1 if self.mesh is None else self.mesh.devices.size, self.bucket)[0]

  def lower(self, params, tangent, x, y=None):
    """The jitted scorer lowered for a pool like ``x`` (an array or ``jax.ShapeDtypeStruct``).

    ``scorer.lower(...).compile().memory_analysis()`` shows the scratch memory, which
    depends on the chunk size, not on the pool size.
    """
    padded = self.padded_size(x.shape[0])
    pad = lambda a: None if a is None else jax.ShapeDtypeStruct((padded,) + tuple(a.shape[1:]), a.dtype)
    y = y if self.heuristic in LABELLED_HEURISTICS else None
    params, tangent, k = align_tangent(params, tangent)
    valid = jax.ShapeDtypeStruct((padded,), bool)
    return self._jitted.lower(params, tangent, pad(x), pad(y), valid, self._check_sigma2(None, None), k=k)

  def _check_pool(self, x, y, mask):
    """``(x, y, valid)`` checked: a non-empty pool, one label per row when labels are needed."""
    x = _as_array(x, "x (the pool)")
    if x.ndim < 1 or x.shape[0] == 0:
      raise ValueError(
        f"The pool x is empty (shape {x.shape}); pass at least one candidate point, shape (n, *features)."
      )
    n = x.shape[0]
    if self.heuristic not in LABELLED_HEURISTICS:
      y = None
    elif y is None:
      raise ValueError(
        f"heuristic {self.heuristic!r} needs labels y; for an unlabelled pool use heuristic='expected_squared'."
      )
    else:
      y = _as_array(y, "y (the labels)")
      if y.ndim < 1 or y.shape[0] != n:
        raise ValueError(
          f"y has {y.shape[0] if y.ndim else 'no'} rows (shape {y.shape}) but the pool x has {n}; "
          "give one label per pool row."
        )
    if mask is None:
      return x, y, np.ones(n, bool)
    mask = mask if isinstance(mask, jax.Array) else np.asarray(mask)
    if mask.dtype != bool or mask.shape != (n,):
      raise ValueError(
        f"mask must be boolean of shape ({n},) like the pool (True = excluded), got {mask.dtype} {mask.shape}."
      )
    return x, y, ~mask

  def _check_sigma2(self, noise_variance, out_shape):
    """``σ²`` for this call as an array: finite, ``≥ 0``, broadcasting to one prediction ``out_shape``."""
    if callable(noise_variance):
      raise TypeError(
        "A noise-variance function σ²(x) is fixed when the scorer is built: make_scorer(..., noise_variance=fn)."
      )
    value = self.noise_variance if noise_variance is None else noise_variance
    value = 1.0 if value is None else value
    arr = value if isinstance(value, jax.core.Tracer) else np.asarray(jax.device_get(value), dtype=np.float32)
    if not isinstance(arr, jax.core.Tracer) and (not np.all(np.isfinite(arr)) or np.any(arr < 0)):
      raise ValueError(f"noise_variance must be finite and >= 0, got {value!r}.")
    if out_shape is not None and arr.ndim and not _broadcasts(arr.shape, out_shape):
      raise ValueError(
        f"noise_variance has shape {arr.shape}; give a scalar or one value per model output (shape "
        f"{out_shape}). A per-point σ²(x) is a function: make_scorer(..., noise_variance=fn)."
      )
    return jnp.asarray(arr)

  def _check_shapes(self, params, x, y):
    """Trace the model (and loss) on one chunk's shapes; say clearly what does not fit."""
    key = (
      x.shape[1:],
      str(x.dtype),
      None if y is None else (y.shape[1:], str(y.dtype)),
      jax.tree.structure(params),
      tuple(tuple(np.shape(leaf)) for leaf in jax.tree.leaves(params)),
    )
    if key in self._checked:
      return self._checked[key]
    struct = lambda a: jax.ShapeDtypeStruct((2,) + a.shape[1:], a.dtype)
    try:
      out = jax.eval_shape(self.model_fn, params, struct(x))
    except Exception as err:  # noqa: BLE001 - re-raised with context
      expected = (
        "" if self._feature_shape is None else f" (this scorer last scored features of shape {self._feature_shape})"
      )
      raise ValueError(
        f"model_fn cannot be applied to pool rows of feature shape {x.shape[1:]} (dtype {x.dtype}){expected}: "
        f"{type(err).__name__}: {err}. The pool must be (n, *features) with the features the model was trained on."
      ) from err
    if not hasattr(out, "shape") or out.shape[:1] != (2,):
      raise ValueError(
        f"model_fn must return one prediction array with a leading batch axis; for a batch of 2 it returned {out}."
      )
    gaussian = closed_form(self.loss) == "gaussian_nll"
    if gaussian and self.heuristic == "expected_squared" and out.shape[-1:] != (2,):
      raise ValueError(
        f"gaussian_nll needs predictions (..., 2) = (mean, log_variance); the model returns {out.shape[1:]} per row."
      )
    if y is not None:
      try:
        jax.eval_shape(jax.vmap(jax.grad(self.loss)), out, struct(y))
      except Exception as err:  # noqa: BLE001
        raise ValueError(
          f"labels of shape {y.shape[1:]} per row do not fit the loss for predictions of shape {out.shape[1:]}: {err}"
        ) from err
      check_prediction_shape(self.loss, (x.shape[0], *out.shape[1:]), (x.shape[0], *y.shape[1:]))
    self._checked[key] = tuple(out.shape[1:])
    self._feature_shape = x.shape[1:]
    return self._checked[key]


def _raise_nonfinite(counts, n: int) -> None:
  """``ValueError`` naming what is non-finite, from the jitted scorer's counts (a host check)."""
  if isinstance(counts, jax.core.Tracer):
    raise ValueError(
      "curiosity_scores(..., nonfinite='raise') checks its inputs on the host, which is not possible "
      "inside jax.jit / vmap / grad; pass nonfinite='exclude' there (traceable: non-finite rows get "
      "score -inf) and check the inputs outside."
    )
  bad_x, bad_y, bad_s, bad_t, bad_p = (int(c) for c in np.asarray(counts))
  if bad_p:
    raise ValueError(
      f"The parameters have {bad_p} non-finite entries: the model itself is broken (training "
      "diverged?); every score would be NaN. Retrain, or check the parameters you passed."
    )
  if bad_t:
    raise ValueError(f"The tangent has {bad_t} non-finite entries (it diverged?); see curiojax.check_tangent.")
  if bad_s:
    raise ValueError(
      f"{bad_s} pool rows with finite features (of {n}) give a non-finite prediction or score: the "
      "model overflows there (inputs far outside the training range? scale them). Pass "
      "nonfinite='exclude' to give those rows score -inf (never selected)."
    )
  if bad_x or bad_y:
    parts = (
      f"{bad_x} pool rows with NaN/Inf features" if bad_x else "",
      f"{bad_y} labels with NaN/Inf" if bad_y else "",
    )
    raise ValueError(
      f"{', '.join(p for p in parts if p)} (of {n} points). Clean them, or pass nonfinite='exclude' to give "
      "those rows score -inf (never selected)."
    )


def _finite_rows(a):
  return jnp.all(jnp.isfinite(a).reshape(a.shape[0], -1), axis=1)


def _broadcasts(shape, target) -> bool:
  try:
    return np.broadcast_shapes(tuple(shape), tuple(target)) == tuple(target)
  except ValueError:
    return False


def _expand(mask, like):
  return mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim))


def _check_nonfinite(nonfinite):
  if nonfinite not in NONFINITE:
    raise ValueError(f"nonfinite must be one of {NONFINITE}, got {nonfinite!r}.")
  return nonfinite


def _as_array(a, name):
  if isinstance(a, jax.Array):
    arr = a
  else:
    try:
      arr = np.asarray(a)
    except Exception as err:  # noqa: BLE001
      raise TypeError(f"{name} must be an array, got {type(a).__name__}.") from err
  if not (jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == bool):
    raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}.")
  return arr


def make_scorer(model_fn: Callable, *, heuristic: str = "expected_squared", **options) -> Scorer:
  """A jitted pool scorer built once: ``scorer(params, tangent, x, y=None) -> scores``.

  Args:
    model_fn: batched ``model_fn(params, x) -> predictions`` (NNX modules via
      :func:`curiojax.nnx_model_fn`).
    heuristic: one of ``HEURISTICS`` (see the module docstring for the formulas).
    loss: per-example loss (name in ``curiojax.LOSSES`` or callable), default squared error.
    noise_variance: ``σ²`` for ``"expected_squared"``: scalar / per-output array (may be
      overridden per call), or a function ``σ²(x)`` of a batch returning ``(c,)`` or
      ``(c, *out)``. Default 1 (ranking-equivalent for any scalar; pass
      :func:`noise_variance` for calibrated values).
    gradient_covariance: ``M(prediction) -> (p, p)``, ``E[∇_fℓ∇_fℓᵀ]`` for other losses.
    chunk_size: rows scored at once per device; memory scales with it, not with the pool.
    bucket: ``"geometric"`` (default; the package's ``curiojax.padding.size_class`` per
      device, in whole chunks: at most 25% padding), ``"pow2"`` (``chunk·2^j``) or
      ``"chunk"`` (a multiple of the chunk); see ``bucket_size`` in this module.
    mesh: a ``jax.sharding.Mesh`` with a ``"data"`` axis (:func:`curiojax.data_mesh`): the
      pool is sharded over it, params and tangent replicated.
    nonfinite: ``"raise"`` or ``"exclude"`` (traceable) for NaN/Inf inputs and overflowing
      scores (see calling a :class:`Scorer`).
    quadrature_points: Gauss-Hermite points for other losses' expected squared score.

  Returns:
    A :class:`Scorer`.
  """
  return Scorer(model_fn, heuristic=heuristic, **options)


def _scorer_of(model_fn, heuristic: str, options: dict) -> Scorer:
  """The scorer attached to ``model_fn`` for these options (built on first use), else a fresh one."""
  key = ("scorer", heuristic, tuple(sorted(options.items())))
  return attached(model_fn, key, lambda model: Scorer(model, heuristic=heuristic, **options))


def curiosity_scores(
  model_fn: Callable,
  params: Any,
  tangent: Any,
  x,
  y=None,
  *,
  heuristic: str = "expected_squared",
  loss: str | Loss = "squared_error",
  noise_variance: float | jax.Array | Callable | None = None,
  training_data: tuple | None = None,
  chunk_size: int = 4096,
  nonfinite: str = "raise",
  mask=None,
  **options,
) -> jax.Array:
  """Curiosity scores of every pool row, from one forward-mode JVP along the tangent.

  ``σ²`` for ``"expected_squared"``: ``noise_variance`` if given; else, with
  ``training_data=(x_train, y_train)``, the mean squared training residual
  (:func:`noise_variance`); else 1 (the same ranking as any scalar).

  One-shot form of :func:`make_scorer`. The scorer it builds is attached to ``model_fn``
  weakly (per heuristic and options): calling this every round with the same ``model_fn``
  compiles once per padded pool size, and the scorer, its compilations and nothing else die
  with ``model_fn`` (no cache keeps a model alive). A fresh ``lambda`` per call, or an
  unhashable option, gets a fresh scorer and compiles again: keep one :func:`make_scorer`.

  Args and returns as for calling a :class:`Scorer` made by :func:`make_scorer`.
  """
  if noise_variance is None and training_data is not None:
    if not (isinstance(training_data, tuple) and len(training_data) == 2):
      raise TypeError("training_data must be a pair (x_train, y_train).")
    noise_variance = _estimate_noise_variance(model_fn, params, *training_data)
  fn_noise = noise_variance if callable(noise_variance) else None
  scalar_noise = None if callable(noise_variance) else noise_variance
  options = dict(loss=loss, noise_variance=fn_noise, chunk_size=chunk_size, **options)
  scorer = _scorer_of(model_fn, heuristic, options)
  return scorer(params, tangent, x, y, mask=mask, noise_variance=scalar_noise, nonfinite=nonfinite)


def noise_variance(model_fn: Callable, params: Any, x, y, *, per_output: bool = False, ddof: int = 0) -> jax.Array:
  """``σ²`` estimated from training residuals: ``Σᵢ ‖f(θ, xᵢ) − yᵢ‖² / ((n − ddof)·p)``.

  Args:
    model_fn, params: the trained model.
    x, y: the labelled training set.
    per_output: return one variance per output (shape of one prediction) instead of a scalar.
    ddof: degrees of freedom subtracted from ``n`` (e.g. the effective number of parameters).

  Returns:
    A scalar (or per-output array) to pass as ``noise_variance=``.
  """
  x, y = _as_array(x, "x_train"), _as_array(y, "y_train")
  if x.shape[0] == 0:
    raise ValueError("noise_variance needs at least one training point; x_train is empty.")
  if y.shape[0] != x.shape[0]:
    raise ValueError(f"y_train has {y.shape[0]} rows but x_train has {x.shape[0]}.")
  if not (np.all(np.isfinite(np.asarray(y, dtype=float)))):
    raise ValueError("y_train has NaN/Inf labels; drop them before estimating the noise variance.")
  n = x.shape[0]
  if n - ddof < 1:
    raise ValueError(f"ddof={ddof} leaves no degrees of freedom for {n} training points.")
  preds = model_fn(params, jnp.asarray(x))
  y = jnp.asarray(y, preds.dtype)
  if y.size == preds.size:
    y = y.reshape(preds.shape)
  r2 = jnp.square(preds - y)
  per = jnp.sum(r2, axis=0) / (n - ddof)
  return per if per_output else jnp.mean(per)


_estimate_noise_variance = noise_variance  # the name is shadowed by curiosity_scores' argument

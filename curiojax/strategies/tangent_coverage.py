"""``tangent_coverage``: LCMD in gradient features stretched along the tangent (ours).

Top-k curiosity fails because ``(J_xτ)²`` mostly ranks the size of the prediction; a mild
curiosity weight on LCMD (``curiosity_diverse``) barely moves its picks. This strategy uses the
tangent in the geometry instead: each point's sketched gradient ``φ(x)`` gets ``J_xτ`` appended,
scaled so that a typical value weighs ``β`` times a typical ``‖φ‖``:

    ‖φ'(x) − φ'(x')‖² = ‖φ(x) − φ(x')‖² + β²r²(J_xτ − J_x'τ)²,   r² = mean‖φ‖² / mean (J_xτ)².

``J_xτ = ∇f(x)ᵀτ`` is the gradient's coordinate along ``τ``; the stretch says that two points
whose predictions react differently to the regularizer are farther apart than their gradients
alone say, so LCMD (Holzmüller et al., JMLR 2023, Alg. 2) covers the directions the tangent
singles out. It is invariant to the prediction's size, unlike top-k curiosity. ``β = 0`` is
LCMD. ``direction`` may also be ``"validation"`` (the adjoint ``a``) or ``"groups"`` (one
coordinate per layer); :mod:`curiojax.strategies.directions`.

``validation_coverage`` combines the two tangent quantities that each led LCMD somewhere in
the benchmark (docs/benchmark.md): the metric stretched along ``τ`` (as here) and LCMD's scored squared
distances weighted by the normalised validation influence ``(c_a/c̄_a)^γ``, ``c_a = (J_xa)²``
(as ``validation_diverse``). ``J_xτ`` and ``J_xa`` come from one pass over the pool.

Example:
  >>> import numpy as np, jax, jax.numpy as jnp
  >>> from curiojax.strategies import SelectionContext, TangentCoverageStrategy
  >>> f = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
  >>> params = {"w1": jnp.ones((2, 4)), "w2": jnp.ones(4)}
  >>> tangent = jax.tree.map(lambda p: -p, params)
  >>> pool = np.random.default_rng(0).normal(size=(50, 2))
  >>> ctx = SelectionContext(f, params, tangent, np.zeros((3, 2)), np.zeros(3), pool, jax.random.key(0))
  >>> picked = TangentCoverageStrategy(sketch={"dim": 16}).select(ctx, 5)
  >>> len(set(picked.indices.tolist())), picked.scores.shape
  (5, (5,))
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from curiojax.strategies.base import Needs, Selection, SelectionContext, check_batch_size
from curiojax.strategies.curiosity_diverse import AlongDirection, check_exponent, check_jvp_finite
from curiojax.strategies.directions import needs_along, selection_directions
from curiojax.strategies.kernels import (
  checked_indices,
  curiosity_weights,
  lcmd,
  sketched_features,
  stretched_features,
)


@dataclasses.dataclass(frozen=True)
class TangentCoverageStrategy(AlongDirection):
  """LCMD on sketched gradients with ``β·r·J_xv`` appended (the metric stretched along ``v``); each
  pick's score is its squared stretched distance to the nearest labelled or earlier pick.

  Args:
    beta: weight of the appended coordinate relative to a typical feature norm (``0``: LCMD).
    direction: ``"tangent"`` (default), ``"validation"`` or ``"groups"``.
    sketch: :class:`~curiojax.strategies.base.SketchOptions` (or a dict of them).
  """

  beta: float = 1.0
  criterion = (
    "coverage in gradient features stretched along the tangent: the farthest point of the largest cluster; "
    "score its squared stretched distance to the nearest labelled or already chosen point"
  )

  def __post_init__(self):
    super().__post_init__()
    object.__setattr__(self, "beta", check_exponent("beta", self.beta))

  def select(self, ctx: SelectionContext, batch_size: int) -> Selection:
    (fp, mp, fl, ml, jp, jl), residual = self.features_along(ctx, batch_size)
    fp, fl = stretched_features(fp, mp, fl, jp, jl, self.beta)
    idx, distances = lcmd(fp, mp, fl, ml, batch_size, with_distances=True)
    return Selection.of(checked_indices(idx, ctx, batch_size), distances, direction_residual=residual)


@dataclasses.dataclass(frozen=True)
class ValidationCoverageStrategy(TangentCoverageStrategy):
  """``tangent_coverage`` weighted like ``validation_diverse``: LCMD on ``[φ, β·r·J_xτ]`` with scored
  squared distances weighted by ``(c_a/c̄_a)^γ``, ``c_a = (J_xa)²`` (module docstring).

  Args:
    beta: weight of the appended ``J_xτ`` (``0``: ``validation_diverse``).
    gamma: exponent of the validation weight (``0``: ``tangent_coverage``).
    sketch: :class:`~curiojax.strategies.base.SketchOptions` (or a dict of them).
  """

  gamma: float = 0.25
  direction: ClassVar[str] = "tangent"  # stretched along τ, weighted along a
  criterion = (
    "coverage in gradient features stretched along the tangent, squared distances weighted by the validation "
    "influence (c_a/c̄_a)^γ; score the pick's squared stretched distance to the nearest labelled or chosen point"
  )

  def __post_init__(self):
    super().__post_init__()
    object.__setattr__(self, "gamma", check_exponent("gamma", self.gamma))

  @property
  def needs(self) -> Needs:
    return needs_along("tangent", "validation")

  def select(self, ctx: SelectionContext, batch_size: int) -> Selection:
    check_batch_size(ctx, batch_size)
    (tangent, _), (adjoint, residual) = selection_directions(ctx, "tangent"), selection_directions(ctx, "validation")
    both = jax.tree.map(lambda t, a: jnp.concatenate([t, a.astype(t.dtype)]), tangent, adjoint)
    fp, mp, fl, ml, jp, jl = sketched_features(ctx, self.sketch, both)
    check_jvp_finite(jp, mp, "tangent and validation directions")
    fp, fl = stretched_features(fp, mp, fl, jp[:, :1], jl[:, :1], self.beta)
    weights = curiosity_weights(jnp.square(jp[:, 1:]), mp, self.gamma)
    idx, distances = lcmd(fp, mp, fl, ml, batch_size, weights, with_distances=True)
    return Selection.of(checked_indices(idx, ctx, batch_size), distances, direction_residual=residual)

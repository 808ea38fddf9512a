"""The two simplest strategies: uniform sampling, and top-k curiosity.

Example:
  >>> import numpy as np, jax
  >>> from curiojax.strategies import SelectionContext, get_strategy
  >>> ctx = SelectionContext(model_fn=None, params=None, tangent=None,
  ...                        x_labelled=np.zeros((4, 2)), y_labelled=np.zeros(4),
  ...                        x_pool=np.zeros((10, 2)), key=jax.random.key(0))
  >>> picked = get_strategy("random").select(ctx, 3).indices
  >>> bool(len(set(picked.tolist())) == 3 and picked.max() < 10)
  True
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from curiojax.padding import pad_rows, size_class
from curiojax.strategies.base import Needs, Selection, SelectionContext, check_batch_size, host_rng
from curiojax.strategies.directions import check_direction, needs_along, normalised_sum, selection_directions
from curiojax.strategies.kernels import POOL_BUCKET


@dataclasses.dataclass(frozen=True)
class RandomStrategy:
  """Uniform sampling without replacement: the baseline every method must beat (no score)."""

  criterion = "uniform at random (no score)"
  needs: ClassVar[Needs] = Needs(model=False)

  def select(self, ctx: SelectionContext, k: int) -> Selection:
    check_batch_size(ctx, k)
    return Selection.of(host_rng(ctx.key).choice(len(ctx.x_pool), k, replace=False))


def _check_heuristic(heuristic: str, direction: str) -> None:
  from curiojax.scoring.scores import HEURISTICS, LABELLED_HEURISTICS

  check_direction(direction)
  pool_heuristics = [h for h in HEURISTICS if h not in LABELLED_HEURISTICS]  # pool points have no labels
  if heuristic not in pool_heuristics:
    raise ValueError(f"Unknown heuristic {heuristic!r} for unlabelled pools; choose one of {pool_heuristics}.")
  if direction == "groups" and heuristic != "expected_squared":
    raise ValueError("direction='groups' sums normalised expected squared scores; use heuristic='expected_squared'.")


@dataclasses.dataclass(frozen=True)
class CuriosityStrategy:
  """Top-k of the unlabelled curiosity score ``E_y[c²] = σ²·(J_x v)²`` along a direction ``v``.

  With the default ``direction="tangent"``, ``J_x τ = d f(θ*(s), x)/ds`` is how fast the
  prediction at ``x`` moves when the regularizer tightens (``method.md``). Under L2 it is
  largest where the prediction is largest (it mostly ranks ``f(x)²``), so a batch of the top k
  clusters there: in batch mode it does not beat random (``docs/benchmark.md``);
  ``curiosity_diverse`` spreads the batch. ``direction="validation"`` scores the validation
  adjoint (the expected squared change of the validation loss), ``"groups"`` one tangent per
  layer, each normalised by its pool mean and summed (:mod:`curiojax.strategies.directions`).
  The selection's ``top_score`` is the largest score over the pool.

  Args:
    heuristic: an unlabelled score of :func:`curiojax.curiosity_scores` (default
      ``"expected_squared"``; with ``"groups"`` only that one).
    direction: ``"tangent"``, ``"validation"`` or ``"groups"``.
  """

  heuristic: str = "expected_squared"
  direction: str = "tangent"
  criterion = "expected squared change of the model's complexity, σ²(J_xτ)² (top k)"

  def __post_init__(self):
    _check_heuristic(self.heuristic, self.direction)

  @property
  def needs(self) -> Needs:
    return needs_along(self.direction)

  def select(self, ctx: SelectionContext, k: int) -> Selection:
    from curiojax.scoring.scores import curiosity_scores
    from curiojax.scoring.select import select_top_k

    check_batch_size(ctx, k)
    if ctx.model_fn is None or (self.direction == "tangent" and ctx.tangent is None):
      raise ValueError("the curiosity strategy needs a model_fn and a regularity tangent in the context.")
    # the tangent unstacked, as always; the solved directions stacked (scores of shape (n, k))
    direction, residual = (
      (ctx.tangent, float("nan")) if self.direction == "tangent" else selection_directions(ctx, self.direction)
    )
    # The pool shrinks every round; padded to its size class (padding masked), the scores, the
    # top-k and the top score compile once per class instead of once per round.
    n = len(ctx.x_pool)
    size = size_class(n, multiple=POOL_BUCKET)
    scores = curiosity_scores(
      ctx.model_fn,
      ctx.params,
      direction,
      pad_rows(ctx.x_pool, size),
      heuristic=self.heuristic,
      noise_variance=ctx.noise_variance,
    )
    if self.direction == "validation":
      scores = scores[:, 0]
    elif self.direction == "groups":
      scores = normalised_sum(scores, jnp.arange(size) < n)
    chosen = select_top_k(scores, k, mask=np.arange(size) >= n)
    picked = np.asarray(scores[chosen])  # k values to the host, not the pool
    # the first pick has the largest score
    return Selection.of(chosen, picked, top_score=picked[0], direction_residual=residual)


@dataclasses.dataclass(frozen=True)
class ValidationInfluenceStrategy(CuriosityStrategy):
  """Top-k ``σ²(J_x a)²``, ``a = −(C + λI)⁻¹∇_θL_val``: the expected squared change of the validation loss."""

  direction: ClassVar[str] = "validation"
  criterion = "expected squared change of the validation loss, σ²(J_x a)² (top k)"


@dataclasses.dataclass(frozen=True)
class GroupCuriosityStrategy(CuriosityStrategy):
  """Top-k ``Σ_k (J_xτ_k)²/mean (J_xτ_k)²`` over one tangent per parameter group (layer)."""

  heuristic: ClassVar[str] = "expected_squared"
  direction: ClassVar[str] = "groups"
  criterion = "sum over layers of the normalised squared change of the layer's complexity (top k)"

"""The two simplest strategies: uniform sampling, and top-k curiosity.

Example:
  >>> import numpy as np, jax
  >>> from curiojax.strategies import SelectionContext, get_strategy
  >>> ctx = SelectionContext(model_fn=None, params=None, tangent=None,
  ...                        x_labelled=np.zeros((4, 2)), y_labelled=np.zeros(4),
  ...                        x_pool=np.zeros((10, 2)), key=jax.random.key(0))
  >>> picked = get_strategy("random").select(ctx, 3)
  >>> bool(len(set(picked.tolist())) == 3 and picked.max() < 10)
  True
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from curiojax.strategies.base import SelectionContext, check_batch_size, host_rng
from curiojax.strategies.directions import ScoresDirection, normalised_sum, selection_directions


class RandomStrategy:
  """Uniform sampling without replacement: the baseline every method must beat."""

  criterion = "uniform at random (no score)"
  needs_tangent = False

  def select(self, ctx: SelectionContext, k: int) -> np.ndarray:
    check_batch_size(ctx, k)
    return host_rng(ctx.key).choice(len(ctx.x_pool), k, replace=False)


class CuriosityStrategy(ScoresDirection):
  """Top-k of the unlabelled curiosity score ``E_y[c²] = σ²·(J_x v)²`` along a direction ``v``.

  With the default ``direction="tangent"``, ``J_x τ = d f(θ*(s), x)/ds`` is how fast the
  prediction at ``x`` moves when the regularizer tightens (``method.md``). Under L2 it is
  largest where the prediction is largest (it mostly ranks ``f(x)²``), so a batch of the top k
  clusters there: in batch mode it does not beat random (``docs/benchmark.md``);
  ``curiosity_diverse`` spreads the batch. ``direction="validation"`` scores the validation
  adjoint (the expected squared change of the validation loss), ``"groups"`` one tangent per
  layer, each normalised by its pool mean and summed (:mod:`curiojax.strategies.directions`).

  Args:
    heuristic: an unlabelled score of :func:`curiojax.curiosity_scores` (default
      ``"expected_squared"``; with ``"groups"`` only that one).
    direction: ``"tangent"``, ``"validation"`` or ``"groups"``.
  """

  criterion = "expected squared change of the model's complexity, σ²(J_xτ)² (top k)"

  def __init__(self, heuristic: str = "expected_squared", direction: str = "tangent"):
    from curiojax.scoring.scores import HEURISTICS, LABELLED_HEURISTICS

    pool_heuristics = [h for h in HEURISTICS if h not in LABELLED_HEURISTICS]  # pool points have no labels
    if heuristic not in pool_heuristics:
      raise ValueError(f"Unknown heuristic {heuristic!r} for unlabelled pools; choose one of {pool_heuristics}.")
    if direction == "groups" and heuristic != "expected_squared":
      raise ValueError("direction='groups' sums normalised expected squared scores; use heuristic='expected_squared'.")
    self.heuristic = heuristic
    self.set_direction(direction)

  def select(self, ctx: SelectionContext, k: int) -> np.ndarray:
    from curiojax.padding import next_pow2, pad_rows
    from curiojax.scoring.scores import curiosity_scores
    from curiojax.scoring.select import select_top_k

    check_batch_size(ctx, k)
    if ctx.model_fn is None or (self.direction == "tangent" and ctx.tangent is None):
      raise ValueError("the curiosity strategy needs a model_fn and a regularity tangent in the context.")
    # the tangent unstacked, as always; the solved directions stacked (scores of shape (n, k))
    direction = ctx.tangent if self.direction == "tangent" else selection_directions(ctx, self.direction)
    # The pool shrinks every round; padded to a power of two (padding masked), the scores, the
    # top-k and the top score compile once per doubling instead of once per round.
    n = len(ctx.x_pool)
    size = next_pow2(n)
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
    ctx.info["scores"] = np.asarray(scores[chosen])  # k values to the host, not the pool
    ctx.info["top_score"] = float(ctx.info["scores"][0])  # the first pick has the largest score
    return chosen


class ValidationInfluenceStrategy(CuriosityStrategy):
  """Top-k ``σ²(J_x a)²``, ``a = −(C + λI)⁻¹∇_θL_val``: the expected squared change of the validation loss."""

  criterion = "expected squared change of the validation loss, σ²(J_x a)² (top k)"

  def __init__(self, heuristic: str = "expected_squared"):
    super().__init__(heuristic, direction="validation")


class GroupCuriosityStrategy(CuriosityStrategy):
  """Top-k ``Σ_k (J_xτ_k)²/mean (J_xτ_k)²`` over one tangent per parameter group (layer)."""

  criterion = "sum over layers of the normalised squared change of the layer's complexity (top k)"

  def __init__(self):
    super().__init__("expected_squared", direction="groups")

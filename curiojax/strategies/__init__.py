"""Selection strategies: which unlabelled points to label next, behind one small interface.

Every strategy is a frozen dataclass of typed options with ``select(ctx, k) -> Selection``
over a :class:`SelectionContext`, and declares what it reads (:class:`Needs`); any model
works (a batched ``model_fn(params, x)``, its parameters, and for the curiosity strategies its
regularity tangent). The built-in ones are
registered here, by name, in one place:

======================== ===========================================================================
``lcmd``                 coverage of sketched gradients (Holzmüller et al. 2023; the best measured)
``curiosity_diverse``    LCMD weighted by curiosity (ours; slightly behind LCMD, ``docs/benchmark.md``)
``tangent_coverage``     LCMD in gradient features stretched along the tangent (ours)
``validation_diverse``   LCMD weighted by the validation influence ``(J_x a)²`` (ours; level with LCMD)
``validation_coverage``  ``tangent_coverage`` weighted like ``validation_diverse`` (ours)
``curiosity``            top-k ``σ²(J_xτ)²`` (it mostly ranks the size of the prediction)
``validation_influence`` top-k ``σ²(J_x a)²``, ``a = −(C + λI)⁻¹∇L_val`` (influence functions)
``group_curiosity``      top-k sum over layers of normalised ``(J_xτ_k)²`` (per-layer strengths)
``random``               uniform sampling
``badge``                k-means++ on sketched gradients (Ash et al. 2020)
``maxdist``              MaxDist / Core-set on sketched gradients (Sener & Savarese 2018)
``maxdet``               greedy posterior determinant (MaxDet, Holzmüller et al. 2023)
``bait``                 greedy posterior variance reduction over the pool (BAIT, Ash et al. 2021)
``bait_validation``      BAIT's variance reduction at the validation inputs (ours, transductive)
``bait_adjoint``         ``bait_validation`` weighted by the validation influence ``(J_x a)²`` (ours)
``variance``, ``emcm``   top-k predictive variance / expected model change
======================== ===========================================================================

Example (the best measured, then the tangent-based one, on your own model):
  >>> import numpy as np, jax, jax.numpy as jnp, curiojax
  >>> f = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
  >>> params = {"w1": jnp.ones((2, 4)) / 2, "w2": jnp.ones(4)}
  >>> pool = np.random.default_rng(0).normal(size=(100, 2))
  >>> picked = curiojax.strategies.select_batch(f, params, None, pool, 8, x_labelled=np.zeros((3, 2)))
  >>> tangent = jax.tree.map(lambda p: -p, params)   # e.g. curiojax.check_tangent(opt_state)
  >>> diverse = curiojax.strategies.select_batch(
  ...   f, params, tangent, pool, 8, strategy="curiosity_diverse", x_labelled=np.zeros((3, 2))
  ... )
  >>> picked.shape, diverse.shape
  ((8,), (8,))
"""

from __future__ import annotations

import jax
import numpy as np

from curiojax.strategies.base import (
  STRATEGIES,
  Needs,
  Selection,
  SelectionContext,
  SketchOptions,
  Strategy,
  check_batch_size,
  check_indices,
  check_strategy_name,
  get_strategy,
  host_rng,
  needs_of,
  register_strategy,
  select_checked,
)
from curiojax.strategies.baselines import BadgeStrategy, EMCMStrategy, LCMDStrategy, VarianceStrategy
from curiojax.strategies.curiosity_diverse import CuriosityDiverseStrategy, ValidationDiverseStrategy
from curiojax.strategies.directions import DIRECTIONS
from curiojax.strategies.reference import (
  BaitAdjointStrategy,
  BaitStrategy,
  BaitValidationStrategy,
  MaxDetStrategy,
  MaxDistStrategy,
)
from curiojax.strategies.tangent_coverage import TangentCoverageStrategy, ValidationCoverageStrategy
from curiojax.strategies.topk import (
  CuriosityStrategy,
  GroupCuriosityStrategy,
  RandomStrategy,
  ValidationInfluenceStrategy,
)

DEFAULT_STRATEGY = "lcmd"  # the best measured in docs/benchmark.md

register_strategy("random", RandomStrategy)
register_strategy("curiosity", CuriosityStrategy)
register_strategy("curiosity_diverse", CuriosityDiverseStrategy)
register_strategy("variance", VarianceStrategy)
register_strategy("emcm", EMCMStrategy)
register_strategy("badge", BadgeStrategy)
register_strategy("lcmd", LCMDStrategy)
register_strategy("tangent_coverage", TangentCoverageStrategy)
register_strategy("validation_diverse", ValidationDiverseStrategy)
register_strategy("validation_coverage", ValidationCoverageStrategy)
register_strategy("validation_influence", ValidationInfluenceStrategy)
register_strategy("group_curiosity", GroupCuriosityStrategy)
register_strategy("maxdist", MaxDistStrategy)
register_strategy("maxdet", MaxDetStrategy)
register_strategy("bait", BaitStrategy)
register_strategy("bait_validation", BaitValidationStrategy)
register_strategy("bait_adjoint", BaitAdjointStrategy)


def select_batch(
  model_fn,
  params,
  tangent,
  x_pool,
  k: int,
  *,
  strategy: str | Strategy = DEFAULT_STRATEGY,
  x_labelled=None,
  y_labelled=None,
  noise_variance: float | None = None,
  key: jax.Array | None = None,
  problem=None,
  validation=None,
) -> np.ndarray:
  """``k`` indices into ``x_pool`` to label next, by a strategy (default the best measured).

  Args:
    model_fn, params, tangent: a batched model, its trained parameters and their regularity
      tangent (e.g. ``curiojax.check_tangent(opt_state)``; None for strategies without one).
    x_pool: unlabelled candidates ``(n, d)``, in the model's input units.
    k: batch size.
    strategy: a registered name or a strategy object.
    x_labelled, y_labelled: the labelled set (the diversity strategies avoid its neighbourhood).
    noise_variance: ``σ²`` (scales the reported curiosity scores; default 1).
    key: PRNG key (default ``jax.random.key(0)``).
    problem, validation: the fit's linear system (:class:`curiojax.TangentOperator`)
      and a held-out labelled set ``(x_valid, y_valid)``, for the strategies that solve for
      other directions than the tangent (:mod:`curiojax.strategies.directions`).
  """
  traced = [
    name
    for name, v in (("x_pool", x_pool), ("x_labelled", x_labelled), ("y_labelled", y_labelled))
    if isinstance(v, jax.core.Tracer)
  ]
  if traced or any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves((params, tangent))):
    raise TypeError(
      "select_batch is host-side (a batch of indices chosen greedily, with checks on concrete values) and "
      f"cannot run inside jax.jit or vmap ({', '.join(traced) or 'params or tangent'} traced): call it outside; "
      "its heavy parts (the sketch, the scores) are jitted inside."
    )
  strategy = get_strategy(strategy) if isinstance(strategy, str) else strategy
  x_pool = np.asarray(x_pool, np.float32)
  d = x_pool.shape[-1] if x_pool.ndim == 2 else 0
  x_labelled = np.zeros((0, d), np.float32) if x_labelled is None else np.asarray(x_labelled, np.float32)
  y_labelled = np.zeros(len(x_labelled), np.float32) if y_labelled is None else np.asarray(y_labelled, np.float32)
  ctx = SelectionContext(
    model_fn,
    params,
    tangent,
    x_labelled,
    y_labelled,
    x_pool,
    jax.random.key(0) if key is None else key,
    noise_variance,
    problem,
    None if validation is None else tuple(np.asarray(a, np.float32) for a in validation),
  )
  return select_checked(strategy, ctx, k).indices


__all__ = [
  "DEFAULT_STRATEGY",
  "DIRECTIONS",
  "STRATEGIES",
  "BadgeStrategy",
  "BaitAdjointStrategy",
  "BaitStrategy",
  "BaitValidationStrategy",
  "CuriosityDiverseStrategy",
  "CuriosityStrategy",
  "EMCMStrategy",
  "GroupCuriosityStrategy",
  "LCMDStrategy",
  "MaxDetStrategy",
  "MaxDistStrategy",
  "Needs",
  "RandomStrategy",
  "Selection",
  "SelectionContext",
  "SketchOptions",
  "Strategy",
  "TangentCoverageStrategy",
  "ValidationCoverageStrategy",
  "ValidationDiverseStrategy",
  "ValidationInfluenceStrategy",
  "VarianceStrategy",
  "check_batch_size",
  "check_indices",
  "check_strategy_name",
  "get_strategy",
  "host_rng",
  "needs_of",
  "register_strategy",
  "select_checked",
  "select_batch",
]

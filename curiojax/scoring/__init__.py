"""Scoring pools and devices: curiosity scores by one JVP, top-k on device, sharding, gradient features.

``heuristics``: the score formulas as pure functions, dispatching on the loss's declared
``closed_form``; ``scores``: :func:`curiosity_scores` / :func:`make_scorer` (checked, padded,
chunked, sharded, jitted once per scorer); ``select``: :func:`select_top_k`; ``sharding``:
sharded pools (the mesh and the data-parallel training step, re-exported, live in
:mod:`curiojax.tangent.parallel`); ``features``: sketched per-example gradients for the kernel strategies
(:func:`gradient_sketch`, and with the JVPs along given directions in the same pass,
:func:`sketch_and_jvp`).
"""

from curiojax.scoring.features import gradient_sketch, sketch_and_jvp
from curiojax.scoring.scores import HEURISTICS, Scorer, curiosity_scores, make_scorer, noise_variance
from curiojax.scoring.select import select_top_k
from curiojax.scoring.sharding import data_mesh, make_data_parallel_step, pool_sharding

__all__ = [
  "HEURISTICS",
  "Scorer",
  "curiosity_scores",
  "data_mesh",
  "gradient_sketch",
  "make_data_parallel_step",
  "make_scorer",
  "noise_variance",
  "pool_sharding",
  "select_top_k",
  "sketch_and_jvp",
]

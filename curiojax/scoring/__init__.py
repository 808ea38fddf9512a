"""Scoring pools and devices: curiosity scores by one JVP, top-k on device, sharding, gradient features.

``scores``: :func:`curiosity_scores` / :func:`make_scorer` (chunked, padded, jitted once);
``select``: :func:`select_top_k`; ``sharding``: meshes, sharded pools and a data-parallel
training step; ``features``: sketched per-example gradients for the kernel strategies
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

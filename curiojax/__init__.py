"""curiojax: regularity tangents and influence-function curiosity for active learning.

The regularity tangent ``τ = dθ*/ds = −H⁻¹∂_s∇_θR`` is carried in an optax state while the
model trains; ``J_x τ`` over a pool (one forward-mode JVP) scores how much labelling each
point would change the model. See ``README.md`` and the maths in ``docs``.
"""

from curiojax.curvature import TangentSystem
from curiojax.losses import LOSSES, PredictionLoss, gaussian_nll, huber, prediction_loss, squared_error
from curiojax.nnx_adapter import nnx_model_fn
from curiojax.regularizers import L2, get_regularizer, group_l2, l2
from curiojax.scores import HEURISTICS, Scorer, curiosity_scores, make_scorer, noise_variance
from curiojax.select import select_top_k
from curiojax.solvers import dense_curvature, exact_tangent, lissa, polish_tangent, relative_residual
from curiojax.tangent import (
  RegularityTangentState,
  TangentDiagnostics,
  TangentDivergedError,
  TangentDivergedWarning,
  check_tangent,
  regularity_tangent,
  tangent_diagnostics,
  tangent_of,
)

import curiojax.baselines  # noqa: E402,F401  (registers variance/badge/lcmd/emcm/curiosity_diverse)

__version__ = "0.1.0"

__all__ = [
  "HEURISTICS",
  "Scorer",
  "curiosity_scores",
  "make_scorer",
  "noise_variance",
  "select_top_k",
  "L2",
  "LOSSES",
  "PredictionLoss",
  "RegularityTangentState",
  "TangentDiagnostics",
  "TangentDivergedError",
  "TangentDivergedWarning",
  "TangentSystem",
  "check_tangent",
  "dense_curvature",
  "exact_tangent",
  "gaussian_nll",
  "get_regularizer",
  "group_l2",
  "huber",
  "l2",
  "lissa",
  "nnx_model_fn",
  "polish_tangent",
  "prediction_loss",
  "regularity_tangent",
  "relative_residual",
  "squared_error",
  "tangent_diagnostics",
  "tangent_of",
]

"""The regularity tangent and its solvers.

``transform``: the optax transformation carrying ``τ = dθ*/ds`` and its certification;
``curvature``: the products of ``(C + λI)τ = −ρ``; ``operator``: that system at given parameters
on a batch, the one operator every solve takes; ``solvers``: solving it by shape (dense,
data-space preconditioned CG, CG), finishing, LiSSA; ``dataspace``: the Gauss-Newton inverse in
data space; ``regularizers`` and ``losses``: what defines the system; ``nnx_adapter``: flax
NNX modules as pure functions.
"""

from curiojax.tangent.curvature import CURVATURES, TangentSystem
from curiojax.tangent.diagnostics import (
  TangentDiagnostics,
  TangentDivergedError,
  TangentDivergedWarning,
  TangentInaccurateError,
  TangentInaccurateWarning,
  TangentMisplacedWarning,
  check_tangent,
  tangent_diagnostics,
  tangent_of,
)
from curiojax.tangent.losses import LOSSES, PredictionLoss, gaussian_nll, huber, prediction_loss, squared_error
from curiojax.tangent.nnx_adapter import nnx_model_fn
from curiojax.tangent.operator import TangentOperator
from curiojax.tangent.regularizers import L2, get_regularizer, group_l2, l2
from curiojax.tangent.solvers import (
  SolveInfo,
  dense_curvature,
  exact_tangent,
  finish_tangent,
  lissa,
  relative_residual,
  solve,
)
from curiojax.tangent.state import RegularityTangentState, align_tangent
from curiojax.tangent.transform import regularity_tangent

__all__ = [
  "CURVATURES",
  "L2",
  "LOSSES",
  "PredictionLoss",
  "RegularityTangentState",
  "TangentDiagnostics",
  "TangentDivergedError",
  "TangentDivergedWarning",
  "TangentMisplacedWarning",
  "TangentInaccurateError",
  "TangentInaccurateWarning",
  "SolveInfo",
  "TangentOperator",
  "TangentSystem",
  "align_tangent",
  "check_tangent",
  "dense_curvature",
  "exact_tangent",
  "finish_tangent",
  "gaussian_nll",
  "get_regularizer",
  "group_l2",
  "huber",
  "l2",
  "lissa",
  "nnx_model_fn",
  "prediction_loss",
  "regularity_tangent",
  "relative_residual",
  "solve",
  "squared_error",
  "tangent_diagnostics",
  "tangent_of",
]

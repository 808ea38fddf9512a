"""curiojax: regularity tangents and influence-function curiosity for active learning.

The regularity tangent ``τ = dθ*/ds = −H⁻¹∂_s∇_θR`` is carried in an optax state while the
model trains; ``J_x τ`` over a pool (one forward-mode JVP) scores how much labelling each
point would change the model. See ``README.md`` and the maths in ``docs``.
"""

from curiojax import strategies
from curiojax.curvature import TangentSystem
from curiojax.data import ArrayOracle, Dataset, load_dataset
from curiojax.hierarchical import (
  hierarchical_l2,
  hierarchical_model_fn,
  hierarchical_params,
  per_user_scores,
  split_user,
  with_user,
)
from curiojax.hypergradient import get_strength, hypergradient, set_strength, tunable_regularity_tangent, tune_strength
from curiojax.learner import Learner, LearnerOptions, LearnerState, Suggestion
from curiojax.loocv import LeaveOneOut, loocv_grid, loocv_influence, loocv_linear, polynomial_features, ridge_fit
from curiojax.loop import ActiveLearner, Experiment, LoopOptions, run_active_learning
from curiojax.losses import LOSSES, PredictionLoss, gaussian_nll, huber, prediction_loss, squared_error
from curiojax.models import ModelSpec, make_model, register_model
from curiojax.multi import adjoint_curiosities, layer_groups, per_example_gradients, signed_curiosities
from curiojax.nnx_adapter import nnx_model_fn
from curiojax.regularizers import L2, get_regularizer, group_l2, l2
from curiojax.scores import HEURISTICS, Scorer, curiosity_scores, make_scorer, noise_variance
from curiojax.select import select_top_k
from curiojax.sharding import data_mesh, make_data_parallel_step
from curiojax.solvers import dense_curvature, exact_tangent, finish_tangent, lissa, relative_residual
from curiojax.tangent import (
  RegularityTangentState,
  TangentDiagnostics,
  TangentDivergedError,
  TangentDivergedWarning,
  TangentInaccurateError,
  TangentInaccurateWarning,
  check_tangent,
  regularity_tangent,
  tangent_diagnostics,
  tangent_of,
)
from curiojax.train import Trainer, TrainOptions, TrainResult, train

__version__ = "0.1.0"

__all__ = [
  "strategies",
  "Learner",
  "LearnerOptions",
  "LearnerState",
  "Suggestion",
  "adjoint_curiosities",
  "hierarchical_l2",
  "hierarchical_model_fn",
  "hierarchical_params",
  "layer_groups",
  "per_example_gradients",
  "per_user_scores",
  "signed_curiosities",
  "split_user",
  "with_user",
  "ActiveLearner",
  "ArrayOracle",
  "Dataset",
  "Experiment",
  "LearnerState",
  "LoopOptions",
  "ModelSpec",
  "TrainOptions",
  "TrainResult",
  "Trainer",
  "load_dataset",
  "loocv_grid",
  "loocv_influence",
  "loocv_linear",
  "polynomial_features",
  "ridge_fit",
  "make_model",
  "register_model",
  "run_active_learning",
  "train",
  "HEURISTICS",
  "Scorer",
  "curiosity_scores",
  "make_scorer",
  "noise_variance",
  "select_top_k",
  "data_mesh",
  "make_data_parallel_step",
  "tunable_regularity_tangent",
  "tune_strength",
  "set_strength",
  "hypergradient",
  "get_strength",
  "L2",
  "LeaveOneOut",
  "LOSSES",
  "PredictionLoss",
  "RegularityTangentState",
  "TangentDiagnostics",
  "TangentDivergedError",
  "TangentDivergedWarning",
  "TangentInaccurateError",
  "TangentInaccurateWarning",
  "TangentSystem",
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
  "squared_error",
  "tangent_diagnostics",
  "tangent_of",
]

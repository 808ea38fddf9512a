"""curiojax: regularity tangents and influence-function curiosity for active learning.

The regularity tangent ``τ = dθ*/ds = −H⁻¹∂_s∇_θR`` is carried in an optax state while the
model trains; ``J_x τ`` over a pool (one forward-mode JVP) scores how much labelling each
point would change the model. See ``README.md``, ``docs/architecture.md`` for the layout and
``docs/method.md`` for the maths. The public API, by layer (each a subpackage):

- :mod:`curiojax.tangent`: the tangent transformation, its certification and solvers;
- :mod:`curiojax.scoring`: pool scores, top-k, devices;
- :mod:`curiojax.strategies`: which points to label next;
- :mod:`curiojax.active`: the learner (ask / tell), ``suggest``, training, the simulated loop;
- :mod:`curiojax.extensions`: hypergradients, LOOCV, several hyperparameters, many users.
"""

from curiojax import active, extensions, scoring, strategies, tangent

# -- active learning
from curiojax.active import (
  ActiveLearner,
  ArrayOracle,
  Dataset,
  Experiment,
  Learner,
  LearnerOptions,
  LearnerState,
  LoopOptions,
  ModelOptions,
  ModelSpec,
  Suggestion,
  Trainer,
  TrainOptions,
  TrainResult,
  load_dataset,
  make_model,
  register_model,
  run_active_learning,
  suggest,
  train,
)

# -- the paper's extensions
from curiojax.extensions import (
  LeaveOneOut,
  adjoint_curiosities,
  get_strength,
  hierarchical_l2,
  hierarchical_model_fn,
  hierarchical_params,
  hypergradient,
  layer_groups,
  loocv_grid,
  loocv_influence,
  loocv_linear,
  per_example_gradients,
  per_user_scores,
  polynomial_features,
  ridge_fit,
  set_strength,
  signed_curiosities,
  split_user,
  tunable_regularity_tangent,
  tune_strength,
  with_user,
)

# -- scoring and devices
from curiojax.scoring import (
  HEURISTICS,
  Scorer,
  curiosity_scores,
  data_mesh,
  make_data_parallel_step,
  make_scorer,
  noise_variance,
  select_top_k,
)

# -- selection strategies
from curiojax.strategies import DEFAULT_STRATEGY, get_strategy, register_strategy, select_batch

# -- the tangent and its solvers
from curiojax.tangent import (
  L2,
  LOSSES,
  PredictionLoss,
  RegularityTangentState,
  SolveInfo,
  TangentDiagnostics,
  TangentDivergedError,
  TangentDivergedWarning,
  TangentInaccurateError,
  TangentInaccurateWarning,
  TangentMisplacedWarning,
  TangentOperator,
  TangentSystem,
  check_tangent,
  dense_curvature,
  exact_tangent,
  finish_tangent,
  gaussian_nll,
  get_regularizer,
  group_l2,
  huber,
  l2,
  lissa,
  nnx_model_fn,
  prediction_loss,
  regularity_tangent,
  relative_residual,
  solve,
  squared_error,
  tangent_diagnostics,
  tangent_of,
)

__version__ = "0.3.0"

__all__ = [
  # subpackages
  "active",
  "extensions",
  "scoring",
  "strategies",
  "tangent",
  # the tangent and its solvers
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
  # scoring and devices
  "HEURISTICS",
  "Scorer",
  "curiosity_scores",
  "data_mesh",
  "make_data_parallel_step",
  "make_scorer",
  "noise_variance",
  "select_top_k",
  # selection strategies
  "DEFAULT_STRATEGY",
  "get_strategy",
  "register_strategy",
  "select_batch",
  # active learning
  "ActiveLearner",
  "ArrayOracle",
  "Dataset",
  "Experiment",
  "Learner",
  "LearnerOptions",
  "LearnerState",
  "LoopOptions",
  "ModelOptions",
  "ModelSpec",
  "Suggestion",
  "TrainOptions",
  "TrainResult",
  "Trainer",
  "load_dataset",
  "make_model",
  "register_model",
  "run_active_learning",
  "suggest",
  "train",
  # the paper's extensions
  "LeaveOneOut",
  "adjoint_curiosities",
  "get_strength",
  "hierarchical_l2",
  "hierarchical_model_fn",
  "hierarchical_params",
  "hypergradient",
  "layer_groups",
  "loocv_grid",
  "loocv_influence",
  "loocv_linear",
  "per_example_gradients",
  "per_user_scores",
  "polynomial_features",
  "ridge_fit",
  "set_strength",
  "signed_curiosities",
  "split_user",
  "tunable_regularity_tangent",
  "tune_strength",
  "with_user",
]

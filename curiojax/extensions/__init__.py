"""The paper's extensions: hypergradients and online tuning of ``s``, LOOCV, several hyperparameters, many users."""

from curiojax.extensions.hierarchical import (
  hierarchical_l2,
  hierarchical_model_fn,
  hierarchical_params,
  per_user_scores,
  split_user,
  with_user,
)
from curiojax.extensions.hypergradient import (
  get_strength,
  hypergradient,
  set_strength,
  tunable_regularity_tangent,
  tune_strength,
)
from curiojax.extensions.loocv import (
  LeaveOneOut,
  loocv_grid,
  loocv_influence,
  loocv_linear,
  polynomial_features,
  ridge_fit,
)
from curiojax.extensions.multi import adjoint_curiosities, layer_groups, per_example_gradients, signed_curiosities

__all__ = [
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

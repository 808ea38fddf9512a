"""Active learning: the learner, its training and models, data, the simulated loop, persistence.

``learner``: :class:`Learner` (ask / tell / save / load); ``suggest_csv``: the same from CSV
files; ``loop``: the simulated loop and the strategies-by-splits experiment; ``training``: the trainer
with the certified tangent; ``models``: model registry; ``data``: datasets, CSV tables and
oracles; ``persistence``: atomic, pickle-free state files; ``progress``: progress lines.
"""

from curiojax.active.data import ArrayOracle, Dataset, Table, load_dataset, read_table
from curiojax.active.learner import Fit, Learner, LearnerOptions, LearnerState, ModelOptions, Suggestion
from curiojax.active.loop import ActiveLearner, Experiment, LoopOptions, run_active_learning
from curiojax.active.models import ModelSpec, make_model, register_model
from curiojax.active.progress import Progress
from curiojax.active.suggest_csv import Suggested, suggest
from curiojax.active.training import Trainer, TrainOptions, TrainResult, train

__all__ = [
  "ActiveLearner",
  "ArrayOracle",
  "Dataset",
  "Experiment",
  "Fit",
  "Learner",
  "LearnerOptions",
  "LearnerState",
  "LoopOptions",
  "ModelOptions",
  "ModelSpec",
  "Progress",
  "Suggested",
  "Suggestion",
  "Table",
  "TrainOptions",
  "TrainResult",
  "Trainer",
  "load_dataset",
  "make_model",
  "read_table",
  "register_model",
  "run_active_learning",
  "suggest",
  "train",
]

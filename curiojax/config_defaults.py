"""The default experiment of ``curiojax run`` (one source of truth; ``configs/default.py`` re-exports it).

Fields are those of :class:`curiojax.loop.LoopOptions` plus ``dataset`` (an embedded name,
a UCI-style folder or a CSV file), ``target`` (the CSV target column) and ``name`` (the
default work-directory name). Override any of them on the command line with
``--config.<field>=value``.
"""


def get_config():
  import ml_collections

  config = ml_collections.ConfigDict()
  config.name = "default"
  # Data: the UCI concrete compressive-strength set shipped with the package.
  config.dataset = "concrete"
  config.target = ""
  config.test_fraction = 0.2
  config.num_splits = 5
  config.seed = 0
  # Active learning.
  config.strategies = ("random", "curiosity", "curiosity_diverse")
  config.initial_size = 50
  config.batch_size = 25
  config.rounds = 10
  config.budget = 0
  config.warm_start = False
  config.stop_ratio = 0.0
  # Regularisation strength s: fixed, or chosen per round from strength_grid on validation.
  config.strength = 3e-3
  config.strength_grid = ()
  config.validation_fraction = 0.2
  # Model and training.
  config.model = "mlp"
  config.hidden_sizes = (50,)
  config.activation = "tanh"
  config.epochs = 200
  config.learning_rate = 1e-2
  config.minibatch_size = 32
  config.damping = 1e-3
  config.curvature = "gauss_newton"
  return config


def uci_config(name: str):
  """The default experiment on ``../shared/data/uci/<name>`` (UCI layout), 5 splits.

  ``dataset`` is relative to the current directory; elsewhere pass
  ``--config.dataset=/path/to/uci/<name>``.
  """
  config = get_config()
  config.name = f"uci_{name.replace('-', '_')}"
  config.dataset = f"../shared/data/uci/{name}"
  return config

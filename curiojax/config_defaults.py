"""The default experiment of ``curiojax run``: ``configs/default.py`` re-exports it.

Fields mirror :class:`curiojax.active.loop.LoopOptions` one to one, with its defaults (the one
source of each default): ``config.train.epochs`` is ``TrainOptions.epochs``,
``config.model.hidden_sizes`` is ``ModelOptions.hidden_sizes``, ``config.rounds`` is
``LoopOptions.rounds``. Plus ``dataset`` (an embedded name, a UCI-style folder or a CSV file),
``target`` (the CSV target column) and ``name`` (the default work-directory name). Override
any of them on the command line with ``--config.<field>=value``, e.g. ``--config.train.epochs=100``.
"""


def get_config():
  import ml_collections

  from curiojax.active.loop import LoopOptions

  config = ml_collections.ConfigDict()
  config.name = "default"
  # Data: the UCI concrete compressive-strength set shipped with the package.
  config.dataset = "concrete"
  config.target = ""
  # Everything else: curiojax.active.loop.LoopOptions, whose defaults are the main job's.
  config.update(LoopOptions().to_dict())
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

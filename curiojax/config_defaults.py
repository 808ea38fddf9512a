"""The default experiment of ``curiojax run``: ``configs/default.py`` re-exports it.

Fields are those of :class:`curiojax.active.loop.LoopOptions`, with its defaults (the one source of
each default), plus ``dataset`` (an embedded name, a UCI-style folder or a CSV file),
``target`` (the CSV target column) and ``name`` (the default work-directory name). Override
any of them on the command line with ``--config.<field>=value``.
"""


def get_config():
  import dataclasses

  import ml_collections

  from curiojax.active.loop import LoopOptions

  config = ml_collections.ConfigDict()
  config.name = "default"
  # Data: the UCI concrete compressive-strength set shipped with the package.
  config.dataset = "concrete"
  config.target = ""
  # Everything else: curiojax.active.loop.LoopOptions, whose defaults are the main job's.
  for field in dataclasses.fields(LoopOptions):
    value = getattr(LoopOptions(), field.name)
    config[field.name] = dict(value) if isinstance(value, dict) else value
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

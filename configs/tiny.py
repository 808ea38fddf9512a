"""A seconds-long run for tests: small model, few epochs, two short splits."""

from curiojax.config_defaults import get_config as _default


def get_config():
  config = _default()
  config.name = "tiny"
  config.strategies = ("random", "curiosity")  # two strategies keep the CLI tests fast
  config.num_splits = 2
  config.initial_size = 20
  config.batch_size = 10
  config.rounds = 3
  config.model.hidden_sizes = (8,)
  config.train.epochs = 10
  config.train.minibatch_size = 16
  return config

"""UCI concrete: the main job's strategies on ../shared/data/uci/concrete (see ``uci_config``)."""

from curiojax.config_defaults import uci_config


def get_config():
  return uci_config("concrete")

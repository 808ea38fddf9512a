"""UCI power-plant: the main job's strategies on ../shared/data/uci/power-plant (see ``uci_config``)."""

from curiojax.config_defaults import uci_config


def get_config():
  return uci_config("power-plant")

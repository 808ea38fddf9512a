"""UCI wine-quality-red: the main job's strategies on ../shared/data/uci/wine-quality-red (see ``uci_config``)."""

from curiojax.config_defaults import uci_config


def get_config():
  return uci_config("wine-quality-red")

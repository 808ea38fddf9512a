"""UCI wine-quality-red: random vs curiosity on ../shared/data/uci/wine-quality-red (see ``uci_config``)."""

from curiojax.config_defaults import uci_config


def get_config():
  return uci_config("wine-quality-red")

"""UCI energy: random vs curiosity on the benchmark folder (data.txt, index_features.txt, index_target.txt).

``dataset`` points at the folder; by default the copy in ../shared/data/uci relative to the
current directory. Elsewhere: --config.dataset=/path/to/uci/energy.
"""

from curiojax.config_defaults import get_config as _default


def get_config():
  config = _default()
  config.name = "uci_energy"
  config.dataset = "../shared/data/uci/energy"
  config.num_splits = 5
  return config

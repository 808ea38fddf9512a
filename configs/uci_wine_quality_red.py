"""UCI wine-quality-red: random vs curiosity on the benchmark folder (data.txt, index_features.txt, index_target.txt).

``dataset`` points at the folder; by default the copy in ../shared/data/uci relative to the
current directory. Elsewhere: --config.dataset=/path/to/uci/wine-quality-red.
"""

from curiojax.config_defaults import get_config as _default


def get_config():
  config = _default()
  config.name = "uci_wine_quality_red"
  config.dataset = "../shared/data/uci/wine-quality-red"
  config.num_splits = 5
  return config

"""Default experiment: random vs curiosity on the embedded UCI concrete data (see curiojax/config_defaults.py)."""

from curiojax.config_defaults import get_config  # noqa: F401  (one source of truth)

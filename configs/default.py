"""The main job (``curiojax run``): random vs lcmd (``curiojax.DEFAULT_STRATEGY``) vs curiosity_diverse.

On the embedded UCI concrete data; see curiojax/config_defaults.py and
``curiojax.active.loop.DEFAULT_STRATEGIES``.
"""

from curiojax.config_defaults import get_config  # noqa: F401  (one source of truth)

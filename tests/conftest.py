"""Test-session setup: 8 virtual CPU devices for the multi-device tests.

XLA reads ``XLA_FLAGS`` when the backend starts (the first ``jax.devices()`` or array),
so this must run before any test touches JAX; pytest imports ``conftest.py`` before the
test modules. Tests that need 8 devices check ``jax.device_count()`` and otherwise rerun
themselves in a subprocess with the flag set (see ``tests/test_sharding.py``).
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

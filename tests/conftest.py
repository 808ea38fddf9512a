"""Test-session setup: 8 virtual CPU devices for the multi-device tests.

XLA reads ``XLA_FLAGS`` when the backend starts (the first ``jax.devices()`` or array),
so this must run before any test touches JAX; pytest imports ``conftest.py`` before the
test modules. Tests that need 8 devices check ``jax.device_count()`` and otherwise rerun
themselves in a subprocess with the flag set (see ``tests/test_sharding.py``).
"""

import os
import subprocess
import sys
import textwrap

import pytest  # none of these imports JAX, so the flag below still comes first

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()


SLOW_LIST = os.path.join(os.path.dirname(__file__), "slow_tests.txt")


def pytest_collection_modifyitems(config, items):
  """Mark ``slow`` the tests listed in ``slow_tests.txt`` (measured, see its header), besides those
  decorated ``@pytest.mark.slow``: the fast lane, ``-m "not slow"``, leaves both to the full suite."""
  with open(SLOW_LIST) as f:
    listed = {line.strip() for line in f if line.strip() and not line.startswith("#")}
  for item in items:
    if item.nodeid in listed:
      item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def _shared_compilation_cache_for_subprocesses(tmp_path_factory):
  """Processes the tests start share one persistent compilation cache (a later one skips most compiling).

  Set after collection, when this process has imported JAX and read its settings: only the
  children see it. A test that sets its own ``JAX_COMPILATION_CACHE_DIR`` keeps it.
  """
  cache = {
    "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
  }
  missing = {k: v for k, v in cache.items() if k not in os.environ}
  os.environ.update(missing)
  yield
  for k in missing:
    os.environ.pop(k, None)


@pytest.fixture
def run_float64():
  """Run a script in a fresh process with ``JAX_ENABLE_X64=1``; it must print ``ok``.

  x64 is process-wide in JAX, so float64 paths are checked in their own process. Extra
  environment variables (e.g. ``XLA_FLAGS=""``) may be given.
  """

  def run(code: str, timeout: float = 300, **env):
    out = subprocess.run(
      [sys.executable, "-c", textwrap.dedent(code)],
      env={**os.environ, "JAX_ENABLE_X64": "1", **env},
      capture_output=True,
      text=True,
      timeout=timeout,
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]

  return run


@pytest.fixture
def compilations():
  """``with compilations() as names:`` collects the names of the XLA programs compiled inside."""
  import contextlib
  import logging

  import jax

  @contextlib.contextmanager
  def collect():
    names = []
    handler = logging.Handler()
    handler.emit = lambda record: (
      names.append(record.getMessage()) if record.getMessage().startswith("Compiling") else None
    )
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
      with jax.log_compiles():
        yield names
    finally:
      logger.removeHandler(handler)

  return collect

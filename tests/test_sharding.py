"""8 CPU devices: sharded scoring and the data-parallel tangent step equal single-device runs.

``tests/conftest.py`` sets ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` before JAX
starts; if something started JAX earlier, the tests rerun themselves in a subprocess.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import curiojax
from curiojax.scoring.sharding import data_mesh
from curiojax.tangent.parallel import make_data_parallel_step

DEVICES = 8


def _rerun_in_subprocess(test_name):
  if os.environ.get("CURIOJAX_SHARDING_RERUN"):  # already the rerun: it must not recurse
    pytest.fail(f"still {jax.device_count()} devices after forcing {DEVICES} host devices")
  env = dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=8",
    JAX_PLATFORMS="cpu",  # a single accelerator would otherwise stay the default backend
    CURIOJAX_SHARDING_RERUN="1",
  )
  out = subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{__file__}::{test_name}"],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def _needs_devices(test_name):
  if jax.device_count() >= DEVICES:
    return False
  _rerun_in_subprocess(test_name)
  return True


def mlp_fn(params, x):
  return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]


def _problem(n=300):
  k = jax.random.split(jax.random.key(0), 5)
  params = {"w1": jax.random.normal(k[0], (4, 16)) / 2, "b1": jnp.zeros(16), "w2": jax.random.normal(k[1], (16, 1)) / 4}
  x = jax.random.normal(k[2], (n, 4))
  y = jnp.sin(x[:, :1]) + 0.1 * jax.random.normal(k[3], (n, 1))
  return params, x, y


def test_sharded_scores_equal_single_device():
  if _needs_devices("test_sharded_scores_equal_single_device"):
    return
  params, x, y = _problem()
  mesh = data_mesh()
  assert mesh.devices.size == DEVICES
  tangents = jax.tree.map(lambda p: jnp.stack([jnp.cos(p), p, -p]), params)
  one = jax.tree.map(lambda t: t[1], tangents)
  for h, tangent in (("expected_squared", one), ("signed", one), ("signed", tangents), ("jvp", one)):
    single = curiojax.make_scorer(mlp_fn, heuristic=h, chunk_size=16)(params, tangent, x, y)
    scorer = curiojax.make_scorer(mlp_fn, heuristic=h, chunk_size=16, mesh=mesh)
    sharded = scorer(params, tangent, x, y)
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), rtol=1e-5, atol=1e-7)
  # 300 rows over 8 devices: 38 per device, chunk 16, 3 chunks each: padded pool 384.
  assert curiojax.scoring.scores.bucket_size(300, 16, DEVICES) == (384, 16)
  assert len(sharded.sharding.device_set) == DEVICES
  # Non-finite rows are counted across devices.
  bad = np.asarray(x).copy()
  bad[[0, 150, 299]] = np.nan
  with pytest.raises(ValueError, match="3 pool rows"):
    curiojax.curiosity_scores(mlp_fn, params, one, bad, chunk_size=16, mesh=mesh)
  idx = curiojax.select_top_k(
    curiojax.curiosity_scores(mlp_fn, params, one, bad, chunk_size=16, mesh=mesh, nonfinite="exclude"), 297
  )
  assert not set(idx.tolist()) & {0, 150, 299}


def test_data_parallel_step_gives_the_single_device_tangent():
  if _needs_devices("test_data_parallel_step_gives_the_single_device_tangent"):
    return
  params, x, y = _problem(n=128)
  loss = curiojax.prediction_loss(mlp_fn)
  tx = optax.chain(curiojax.regularity_tangent(curiojax.l2(), 0.05, curvature="gauss_newton"), optax.sgd(0.2))
  results = []
  for mesh in (data_mesh(jax.devices()[:1]), data_mesh()):
    step = make_data_parallel_step(tx, loss, mesh)
    p, state = params, tx.init(params)
    for i in range(30):
      rows = slice((i % 2) * 64, (i % 2) * 64 + 64)
      p, state = step(p, state, {"x": x[rows], "y": y[rows]})
    results.append((p, state[0].tangent))  # the raw carried tangent (30 steps: not yet certified)
  (p1, t1), (p8, t8) = results
  assert len(p8["w1"].sharding.device_set) == DEVICES  # replicated over the mesh
  assert float(jnp.linalg.norm(t1["w1"])) > 1e-3  # the tangent moved
  for a, b in zip(jax.tree.leaves((p1, t1)), jax.tree.leaves((p8, t8)), strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-4, atol=1e-6)
  # Moved to the tangent layer; the public names are the same function.
  assert curiojax.make_data_parallel_step is curiojax.scoring.make_data_parallel_step is make_data_parallel_step
  step = make_data_parallel_step(tx, loss, data_mesh())
  with pytest.raises(ValueError, match="not a multiple of the 8 devices"):
    step(params, tx.init(params), {"x": x[:12], "y": y[:12]})

"""The data-parallel training step with the tangent, over a mesh of devices.

Data-parallel over one mesh axis ``"data"``: training batches are split by rows
(``NamedSharding(mesh, P("data"))``); params and the optimizer state (with the tangent) are
replicated (``P()``). A step's mean loss, gradient and tangent product become all-reduces that
XLA inserts, so the carried tangent equals the single-device one up to float rounding.

The same code runs on several hosts: call ``jax.distributed.initialize()`` first on every
process; ``jax.devices()`` is then global and :func:`data_mesh` spans all hosts. Scoring a
pool over the same mesh is :mod:`curiojax.scoring.sharding`'s part.

Example:
  >>> import jax.numpy as jnp, optax, curiojax
  >>> mesh = data_mesh()
  >>> loss = curiojax.prediction_loss(lambda p, x: x @ p["w"])
  >>> tx = optax.chain(curiojax.regularity_tangent(curiojax.l2(), 0.1), optax.sgd(0.1))
  >>> step = make_data_parallel_step(tx, loss, mesh)
  >>> params = {"w": jnp.zeros(3)}; state = tx.init(params)
  >>> batch = {"x": jnp.ones((8 * mesh.size, 3)), "y": jnp.ones(8 * mesh.size)}
  >>> params, state = step(params, state, batch)
  >>> scores = curiojax.curiosity_scores(loss.model_fn, params, curiojax.tangent_of(state),
  ...                                    batch["x"], mesh=mesh)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def data_mesh(devices=None, axis_name: str = "data") -> Mesh:
  """A 1-D mesh over ``devices`` (default: all of ``jax.devices()``, every host) named ``"data"``."""
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError("data_mesh needs at least one device.")
  return Mesh(np.asarray(devices), (axis_name,))


def make_data_parallel_step(tx: optax.GradientTransformation, value_fn: Callable, mesh: Mesh | None = None) -> Callable:
  """A jitted data-parallel step ``step(params, opt_state, batch) -> (params, opt_state)``.

  ``batch`` (a dict of ``value_fn``'s keyword arguments, e.g. ``x``, ``y``, ``weights``) is
  sharded by rows over ``mesh``; params and optimizer state (with the tangent) are
  replicated. The step is the fused one of :func:`curiojax.regularity_tangent`:
  ``tx.update(None, state, params, value_fn=value_fn, **batch)``, so ``tx`` must start with
  the tangent transformation. Built once; call it every step.

  Args:
    tx: e.g. ``optax.chain(curiojax.regularity_tangent(...), optax.adam(1e-3))``.
    value_fn: mean data loss ``value_fn(params, **batch)`` (``curiojax.prediction_loss``).
    mesh: a mesh with a ``"data"`` axis; default :func:`data_mesh` over all devices.

  Returns:
    ``step``. Batch rows must be a multiple of the device count; pad and pass ``weights``
    (zero on padding) when they are not.
  """
  if not callable(value_fn):
    raise TypeError(f"value_fn must be callable value_fn(params, **batch), got {type(value_fn).__name__}.")
  mesh = data_mesh() if mesh is None else mesh
  if "data" not in mesh.axis_names:
    raise ValueError(f"mesh must have a 'data' axis, got axes {mesh.axis_names}.")
  data, repl = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  devices = mesh.devices.size

  def step(params, opt_state, batch):
    updates, opt_state = tx.update(None, opt_state, params, value_fn=value_fn, **batch)
    return optax.apply_updates(params, updates), opt_state

  jitted = jax.jit(step, in_shardings=(repl, repl, data), out_shardings=(repl, repl))

  def run(params, opt_state, batch: Mapping):
    if not isinstance(batch, Mapping):
      raise TypeError(f"batch must be a dict of value_fn's keyword arguments, got {type(batch).__name__}.")
    rows = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in batch.items()}
    if any(r is None for r in rows.values()) or len(set(rows.values())) != 1:
      raise ValueError(f"every batch entry needs the same leading (row) axis, got {rows}.")
    n = next(iter(rows.values()))
    if n % devices:
      raise ValueError(
        f"batch has {n} rows, not a multiple of the {devices} devices; pad it to "
        f"{-(-n // devices) * devices} rows and pass weights (0 on padding rows)."
      )
    return jitted(params, opt_state, dict(batch))

  run.jitted = jitted
  return run

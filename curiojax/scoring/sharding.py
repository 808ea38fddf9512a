"""Devices for scoring: a data mesh and sharded pools.

Everything is data-parallel over one mesh axis ``"data"``: pools are split by rows
(``NamedSharding(mesh, P("data"))``) and params and the tangent replicated (``P()``); scoring
needs no communication (each device scores its own rows). The mesh and the data-parallel
training step live with the tangent (:mod:`curiojax.tangent.parallel`) and are re-exported
here under their old names.

Example:
  >>> from jax.sharding import PartitionSpec as P
  >>> pool_sharding(data_mesh()).spec == P("data")
  True
"""

from __future__ import annotations

from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from curiojax.tangent.parallel import data_mesh, make_data_parallel_step

__all__ = ["data_mesh", "make_data_parallel_step", "pool_sharding", "replicated"]


def pool_sharding(mesh: Mesh) -> NamedSharding:
  """Rows split over the ``"data"`` axis: ``NamedSharding(mesh, P("data"))``."""
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  """The same copy on every device: ``NamedSharding(mesh, P())``."""
  return NamedSharding(mesh, P())

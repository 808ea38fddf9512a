"""curiojax: regularity tangents and influence-function curiosity for active learning.

The regularity tangent ``τ = dθ*/ds = −H⁻¹∂_s∇_θR`` is carried in an optax state while the
model trains; ``J_x τ`` over a pool (one forward-mode JVP) scores how much labelling each
point would change the model. See ``README.md``, ``docs/architecture.md`` for the layout and
``docs/method.md`` for the maths. The public API, by layer (each a subpackage):

- :mod:`curiojax.tangent`: the tangent transformation, its certification and solvers;
- :mod:`curiojax.scoring`: pool scores, top-k, devices;
- :mod:`curiojax.strategies`: which points to label next;
- :mod:`curiojax.active`: the learner (ask / tell), ``suggest``, training, the simulated loop;
- :mod:`curiojax.extensions`: hypergradients, LOOCV, several hyperparameters, many users.
"""

from curiojax import active, extensions, scoring, strategies, tangent
from curiojax.active import *  # noqa: F403  (each layer's __all__ is its public API)
from curiojax.extensions import *  # noqa: F403
from curiojax.scoring import *  # noqa: F403
from curiojax.strategies import DEFAULT_STRATEGY, get_strategy, register_strategy, select_batch
from curiojax.tangent import *  # noqa: F403

__version__ = "0.3.0"

# the subpackages, every layer's public names, and the strategies' front door (the strategy
# classes and their protocol stay in curiojax.strategies)
__all__ = [
  "active",
  "extensions",
  "scoring",
  "strategies",
  "tangent",
  *tangent.__all__,
  *scoring.__all__,
  "DEFAULT_STRATEGY",
  "get_strategy",
  "register_strategy",
  "select_batch",
  *active.__all__,
  *extensions.__all__,
]

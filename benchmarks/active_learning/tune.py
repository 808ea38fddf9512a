"""How curiosity_diverse's design and γ were chosen: variants on splits 100-101 (never 0-4).

Runs ``benchmarks/active_learning/main.py`` with the protocol of
``benchmarks/active_learning/configs/benchmark.py`` on splits 100 and 101
of all six datasets, for random, LCMD and seven tangent-based batch variants, and writes the
table to ``benchmarks/results/tuning/report.md``. Results are saved per unit and reused, so the
saved ones (kept out of git; the report is committed) are only re-tabulated:

  python benchmarks/active_learning/tune.py                 # from the repository root

Variants (``c = (J_xτ)²``, ``c̄`` its pool mean; all on the same 512-dim sketched gradients):

- ``curiosity_lcmd_g{025,05,1}``: LCMD with squared distances weighted by ``(c/c̄)^γ``,
  γ = 0.25, 0.5, 1 (``curiosity_diverse(gamma=γ)``).
- ``curiosity_kpp_g{05,1}``: k-means++ seeding with probabilities ∝ ``(c/c̄)^γ·d²``.
- ``curiosity_defl_n{01,001}``: greedy ``argmax c·r^γ``, γ = 1, where ``r`` is the fraction of
  gradient-kernel variance left after a GP with noise σ_d² (0.1, 0.01) conditions on this
  round's earlier picks (the first design of curiosity_diverse, with σ_d² = 0.1).
"""

import dataclasses
import functools
import os
import sys
from typing import ClassVar

import jax
import jax.numpy as jnp

sys.path.insert(0, os.getcwd())  # benchmarks/ from the repository root

from benchmarks.active_learning import main as bm  # noqa: E402
from benchmarks.active_learning.configs.benchmark import get_config  # noqa: E402
from curiojax.scoring.scores import curiosity_scores  # noqa: E402
from curiojax.strategies import Needs, Selection, check_batch_size, register_strategy  # noqa: E402
from curiojax.strategies import kernels as bl  # noqa: E402
from curiojax.strategies.directions import needs_along  # noqa: E402


@functools.partial(jax.jit, static_argnames=("k",))
def deflated_greedy(scores, fp, mp, fl, ml, gamma, noise, k):
  """Greedy ``argmax c·(k_S(x,x)/k(x,x))^γ`` with a GP rank-one downdate after each pick."""
  fp, _ = bl.scale_features(fp, mp, fl, ml)
  diag0 = jnp.maximum(jnp.sum(fp * fp, 1), 1e-30)
  scores = jnp.where(mp, jnp.maximum(scores, 0.0), -jnp.inf)

  def body(i, carry):
    psi, diag, sel, out = carry
    s = jnp.where(sel, -jnp.inf, scores * jnp.clip(diag / diag0, 0.0, 1.0) ** gamma)
    j = jnp.argmax(s)
    pj, d = psi[j], jnp.maximum(diag[j], 1e-30)
    dots = psi @ pj
    psi = psi - (1.0 - jnp.sqrt(noise / (d + noise))) / d * dots[:, None] * pj[None, :]
    diag = jnp.maximum(diag - dots**2 / (d + noise), 0.0)
    return psi, diag, sel.at[j].set(True), out.at[i].set(j)

  init = (fp, diag0, jnp.zeros(fp.shape[0], bool), jnp.zeros(k, jnp.int32))
  return jax.lax.fori_loop(0, k, body, init)[3]


def variant(name, kind, gamma, noise=0.1):
  @register_strategy(name)
  @dataclasses.dataclass(frozen=True)
  class Variant(bl.OnSketch):
    needs: ClassVar[Needs] = needs_along("tangent")

    def select(self, ctx, batch_size):
      check_batch_size(ctx, batch_size)
      fp, mp, fl, ml = bl.sketched_features(ctx, self.sketch)
      xp, _ = bl.pad_rows_to(ctx.x_pool, bl.POOL_BUCKET)
      jvp = curiosity_scores(ctx.model_fn, ctx.params, ctx.tangent, jnp.asarray(xp), heuristic="jvp").reshape(-1)
      if kind == "deflate":
        idx = deflated_greedy(jnp.square(jvp), fp, mp, fl, ml, gamma, noise, batch_size)
      elif kind == "lcmd":
        idx = bl.lcmd(fp, mp, fl, ml, batch_size, bl.curiosity_weights(jnp.square(jvp)[:, None], mp, gamma))
      else:
        key = jax.random.fold_in(ctx.key, 2)
        idx = bl.kmeanspp(fp, mp, fl, ml, key, batch_size, bl.curiosity_weights(jnp.square(jvp)[:, None], mp, gamma))
      return Selection.of(bl.checked_indices(idx, ctx, batch_size))


VARIANTS = {
  "curiosity_lcmd_g025": ("lcmd", 0.25),
  "curiosity_lcmd_g05": ("lcmd", 0.5),
  "curiosity_lcmd_g1": ("lcmd", 1.0),
  "curiosity_kpp_g05": ("kpp", 0.5),
  "curiosity_kpp_g1": ("kpp", 1.0),
  "curiosity_defl_n01": ("deflate", 1.0, 0.1),
  "curiosity_defl_n001": ("deflate", 1.0, 0.01),
}

if __name__ == "__main__":
  for name, spec in VARIANTS.items():
    variant(name, *spec)
  cfg = get_config()
  cfg.splits = (100, 101)
  cfg.strategies = ("random", "lcmd", *VARIANTS)
  cfg.strategy_options = {}
  cfg.results_dir = "benchmarks/results/tuning"
  bm.run(cfg)

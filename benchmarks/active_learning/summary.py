"""The benchmark's numbers from its saved results: the per-split metric, the summary rows over
splits (mean ± se, the paired difference to a reference) and their mean over datasets. Used by
``main.py`` (the report), ``verdict.py`` (the rule) and ``compare.py`` / ``tangent_accuracy.py``
(tables from saved runs); it imports none of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DATASETS = ("concrete", "power-plant", "wine-quality-red", "friedman1", "energy", "yacht")  # exact protocol first
EXACT = DATASETS[:4]


def metric(curve: Sequence[float]) -> float:
  """Mean over the post-acquisition rounds of the ``log`` of a test error (``rmse``, ``q99`` or ``max_error``)."""
  return float(np.mean(np.log(np.asarray(curve[1:]))))


def _se(a: np.ndarray) -> float:
  """Standard error of the mean of ``a`` (``std(ddof=1)/√n``; NaN for fewer than two values)."""
  return float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")


def summarise(
  results: dict[str, dict[str, dict[int, dict]]], reference: str = "random", metric_name: str = "rmse"
) -> list[dict]:
  """Rows ``dataset, strategy, metric, missing, n, mean, se, delta, delta_se, wins, select_s`` from nested results.

  ``metric_name`` is one of :data:`METRICS`, each result's curve of it summarised by :func:`metric`:
  ``mean ± se`` over the splits and the paired difference to ``reference`` on the splits both have,
  ``delta ± delta_se`` (the se of the paired differences, :func:`_se`). Where a split of the row,
  or its paired reference split, lacks the curve (results saved before it was recorded), the row
  is ``missing`` and its numbers are NaN.
  """
  rows, nan = [], float("nan")
  for ds, by_strategy in results.items():
    ref = by_strategy.get(reference, {})
    for name, by_split in by_strategy.items():
      splits = sorted(by_split)
      paired = [k for k in splits if k in ref]
      missing = any(metric_name not in unit for unit in [*(by_split[k] for k in splits), *(ref[k] for k in paired)])
      value = lambda unit: metric(unit[metric_name])
      m = np.array([] if missing else [value(by_split[k]) for k in splits])
      diff = np.array([] if missing else [value(by_split[k]) - value(ref[k]) for k in paired])
      rows.append(
        dict(
          dataset=ds,
          strategy=name,
          metric=metric_name,
          missing=missing,
          n=len(splits),
          mean=float(m.mean()) if len(m) else nan,
          se=_se(m),
          delta=float(diff.mean()) if len(diff) else nan,
          delta_se=_se(diff),
          wins=int(np.sum(diff < 0)),  # splits on which this strategy beat the reference (paired)
          # median over rounds (round 1 includes compilation), then mean over splits
          select_s=float(np.mean([np.median(by_split[k]["select_s"]) for k in splits])),
          standard=all(by_split[k].get("standard", True) for k in splits),
          batch_size=by_split[splits[0]].get("batch_size"),
        )
      )
  return rows


def mean_over_datasets(rows: list[dict]) -> tuple[float, float]:
  """The mean of the rows' paired differences ``delta_d`` over their ``D`` datasets and its se
  ``√(Σ_d delta_se_d²)/D``, the se of a mean of independent dataset means (``rows``: one per dataset)."""
  return float(np.mean([r["delta"] for r in rows])), math.sqrt(sum(r["delta_se"] ** 2 for r in rows)) / len(rows)

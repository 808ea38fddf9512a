"""The verdict rule (issue 24): when a candidate strategy may replace LCMD as the default.

The default changes only if a candidate leads LCMD by at least 0.01 in mean log RMSE (the mean
over datasets of the per-dataset mean paired difference, over splits 0–9 of all six datasets)
with a paired standard error at most 0.005, and is not worse on q99 (its mean paired difference
to LCMD in mean log q99 is at most 0). :func:`verdict` applies it to the nested results of
``benchmarks/active_learning/main.py`` (``run``'s ``results``, or a ``results.json``'s), and
:func:`verdict_lines` is the report's text, one line per strategy when LCMD is among them
(``configs/leaders_ten_splits.py`` runs the leaders on the rule's splits).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from benchmarks.active_learning.summary import DATASETS, mean_over_datasets, summarise

MIN_LEAD = 0.01  # in mean log RMSE
MAX_SE = 0.005  # the lead's paired standard error
MAX_Q99_DELTA = 0.0  # the candidate's mean log q99 minus the reference's
SPLITS = tuple(range(10))


@dataclasses.dataclass(frozen=True)
class Verdict:
  """The rule's numbers for one candidate against the reference, and whether it passes."""

  candidate: str
  reference: str
  lead: float  # the reference's mean log RMSE minus the candidate's, mean over datasets (> 0: the candidate is better)
  se: float  # the lead's paired standard error, √(Σ_d se_d²)/D
  q99_delta: float  # the candidate's mean log q99 minus the reference's, the same way (≤ 0: not worse)
  datasets: tuple[str, ...]  # the datasets with paired results
  splits: tuple[int, ...]  # the splits with paired results (on any of them)
  passes: bool
  reason: str  # one line: which conditions failed, and the numbers


def _paired(results: dict, candidate: str, reference: str, datasets, splits) -> dict:
  """The candidate's and the reference's results on the splits (of ``splits``) that both have, per dataset."""
  out = {}
  for ds in datasets:
    by = {s: {int(k): u for k, u in results.get(ds, {}).get(s, {}).items()} for s in (candidate, reference)}
    common = sorted(set(by[candidate]) & set(by[reference]) & set(splits))  # results.json's keys are strings
    if common:
      out[ds] = {s: {k: by[s][k] for k in common} for s in (candidate, reference)}
  return out


def _mean_delta(paired: dict, candidate: str, reference: str, metric_name: str) -> tuple[float, float]:
  """:func:`main.mean_over_datasets` of the candidate's :func:`main.summarise` rows; NaN where a curve is missing."""
  rows = [r for r in summarise(paired, reference, metric_name) if r["strategy"] == candidate]
  return mean_over_datasets(rows) if rows and not any(r["missing"] for r in rows) else (float("nan"), float("nan"))


def verdict(
  results: dict,
  candidate: str,
  reference: str = "lcmd",
  *,
  datasets: Sequence[str] = DATASETS,
  splits: Sequence[int] = SPLITS,
) -> Verdict:
  """Apply the rule (module docstring) to ``candidate`` against ``reference`` on ``splits`` of ``datasets``.

  For dataset ``d`` with the ``n_d`` splits ``k`` that both strategies have, let
  ``δ_dk = m_cand(d, k) − m_ref(d, k)``, ``m`` being the mean over rounds 1..R of log test RMSE
  (:func:`main.metric`). Then ``lead = −(1/D) Σ_d mean_k δ_dk`` and its paired standard error is
  ``se = √(Σ_d se_d²) / D`` with ``se_d = std_k(δ_dk, ddof=1) / √n_d``: the se of a mean of
  ``D`` independent dataset means, as the report's "mean over datasets" row
  (:func:`main.mean_over_datasets` on :func:`main.summarise`'s ``delta``, ``delta_se``).
  ``q99_delta`` is ``+(1/D) Σ_d mean_k`` of the same differences of mean log q99.

  It passes only if every (dataset, split) is paired, ``lead ≥ 0.01``, ``se ≤ 0.005`` and
  ``q99_delta ≤ 0``; a missing q99 (results saved before it was recorded) fails.
  """
  paired = _paired(results, candidate, reference, datasets, splits)
  delta, se = _mean_delta(paired, candidate, reference, "rmse")
  q99_delta, _ = _mean_delta(paired, candidate, reference, "q99")
  lead = -delta
  n_pairs = sum(len(p[candidate]) for p in paired.values())
  failed = []
  if n_pairs < len(datasets) * len(splits):
    failed.append(f"incomplete ({n_pairs} of {len(datasets)}×{len(splits)} dataset splits paired)")
  if not lead >= MIN_LEAD:  # NaN fails
    failed.append(f"lead below {MIN_LEAD}")
  if not se <= MAX_SE:
    failed.append(f"se above {MAX_SE}")
  if q99_delta != q99_delta:
    failed.append("q99 missing")
  elif q99_delta > MAX_Q99_DELTA:
    failed.append("worse on q99")
  num = lambda x, fmt: "n/a" if x != x else format(x, fmt)  # NaN: nothing to compute it from
  reason = (
    f"{'fails: ' + '; '.join(failed) if failed else 'passes'}: lead in mean log RMSE {num(lead, '+.4f')} ± "
    f"{num(se, '.4f')} (needs ≥ {MIN_LEAD}, se ≤ {MAX_SE}), q99 difference {num(q99_delta, '+.4f')} (needs ≤ 0), "
    f"datasets {len(paired)}, paired splits {n_pairs}"
  )
  return Verdict(
    candidate=candidate,
    reference=reference,
    lead=lead,
    se=se,
    q99_delta=q99_delta,
    datasets=tuple(paired),
    splits=tuple(sorted({k for p in paired.values() for k in p[candidate]})),
    passes=not failed,
    reason=reason,
  )


def verdict_lines(results: dict, strategies: Sequence[str], reference: str = "lcmd") -> str:
  """The report's verdict, one line per candidate: the rule as decided (:data:`SPLITS` of the six
  :data:`DATASETS`), and, for a run on other datasets or splits (an independent repetition), the
  same thresholds applied to the datasets and the reference's splits it has."""
  candidates = [s for s in strategies if s != reference]
  text = (
    f"Verdict: the default changes only if a candidate leads {reference} by at least {MIN_LEAD} in mean log RMSE "
    f"over splits {SPLITS[0]}–{SPLITS[-1]} of all six datasets, with a paired se of at most {MAX_SE}, and is not "
    "worse on q99 (docs/benchmark.md):\n\n"
    + "\n".join(f"- {s}: {verdict(results, s, reference).reason}" for s in candidates)
  )
  datasets = tuple(results)
  splits = tuple(sorted({int(k) for by in results.values() for k in by.get(reference, {})}))
  if set(datasets) != set(DATASETS) or not set(SPLITS) <= set(splits):
    text += (
      f"\n\nThe same thresholds on this run's {len(datasets)} datasets ({', '.join(datasets)}) and splits "
      f"{', '.join(map(str, splits))} (a repetition; the default follows the rule as decided):\n\n"
      + "\n".join(
        f"- {s}: {verdict(results, s, reference, datasets=datasets, splits=splits).reason}" for s in candidates
      )
    )
  return text

"""Progress of long jobs, in a terminal and in a log file alike.

In a terminal (stderr is a TTY) a ``tqdm`` bar; anywhere else (a job writing to a log file,
a notebook cell, CI) one flushed line per unit, with the typical time of a unit and an
estimate of the time left, so a log shows progress as it happens instead of all at once at
the end.

The time left leaves compilation out. The first unit of a job (and the first of each new
strategy or shape) spends most of its time compiling, often 10–100 times a unit's own work,
so ``elapsed / units`` would predict minutes for a job of seconds (the main job's log once
read "about 30m06s left" for 70 s). ``estimate_left`` uses only the recent units, leaves
out the slow units of the start-up (the compilations), and extrapolates a growth of a unit's
cost that the job shows throughout (a later active-learning round may cost more). Until
``MIN_UNITS`` units are done, the line says the estimate is pending.

Example:
  >>> import io
  >>> out = io.StringIO()
  >>> with Progress(3, "fits", stream=out) as bar:
  ...   for i in range(3):
  ...     bar.update(f"unit {i}")
  >>> out.getvalue().splitlines()[-1].startswith("fits 3/3")
  True
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence

#: Units a process must finish before it estimates the time left (its first ones compile).
MIN_UNITS = 3
#: A unit slower than this many times the median of the recent units counts as a compilation.
OUTLIER_FACTOR = 5.0
#: The growth of a unit's cost is measured on units within this many times their median ...
TREND_FACTOR = 3.0
#: ... among at most this many recent units.
TREND_UNITS = 200
#: Weight of the measured growth in the extrapolation.
TREND_WEIGHT = 0.5
#: The extrapolated cost of the last unit is at most this many times the recent typical cost.
MAX_GROWTH = 4.0


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _median(durations: Sequence[float]) -> float:
  ordered = sorted(durations)
  n = len(ordered)
  return 0.5 * (ordered[(n - 1) // 2] + ordered[n // 2])


def _period(durations: Sequence[float], cut: float, max_period: int) -> int:
  """The cycle of unit costs: the shortest lag whose units differ least (1 when none shows)."""
  scores = []
  for p in range(1, max(max_period, 1) + 1):
    diffs = [abs(b - a) for a, b in zip(durations[:-p], durations[p:], strict=True) if a <= cut and b <= cut]
    scores.append(_median(diffs) if diffs else math.inf)
  best = min(scores)
  return next(p for p, score in enumerate(scores, start=1) if score <= 1.1 * best)


def _typical(durations: Sequence[float], factor: float = OUTLIER_FACTOR) -> float:
  """Mean of the durations, leaving out those over ``factor ×`` their median."""
  median = _median(durations)
  kept = [d for d in durations if d <= factor * median]
  return sum(kept) / len(kept)


def _warm_up(durations: Sequence[float], reference: float) -> int:
  """Units before the first ``MIN_UNITS`` in a row within ``OUTLIER_FACTOR × reference`` (the start-up compilation)."""
  run = 0
  for i, d in enumerate(durations):
    run = run + 1 if d <= OUTLIER_FACTOR * reference else 0
    if run == MIN_UNITS:
      return i + 1 - MIN_UNITS
  return len(durations)


def _slope(durations: Sequence[float]) -> float | None:
  """Theil–Sen slope (seconds per unit per unit) of a stretch of units, or None if too short.

  The median slope over pairs of units a quarter of the stretch or more apart, leaving out
  units over ``TREND_FACTOR ×`` the median (occasional slow units) and pairs whose distance is
  not a multiple of the stretch's cycle (the shortest lag at which costs repeat: the
  strategies of a round differ in cost).
  """
  n = len(durations)
  if n < 2 * MIN_UNITS:
    return None
  cut = TREND_FACTOR * _median(durations)
  points = [(i, d) for i, d in enumerate(durations) if d <= cut]
  lag = n / 4
  period = _period(durations, cut, max_period=int(lag))
  slopes = [
    (dj - di) / (j - i)
    for a, (i, di) in enumerate(points)
    for j, dj in points[a + 1 :]
    if j - i >= lag and (j - i) % period == 0
  ]
  return _median(slopes) if slopes else None


def estimate_left(durations: Sequence[float], units_left: int) -> tuple[float, float] | None:
  """``(seconds per unit now, seconds left)`` from the durations of the units done so far.

  Compilation left out: the units before the first ``MIN_UNITS`` in a row within
  ``OUTLIER_FACTOR ×`` the recent median are the start-up, and its slow units (the
  compilations) are left out. The level is the mean duration of the recent half of the units
  (at least ``MIN_UNITS``); slow units after the start-up count, as they recur (a new shape
  each round compiles again). The trend is the Theil–Sen slope (:func:`_slope`) of each half
  of the units since the start-up: only a growth both halves show is extrapolated, so that
  one step (the machine got busier) is not taken for a trend, and only ``TREND_WEIGHT`` of
  their mean. The extrapolated cost of the last unit is capped at ``MAX_GROWTH ×`` the level.
  Measured on simulated jobs of 165 units (a compilation of 3–30 s, three strategies of
  unequal cost, ±15% noise, a unit's cost growing up to 2× over the job): within 1.5× of the
  true time left from 20% of the units on.

  Args:
    durations: seconds of each unit done in this process, in order.
    units_left: units still to run.

  Returns:
    ``None`` before ``MIN_UNITS`` units (nothing but compilation seen yet), else the typical
    seconds per unit now and the estimated seconds left.

  Example:
    >>> compile_then_steady = [12.0, 3.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    >>> rate, left = estimate_left(compile_then_steady, units_left=100)
    >>> round(rate, 2), round(left)  # elapsed / units would say 195 s
    (0.1, 10)
  """
  k = len(durations)
  if k < MIN_UNITS:
    return None
  window = max(MIN_UNITS, math.ceil(k / 2))
  recent = durations[k - window :]
  reference = _median(recent)
  warm = _warm_up(durations, reference)
  if warm >= k:  # still starting up
    level = _typical(recent)
  else:
    reference = _median(durations[warm:])
    kept = [d for i, d in enumerate(recent, k - window) if i >= warm or d <= OUTLIER_FACTOR * reference]
    level = sum(kept) / len(kept) if kept else _typical(recent)
  growth = 0.0  # relative growth of a unit's cost, per unit
  start = max(warm, k - TREND_UNITS)
  middle = (start + k) // 2
  slopes = (_slope(durations[start:middle]), _slope(durations[middle:]))
  if None not in slopes and min(slopes) > 0:
    # half their mean: a growth seen in a fifth of a job is uncertain, and the units left
    # multiply its error (a full one overshot flat jobs by 1.7x in simulations)
    growth = TREND_WEIGHT * (slopes[0] + slopes[1]) / 2 / level
  # the j-th next unit (j = 1 … units_left) costs level (1 + growth (window / 2 + j - 1/2))
  growth = min(growth, (MAX_GROWTH - 1) / max(window / 2 + units_left - 0.5, 1))
  ahead = (window + units_left) / 2  # mean distance of the units left from the recent centre
  return level, units_left * level * (1 + growth * ahead)


class Progress:
  """``with Progress(total, what) as bar: bar.update(label)`` once per unit.

  Args:
    total: units in the job.
    what: what a unit is, e.g. ``"fits"``.
    initial: units already done (a resumed job).
    stream: where to write (default stderr).
    bar: a ``tqdm`` bar (default: only when ``stream`` is a terminal); it shows the same
      time left as the lines (``estimate_left``), not tqdm's own average.
    clock: seconds, monotonic (default ``time.perf_counter``; tests pass a fake one).
  """

  def __init__(
    self,
    total: int,
    what: str,
    *,
    initial: int = 0,
    stream=None,
    bar: bool | None = None,
    clock: Callable[[], float] | None = None,
  ):
    self.total, self.what, self.done = int(total), what, int(initial)
    self.stream = sys.stderr if stream is None else stream
    self._clock = time.perf_counter if clock is None else clock
    isatty = getattr(self.stream, "isatty", lambda: False)()
    self._tqdm = None
    if bar if bar is not None else isatty:
      from tqdm import tqdm

      self._tqdm = tqdm(
        total=self.total,
        initial=self.done,
        desc=what,
        unit="unit",
        file=self.stream,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
      )
    self._last = self._clock()
    self.durations: list[float] = []  # seconds of each unit done in this process

  def __enter__(self) -> Progress:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    """End the bar (a no-op for line output)."""
    if self._tqdm is not None:
      self._tqdm.close()

  def estimate(self) -> tuple[float, float] | None:
    """``(seconds per unit now, seconds left)``, or ``None`` while the first units compile."""
    return estimate_left(self.durations, max(self.total - self.done, 0))

  def update(self, label: str = "") -> None:
    """One more unit done; ``label`` says which."""
    now = self._clock()
    self.durations.append(now - self._last)
    self._last = now
    self.done += 1
    estimate = self.estimate()
    if self._tqdm is not None:
      left = "time left: estimating" if estimate is None else f"about {_duration(estimate[1])} left"
      self._tqdm.set_postfix_str(f"{label}, {left}" if label else left, refresh=False)
      self._tqdm.update(1)
      return
    if estimate is None:
      rate = f"{self.durations[-1]:.2f} s/unit so far (compiling), time left: estimating"
    else:
      rate = f"{estimate[0]:.2f} s/unit, about {_duration(estimate[1])} left"
    print(f"{self.what} {self.done}/{self.total}  {label}  {rate}", file=self.stream, flush=True)

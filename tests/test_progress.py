"""The progress line's time left leaves compilation out: within 1.5x of the truth from 20% of the units on."""

import io
import math
import re

import numpy as np
import pytest

from curiojax.active.progress import Progress, estimate_left

STRATEGY_COST = {"random": 1.0, "lcmd": 1.4, "curiosity_diverse": 3.0}
ROUNDS, SPLITS = 11, 5  # the main job's shape: 50 labels + 10 rounds of 25, 5 splits, 3 strategies


def _job(compile_s=10.0, growth=3.0, seed=0):
  """Unit durations (round → split → strategy) of a simulated main job and their labels.

  A unit costs more in later rounds (``growth ×`` from the first round to the last), by
  strategy, with ±15% jitter; the first unit of each strategy also compiles for ``compile_s``,
  and every round's first unit compiles a little (a new labelled-set shape).
  """
  rng = np.random.default_rng(seed)
  durations, labels = [], []
  for r in range(ROUNDS):
    for split in range(SPLITS):
      for i, (name, cost) in enumerate(STRATEGY_COST.items()):
        d = 0.1 * cost * (1 + (growth - 1) * r / (ROUNDS - 1)) * rng.uniform(0.85, 1.15)
        if r == 0 and split == 0:
          d += compile_s
        elif split == 0 and i == 0:
          d += 0.5
        durations.append(d)
        labels.append(f"round {r} split {split} {name}")
  return durations, labels


class _FakeClock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def _run(durations, labels, **kw):
  """Drive a Progress with a fake clock; (printed lines, true seconds left after each unit)."""
  clock, out = _FakeClock(), io.StringIO()
  with Progress(len(durations), "fits", stream=out, clock=clock, **kw) as bar:
    for d, label in zip(durations, labels, strict=True):
      clock.now += d
      bar.update(label)
  true_left = [sum(durations[k:]) for k in range(1, len(durations) + 1)]
  return out.getvalue().splitlines(), true_left


def _seconds(text):
  """``1m05s`` / ``2h03m`` / ``42s`` → seconds."""
  m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
  h, mi, s = (int(g) if g else 0 for g in m.groups())
  if m.group(1):  # h and m: the seconds are rounded off
    return 3600 * h + 60 * mi
  return 60 * mi + s


def _printed_left(line):
  m = re.search(r"about (\S+) left", line)
  return None if m is None else _seconds(m.group(1))


def _old_estimate(durations, k):
  """The former estimate: elapsed / units × units left."""
  return sum(durations[:k]) / k * (len(durations) - k)


def _worst_ratio(estimates, true_left, n):
  """Largest factor between estimate and truth from 20% to 90% of the units (k = units done)."""
  ks = range(math.ceil(0.2 * n), int(0.9 * n) + 1)
  return max(max(estimates[k] / true_left[k - 1], true_left[k - 1] / estimates[k]) for k in ks)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("growth", [1.0, 1.5, 2.0])
@pytest.mark.parametrize("compile_s", [3.0, 30.0])
def test_time_left_within_1_5x_from_20_percent(compile_s, growth, seed):
  durations, labels = _job(compile_s=compile_s, growth=growth, seed=seed)
  n = len(durations)
  lines, true_left = _run(durations, labels)
  assert len(lines) == n
  printed = {k: _printed_left(line) for k, line in enumerate(lines, start=1)}
  # at 20% of the units exactly, from the printed line (whole seconds) ...
  k20 = math.ceil(0.2 * n)
  assert 1 / 1.5 <= printed[k20] / true_left[k20 - 1] <= 1.5, (printed[k20], true_left[k20 - 1])
  # ... and every unit from there to 90% (the estimate itself, not rounded)
  estimates = {k: estimate_left(durations[:k], n - k)[1] for k in range(3, n)}
  assert _worst_ratio(estimates, true_left, n) <= 1.5


def test_the_former_estimate_fails_the_same_check():
  """elapsed / units counts the compilation in every unit: far above the truth at 20% (the check can fail)."""
  durations, _ = _job(compile_s=10.0, growth=2.0)
  n = len(durations)
  k20 = math.ceil(0.2 * n)
  _, true_left = _run(durations, [""] * n)
  old = _old_estimate(durations, k20)
  assert old / true_left[k20 - 1] > 1.5
  assert _worst_ratio({k: _old_estimate(durations, k) for k in range(1, n)}, true_left, n) > 1.5


def test_measured_main_job_shape():
  """Durations shaped as measured on `curiojax run` (2 CPU cores): 2.5 s, 3.2 s and 11.6 s of compilation,
  then ~0.1 s units, and curiosity_diverse 4x slower from round 7 on: the estimate at 20% is within 1.5x."""
  durations = [2.46, 3.25, 11.56]
  for r in range(ROUNDS):
    for split in range(SPLITS):
      if r == 0 and split == 0:
        continue
      cd = 0.55 if 7 <= r <= 9 else 0.16
      durations += [0.09, 0.13, cd if r < 10 else 0.12]
  n = len(durations)
  _, true_left = _run(durations, [""] * n)
  k20 = math.ceil(0.2 * n)
  rate, left = estimate_left(durations[:k20], n - k20)
  assert 1 / 1.5 <= left / true_left[k20 - 1] <= 1.5
  assert rate < 0.5  # a unit's own time, not the compilation's
  assert _old_estimate(durations, k20) / true_left[k20 - 1] > 2.5  # what the log showed before


# Seconds per unit of `curiojax run` (the default config, 165 units) on 2 busy CPU cores: 56 s of
# compilation in the first 3 units, a recompilation of 2-5 s at each round's first unit, a machine
# that got busier after round 0, and a cheap last round (no selection).
MEASURED_LOADED = [
  18.20,
  10.96,
  26.58,
  0.14,
  0.20,
  0.62,
  0.18,
  0.26,
  0.65,
  0.16,
  0.19,
  0.27,
  0.15,
  0.23,
  0.37,
  2.26,
  0.34,
  0.50,
  0.43,
  0.46,
  0.53,
  0.32,
  0.29,
  1.30,
  0.31,
  0.41,
  1.32,
  0.44,
  0.50,
  1.23,
  4.38,
  0.52,
  1.32,
  0.42,
  0.50,
  1.32,
  0.38,
  0.50,
  1.37,
  0.33,
  0.35,
  1.22,
  0.31,
  0.39,
  1.28,
  5.21,
  0.25,
  0.58,
  0.26,
  0.21,
  0.96,
  0.30,
  0.27,
  0.89,
  0.25,
  0.29,
  0.94,
  0.24,
  0.39,
  0.41,
  2.88,
  0.38,
  0.65,
  0.42,
  0.44,
  1.17,
  0.60,
  0.45,
  1.04,
  0.43,
  0.54,
  0.83,
  0.37,
  0.57,
  1.37,
  4.57,
  0.72,
  1.50,
  0.63,
  0.43,
  0.52,
  0.53,
  0.74,
  0.85,
  0.63,
  0.65,
  1.43,
  0.59,
  0.62,
  0.56,
  2.60,
  0.43,
  0.73,
  0.36,
  0.37,
  0.85,
  0.52,
  0.57,
  0.42,
  0.24,
  0.41,
  0.52,
  0.55,
  0.49,
  0.81,
  4.19,
  0.62,
  1.34,
  0.54,
  0.75,
  1.48,
  0.55,
  0.66,
  1.40,
  0.56,
  0.63,
  1.42,
  0.57,
  0.67,
  1.40,
  4.22,
  0.86,
  1.57,
  0.56,
  0.65,
  1.69,
  0.68,
  0.68,
  1.48,
  0.71,
  0.87,
  1.68,
  0.72,
  0.75,
  1.63,
  4.76,
  0.72,
  1.61,
  0.50,
  0.80,
  1.67,
  0.78,
  0.82,
  1.54,
  0.41,
  0.55,
  0.47,
  0.29,
  0.74,
  0.89,
  0.21,
  0.33,
  0.39,
  0.15,
  0.14,
  0.21,
  0.13,
  0.09,
  0.22,
  0.13,
  0.17,
  0.21,
  0.10,
  0.13,
  0.32,
]


def test_measured_loaded_run():
  durations = MEASURED_LOADED
  n = len(durations)
  assert n == 165
  _, true_left = _run(durations, [""] * n)
  k20 = math.ceil(0.2 * n)
  rate, left = estimate_left(durations[:k20], n - k20)
  assert 1 / 1.5 <= left / true_left[k20 - 1] <= 1.5, (left, true_left[k20 - 1])
  assert _old_estimate(durations, k20) / true_left[k20 - 1] > 2.5  # what the log showed before


def test_first_units_say_estimating_then_every_line_has_a_time_left():
  durations, labels = _job()
  lines, _ = _run(durations, labels)
  assert all("s/unit" in ln and "left" in ln for ln in lines)
  assert all("estimating" in ln for ln in lines[:2]) and "about" in lines[2]
  assert lines[0].startswith("fits 1/165  round 0 split 0 random  10.")
  assert lines[-1].startswith("fits 165/165") and lines[-1].endswith("about 0s left")


def test_resumed_job_counts_only_its_own_units():
  durations, labels = _job()
  clock, out = _FakeClock(), io.StringIO()
  with Progress(len(durations), "fits", initial=100, stream=out, clock=clock) as bar:
    for d, label in zip(durations[100:], labels[100:], strict=True):
      clock.now += d
      bar.update(label)
  lines = out.getvalue().splitlines()
  assert len(lines) == 65 and lines[0].startswith("fits 101/165") and lines[-1].startswith("fits 165/165")
  assert len(bar.durations) == 65


def test_outliers_and_trend():
  assert estimate_left([5.0, 1.0], 10) is None  # nothing but compilation seen yet
  rate, left = estimate_left([30.0, 0.1, 0.1, 0.1, 0.1, 0.1], 10)
  assert rate == pytest.approx(0.1) and left == pytest.approx(1.0)  # the compile unit is left out
  # steady growth of 0.01 s per unit is extrapolated, with weight TREND_WEIGHT (0.5: a fifth of
  # a job says little about the rest); a slowdown never predicts faster units
  rate, left = estimate_left([0.1 + 0.01 * i for i in range(20)], 10)
  true = sum(0.1 + 0.01 * i for i in range(20, 30))
  assert rate == pytest.approx(0.245) and left == pytest.approx(10 * rate + 0.5 * 0.01 * 10 * 10)
  assert 10 * rate < left < true
  # a single step (the machine got busier) is not a trend
  rate, left = estimate_left([0.1] * 20 + [0.2] * 20, 100)
  assert left == pytest.approx(100 * rate)
  rate, left = estimate_left([0.3 - 0.01 * i for i in range(20)], 10)
  assert left == pytest.approx(10 * rate)
  # the extrapolated last unit costs at most 4x the level
  rate, left = estimate_left([0.01] * 10 + [1.0] * 10, 1000)
  assert left <= 1000 * 4 * rate
  assert estimate_left([0.1] * 5, 0)[1] == 0.0


def test_bar_shows_the_same_estimate():
  durations, labels = _job()
  clock, out = _FakeClock(), io.StringIO()
  with Progress(len(durations), "fits", stream=out, clock=clock, bar=True) as bar:
    for d, label in zip(durations[:40], labels[:40], strict=True):
      clock.now += d
      bar.update(label)
    expected = estimate_left(bar.durations, len(durations) - 40)[1]
    postfix = bar._tqdm.postfix
  assert "round 2 split 3 random" in postfix and _printed_left(postfix) == _seconds_rounded(expected)
  text = out.getvalue()
  assert "40/165" in text and "<" not in text.split("40/165")[-1]  # no tqdm remaining time (elapsed<remaining)


def _seconds_rounded(seconds):
  from curiojax.active.progress import _duration

  return _seconds(_duration(seconds))

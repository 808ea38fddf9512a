"""Progress of long jobs, in a terminal and in a log file alike.

In a terminal (stderr is a TTY) a ``tqdm`` bar; anywhere else (a job writing to a log file,
a notebook cell, CI) one flushed line per unit, with the rate and an estimate of the time
left, so a log shows progress as it happens instead of all at once at the end.

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

import sys
import time


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
  """``with Progress(total, what) as bar: bar.update(label)`` once per unit.

  Args:
    total: units in the job.
    what: what a unit is, e.g. ``"fits"``.
    initial: units already done (a resumed job).
    stream: where to write (default stderr).
    bar: a ``tqdm`` bar (default: only when ``stream`` is a terminal).
  """

  def __init__(self, total: int, what: str, *, initial: int = 0, stream=None, bar: bool | None = None):
    self.total, self.what, self.done = int(total), what, int(initial)
    self.stream = sys.stderr if stream is None else stream
    isatty = getattr(self.stream, "isatty", lambda: False)()
    self._tqdm = None
    if bar if bar is not None else isatty:
      from tqdm import tqdm

      self._tqdm = tqdm(total=self.total, initial=self.done, desc=what, unit="unit", file=self.stream)
    self._start, self._start_done = time.perf_counter(), self.done

  def __enter__(self) -> Progress:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    """End the bar (a no-op for line output)."""
    if self._tqdm is not None:
      self._tqdm.close()

  def update(self, label: str = "") -> None:
    """One more unit done; ``label`` says which."""
    self.done += 1
    if self._tqdm is not None:
      self._tqdm.set_postfix_str(label)
      self._tqdm.update(1)
      return
    elapsed = time.perf_counter() - self._start
    rate = elapsed / max(self.done - self._start_done, 1)
    left = rate * (self.total - self.done)
    print(
      f"{self.what} {self.done}/{self.total}  {label}  {rate:.2f} s/unit, about {_duration(left)} left",
      file=self.stream,
      flush=True,
    )

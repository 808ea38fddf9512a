"""Are the error bars honest? Coverage of the Learner's predictive intervals on held-out UCI rows.

For each UCI dataset in ``../shared/data/uci`` and each fixed split (the folder's
``index_train_k`` rows are the pool, ``index_test_k`` the held-out rows), with the
:class:`curiojax.Learner`'s defaults (the ``suggest`` session's model and training):

- **random rows**: ``n`` pool rows labelled at random (``n`` = 50, 150, 300); the coverage of the
  central 68% and 95% intervals (:meth:`curiojax.Learner.interval`) on the held-out rows;
- **picked rows**: the default strategy (``lcmd``) labels from 50 random rows on, in batches of
  ``--batch``; at ``n`` = 50, 150, 300 labels, the coverage of the intervals the batch it picks
  comes with, on those rows' true labels: the hard case, as
  the strategy picks rows at the edges of the data;
- the same strategy's fits on the held-out rows (``lcmd, held out``), for reference.

Targets (issue 22): within ±0.07 of nominal on random rows, ±0.12 on the picked rows. Datasets
whose pool is smaller than ``n`` skip that ``n``.

  python benchmarks/calibration/main.py                      # 5 datasets x 2 splits (about 15 minutes on 2 cores)
  python benchmarks/calibration/main.py --fast               # one small dataset, one split (CI smoke)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

import curiojax
from curiojax.active.data import load_uci_folder
from curiojax.active.progress import Progress

ROOT = Path(__file__).resolve().parents[2]
UCI = ROOT.parent / "shared" / "data" / "uci"
NOMINAL = {"cov68": 0.6827, "cov95": 0.95}


def coverage(learner, state, fit, x, y) -> dict[str, float]:
  """Share of ``y`` inside the central 68% and 95% intervals (:meth:`curiojax.Learner.interval`), and the count."""
  out = {"rows": len(y)}
  for name, level in NOMINAL.items():
    low, high = learner.interval(state, fit, x, level)
    out[name] = float(np.mean((low <= y) & (y <= high)))
  return out


def run_split(folder: Path, split: int, labels, batch: int, options, seed: int = 0) -> list[dict]:
  """Coverage records of one dataset split (module docstring)."""
  ds = load_uci_folder(folder)
  x, y = np.asarray(ds.x), np.asarray(ds.y)
  train = np.loadtxt(folder / f"index_train_{split}.txt", dtype=np.int64)
  test = np.loadtxt(folder / f"index_test_{split}.txt", dtype=np.int64)
  x_pool, y_pool = x[train], y[train]
  labels = [n for n in labels if n + batch <= len(train)]
  rng = np.random.default_rng(1000 * split + seed)
  order = rng.permutation(len(train))
  records = []

  def record(kind, n, cov):
    records.append({"dataset": folder.name, "split": split, "kind": kind, "labels": n, **cov})

  for n in labels:  # random rows: n random labels, intervals on the held-out rows
    learner = curiojax.Learner(x_pool, options=options, strategy="random")
    state = learner.init(jax.random.key(seed), labelled=order[:n], labels=y_pool[order[:n]])
    state, fit = learner.fit(state)
    record("random rows", n, coverage(learner, state, fit, x[test], y[test]))
  learner = curiojax.Learner(x_pool, options=options)  # the default strategy
  start = labels[0] if labels else 0
  state = learner.init(jax.random.key(seed), labelled=order[:start], labels=y_pool[order[:start]])
  n = start
  while labels and n <= labels[-1]:
    state, batch_ = learner.ask(state, batch)
    if n in labels:
      picked = batch_.indices
      record("picked rows", n, coverage(learner, state, batch_.fit, x_pool[picked], y_pool[picked]))
      record(f"{learner.strategy_name}, held out", n, coverage(learner, state, batch_.fit, x[test], y[test]))
    state = learner.tell(state, batch_.indices, y_pool[batch_.indices])
    n += batch
  return records


def table(records: list[dict]) -> str:
  """Mean coverage by kind and labels (over datasets and splits, rows-weighted within a dataset), per dataset below."""
  kinds = {r["kind"] for r in records}
  lines = [f"{'rows':<18s} {'labels':>6s} {'cov68':>6s} {'cov95':>6s}  {'datasets':>8s}  per dataset (cov68/cov95)"]
  for kind in sorted(kinds, key=lambda k: (k != "random rows", k != "picked rows", k)):
    for n in sorted({r["labels"] for r in records if r["kind"] == kind}):
      rows = [r for r in records if r["kind"] == kind and r["labels"] == n]
      per = {}
      for r in rows:
        per.setdefault(r["dataset"], []).append(r)
      means = {
        d: tuple(np.average([r[c] for r in rs], weights=[r["rows"] for r in rs]) for c in ("cov68", "cov95"))
        for d, rs in per.items()
      }
      c68 = np.mean([m[0] for m in means.values()])
      c95 = np.mean([m[1] for m in means.values()])
      detail = "  ".join(f"{d} {m[0]:.2f}/{m[1]:.2f}" for d, m in sorted(means.items()))
      lines.append(f"{kind:<18s} {n:6d} {c68:6.2f} {c95:6.2f}  {len(means):8d}  {detail}")
  lines.append(f"nominal{'':<18s} {NOMINAL['cov68']:6.2f} {NOMINAL['cov95']:6.2f}")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--uci", default=str(UCI), help="folder of UCI dataset folders")
  parser.add_argument("--datasets", default="concrete,energy,power-plant,wine-quality-red,yacht")
  parser.add_argument("--splits", type=int, default=2, help="fixed splits per dataset (0..k-1)")
  parser.add_argument("--labels", default="50,150,300")
  parser.add_argument("--batch", type=int, default=50, help="the strategy's batch size, and picked rows per record")
  parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the Learner's)")
  parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "calibration"))
  parser.add_argument("--fast", action="store_true", help="yacht, one split, 30 and 60 labels, 40 epochs")
  args = parser.parse_args(argv)
  datasets, splits, labels = args.datasets.split(","), args.splits, [int(v) for v in args.labels.split(",")]
  epochs = args.epochs
  if args.fast:
    datasets, splits, labels, args.batch, epochs = ["yacht"], 1, [30, 60], 30, 40
  options = (
    curiojax.LearnerOptions() if epochs is None else curiojax.LearnerOptions(train=curiojax.TrainOptions(epochs=epochs))
  )
  records = []
  t0 = time.perf_counter()
  with Progress(len(datasets) * splits, "dataset splits") as bar:
    for name in datasets:
      for split in range(splits):
        records += run_split(Path(args.uci) / name, split, labels, args.batch, options)
        bar.update(f"{name} split {split}")
  report = table(records)
  print(report)
  print(f"({time.perf_counter() - t0:.0f} s; python benchmarks/calibration/main.py {' '.join(argv or sys.argv[1:])})")
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "records.json").write_text(json.dumps(records, indent=1))
  (out / "report.txt").write_text(report + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""The command line: ``curiojax suggest`` (which rows to label next) and ``curiojax run`` (the experiment).

    curiojax suggest --labelled L.csv --target COL --pool P.csv -k N [--id-column ID]
                     [--state DIR] [--strategy NAME] [--out FILE] [--config.<field>=value ...]
    curiojax run [--config FILE.py] [--config.<field>=value ...] [--workdir DIR]
    curiojax run --resume DIR

``suggest`` fits the model on the labelled file, writes the ``k`` pool rows to label next
(their ids, scores, predictions and standard deviations, features) to ``suggestions.csv``,
appends them to the state folder's ``history.csv`` and keeps its state; run it again after
adding labels to the labelled file and it continues (:mod:`curiojax.active.suggest_csv`). ``--config.<field>=value``
sets a :class:`curiojax.active.learner.LearnerOptions` field of a new state.

``--config`` is a Python file with ``get_config()`` returning an ``ml_collections.ConfigDict``
(default: the packaged :mod:`curiojax.config_defaults`); ``--config.<field>=value``
overrides one field, type-checked against the config; the fields mirror
:class:`curiojax.active.loop.LoopOptions` one to one, sections by dots
(``--config.strategies=random,curiosity``, ``--config.model.hidden_sizes=64,64``,
``--config.train.epochs=100``, ``--config.warm_start=true``). Everything (config, dataset,
label schedule) is validated before the work directory is created. After every unit
(round × split × strategy) the state is saved atomically; ``--resume DIR`` continues a run
with its saved config. At the end: ``results.csv``, ``summary.json`` and
``learning_curve.png`` in the work directory and a table on stdout.

User mistakes print one line ``curiojax: error: …`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import sys
import warnings
from pathlib import Path

CONFIG_ONLY_FIELDS = ("name", "dataset", "target")
RESULT_COLUMNS = (
  "strategy",
  "split",
  "round",
  "labels",
  "test_rmse",
  "test_mae",
  "seconds",
  "strength",
  "noise_variance",
  "tangent_residual",
  "tangent_ok",
  "top_score",
  "stopped",
)


NUMBER_TUPLES = ("strength_grid",)  # tuple fields of numbers whose default is empty (no element to type them by)


class UserError(ValueError):
  """A mistake in the command line, config or data: reported in one line, no traceback."""


# -- config ---------------------------------------------------------------------------------
def _split_commas(config, reference):
  """``--config.strategies=random,lcmd`` means a tuple: split comma lists that the flag parser kept whole."""
  for key, default in reference.items():
    value = config.get(key)
    if isinstance(default, dict) and hasattr(value, "items"):
      _split_commas(value, default)  # a section: config.model.hidden_sizes=64,64
    elif isinstance(default, tuple) and isinstance(value, tuple) and len(value) == 1 and isinstance(value[0], str):
      if "," in value[0] or (default and not isinstance(default[0], str)) or key in NUMBER_TUPLES:
        like = default[0] if default else (0.0 if key in NUMBER_TUPLES else None)
        parts = [t.strip() for t in value[0].split(",") if t.strip()]
        try:
          config[key] = tuple(type(like)(t) if isinstance(like, (int, float)) else t for t in parts)
        except ValueError as e:
          raise UserError(f"bad value {value[0]!r} for config field {key!r}: {e}") from None
  return config


def parse_config(args: list[str], default=None):
  """The config of ``--config FILE.py`` and ``--config.<field>=value`` arguments, by ``ml_collections.config_flags``.

  ``default``: a config file (default: the packaged :mod:`curiojax.config_defaults`) or a
  ``ConfigDict`` (then ``--config FILE`` is not accepted). Fields are type-checked against
  the config, sections by dots (``--config.train.epochs=100``); lists may be written ``a,b``
  or ``(a, b)``. Mistakes raise :class:`UserError`.
  """
  import ml_collections

  files = [
    a for i, a in enumerate(args) if a == "--config" or a.startswith("--config=") or (i and args[i - 1] == "--config")
  ]
  if isinstance(default, ml_collections.ConfigDict) and files:
    raise UserError("this command takes no --config file; set fields with --config.<field>=value.")
  base = _flags_parse(files, default)  # the file alone first, so unknown fields can be named
  for a in args:
    if a.startswith("--config."):
      _check_field(base, a[len("--config.") :].split("=", 1)[0])
  return _split_commas(_flags_parse(args, default), base.to_dict())


def _check_field(config, field: str) -> None:
  import difflib

  node = config
  for part in field.split("."):
    if not part or not hasattr(node, "keys") or part not in node:
      known = sorted(node.keys()) if hasattr(node, "keys") else []
      close = difflib.get_close_matches(part, known, n=1)
      moved = [k for k in known if node is config and hasattr(node[k], "keys") and part in node[k]]
      hint = f" (it is now {moved[0]}.{part})" if moved else f" (did you mean {close[0]!r}?)" if close else ""
      raise UserError(f"unknown config field {field!r}{hint}; known fields: {', '.join(known)}.")
    node = node[part]


def _flags_parse(args: list[str], default):
  """``args`` parsed by a ``config`` flag on a ``FlagValues`` of our own (``sys.argv`` is not read)."""
  import ml_collections
  from absl import flags
  from ml_collections import config_flags

  argv = ["curiojax", *args]
  values = flags.FlagValues()
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", DeprecationWarning)  # config_flags loads files with load_module()
      if isinstance(default, ml_collections.ConfigDict):
        config = ml_collections.ConfigDict(default)
        config_flags.DEFINE_config_dict("config", config, flag_values=values, sys_argv=argv)
      else:
        path = str(_config_path(args, default))
        config_flags.DEFINE_config_file("config", path, flag_values=values, sys_argv=argv)
      values(argv)
    return values.config
  except UserError:
    raise
  except flags.Error as e:
    raise UserError(f"bad value: {str(e).splitlines()[0].removeprefix('flag ')}") from None
  except Exception as e:  # noqa: BLE001 - a user's config file: report, do not trace back
    raise UserError(f"could not load the config: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def _config_path(args, default) -> Path:
  path = None
  for i, a in enumerate(args):
    if a.startswith("--config="):
      path = a.split("=", 1)[1]
    elif a == "--config" and i + 1 < len(args):
      path = args[i + 1]
  if path is not None:
    p = Path(path.split(":")[0])
    if not p.is_file():
      raise UserError(f"config file {path} does not exist.")
    return p
  if default is not None:
    return Path(default)
  from curiojax import config_defaults

  return Path(config_defaults.__file__)


def options_from_config(config, kind=None):
  """The options (``kind``, default :class:`curiojax.active.loop.LoopOptions`) of a config, one to one.

  A config saved by the previous release (flat: ``epochs`` beside ``rounds``) is read as it
  meant. Unknown fields and bad values raise :class:`UserError`.
  """
  from curiojax.active.learner import options_from_dict, options_from_flat
  from curiojax.active.loop import LoopOptions

  kind = kind or LoopOptions
  d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  d = {k: v for k, v in d.items() if k not in CONFIG_ONLY_FIELDS}
  try:
    if "train" not in d and "epochs" in d:  # a run saved by the previous release
      return options_from_flat(kind, d)
    return options_from_dict(kind, d, "config")
  except (ValueError, TypeError) as e:
    raise UserError(str(e)) from None


# -- outputs ---------------------------------------------------------------------------------
def write_outputs(workdir: Path, records, summary) -> None:
  """results.csv, summary.json and learning_curve.png, each written atomically."""
  from curiojax.active.persistence import atomic_write_bytes, atomic_write_text

  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, extrasaction="ignore", lineterminator="\n")
  writer.writeheader()
  for r in records:
    writer.writerow(r)
  atomic_write_text(workdir / "results.csv", buf.getvalue())
  atomic_write_text(workdir / "summary.json", json.dumps(summary, indent=1))
  import matplotlib

  matplotlib.use("Agg")  # no display: before pyplot is imported
  from curiojax.plotting import plot_learning_curve

  atomic_write_bytes(workdir / "learning_curve.png", plot_learning_curve(records))


def results_table(records, summary) -> str:
  """A plain-text table: per strategy and label count, mean test RMSE over splits; then the summary."""
  import numpy as np

  names = list(summary)
  widths = [max(12, len(n)) for n in names]
  labels = sorted({r["labels"] for r in records})
  lines = ["labels  " + "  ".join(f"{n:>{w}}" for n, w in zip(names, widths, strict=True))]
  for n in labels:
    cells = []
    for name, w in zip(names, widths, strict=True):
      v = [r["test_rmse"] for r in records if r["strategy"] == name and r["labels"] == n]
      cells.append(f"{np.mean(v):{w}.3f}" if v else " " * w)
    lines.append(f"{n:6d}  " + "  ".join(cells))
  lines.append("")
  width = max(12, *map(len, names))
  lines.append(f"{'strategy':{width}s}  mean log RMSE   final RMSE   labels")
  for name, s in summary.items():
    lines.append(
      f"{name:{width}s}  {s['mean_log_test_rmse']:13.4f}  {s['final_test_rmse']:11.3f}  {s['labels_used']:7d}"
    )
  return "\n".join(lines)


# -- run ---------------------------------------------------------------------------------------
def _build(config):
  from curiojax.active.data import load_dataset
  from curiojax.active.loop import Experiment

  options = options_from_config(config)
  try:
    ds = load_dataset(config.dataset, config.get("target", ""))
    experiment = Experiment(ds.x, ds.y, options)
  except ValueError as e:
    raise UserError(str(e)) from None
  return experiment


def _resume(args, overrides, own):
  """``(config, experiment, state, workdir)`` of ``--resume DIR``: the saved config and state."""
  import ml_collections

  from curiojax.active import loop, persistence

  if overrides or args.workdir:
    raise UserError("--resume continues a run with its saved config; do not combine it with --config or --workdir.")
  workdir = Path(args.resume)
  if not (workdir / persistence.STATE_FILE).is_file():
    raise UserError(f"{workdir} has no {persistence.STATE_FILE}: not a curiojax run directory.")
  own(workdir)
  try:
    meta, arrays = persistence.load_state(workdir)
  except ValueError as e:
    raise UserError(str(e)) from None
  config = ml_collections.ConfigDict(meta["config"])
  experiment = _build(config)
  try:
    state = loop.experiment_from_saved(experiment, meta, arrays)
  except (ValueError, KeyError, TypeError) as e:
    raise UserError(f"{workdir}: cannot resume: {e}") from None
  return config, experiment, state, workdir


def _start(args, overrides, own):
  """``(config, experiment, state, workdir)`` of a new run; everything is validated before anything is written."""
  from curiojax.active import persistence

  config = parse_config(overrides)
  experiment = _build(config)
  if args.workdir:
    workdir = Path(args.workdir)
  else:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = Path("curiojax_runs") / f"{config.get('name', 'run')}-{stamp}"
  if workdir.exists() and not workdir.is_dir():
    raise UserError(f"--workdir {workdir} exists and is not a directory.")
  if (workdir / persistence.STATE_FILE).exists():
    raise UserError(f"{workdir} already holds a run; continue it with --resume {workdir} or choose another --workdir.")
  own(workdir)
  if (workdir / persistence.STATE_FILE).exists():  # another process started it meanwhile
    raise UserError(f"{workdir} was just started by another process; choose another --workdir.")
  return config, experiment, experiment.init_state(), workdir


def run(args, overrides) -> int:
  import contextlib

  from curiojax.active import loop, persistence

  with contextlib.ExitStack() as stack:

    def own(workdir):  # one process per work directory; a second one is refused before it writes
      try:
        stack.enter_context(persistence.workdir_lock(workdir))
      except ValueError as e:
        raise UserError(str(e)) from None

    config, experiment, state, workdir = (_resume if args.resume else _start)(args, overrides, own)
    config_dict = config.to_dict()

    def save(state):
      meta, arrays = loop.experiment_to_saved(state)
      try:
        persistence.save_state(workdir, {**meta, "config": config_dict}, arrays, tag=state.unit)
      except OSError as e:
        raise UserError(
          f"cannot write the run state to {workdir}: {e.strerror or e}; the last saved round is kept, "
          f"free space or fix permissions and continue with --resume {workdir}."
        ) from None

    if not args.resume:
      save(state)

    from curiojax.active.loop import summarise
    from curiojax.active.progress import Progress

    with Progress(len(experiment.units), "fits (rounds x splits x strategies)", initial=state.unit) as bar:
      while not experiment.done(state):
        r, split, name = experiment.units[state.unit]
        state, record = experiment.step(state)
        save(state)
        bar.update(f"round {r} split {split} {name}")
    summary = summarise(state.records)
    try:
      write_outputs(workdir, state.records, summary)
    except OSError as e:
      raise UserError(
        f"cannot write the results to {workdir}: {e.strerror or e}; the run's state is saved, free space or "
        f"fix permissions and write them with --resume {workdir}."
      ) from None
  print(results_table(state.records, summary))
  print(f"\nwrote {workdir}/results.csv, summary.json, learning_curve.png")
  inaccurate = sum(s["fits_with_inaccurate_tangent"] for s in summary.values())
  if inaccurate:
    worst = max(s["max_tangent_residual"] for s in summary.values())
    print(
      f"curiojax: WARNING: {inaccurate} of {len(state.records)} fits rest on a tangent that missed its "
      f"tolerance (largest relative residual {worst:.3g}); the curiosity results are approximate. See the "
      "tangent_ok column of results.csv; try --config.train.curvature=gauss_newton with --config.train.damping > 0.",
      file=sys.stderr,
    )
  return 0


def _sentence(text: str) -> str:
  return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _printable(text: str) -> str:
  return text if text.isprintable() else ascii(text)  # no terminal control sequences from a file


def _suggestions_table(result) -> str:
  """The terminal table of a :class:`curiojax.active.suggest_csv.Suggested`: rank, id, score, prediction, std."""
  ids = [_printable(rid) for rid in result.ids]
  id_header = _printable(result.id_header or "id")
  predicted = _printable(f"predicted {result.target}")

  def number(v) -> str:
    return "" if v != v else f"{float(v):.4g}"

  rows = zip(ids, result.scores, result.predictions, result.stds, result.low95, result.high95, strict=True)
  cells = [("rank", id_header, "score", predicted, "std", "95% interval")]
  for rank, (rid, score, mean, sd, low, high) in enumerate(rows, 1):
    cells.append((str(rank), rid, number(score), number(mean), number(sd), f"{number(low)} to {number(high)}"))
  widths = [max(len(row[c]) for row in cells) for c in range(len(cells[0]))]
  widths[1], widths[3] = max(12, widths[1]), max(12, widths[3])
  return "\n".join("  ".join(f"{c:>{w}s}" for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def suggest_command(args, overrides) -> int:
  import ml_collections

  from curiojax.active.learner import LearnerOptions
  from curiojax.active.suggest_csv import RANK_MEANING, suggest

  options = None
  if overrides:
    config = parse_config(overrides, ml_collections.ConfigDict(LearnerOptions().to_dict()))
    options = options_from_config(config, LearnerOptions)
  try:
    result = suggest(
      args.labelled,
      args.pool,
      target=args.target,
      k=args.k,
      id_column=args.id_column,
      state=args.state,
      strategy=args.strategy,
      out=args.out,
      options=options,
      seed=args.seed,
      allow_same_features=args.allow_same_features,
    )
  except ValueError as e:
    raise UserError(str(e)) from None
  print(_suggestions_table(result))
  told = f", {result.new_labels} new this session" if result.new_labels else ""
  print(
    f"\n{len(result.ids)} rows to label next (round {result.round}, strategy {result.strategy}); fitted on "
    f"{result.labelled} labelled rows{told}.\n"
    f"{_sentence(RANK_MEANING)}\n"
    f"{_sentence(result.score_meaning)}\n"
    f"Predicted {_printable(result.target)}, std: what the model expects the measurement to be, and its standard "
    "deviation; 95% interval: where 19 in 20 measurements should fall.\n"
    f"wrote {result.path}; every batch so far in {result.history}; state in {result.state}.\n"
    "Label them, add them to the labelled file, and run the same command again."
  )
  if not result.tangent_accurate:
    print(
      f"curiojax: WARNING: these rows were chosen with a tangent that missed its tolerance (relative "
      f"residual {result.tangent_residual:.3g}); the curiosity scores are approximate. Try "
      "a larger --config.train.damping (e.g. 1e-2) or --config.train.curvature=gauss_newton.",
      file=sys.stderr,
    )
  return 0


class _Parser(argparse.ArgumentParser):
  """argparse with one-line errors (raised as :class:`UserError`)."""

  def error(self, message):
    raise UserError(message)


def _parser():
  parser = _Parser(prog="curiojax", description="Active learning with regularity tangents.")
  sub = parser.add_subparsers(dest="command")
  p = sub.add_parser(
    "run",
    help="run the active-learning experiment",
    epilog="Config: --config FILE.py (get_config() returning an ml_collections.ConfigDict; default: "
    "curiojax/config_defaults.py) and --config.<field>=value overrides.",
  )
  p.add_argument("--workdir", help="output directory (default: ./curiojax_runs/<name>-<time>)")
  p.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR")
  q = sub.add_parser(
    "suggest",
    help="which pool rows to label next",
    epilog="Set model options of a new state with --config.<field>=value (fields of curiojax.LearnerOptions, "
    "sections by dots: --config.train.epochs=100).",
  )
  q.add_argument("--labelled", required=True, help="CSV file of labelled rows")
  q.add_argument("--target", required=True, help="the label column of the labelled file")
  q.add_argument("--pool", required=True, help="CSV file of candidate rows (same feature columns)")
  q.add_argument("-k", type=int, required=True, help="how many rows to suggest")
  q.add_argument("--id-column", help="a column of unique row ids in both files")
  q.add_argument("--state", help="state folder (default: curiojax_suggest next to the pool file)")
  q.add_argument(
    "--strategy", help="selection strategy of a new state (default: the best measured, curiojax.DEFAULT_STRATEGY)"
  )
  q.add_argument("--out", help="output CSV (default: suggestions.csv in the state folder)")
  q.add_argument("--seed", type=int, help="seed of a new state (default 0)")
  q.add_argument(
    "--allow-same-features",
    action="store_true",
    help="accept labelled rows that match no pool row although their features equal (or round to) an unlabelled "
    "pool row's (refused by default: usually a typo'd id or rounded features)",
  )
  return parser


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """Separate the config arguments (``--config FILE``, ``--config.<field>=value``, their values) from the rest."""
  rest, config = [], []
  i = 0
  while i < len(argv):
    a = argv[i]
    if a == "--config" or a.startswith("--config.") or a.startswith("--config="):
      config.append(a)
      if "=" not in a:
        if i + 1 >= len(argv):
          raise UserError(f"{a} needs a value: {a}=VALUE.")
        config.append(argv[i + 1])
        i += 1
    else:
      rest.append(a)
    i += 1
  return rest, config


def main(argv: list[str] | None = None) -> int:
  """Entry point of the ``curiojax`` console script; returns the exit status."""
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = _parser()
  command = None
  try:
    rest, overrides = split_overrides(argv)
    args, unknown = parser.parse_known_args(rest)
    if unknown:
      raise UserError(f"unrecognised arguments: {' '.join(unknown)}")
    command = args.command
    if args.command == "suggest":
      rc = suggest_command(args, overrides)
      sys.stdout.flush()  # a reader that left (`| head`) is noticed here, not in the interpreter's last flush
      return rc
    if args.command != "run":
      parser.print_help()
      return 2
    return run(args, overrides)
  except UserError as e:
    print(f"curiojax: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    if command == "suggest":
      print("curiojax: interrupted; run the same command again (a state is only ever replaced whole).", file=sys.stderr)
    else:
      print("curiojax: interrupted; continue with --resume <workdir>.", file=sys.stderr)
    return 130
  except BrokenPipeError:  # `curiojax suggest ... | head`: the reader left (suggest wrote everything before printing)
    _quiet_stdout()
    return 0 if command == "suggest" else 1


def _quiet_stdout() -> None:
  """Point stdout at /dev/null so the interpreter's final flush does not raise again."""
  import os

  try:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
  except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (a test's capture)
    pass


if __name__ == "__main__":  # pragma: no cover
  sys.exit(main())

"""The command line: ``caviar train | predict | diagnose | gradcheck``.

Bad input is a one-line ``caviar: error: ...`` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from . import backend
from .errors import CaviarError
from .nn import heads
from .train import hyperparameters as H
from .train.controls import ACTIONS
from .tune.strategies import STRATEGIES


def _int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes like 20,7,5, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one hidden layer size like 20,7,5, got {text!r}")
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {text!r}")
    return values


def _word_list(text):
    return [w.strip() for w in text.split(",") if w.strip()]


def _shape(text):
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an image shape like 28x28, got {text!r}") from None
    return (h, w)


def _checked(parse, ok, what, problem):
    """An argparse type: ``parse(text)``, refused in one line unless ``ok(value)``."""
    def convert(text):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{problem}, got {text!r}")
        return value
    return convert


def _percent_or_fraction(text):
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


_rate = _checked(_percent_or_fraction, lambda v: 0 <= v <= 1, "an error rate like 0.11 or 11%",
                 "an error rate must be between 0 and 1 (or 0% and 100%)")
_port = _checked(int, lambda v: 0 <= v <= 65535, "a port number", "a port is 0 to 65535 (0: any free port)")
_positive_float = _checked(float, lambda v: 0 < v < float("inf"), "a number", "expected a positive finite number")
_positive_int = _checked(int, lambda v: v >= 1, "a positive integer", "expected a positive integer")


def _parse_time(text):
    from .tune.runner import parse_time

    return parse_time(text)


_time = _checked(_parse_time, lambda v: 0 < v < float("inf"), "a time like 90, 90s, 5m or 1h",
                 "a time budget must be positive and finite")
TIMED_TRIALS = 10_000  # a timed random search without --trials: the time decides, this only bounds the study
DEFAULT_TIME = 100.0  # seconds: `caviar tune` on a 10,000-row table ends within 2 minutes (README, "Tuning")


def _ratio_or_count(text):
    """A ratio (0.2) or a number of examples (5000), as the split takes them."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a ratio like 0.2 or a number of examples, got {text!r}") from None


def _schema_flags(g, group):
    """The options of one group, read from the hyperparameter schema (name, type, default,
    choices, help): ``caviar.train.hyperparameters.SCHEMA``."""
    for h in H.SCHEMA.values():
        if h.flag is None or h.group != group:
            continue
        if h.type is bool:
            g.add_argument(h.flag, action="store_true", help=h.help)
        elif h.choices is not None:
            g.add_argument(h.flag, default=h.default, choices=list(h.choices), help=h.help)
        else:
            kind = {"batch_size": _positive_int, "lr": _positive_float}.get(h.name, h.type)
            g.add_argument(h.flag, type=kind, default=h.default, help=h.help)


def _table_flags(g):
    """How a table is read: the same for train, gradcheck and tune."""
    g.add_argument("--data", default="digits", help="a table (.csv, .tsv, .txt, compressed .gz/.bz2/.zip/.xz, .parquet, "
                   ".feather), an .npz with X and y, or a bundled dataset (moons, circles, digits, iris, wine, "
                   "breast_cancer, synthetic[:M]) or the bundled table penguins (default: digits)")
    g.add_argument("--target", help="the label column of a table (default: the last column)")
    g.add_argument("--task", choices=["classification", "regression"], help="default: guessed from the target")
    g.add_argument("--na-values", type=_word_list, metavar="A,B", help="more spellings of a missing cell (besides "
                   "empty, NA, N/A, NaN, null, None, ?)")
    g.add_argument("--categorical", type=_word_list, default=[], metavar="COLS", help="columns to treat as categories "
                   "(integer codes, say)")
    g.add_argument("--numeric", type=_word_list, default=[], metavar="COLS", help="columns to treat as numbers")
    g.add_argument("--drop", type=_word_list, default=[], metavar="COLS", help="columns to leave out")
    g.add_argument("--dev", type=_ratio_or_count, help="dev set: a ratio (0.2) or a count (default: the notes' rule)")
    g.add_argument("--test", type=_ratio_or_count, help="test set: a ratio, a count, or 0 for none (default: the notes' rule)")
    g.add_argument("--dev-data", help="a separate dev set file (then no test set is split from --data)")
    g.add_argument("--test-data", help="a separate test set file")
    g.add_argument("--class-weight", choices=["balanced"], help="weigh every class equally in the training cost "
                   "(n / (C n_c) per example, as scikit-learn's)")


def _model_flags():
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("data and model")
    _table_flags(g)
    g.add_argument("--hidden", type=_int_list, default=[64, 32], help="hidden layer sizes, e.g. 20,7,5 (default: 64,32)")
    g.add_argument("--output", choices=list(heads.HEADS), help="default: softmax for classes, linear for numbers")
    _schema_flags(g, "model")
    g.add_argument("--seed", type=int, default=0)
    return p


def _train_flags():
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("training")
    _schema_flags(g, "training")
    g.add_argument("--epochs", type=_positive_int, default=40)
    g.add_argument("--decay", help="learning-rate decay: inverse-time:RATE, exponential:BASE, inverse-sqrt:K, staircase:EVERY[:FACTOR]")
    g.add_argument("--early-stopping", type=int, default=10, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a better dev cost and keep the best epoch's weights "
                   "(in an ensemble, each member on its own; default 10)")
    g.add_argument("--no-early-stopping", dest="early_stopping", action="store_const", const=None,
                   help="train every epoch, keeping the last weights")
    g.add_argument("--augment", type=_word_list, help="image augmentation: flip,shift,rotate,elastic")
    g.add_argument("--image-shape", type=_shape, help="HxW of image rows, for --augment (digits: 8x8)")
    g.add_argument("--ensemble", type=_positive_int, default=1, metavar="K", help="train K networks (seeds SEED to "
                   "SEED+K-1) as one population and keep the greedy ensemble of them selected on dev")
    _ensemble_size_flag(g)
    g.add_argument("--human-error", type=_rate, default=0.0, help="human-level error for the diagnosis (0.01 or 1%%)")
    g.add_argument("--out", default="caviar-run", help="directory for the model, history.csv and plots")
    g.add_argument("--checkpoint-every", type=_positive_int, default=10, metavar="N",
                   help="write a resume point every N epochs (and every epoch where it is cheap); default 10")
    g.add_argument("--resume", metavar="DIR", help="continue the run in DIR (killed or stopped) from its last resume "
                   "point, with its own settings, to the epochs it was asked for")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    _backend_flag(g)
    _watch_flags(g)
    return p


def _ensemble_size_flag(g):
    g.add_argument("--ensemble-size", type=_positive_int, help="steps of greedy ensemble selection (default 50; "
                   "the step with the lowest dev loss is kept)")


def _backend_flag(g):
    g.add_argument("--backend", choices=backend.BACKENDS,
                   help="the array library: numpy (the CPU) or cupy (a GPU); default: $CAVIAR_BACKEND, else numpy")


def _watch_flags(g):
    g.add_argument("--watch", action="store_true", help="serve the live dashboard beside the run and print its address")
    g.add_argument("--port", type=_port, default=8765, help="the dashboard's port (0: any free port)")


class _Parser(argparse.ArgumentParser):
    """Bad options are one line, as every other error: no usage block before it."""

    def error(self, message):
        self.exit(2, f"caviar: error: {message} (see {self.prog} --help)\n")


EXAMPLES = {
    "train": ["caviar train                                   # digits: split, train, evaluate, diagnose",
              "caviar train --data credit.csv --target Status --hidden 64,32 --out credit",
              "caviar train --resume credit                   # go on after a crash"],
    "predict": ["caviar predict --model credit/model --data new.csv --out predictions.csv"],
    "diagnose": ["caviar diagnose --train-error 1% --dev-error 11%"],
    "tune": ["caviar tune                                    # 100 s on digits; returns an ensemble",
             "caviar tune --data credit.csv --target Status --time 5m --study credit.sqlite"],
    "report": ["caviar report credit.sqlite --top 20"],
    "watch": ["caviar watch caviar-run credit.sqlite"],
    "control": ["caviar control caviar-run multiply-lr 0.5", "caviar control caviar-run pause"],
    "gradcheck": ["caviar gradcheck --data iris --hidden 8"],
}


def _add_command(sub, name, **kwargs):
    """A command's parser, its --help ending with examples."""
    return sub.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog="examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name]), **kwargs)


def build_parser():
    parser = _Parser(prog="caviar", description="Deep networks that train well.")
    sub = parser.add_subparsers(dest="command", required=True)
    parser._caviar_commands = sub.choices  # command -> its parser (which options were typed)
    model, training = _model_flags(), _train_flags()
    _add_command(sub, "train", parents=[model, training], help="split, normalize, train, evaluate, diagnose",
                   description="Train a network the way the notes teach: split, normalize, check dev/test "
                   "mismatch, train, evaluate, diagnose bias and variance.")
    p = _add_command(sub, "predict", help="predict with a saved model")
    p.add_argument("--model", required=True, help="a model directory written by caviar train")
    p.add_argument("--data", required=True, help="a CSV with the model's feature columns (or an .npz)")
    p.add_argument("--out", help="write the CSV here instead of standard output")
    _backend_flag(p)
    p = _add_command(sub, "diagnose", help="bias/variance diagnosis and the basic recipe")
    p.add_argument("--train-error", type=_rate, required=True)
    p.add_argument("--dev-error", type=_rate, required=True)
    p.add_argument("--human-error", type=_rate, default=0.0)
    p.add_argument("--json", action="store_true")
    p = _add_command(sub, "tune", help="hyperparameter search (random, grid, coarse-to-fine, halving)",
                       description="Search hyperparameters on the right scales. With no arguments: a short "
                       "random search on the digits data.")
    _table_flags(p)
    p.add_argument("--space", help="a YAML or TOML space file (default: the notes' hyperparameters)")
    p.add_argument("--strategy", default="random", choices=list(STRATEGIES))
    p.add_argument("--trials", type=_positive_int, help="how many trials (a random search with a time budget: as "
                   "many as the time allows; otherwise 40)")
    p.add_argument("--time", type=_time, help=f"a time budget for the whole search, like 90, 5m or 1h: no trial starts "
                   f"after it, training members stop at an epoch boundary keeping their best epoch, and the command "
                   f"ends within it plus 10%% (default {DEFAULT_TIME:g} s unless --trials is given)")
    p.add_argument("--patience", type=_positive_int, default=10, help="stop a trial after this many epochs without a "
                   "better dev metric (default 10); its best epoch is kept")
    _ensemble_size_flag(p)
    p.add_argument("--rounds", type=_positive_int, default=3, help="coarse-to-fine rounds")
    p.add_argument("--epochs", type=_positive_int, default=100, help="the most epochs per trial (the largest budget "
                   "for halving; default 100, early stopping ends most trials sooner)")
    p.add_argument("--eta", type=int, default=3, help="successive halving: keep the best 1/eta at each rung")
    p.add_argument("--group-size", type=_positive_int, default=10,
                   help="trials per architecture: the shape hyperparameters are drawn once per group, the others "
                        "per trial, so a group trains as one population (default 10; 1: every trial its own)")
    p.add_argument("--no-population", dest="population", action="store_false",
                   help="train every trial alone instead of as populations (results are the same)")
    p.add_argument("--max-population", type=_positive_int, help="the most models trained in one population "
                   "(default: as many as half the free memory holds)")
    p.add_argument("--workers", type=_positive_int, help="parallel jobs (default: one per core; one on a GPU)")
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--address", help="a Ray cluster's address (with --executor ray)")
    p.add_argument("--study", help="the study file; an existing one is resumed (default: caviar-tune/study-<time>.sqlite)")
    p.add_argument("--out", help="directory for the plots, the best model and the ensemble (default: the study's own "
                   "folder, its path without .sqlite)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    _backend_flag(p)
    _watch_flags(p)
    p = _add_command(sub, "report", help="leaderboard and plots of an existing study")
    p.add_argument("study", help="a study file written by caviar tune")
    p.add_argument("--out", help="directory for the plots (default: beside the study)")
    p.add_argument("--top", type=_positive_int, default=10)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p = _add_command(sub, "watch", help="the dashboard for runs and studies",
                       description="Serve a local page with live curves and babysitting controls for training runs "
                       "(directories written by caviar train) and studies (files written by caviar tune).")
    p.add_argument("targets", nargs="*", help="run directories or study files (default: ./caviar-run and ./caviar-tune/*.sqlite)")
    p.add_argument("--port", type=_port, default=8765)
    p.add_argument("--host", default="127.0.0.1", help="the address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--allow-remote", action="store_true", help="allow binding another address; controls then need the token")
    p.add_argument("--token", help="the token controls must present (default: a random one when remote)")
    p = _add_command(sub, "control", help="babysit a live run: set-lr, multiply-lr, pause, resume, checkpoint, rollback, stop")
    p.add_argument("run", help="the run directory (caviar train --out)")
    p.add_argument("action", choices=list(ACTIONS))
    p.add_argument("value", nargs="?", help="the learning rate, the factor, or the checkpoint's iteration")
    p.add_argument("--lr", type=float, help="with rollback: continue with this learning rate")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the run to apply it")
    p = _add_command(sub, "gradcheck", parents=[model], help="gradient-check the model on a small batch")
    p.add_argument("--batch", type=_positive_int, default=16, help="examples in the checked batch")
    p.add_argument("--json", action="store_true")
    _backend_flag(p)
    return parser


# -- presenting results ----------------------------------------------------------------------


def write_json(report):
    print(json.dumps(report, indent=1, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def format_report(report):
    """The table ``caviar train`` prints: every figure of each set, the diagnosis, the model."""
    sets = [k for k in ("train", "dev", "test") if k in report]
    metrics = [k for k in report["train"] if k != "cost"]
    lines = [f"{'set':<6} {'cost':>10}" + "".join(f" {m:>10}" for m in metrics)]
    for k in sets:
        lines.append(f"{k:<6} {report[k]['cost']:>10.4f}" + "".join(f" {report[k][m]:>10.4f}" for m in metrics))
    if "ensemble" in report:
        e = report["ensemble"]
        lines.append(f"ensemble: {len(e['members'])} of {e['trained']} members kept by greedy selection on dev")
        for seed, weight, m in zip(e["members"], e["weights"], e["dev_members"]):
            lines.append(f"  dev, seed {seed} (weight {weight:.2f}): cost {m['cost']:.4f}"
                         + "".join(f"  {k} {m[k]:.4f}" for k in metrics))
    if report.get("diagnosis"):
        from .diagnose.recipe import describe

        lines.append(describe(report["diagnosis"]))
    lines.append(f"model: {report['model']}")
    return "\n".join(lines)


def format_leaderboard(study, top=10):
    """The leaderboard ``caviar tune`` and ``caviar report`` print."""
    from .tune import leaderboard
    from .tune.objective import metric_for

    settings = study.settings
    metric, _ = metric_for(settings)
    names = list(settings["space"])
    halving = settings["strategy"] == "halving"
    head = f"{'trial':>5} {'status':<9} {metric:>12}" + (f" {'rung':>4}" if halving else "") + "  parameters"
    lines = [head]
    for t in leaderboard(study, top):
        value = f"{t['value']:.4f}" if t["value"] is not None else "-"
        params = ", ".join(f"{k}={_fmt(t['params'][k])}" for k in names if k in t["params"])
        lines.append(f"{t['number']:>5} {t['status']:<9} {value:>12}" + (f" {t['rung']:>4}" if halving else "") + f"  {params}")
    ensemble = settings.get("ensemble")
    if ensemble:  # the greedy ensemble of the kept trials, beside them (its dev figure is the one it was selected on)
        members = ", ".join(f"{n}" + (f" x{c}" if c > 1 else "") for n, c in zip(ensemble["members"], ensemble["counts"]))
        loss = "log loss" if "accuracy" in ensemble.get("dev", {}) else "MSE"
        selected = (f"selected on dev {loss} {ensemble['dev_cost']:.4f} (best single trial "
                    f"{ensemble['single_dev_cost']:.4f}); " if "single_dev_cost" in ensemble else "")
        lines.append(f"{'ens.':>5} {'ensemble':<9} {ensemble[metric]:>12.4f}" + (" " * 5 if halving else "")
                     + f"  {selected}{len(ensemble['members'])} of {ensemble['candidates']} trials: {members}")
    return "\n".join(lines)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _config(args):
    from .workflow import TrainConfig

    fields = TrainConfig.__dataclass_fields__
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})


def _start_dashboard(args, run_dir):
    from .watch import Dashboard

    dashboard = Dashboard([], port=args.port)
    name = dashboard.add(run_dir, kind="run")
    print(f"caviar watch: {dashboard.start()}run/{name}", file=sys.stderr)
    return dashboard


def _train(args):
    from .workflow import train_job

    on_start = (lambda out: _start_dashboard(args, out)) if args.watch else None
    if args.resume is not None:
        from .workflow import resume_config

        # the run keeps the settings it was started with; only how it reports may change
        other = sorted(args.given - {"resume", "json", "quiet", "watch", "port", "backend"})
        if other:
            raise ValueError(f"--resume continues a run with its own settings; drop "
                             f"{', '.join('--' + o.replace('_', '-') for o in other)}")
        cfg, net, point = resume_config(args.resume)
        report = train_job(cfg, verbose=not (args.quiet or args.json), on_start=on_start, resume=(net, point))
    else:
        report = train_job(_config(args), verbose=not (args.quiet or args.json), on_start=on_start)
    if args.json:
        write_json(report)
    else:
        print(format_report(report))
    return 0


def _predict(args):
    from .workflow import predict_job

    n = predict_job(args.model, args.data, args.out)
    if args.out:
        print(f"wrote {n} predictions to {args.out}", file=sys.stderr)
    return 0


def _diagnose(args):
    from .diagnose import diagnose
    d = diagnose(args.train_error, args.dev_error, args.human_error)
    if args.json:
        write_json(d.to_dict())
    else:
        print(d)
    return 0


def _gradcheck(args):
    from .workflow import gradcheck_job

    result = gradcheck_job(_config(args), batch=args.batch)
    if args.json:
        write_json({"difference": result.difference, "verdict": result.verdict,
                    "params": {p.name: p.difference for p in result.params}})
    else:
        print(result)
    return 1 if result.verdict == "bug" else 0


def _figures(result, prefix):
    """The headline figures of a set for --json: accuracy for classes; MSE and R² for numbers."""
    figures = result.get(prefix) or {}
    keys = ("accuracy",) if "accuracy" in figures else ("mse", "r2")
    return {f"{prefix}_{k}": figures.get(k) for k in keys}


def _tune(args):
    import time

    from .tune import evaluate_best, evaluate_ensemble, plot_study, tune
    from .tune.runner import default_study_path
    from .workflow import prepare_out

    from .processes import started_at

    started = started_at()  # the budget counts the interpreter's start and the imports
    study_path = args.study or default_study_path()
    out = prepare_out(args.out or os.path.splitext(study_path)[0])  # each study its own folder
    dashboard = None
    if args.watch:
        from .watch import Dashboard

        dashboard = Dashboard([], port=args.port)
        print(f"caviar watch: {dashboard.start()}", file=sys.stderr)
    budget = args.time if args.time is not None or args.trials is not None else DEFAULT_TIME
    trials = args.trials or (TIMED_TRIALS if budget is not None and args.strategy == "random" else 40)
    study = tune(data=args.data, target=args.target, task=args.task, na_values=args.na_values,
                 categorical=args.categorical, numeric=args.numeric, drop=args.drop, dev_data=args.dev_data,
                 test_data=args.test_data, class_weight=args.class_weight, dev=args.dev, test=args.test,
                 space=args.space, strategy=args.strategy, trials=trials, rounds=args.rounds, epochs=args.epochs,
                 eta=args.eta, workers=args.workers, executor=args.executor, address=args.address, study=study_path,
                 seed=args.seed, group_size=args.group_size, population=args.population,
                 max_population=args.max_population, given=args.given, patience=args.patience,
                 ensemble_size=args.ensemble_size, time_budget=budget, started=started,
                 log=(lambda line: None) if args.quiet else None,
                 on_start=(lambda st: dashboard.add(st.path)) if dashboard else None)
    try:
        best = evaluate_best(study, out)
        ensemble = evaluate_ensemble(study, out)
        plots = plot_study(study, out)
        n = len(study.trials())
        if args.json:
            write_json({"best": None if best is None else {
                "params": best["params"], **_figures(best, "dev"), **_figures(best, "test"), "trial": best["trial"],
                "dev": best["dev"], "test": best.get("test"), "model": best.get("model")},
                "ensemble": None if ensemble is None else {
                    "members": ensemble["members"], "weights": ensemble["weights"], "counts": ensemble["counts"],
                    **_figures(ensemble, "dev"), **_figures(ensemble, "test"), "dev": ensemble["dev"],
                    "test": ensemble.get("test"), "model": ensemble.get("model")},
                "trials": n, "study": os.path.abspath(study.path), "plots": plots,
                "seconds": round(time.time() - started, 2)})
            return 0
        print(format_leaderboard(study))
        if best is None:
            print("no trial finished with a finite dev metric")
            return 0
        print(f"best trial {best['trial']}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                         for k, v in best["params"].items()))
        for name in ("dev", "test"):
            if name in best:
                print(f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in best[name].items()))
        if ensemble is not None:
            print(f"ensemble of {len(ensemble['members'])} trials (greedy selection on dev log loss"
                  f"{'' if 'accuracy' in ensemble['dev'] else ' (MSE)'}): {ensemble['members']}")
            for name in ("dev", "test"):
                if name in ensemble:
                    print(f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in ensemble[name].items()))
        print(f"study: {study.path}\nbest model: {best.get('model')}\n"
              f"ensemble model: {ensemble.get('model') if ensemble else None}\nplots: {out}")
        return 0
    finally:
        study.close()


def _watch(args):
    import glob
    import time

    from .watch import Dashboard

    targets = args.targets or ([p for p in ["caviar-run"] if os.path.isdir(p)] + sorted(glob.glob("caviar-tune/*.sqlite")))
    if not targets:
        raise ValueError("nothing to watch: give run directories or study files")
    dashboard = Dashboard(targets, host=args.host, port=args.port, allow_remote=args.allow_remote, token=args.token)
    print(f"caviar watch: {dashboard.start()}  (Ctrl-C to quit)", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        dashboard.stop()


def _control(args):
    from .watch import send

    value = args.value
    if args.action == "rollback":
        if value is None:
            raise ValueError("rollback needs the checkpoint's iteration: caviar control RUN rollback N [--lr X]")
        value = {"iteration": value, "lr": args.lr}
    elif args.action in ("set-lr", "multiply-lr") and value is None:
        raise ValueError(f"{args.action} needs a number")
    result = send(args.run, args.action, value, wait=args.wait)
    if result is None:
        print(f"queued; the run has not applied it within {args.wait:g} s (is it paused in a long mini-batch?)")
        return 0
    print(result["message"])
    return 0 if result["ok"] else 2


def _report(args):
    from .tune import Study, plot_study

    study = Study.open(args.study)
    try:
        out = args.out or os.path.splitext(args.study)[0]  # the study's own folder, as caviar tune's
        plots = plot_study(study, out)
        if args.json:
            from .tune import leaderboard

            rows = [{k: t[k] for k in ("number", "status", "value", "best_epoch", "params")}
                    for t in leaderboard(study, args.top)]
            write_json({"leaderboard": rows, "ensemble": study.settings.get("ensemble"), "plots": plots,
                        "study": os.path.abspath(args.study)})
            return 0
        print(format_leaderboard(study, args.top))
        for path in plots:
            print(f"wrote {path}", file=sys.stderr)
        return 0
    finally:
        study.close()


COMMANDS = {"train": _train, "predict": _predict, "diagnose": _diagnose, "gradcheck": _gradcheck, "tune": _tune,
            "report": _report, "watch": _watch, "control": _control}


def _select_backend(name):
    if name:
        backend.use(name)
    else:
        backend.use_from_environment()


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """caviar's own warnings (dropped rows, unseen categories, a latin-1 file) as one line
    each; other libraries' keep Python's form."""
    if category is UserWarning and "caviar" in filename:
        print(f"caviar: warning: {message}", file=file or sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def _given(parser, args, argv):
    """The options a person typed (not left to their defaults), by their names in ``args``."""
    sub = parser._caviar_commands[args.command]
    words = sys.argv[1:] if argv is None else [str(w) for w in argv]
    flags = {w.split("=", 1)[0] for w in words if w.startswith("--")}
    return {a.dest for a in sub._actions if any(o in flags for o in a.option_strings)}


def main(argv=None):
    warnings.showwarning = _show_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    args.given = _given(parser, args, argv)
    try:
        _select_backend(getattr(args, "backend", None))
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # the reader went away (caviar predict ... | head): nothing to report
        sys.stdout = open(os.devnull, "w")
        return 0
    except (CaviarError, ValueError, OSError) as exc:
        message = str(exc) or type(exc).__name__
        print(f"caviar: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("caviar: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

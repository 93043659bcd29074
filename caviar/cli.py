"""The command line: ``caviar train | predict | diagnose | gradcheck``.

Bad input is a one-line ``caviar: error: ...`` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from .errors import CaviarError


def _int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes like 20,7,5, got {text!r}") from None
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


def _rate(text):
    """An error rate as a fraction (0.11) or a percentage (11%)."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an error rate like 0.11 or 11%, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"an error rate must be between 0 and 1 (or 0% and 100%), got {text!r}")
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _model_flags():
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("data and model")
    g.add_argument("--data", default="digits", help="bundled dataset (moons, circles, digits, iris, wine, "
                   "breast_cancer, synthetic[:M]) or a .csv/.npz file (default: digits)")
    g.add_argument("--target", help="the label column of a CSV (default: the last column)")
    g.add_argument("--hidden", type=_int_list, default=[64, 32], help="hidden layer sizes, e.g. 20,7,5 (default: 64,32)")
    g.add_argument("--activation", default="relu", choices=["relu", "leaky_relu", "tanh", "sigmoid"])
    g.add_argument("--output", choices=["softmax", "sigmoid", "linear"], help="default: softmax for classes, linear for numbers")
    g.add_argument("--init", default="auto", choices=["auto", "he", "xavier", "glorot", "random", "zeros"])
    g.add_argument("--init-scale", type=float, help="multiplies the initializer's standard deviation")
    g.add_argument("--l2", type=float, default=0.0, help="L2 regularization lambda")
    g.add_argument("--l1", type=float, default=0.0, help="L1 regularization lambda")
    g.add_argument("--keep-prob", type=float, default=1.0, help="dropout keep probability of hidden layers")
    g.add_argument("--batchnorm", action="store_true", help="batch norm on every hidden layer")
    g.add_argument("--dev", type=float, help="dev set: a ratio (0.2) or a count (default: the notes' rule)")
    g.add_argument("--test", type=float, help="test set: a ratio, a count, or 0 for none (default: the notes' rule)")
    g.add_argument("--dev-data", help="a separate dev set file (then no test set is split from --data)")
    g.add_argument("--test-data", help="a separate test set file")
    g.add_argument("--seed", type=int, default=0)
    return p


def _train_flags():
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("training")
    g.add_argument("--optimizer", default="adam", choices=["gd", "momentum", "rmsprop", "adam"])
    g.add_argument("--lr", type=float, help="learning rate alpha (default: the optimizer's, Adam 0.001)")
    g.add_argument("--beta1", type=float, help="Adam beta1 (or momentum's beta)")
    g.add_argument("--beta2", type=float, help="Adam/RMSprop beta2")
    g.add_argument("--epsilon", type=float, help="Adam/RMSprop epsilon")
    g.add_argument("--batch-size", type=_positive_int, default=64)
    g.add_argument("--epochs", type=_positive_int, default=40)
    g.add_argument("--decay", help="learning-rate decay: inverse-time:RATE, exponential:BASE, inverse-sqrt:K, staircase:EVERY[:FACTOR]")
    g.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="stop after PATIENCE epochs without a better dev cost")
    g.add_argument("--augment", type=_word_list, help="image augmentation: flip,shift,rotate,elastic")
    g.add_argument("--image-shape", type=_shape, help="HxW of image rows, for --augment (digits: 8x8)")
    g.add_argument("--ensemble", type=_positive_int, default=1, metavar="K", help="train K networks and average them")
    g.add_argument("--human-error", type=_rate, default=0.0, help="human-level error for the diagnosis (0.01 or 1%%)")
    g.add_argument("--out", default="caviar-run", help="directory for the model, history.csv and plots")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def build_parser():
    parser = argparse.ArgumentParser(prog="caviar", description="Deep networks that train well.")
    sub = parser.add_subparsers(dest="command", required=True)
    model, training = _model_flags(), _train_flags()
    sub.add_parser("train", parents=[model, training], help="split, normalize, train, evaluate, diagnose",
                   description="Train a network the way the notes teach: split, normalize, check dev/test "
                   "mismatch, train, evaluate, diagnose bias and variance.")
    p = sub.add_parser("predict", help="predict with a saved model")
    p.add_argument("--model", required=True, help="a model directory written by caviar train")
    p.add_argument("--data", required=True, help="a CSV with the model's feature columns (or an .npz)")
    p.add_argument("--out", help="write the CSV here instead of standard output")
    p = sub.add_parser("diagnose", help="bias/variance diagnosis and the basic recipe")
    p.add_argument("--train-error", type=_rate, required=True)
    p.add_argument("--dev-error", type=_rate, required=True)
    p.add_argument("--human-error", type=_rate, default=0.0)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("gradcheck", parents=[model], help="gradient-check the model on a small batch")
    p.add_argument("--batch", type=_positive_int, default=16, help="examples in the checked batch")
    p.add_argument("--json", action="store_true")
    return parser


def _config(args):
    from .workflow import TrainConfig

    fields = TrainConfig.__dataclass_fields__
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})


def _train(args):
    from .workflow import format_report, train_job, write_json

    report = train_job(_config(args), verbose=not (args.quiet or args.json))
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
    from .workflow import write_json

    d = diagnose(args.train_error, args.dev_error, args.human_error)
    if args.json:
        write_json(d.to_dict())
    else:
        print(d)
    return 0


def _gradcheck(args):
    from .workflow import gradcheck_job, write_json

    result = gradcheck_job(_config(args), batch=args.batch)
    if args.json:
        write_json({"difference": result.difference, "verdict": result.verdict,
                    "params": {p.name: p.difference for p in result.params}})
    else:
        print(result)
    return 1 if result.verdict == "bug" else 0


COMMANDS = {"train": _train, "predict": _predict, "diagnose": _diagnose, "gradcheck": _gradcheck}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (CaviarError, ValueError, OSError) as exc:
        message = str(exc) or type(exc).__name__
        print(f"caviar: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("caviar: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

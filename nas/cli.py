"""The command line: argparse only, and one-line errors; nas.commands does the work."""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from nas.config import (DASHBOARD_HOST, DASHBOARD_PORT, DATASETS, DEVICES, FORMATS, OBJECTIVES, PROXY_HOST,
                        SAMPLERS, SIZE_METRICS, SearchConfig)
from nas.errors import CliError, UserError

COMMANDS = ("search", "report", "export", "evaluate", "baselines", "describe", "check", "dashboard", "serve-storage")
DEFAULT = SearchConfig()  # every default below is SearchConfig's


def _positive_int(flag: str, minimum: int = 1):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{flag} must be at least {minimum}, got {value}")
        return value
    return parse


def _sizes(text: str) -> tuple[int, ...]:
    """--sizes 5000,10000,25000: whole numbers of params, each at least 1."""
    parse = _positive_int("--sizes")
    return tuple(sorted({parse(part.strip()) for part in text.split(",")}))


def _positive_float(flag: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes a number, got {text!r}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{flag} must be a positive number, got {text}")
        return value
    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, instead of usage noise
        self.exit(2, f"error: {one_line(message)} (see --help)\n")


def one_line(text: str) -> str:
    """The message with any line breaks a user's value brought in escaped, so an error stays one line."""
    return "".join(repr(c)[1:-1] if c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029" else c for c in str(text))


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<results-dir>/nas.db); "
                                          "postgresql://USER:PASS@HOST:PORT/DB for many machines; "
                                          "grpc://HOST:PORT for a serve-storage proxy (hundreds of workers)")
    common.add_argument("--results-dir", default=DEFAULT.results_dir,
                        help=f"where studies' reports go (default: {DEFAULT.results_dir})")
    weights = common.add_mutually_exclusive_group()
    weights.add_argument("--artifact-store", metavar="URL",
                         help="where trial weights are stored: a folder, s3://BUCKET/PREFIX (pip install "
                              "'tinynas[s3]'; AWS_ENDPOINT_URL for an S3-compatible server), db (the --storage "
                              "database) or a database URL; default: <results-dir>/<study>/artifacts; report, export "
                              "and dashboard: where each trial recorded its weights")
    weights.add_argument("--artifact-dir", help="a folder for trial weights: --artifact-store DIR")
    common.add_argument("--data-dir", help="torchvision sets: the data root holding them in torchvision's layout (e.g. "
                                           "MNIST/raw, cifar-10-batches-py; default: $NAS_DATA_DIR, else ./data); "
                                           "--dataset folder: DIR holding train/<class>/ (and test/<class>/); "
                                           "--dataset npz: FILE.npz")
    # --dataset and --train-subset default to None, "not given": report, export and evaluate --study then take the
    # study's value, and refuse another; SearchConfig's defaults fill in the rest (nas.config.config_from)
    common.add_argument("--dataset", choices=DATASETS,
                        help=f"a torchvision set, folder (an image folder) or npz (arrays); default: {DEFAULT.dataset}; "
                             "report, export and evaluate --study: the study's")
    common.add_argument("--image-size", type=_positive_int("--image-size", 8), metavar="N",
                        help="resize the images to NxN once, at load time (default: their own size; report, export "
                             "and evaluate --study: the study's)")
    common.add_argument("--device", default=DEFAULT.device, choices=DEVICES)
    common.add_argument("--threads", type=_positive_int("--threads"), help="CPU threads per worker (default: cores / jobs)")
    common.add_argument("--train-subset", type=_positive_int("--train-subset"), metavar="N",
                        help="train on only N images (smoke tests and CI; report, export and evaluate --study: "
                             "the study's)")
    common.add_argument("--seed", type=_positive_int("--seed", 0), default=DEFAULT.seed)
    common.add_argument("--quiet", action="store_true", help="print nothing but errors: no progress, no per-trial lines, "
                                                             "no summary")

    prog = "tinynas" if Path(sys.argv[0]).name == "tinynas" else "search.py"  # the installed command, or the script
    parser = _Parser(prog=prog, description="Neural architecture search for small CNNs under a parameter budget.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    s = sub.add_parser("search", parents=[common], help="search, report and export (the default command)")
    s.add_argument("--trials", type=_positive_int("--trials"), default=DEFAULT.trials,
                   help=f"trained trials in the study (default {DEFAULT.trials})")
    s.add_argument("--space", help="search space TOML (default: search_spaces/mnist.toml)")
    s.add_argument("--max-params", type=_positive_int("--max-params"), default=DEFAULT.max_params,
                   help=f"budget: candidates with this many parameters or more are never trained (default "
                        f"{DEFAULT.max_params})")
    s.add_argument("--max-mflops", type=_positive_float("--max-mflops"), metavar="M",
                   help="device budget: forward MFLOPs per image must stay at or under M (default: the space's "
                        "max_mflops)")
    s.add_argument("--max-peak-kb", type=_positive_float("--max-peak-kb"), metavar="KB",
                   help="device budget: peak activation memory for one image, in KB (1 KB = 1,024 bytes), at or "
                        "under KB; fp32 unless --int8-memory")
    s.add_argument("--int8-memory", action="store_true", help="count activations at one byte each for --max-peak-kb")
    s.add_argument("--max-arena-kb", type=_positive_float("--max-arena-kb"), metavar="KB",
                   help="microcontroller budget: the tensor arena TensorFlow Lite Micro needs for the int8 model "
                        "(activations plus persistent data), in KB, at or under KB; needs no extra to search, "
                        "writing best.tflite needs pip install -e '.[tflite]'")
    s.add_argument("--max-flash-kb", type=_positive_float("--max-flash-kb"), metavar="KB",
                   help="microcontroller budget: the int8 .tflite file a device flashes, in KB, at or under KB")
    s.add_argument("--max-latency-ms", type=_positive_float("--max-latency-ms"), metavar="MS",
                   help="device budget: onnxruntime latency at batch 1, one thread, on this machine, at or under MS")
    s.add_argument("--study", help="study name (default: <space>-<max-params>)")
    s.add_argument("--jobs", type=_positive_int("--jobs"),
                   help="worker processes on this machine (default: one per core on a CPU, 1 on a GPU)")
    s.add_argument("--timeout", type=_positive_float("--timeout"), help="stop starting trials after this many seconds")
    s.add_argument("--sampler", default=DEFAULT.sampler, choices=SAMPLERS)
    s.add_argument("--warm-start", action="store_true", help="queue the reference models R1, R2, R4 as the first trials")
    s.add_argument("--epochs", type=_positive_int("--epochs"), default=DEFAULT.epochs,
                   help=f"epochs per trial (default {DEFAULT.epochs})")
    s.add_argument("--objective", default=DEFAULT.objective, choices=OBJECTIVES,
                   help="accuracy: the most accurate under the ceilings (default); pareto: one multi-objective study "
                        "of validation accuracy against size, reporting its Pareto set")
    s.add_argument("--size-metric", choices=SIZE_METRICS,
                   help="--objective pareto: the size to minimise (default: params)")
    s.add_argument("--sizes", type=_sizes, metavar="N,N,...",
                   help="--objective pareto: sizes in params at which the set must hold well-searched members; the "
                        "range is cut into bands ending at each and at --max-params, each drawn by an equal share of "
                        "the trials (default: 1/5 and 2/5 of --max-params)")
    s.add_argument("--trial-time-limit", type=_positive_float("--trial-time-limit"), metavar="SECONDS",
                   help="a candidate whose training is projected, after its first steps, to take longer is stopped "
                        "and rejected as too slow, not counted (default: twice the median projection of the "
                        "study's earlier trials, never under 30 s)")

    r = sub.add_parser("report", parents=[common], help="regenerate results/<study>/ from the storage")
    r.add_argument("--study", required=True)

    e = sub.add_parser("export", parents=[common], help="export a trial's weights (default: the best)")
    e.add_argument("--study", required=True)
    e.add_argument("--trial", type=_positive_int("--trial", 0))
    e.add_argument("--out", required=True, help="output path (a .json spec is written beside it)")
    e.add_argument("--format", choices=FORMATS,
                   help="safetensors weights, an ONNX model, an int8-quantised ONNX model, a TFLite model, or a "
                        "full-integer int8 TFLite model with its C array for TensorFlow Lite Micro (tflite formats: "
                        "pip install -e '.[tflite]'; default: from --out's suffix, .onnx -> onnx, .tflite -> "
                        "tflite, else safetensors)")

    v = sub.add_parser("evaluate", parents=[common], help="re-train on the full training set over several seeds")
    group = v.add_mutually_exclusive_group(required=True)
    group.add_argument("--study", help="evaluate this study's best trial (or --trial N)")
    group.add_argument("--spec", help="evaluate a candidate JSON file or a reference name (R1, R2, R4)")
    v.add_argument("--trial", type=_positive_int("--trial", 0))
    v.add_argument("--seeds", type=_positive_int("--seeds"), default=3)
    v.add_argument("--epochs", type=_positive_int("--epochs"),
                   help="epochs per run (default 1; with --study, the study's)")
    v.add_argument("--tta", action="store_true",
                   help="also score the test set with test-time shifts (the image and its four 1-pixel shifts), "
                        "reported apart: it costs 5x the inference on the device")

    b = sub.add_parser("baselines", parents=[common], help="train the reference models with their own recipes")
    b.add_argument("--only", help="comma-separated reference names (default: all)")

    d = sub.add_parser("describe", help="print a spec's layers, output shapes and exact parameter count")
    d.add_argument("path", help="a candidate or spec JSON file, or a weights file")

    c = sub.add_parser("check", parents=[common], help="check an ONNX or TFLite export against its PyTorch weights")
    c.add_argument("path", help="an .onnx or .tflite file written by export or search")
    c.add_argument("--weights", help="its .safetensors weights (default: the file of the same name beside it)")

    w = sub.add_parser("dashboard", parents=[common], help="optuna-dashboard for a study, with its weights wherever "
                                                           "they are stored (a bucket or a database too)")
    w.add_argument("--study", required=True)
    w.add_argument("--host", default=DASHBOARD_HOST, help=f"address to serve on (default {DASHBOARD_HOST})")
    w.add_argument("--port", type=_positive_int("--port"), default=DASHBOARD_PORT,
                   help=f"port to serve on (default {DASHBOARD_PORT})")

    g = sub.add_parser("serve-storage", help="Optuna's gRPC storage proxy in front of the database, for hundreds of "
                                             "workers: they pass --storage grpc://HOST:PORT (pip install "
                                             "'tinynas[grpc]')")
    g.add_argument("--storage", required=True, help="the database: postgresql://USER:PASS@HOST:PORT/DB "
                                                    "(or sqlite:///FILE)")
    g.add_argument("--port", type=_positive_int("--port"), required=True, help="port to serve on")
    g.add_argument("--host", default=PROXY_HOST, help=f"address to serve on (default {PROXY_HOST}: this machine "
                                                      "only; 0.0.0.0 for every machine that can reach it)")
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    argv = list(argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "search")
    args = build_parser().parse_args(argv)
    if getattr(args, "trial", None) is not None and args.command == "evaluate" and not args.study:
        raise CliError("--trial goes with --study")
    if getattr(args, "size_metric", None) and args.objective != "pareto":
        raise CliError("--size-metric goes with --objective pareto")
    if getattr(args, "sizes", None) and args.objective != "pareto":
        raise CliError("--sizes goes with --objective pareto")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(sys.argv[1:] if argv is None else argv)  # bad flags fail here, before torch is imported
        if args.command == "search":
            from nas import api
            from nas.config import config_from

            settings = vars(config_from(vars(args)))
            api.search(settings.pop("dataset"), **settings)
            return 0
        if args.command == "serve-storage":
            from nas.engine import proxy_server  # not through nas.commands: the proxy needs no torch

            proxy_server.serve(args.storage, args.host, args.port)
            return 0
        from nas import commands

        return commands.dispatch(args)
    except KeyboardInterrupt as e:  # 128 + the signal's number, as a shell reports a process it killed
        print("\ninterrupted", file=sys.stderr)
        return 128 + getattr(e, "signum", signal.SIGINT)
    except Exception as e:  # noqa: BLE001 - user errors get one line; anything else is a bug and keeps its traceback
        code = report_user_error(e)
        if code is None:
            raise
        return code


def report_user_error(e: Exception) -> int | None:
    """Prints the one line for an error caused by the input or the environment and returns its exit code; None for
    a bug, which the caller re-raises with its traceback."""
    message = _user_message(e)
    if message is None:
        return None
    print(f"error: {one_line(message)}", file=sys.stderr)
    return getattr(e, "exit_code", 2)  # UserError's, or 2 for an OSError


def _user_message(e: Exception) -> str | None:
    """The one-line message for an error caused by the input or the environment, or None for a bug."""
    if not isinstance(e, (UserError, OSError)):
        from nas.engine.retry import unreachable  # Optuna's cleanup can hide a storage outage behind its own error

        e = unreachable(e) or e
    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, OSError):  # a file or folder that cannot be read or written
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{e.strerror or e}"
    return None

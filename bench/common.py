"""What the benchmarks share: the flags that pass through to `search.py`, and one-line errors."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nas.cli import report_user_error  # noqa: E402


def add_search_flags(parser: argparse.ArgumentParser, results_dir: Path) -> None:
    """--trials, --seeds, --threads, --train-subset, --dataset and --results-dir, as every accuracy benchmark takes
    them."""
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per evaluate")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--train-subset", type=int, help="train on N images (a quick check of the script only)")
    parser.add_argument("--results-dir", type=Path, default=results_dir)
    parser.add_argument("--dataset", help="search.py's --dataset (default: its own, mnist)")


def add_repeat_flags(parser: argparse.ArgumentParser, repeats: int) -> None:
    """--repeats and --first-seed: the search seeds a benchmark runs (search_seeds)."""
    parser.add_argument("--repeats", type=int, default=repeats, help="searches per side or budget: medians over them")
    parser.add_argument("--first-seed", type=int, default=1,
                        help="the first search seed (then the next ones): more draws after earlier runs")


def search_seeds(args: argparse.Namespace) -> range:
    return range(args.first_seed, args.first_seed + args.repeats)


def passed_flags(args: argparse.Namespace) -> list:
    """The flags every `search.py` command of a benchmark gets: its results folder, threads, train subset, dataset."""
    return (["--results-dir", args.results_dir] + (["--threads", args.threads] if args.threads else [])
            + (["--train-subset", args.train_subset] if args.train_subset else [])
            + (["--dataset", args.dataset] if args.dataset else []))


def run_benchmark(main: Callable[[], None]) -> None:
    """Runs a benchmark's main as search.py runs its commands: bad input or missing data gets one line and a non-zero
    exit, a bug keeps its traceback."""
    try:
        main()
    except Exception as e:  # noqa: BLE001
        code = report_user_error(e)
        if code is None:
            raise
        sys.exit(code)

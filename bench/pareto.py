"""One Pareto search against dedicated searches per budget (issue 22): is one multi-objective study as good?

    python bench/pareto.py [--commit REV] [--repeats 1] [--first-seed 1] [--sides pareto dedicated]
                           [--budgets 5000 10000 25000] [--trials 50] [--seeds 3]
    python bench/pareto.py --trials 3 --train-subset 500 --seeds 1 --budgets 5000 25000   # a quick check

For each of `--repeats` search seeds (--first-seed, the next, ...), at the given commit (a git worktree of REV;
default: this working tree): one `search.py --objective pareto --trials N --max-params <largest budget>` study, and
one default `search.py --trials N --max-params B` study per budget B, each with the default workers and wall-timed.
Then `search.py evaluate --study S --trial N --seeds K` (full training set, one epoch, mean test accuracy) on the
Pareto study's most accurate member (by validation) under each budget, and on each dedicated study's best. It prints,
per budget, the medians over the repeats of both sides' evaluated means and their difference (Pareto minus
dedicated), and how many of the Pareto study's trained trials lay under it (fewest of the repeats), then the
median wall time of the Pareto search against the median total of the dedicated ones and the one at its ceiling.
`--sides pareto` (or `dedicated`) runs one side only, to add draws to earlier ones of the other side when that
side's search behaviour has not changed. Selection only ever uses validation accuracy.

It takes hours on two cores: run it in the background, never beside another training.
"""
from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import add_repeat_flags, add_search_flags, passed_flags, run_benchmark, search_seeds  # noqa: E402


@contextlib.contextmanager
def checkout(commit: str | None):
    """The source tree to run: this one, or a temporary git worktree of `commit`, removed afterwards."""
    if commit is None:
        yield ROOT
        return
    with tempfile.TemporaryDirectory(prefix="nas-pareto-") as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit], check=True,
                       capture_output=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


class Runner:
    """Runs `search.py` of one source tree with shared flags, logging every command and its output."""

    def __init__(self, tree: Path, common: list, log):
        self.tree, self.common, self.log = tree, common, log

    def __call__(self, *args) -> tuple[str, float]:
        """The command's stdout and its wall time in seconds; a failure stops the benchmark."""
        cmd = [sys.executable, str(self.tree / "search.py"), *map(str, args), *map(str, self.common)]
        print("$ " + " ".join(cmd[1:]), file=self.log, flush=True)
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.tree)
        self.log.write(proc.stdout + proc.stderr)
        self.log.flush()
        if proc.returncode != 0:
            raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
        return proc.stdout, time.perf_counter() - started

    def evaluate(self, study: str, trial: int | None, seeds: int) -> float:
        """The mean test accuracy `evaluate` prints for a study's trial (None: its best)."""
        pick = [] if trial is None else ["--trial", trial]
        out, _ = self("evaluate", "--study", study, *pick, "--seeds", seeds)
        return float(re.search(r"test accuracy: ([\d.]+)%", out).group(1)) / 100


def one_repeat(run: Runner, seed: int, args) -> list[dict]:
    """One Pareto search and the dedicated ones, with search seed `seed`: a row per budget for each side."""
    return ((pareto_side(run, seed, args) if "pareto" in args.sides else [])
            + (dedicated_side(run, seed, args) if "dedicated" in args.sides else []))


def most_accurate_under(frontier, size: str, limit: float):
    """The frontier's member (a row) with the highest val_acc among those with `size` under `limit`; None if none."""
    under = frontier[frontier[size] < limit]
    return None if under.empty else under.loc[under["val_acc"].idxmax()]


def pareto_side(run: Runner, seed: int, args) -> list[dict]:
    rows, ceiling = [], max(args.budgets)
    study = f"pareto-{ceiling}-s{seed}"
    _, wall = run("--objective", "pareto", "--trials", args.trials, "--max-params", ceiling, "--study", study,
                  "--seed", seed, "--quiet")
    frontier = pd.read_csv(args.results_dir / study / "frontier.csv")
    trials = pd.read_csv(args.results_dir / study / "trials.csv")
    trained = trials[trials["state"].isin(["COMPLETE", "PRUNED"]) & trials["rejected"].isna()]
    for budget in args.budgets:
        member = most_accurate_under(frontier, "params", budget)
        acc = None if member is None else run.evaluate(study, int(member["number"]), args.seeds)
        rows.append(dict(side="pareto", budget=budget, seed=seed, wall_s=wall, acc=acc,
                         trained_under=int((trained["params"] < budget).sum()),
                         trial=None if member is None else int(member["number"]),
                         params=None if member is None else int(member["params"])))
    return rows


def dedicated_side(run: Runner, seed: int, args) -> list[dict]:
    rows = []
    for budget in args.budgets:
        study = f"dedicated-{budget}-s{seed}"
        _, wall = run("--trials", args.trials, "--max-params", budget, "--study", study, "--seed", seed, "--quiet")
        rows.append(dict(side="dedicated", budget=budget, seed=seed, wall_s=wall,
                         acc=run.evaluate(study, None, args.seeds)))
    return rows


def summarise(df: pd.DataFrame) -> None:
    """Per budget, the medians of both sides and their difference; then the median wall times."""
    if df["side"].nunique() < 2:
        for (side, budget), rows in df.groupby(["side", "budget"]):
            trained = f", at least {int(rows['trained_under'].min())} trained under it" if side == "pareto" else ""
            print(f"budget {budget:,}: {side} {rows['acc'].median():.2%} (median of {rows['acc'].count()}), "
                  f"wall {rows['wall_s'].median() / 60:.1f} min{trained}")
        return
    for budget, rows in df.groupby("budget"):
        pareto, dedicated = (rows[rows["side"] == side]["acc"].dropna() for side in ("pareto", "dedicated"))
        if pareto.empty:
            print(f"budget {budget:,}: the Pareto set has no member under it; dedicated {dedicated.median():.2%}")
            continue
        print(f"budget {budget:,}: Pareto member {pareto.median():.2%}, dedicated {dedicated.median():.2%}, "
              f"difference {(pareto.median() - dedicated.median()) * 100:+.2f} points (medians of {len(dedicated)}); "
              f"trained under it in the Pareto study: at least {int(rows['trained_under'].min())}")
    per_seed = df.groupby(["side", "seed"])["wall_s"]
    pareto = statistics.median(per_seed.first()["pareto"])  # one search, on each of its budget's rows
    dedicated = statistics.median(per_seed.sum()["dedicated"])  # one search per budget
    ceiling = df[(df["side"] == "dedicated") & (df["budget"] == df["budget"].max())]["wall_s"].median()
    print(f"wall: Pareto search {pareto / 60:.1f} min, dedicated searches {dedicated / 60:.1f} min in all "
          f"(medians), {dedicated / pareto:.2f}x; the one at the ceiling {ceiling / 60:.1f} min", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--commit", help="the commit to measure (default: this working tree)")
    p.add_argument("--budgets", type=int, nargs="+", default=[5_000, 10_000, 25_000],
                   help="param budgets; the Pareto study runs under the largest")
    add_repeat_flags(p, 1)
    p.add_argument("--sides", nargs="+", choices=["pareto", "dedicated"], default=["pareto", "dedicated"])
    add_search_flags(p, ROOT / "results" / "bench-pareto")
    args = p.parse_args()
    args.results_dir = args.results_dir.resolve()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    common = passed_flags(args)
    with open(args.results_dir / "bench-pareto.log", "a") as log, checkout(args.commit) as tree:
        run = Runner(tree, common, log)
        df = pd.DataFrame([row for seed in search_seeds(args) for row in one_repeat(run, seed, args)])
    print(df.to_string(index=False), flush=True)
    summarise(df)


if __name__ == "__main__":
    run_benchmark(main)

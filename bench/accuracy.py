"""Search-quality figures, repeated: search each budget with the default command, then `evaluate` what it found.

    python bench/accuracy.py [--repeats 3] [--first-seed 1] [--budgets 25000 10000 5000] [--trials 50] [--seeds 3]
                             [--threads N] [--dataset NAME] [--references R1 R2 R4 | --no-references]

For each budget and each of `--repeats` search seeds (--first-seed, the next, ...): `search.py --trials N
--max-params B --seed S` with the default workers, as a user runs it (wall time measured), then `search.py evaluate`
on the study's best trial by validation (full 60k training set, one epoch, --seeds training seeds, mean test
accuracy). Per budget it prints the median, the worst and the spread of the evaluated means against issue 42's
targets, and the median wall time. Then, for the first budget's first search, it evaluates the reference models
(R1, R2, R4) with their own recipes, prints how far that search's best lies above each, and evaluates the best
frontier network (by validation) with no more params than the reference, to check frontier dominance. Selection
only ever uses validation accuracy; test accuracy is read for what was already chosen.

It takes hours on two cores: run it in the background, never beside another training.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from common import add_repeat_flags, add_search_flags, passed_flags, run_benchmark, search_seeds  # noqa: E402

# budget -> (median of the searches' evaluated means, worst of them), issue 42
TARGETS = {25_000: (0.9937, 0.9928), 10_000: (0.9915, 0.9905), 5_000: (0.9880, 0.9865)}
WALL_TARGET_MIN = 9  # median 50-trial search wall time, minutes (issue 42: at 25k)


def cli(*args, log) -> str:
    cmd = [sys.executable, str(ROOT / "search.py"), *map(str, args)]
    print("$ " + " ".join(cmd[1:]), file=log, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    log.write(proc.stdout + proc.stderr)
    log.flush()
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    return proc.stdout


def evaluate(common: list, log, **what) -> tuple[float, float]:
    args = [f"--{k}={v}" for k, v in what.items()]
    out = cli("evaluate", *args, *common, log=log)
    m = re.search(r"test accuracy: ([\d.]+)% ± ([\d.]+)%", out)
    return float(m.group(1)) / 100, float(m.group(2)) / 100


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", type=int, nargs="+", default=[25_000, 10_000, 5_000])
    add_repeat_flags(p, 3)
    add_search_flags(p, ROOT / "results" / "bench")
    p.add_argument("--references", nargs="+", default=["R1", "R2", "R4"], help="reference models to compare with")
    p.add_argument("--no-references", action="store_true", help="skip the reference models and dominance check")
    args = p.parse_args()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    common = passed_flags(args)
    log = open(args.results_dir / "bench-accuracy.log", "a")
    rows = [search_and_evaluate(budget, seed, args, common, log)
            for budget in args.budgets
            for seed in search_seeds(args)]
    df = pd.DataFrame(rows)
    print(df.to_string(index=False), flush=True)
    targets = TARGETS if args.dataset in (None, "mnist") else {}  # the targets are MNIST's
    for budget, runs in df.groupby("budget", sort=False):
        median, worst = runs["eval_test_mean"].median(), runs["eval_test_mean"].min()
        wall = runs["wall_min"].median()
        want_median, want_worst = targets.get(budget, (None, None))
        print(f"budget {budget:,}: evaluated means median {median:.2%}{against(median, want_median)}, worst "
              f"{worst:.2%}{against(worst, want_worst)}, spread {runs['eval_test_mean'].max() - worst:.2%} "
              f"over {len(runs)} searches; median wall {wall:.1f} min (target {WALL_TARGET_MIN}: "
              f"{verdict(wall <= WALL_TARGET_MIN)})", flush=True)
    if not args.no_references:  # last: the reference recipes are slow (R4 trains with batch 4)
        first = study_name(args.budgets[0], args.first_seed)
        dominance(first, rows[0]["eval_test_mean"], pd.read_csv(args.results_dir / first / "frontier.csv"),
                  args.references, common, args.seeds, log)


def study_name(budget: int, seed: int) -> str:
    return f"bench-{budget}-s{seed}"


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def against(value: float, target: float | None) -> str:
    """' (target T: met)', or nothing where there is no target."""
    return "" if target is None else f" (target {target:.2%}: {verdict(value >= target)})"


def search_and_evaluate(budget: int, seed: int, args, common: list, log) -> dict:
    """One default search at `budget` with search seed `seed`, and its best trial by validation, evaluated."""
    study = study_name(budget, seed)
    start = time.perf_counter()
    cli("--trials", args.trials, "--max-params", budget, "--study", study, "--seed", seed, "--quiet", *common, log=log)
    wall = time.perf_counter() - start
    trials = pd.read_csv(args.results_dir / study / "trials.csv")
    best = trials[trials["state"] == "COMPLETE"].sort_values(["val_acc", "params"], ascending=[False, True]).iloc[0]
    mean, std = evaluate(common, log, study=study, seeds=args.seeds)
    print(f"budget {budget:,} seed {seed}: search {wall / 60:.1f} min, best trial {int(best['number'])} "
          f"{int(best['params']):,} params val {best['val_acc']:.2%}; evaluate ({args.seeds} seeds, all training images): "
          f"{mean:.2%} ± {std:.2%}; {int(trials['rejected'].notna().sum())} rejected", flush=True)
    return dict(budget=budget, seed=seed, wall_min=wall / 60, best_trial=int(best["number"]),
                params=int(best["params"]), val_acc=best["val_acc"], eval_test_mean=mean, eval_test_std=std)


def dominance(study: str, best_mean: float, frontier: pd.DataFrame, names: list, common: list, seeds: int,
              log) -> None:
    """For each reference: its evaluated accuracy against the search's best, and against the best frontier network
    (by validation) with no more params."""
    sys.path.insert(0, str(ROOT))
    from nas.space.budget import count_params
    from nas.space.references import by_name

    for name in names:
        ref_params = count_params(by_name(name).arch)
        ref_mean, ref_std = evaluate(common, log, spec=name, seeds=seeds)
        print(f"{name} ({ref_params:,} params): {ref_mean:.2%} ± {ref_std:.2%}; the search's best is "
              f"{(best_mean - ref_mean) * 100:+.2f} points above it", flush=True)
        smaller = frontier[frontier["params"] <= ref_params]
        if smaller.empty:
            print(f"{name}: no frontier network this small", flush=True)
            continue
        pick = smaller.sort_values("val_acc", ascending=False).iloc[0]
        mean, std = evaluate(common, log, study=study, trial=int(pick["number"]), seeds=seeds)
        verdict = "beaten" if mean > ref_mean else "NOT beaten"
        print(f"{name} ({ref_params:,} params): {ref_mean:.2%} ± {ref_std:.2%}  vs  frontier trial {int(pick['number'])} "
              f"({int(pick['params']):,} params): {mean:.2%} ± {std:.2%}  -> {verdict}", flush=True)


if __name__ == "__main__":
    run_benchmark(main)

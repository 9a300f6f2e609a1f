"""Search-quality figures: search each budget with the default command, then `evaluate` what it found.

    python bench/accuracy.py [--budgets 25000 10000 5000] [--trials 50] [--seeds 3] [--threads N]

For each budget: `search.py --trials N --max-params B` (wall time measured), then `search.py evaluate` on the
best trial (full 60k training set, one epoch, --seeds seeds, mean test accuracy). Then, for the first budget, it
evaluates the reference models R1, R2, R4 with their own recipes and, for each, the best frontier network
with no more params, to check frontier dominance. Selection only ever uses validation accuracy.

It takes an hour or more on two cores: run it in the background, never beside another training.
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
TARGETS = {25_000: 0.993, 10_000: 0.990, 5_000: 0.985}


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
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0, help="the search seed")
    p.add_argument("--threads", type=int)
    p.add_argument("--results-dir", type=Path, default=ROOT / "results" / "bench")
    p.add_argument("--no-references", action="store_true", help="skip the reference models and dominance check")
    args = p.parse_args()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    common = ["--results-dir", args.results_dir] + (["--threads", args.threads] if args.threads else [])
    log = open(args.results_dir / "bench-accuracy.log", "a")
    rows = []
    for budget in args.budgets:
        study = f"bench-{budget}-s{args.seed}"
        start = time.perf_counter()
        cli("--trials", args.trials, "--max-params", budget, "--study", study, "--seed", args.seed, "--quiet", *common, log=log)
        wall = time.perf_counter() - start
        trials = pd.read_csv(args.results_dir / study / "trials.csv")
        best = trials[trials["state"] == "COMPLETE"].sort_values(["val_acc", "params"], ascending=[False, True]).iloc[0]
        mean, std = evaluate(common, log, study=study, seeds=args.seeds)
        rejected = int((trials["rejected"] == "over_budget").sum())
        rows.append(dict(budget=budget, wall_min=wall / 60, best_trial=int(best["number"]), params=int(best["params"]),
                         val_acc=best["val_acc"], eval_test_mean=mean, eval_test_std=std,
                         target=TARGETS.get(budget), met=mean >= TARGETS.get(budget, 0), rejected=rejected))
        print(f"budget {budget:,}: search {wall / 60:.1f} min, best trial {int(best['number'])} {int(best['params']):,} params "
              f"val {best['val_acc']:.2%}; evaluate ({args.seeds} seeds, 60k): {mean:.2%} ± {std:.2%} "
              f"(target {TARGETS.get(budget, 0):.1%}: {'met' if rows[-1]['met'] else 'NOT met'}); "
              f"{rejected} rejected by the filter", flush=True)
    print(pd.DataFrame(rows).to_string(index=False), flush=True)
    if not args.no_references:  # last: the reference recipes are slow (R4 trains with batch 4)
        first = f"bench-{args.budgets[0]}-s{args.seed}"
        dominance(first, args.budgets[0], pd.read_csv(args.results_dir / first / "trials.csv"), common, args.seeds, log)


def dominance(study: str, budget: int, trials: pd.DataFrame, common: list, seeds: int, log) -> None:
    """For each reference: its evaluated accuracy against the best frontier network with no more params."""
    sys.path.insert(0, str(ROOT))
    from nas.budget import count_params
    from nas.references import all_references
    from nas.report import pareto_frontier

    frontier = pareto_frontier(trials)
    for name, candidate in all_references().items():
        ref_params = count_params(candidate.arch)
        ref_mean, ref_std = evaluate(common, log, spec=name, seeds=seeds)
        smaller = frontier[frontier["params"] <= ref_params]
        if smaller.empty:
            print(f"{name} ({ref_params:,} params): {ref_mean:.2%} ± {ref_std:.2%}; no frontier network this small", flush=True)
            continue
        pick = smaller.sort_values("val_acc", ascending=False).iloc[0]
        mean, std = evaluate(common, log, study=study, trial=int(pick["number"]), seeds=seeds)
        verdict = "beaten" if mean > ref_mean else "NOT beaten"
        print(f"{name} ({ref_params:,} params): {ref_mean:.2%} ± {ref_std:.2%}  vs  frontier trial {int(pick['number'])} "
              f"({int(pick['params']):,} params): {mean:.2%} ± {std:.2%}  -> {verdict}", flush=True)


if __name__ == "__main__":
    main()

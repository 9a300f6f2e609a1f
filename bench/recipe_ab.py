"""Paired A/B of the recipe levers (issue 42) on fixed networks, on validation only.

    python bench/recipe_ab.py [SPEC.json ...] [--reference R1 ...] --lever NAME[=VALUE][,NAME=VALUE...] [--lever ...]
                              [--seeds 5] [--subset N] [--val-size N] [--epochs 1] [--dataset mnist] [--data-dir DIR]
                              [--threads N]

Each network (spec JSON files, such as a search's exported best, and/or reference networks by label; the reference
networks when none is given) trains with its own recipe (the base) and with each `--lever` variant: that recipe
with the named keys changed. A bare NAME takes its ON value below (airbench's where it gives one); comma-joined
settings make one variant (the levers together). Base and variants share each seed: the same initial weights,
the same batch order; runs alternate within a seed so machine noise falls on both alike. Scores are on the
hold-out carved from the training images (nas.data.split, the search's validation): the test set is never read.
Prints per seed validation, then each variant's mean paired difference from the base ± its standard error, per
network and pooled over the networks.

Never run it beside another training: two trainings on two cores oversubscribe and distort everything.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nas import data  # noqa: E402
from nas.engine.device import prepare_model  # noqa: E402
from nas.engine.train import TrainingDiverged, train  # noqa: E402
from nas.errors import UserError  # noqa: E402
from nas.space.references import all_references  # noqa: E402
from nas.space.spec import Candidate, TrainRecipe  # noqa: E402
from common import run_benchmark  # noqa: E402

# a lever's value when named alone; airbench's where it has one (BN momentum 0.4 = its 1 - 0.6, bias lr x64)
ON = {"whiten": "frozen", "dirac": True, "bn_momentum": 0.4, "bn_bias_lr": 64.0, "bn_freeze_scale": True, "muon_lr": 0.05,
      "lookahead": 5}


def variant(text: str) -> dict:
    """`NAME[=VALUE],...` as recipe settings; a bare NAME is its ON value, VALUE is JSON (numbers, true/false)."""
    found = {}
    recipe_keys = {f.name for f in dataclasses.fields(TrainRecipe)}
    for item in text.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if key not in recipe_keys:
            raise UserError(f"--lever {text}: {key!r} is not a recipe key; levers: {', '.join(ON)}")
        if not sep:
            if key not in ON:
                raise UserError(f"--lever {text}: {key} has no ON value; give {key}=VALUE")
            found[key] = ON[key]
            continue
        try:
            found[key] = json.loads(value)
        except json.JSONDecodeError:
            found[key] = value
    return found


def networks(args) -> dict[str, Candidate]:
    """The networks by label: each spec file, then each --reference (all reference networks when neither is given)."""
    found = {}
    for path in args.specs:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise UserError(f"{path}: cannot be read ({e.strerror})") from None
        found[Path(path).stem] = Candidate.from_json(text, path)
    references = all_references()
    for label in args.reference or ([] if args.specs else list(references)):
        if label not in references:
            raise UserError(f"--reference {label}: not a reference network; they are {', '.join(references)}")
        found[label] = references[label]
    return found


def with_lever(candidate: Candidate, settings: dict) -> Candidate:
    """The candidate with its recipe's keys changed, checked as a spec file's recipe would be."""
    recipe = TrainRecipe.from_dict({**candidate.recipe.to_dict(), **settings}, "--lever recipe")
    return dataclasses.replace(candidate, recipe=recipe)


def run(nets: dict[str, Candidate], variants: dict[str, dict], splits: data.Splits, seeds: int,
        epochs: int) -> dict[tuple[str, str], list[float]]:
    """Validation accuracy per seed for each (network, variant), base first; variants alternate within each seed."""
    results = {}
    for net, candidate in nets.items():
        arms = {"base": candidate, **{label: with_lever(candidate, s) for label, s in variants.items()}}
        for seed in range(seeds):
            for label, arm in arms.items():
                try:
                    result = train(prepare_model(arm, seed, torch.device("cpu")), arm.recipe, splits, epochs,
                                   seed=seed, test=False)
                except TrainingDiverged as e:  # a lever that diverges is a finding, not a reason to stop
                    results.setdefault((net, label), []).append(math.nan)
                    print(f"  {net} seed {seed} {label}: diverged ({e})", flush=True)
                    continue
                results.setdefault((net, label), []).append(result.val_acc)
                print(f"  {net} seed {seed} {label}: val {result.val_acc:.2%} ({result.train_seconds:.1f} s)",
                      flush=True)
    return results


def difference(diffs: list[float]) -> str:
    """Mean paired difference in points ± its standard error (n/a for a single pair), over the pairs whose runs
    both finished; diverged runs are counted apart."""
    finished = [d for d in diffs if not math.isnan(d)]
    diverged = f", {len(diffs) - len(finished)} diverged" if len(finished) < len(diffs) else ""
    if not finished:
        return f"every run diverged (n={len(diffs)})"
    se = f"{statistics.stdev(finished) / len(finished) ** 0.5:.2f}" if len(finished) > 1 else "n/a"
    return f"{statistics.mean(finished):+.2f} ± {se} points (n={len(finished)}{diverged})"


def summary(nets: dict[str, Candidate], variants: dict[str, dict], results: dict) -> list[str]:
    lines = []
    width = max(map(len, variants))
    for label in variants:
        pooled = []
        for net in nets:
            base, arm = results[(net, "base")], results[(net, label)]
            diffs = [(a - b) * 100 for a, b in zip(arm, base)]
            pooled += diffs
            lines.append(f"{label:<{width}}  {net:<16} base {statistics.fmean(base):.2%}  {difference(diffs)}")
        if len(nets) > 1:
            lines.append(f"{label:<{width}}  {'all networks':<16} {'':<11}  {difference(pooled)}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("specs", nargs="*", help="spec JSON files (a search's exported best, a trial's spec)")
    p.add_argument("--reference", nargs="+", help="reference networks by label (R1, R2, R4)")
    p.add_argument("--lever", action="append", required=True,
                   help=f"a variant: NAME[=VALUE][,NAME=VALUE...]; ON values: {ON}")
    p.add_argument("--seeds", type=int, default=5, help="training seeds, shared by base and variants")
    p.add_argument("--subset", type=int, help="train on the first N training images (a quick check only)")
    p.add_argument("--val-size", type=int, default=data.VAL_SIZE, help="the hold-out carved from the training images")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", help="default: $NAS_DATA_DIR, as search.py")
    p.add_argument("--threads", type=int)
    args = p.parse_args()
    for flag in ("seeds", "epochs", "subset", "val_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = {text: variant(text) for text in args.lever}
    nets = networks(args)
    for candidate in nets.values():
        for settings in variants.values():
            with_lever(candidate, settings)  # a bad value fails here, before any training
    splits = data.to_device(data.load(args.dataset, args.data_dir, val_size=args.val_size, train_subset=args.subset),
                            torch.device("cpu"))
    print(f"{len(nets)} networks x {len(variants) + 1} recipes x {args.seeds} seeds, {len(splits.x_train):,} training "
          f"images, {len(splits.x_val):,} validation (from the training images)", flush=True)
    print("\n".join(summary(nets, variants, run(nets, variants, splits, args.seeds, args.epochs))))


if __name__ == "__main__":
    run_benchmark(main)

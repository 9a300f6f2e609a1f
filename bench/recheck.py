"""Re-checks a space default on validation (issue 21): a trial's network as drawn, and with one choice changed.

    python bench/recheck.py --study NAME [--trial N] --set KEY=VALUE[,KEY=VALUE...] [--set ...]
                            [--results-dir results | --storage URL] [--space FILE] [--seeds 4] [--threads N]

The base is a trial of a stored study (default: its best by validation), rebuilt from its parameters by the space
it was searched with. Each `--set` variant fixes space keys to other values and rebuilds the same draw: for example
`--set stem_convs=1`, `--set pools=2`, `--set head=conv1x1_gap`, `--set batch_size=32`,
`--set optimizer=adamw,adam_lr=0.005`, the compute ceiling, `--set max_mflops=12`, or the param budget,
`--set max_params=100000`. The generator then fits the widths to the same share of the budget under the study's
ceilings, so a variant is the network the search would have drawn with that choice. Every network trains as the
study's trials did (its data, epochs and training subset; `--set epochs=2` trains a variant longer, as a diagnostic)
on the training split, and is scored on the validation hold-out: the test set is never scored. Training seeds
0..K-1 are shared by all networks, and runs alternate (base, variant 1, ..., base, variant 1, ...), so machine
noise falls on every network alike. It prints each network's params and MFLOPs, validation mean ± sd, mean paired difference
from the base ± the standard error of that mean, and median training seconds.

Never run it beside another training: two trainings on two cores oversubscribe and distort everything.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tomllib
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nas import data  # noqa: E402
from nas.space.budget import count_flops, count_params  # noqa: E402
from nas.engine.ceilings import Ceilings  # noqa: E402
from nas.commands import as_made, pick_trial, stored_study  # noqa: E402
from nas.config import SearchConfig  # noqa: E402
from nas.engine.identity import space_fingerprint  # noqa: E402
from nas.data import load_data  # noqa: E402
from nas.engine.device import prepare_model
from nas.errors import UserError  # noqa: E402
from nas.space.space import SearchSpace  # noqa: E402
from nas.space.space_file import DEFAULT_SPACE, SECTIONS, parse_space  # noqa: E402
from nas.space.spec import Candidate  # noqa: E402
from nas.engine.train import train  # noqa: E402
from common import run_benchmark  # noqa: E402


CEILINGS = {"max_mflops": "mflops", "max_params": "params"}  # --set keys that replace a study ceiling


def settings(text: str) -> dict:
    """`key=value,...` as a dict; values are JSON (numbers, true/false) or plain words."""
    found = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {text}: expected KEY=VALUE[,KEY=VALUE...]")
        try:
            found[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            found[key.strip()] = value.strip()
    return found


def pop_epochs(fixed: dict, default: int) -> int:
    """The variant's `epochs`, taken out of its settings (the study's `default` unless set)."""
    epochs = fixed.pop("epochs", default)
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise UserError(f"--set epochs={epochs}: expected a whole number of at least 1")
    return epochs


def study_ceilings(study: optuna.Study, space: SearchSpace) -> Ceilings:
    """The param budget and device ceilings the study's widths were fitted under, as it records them."""
    made = study.user_attrs
    return Ceilings(made["max_params"], made["max_mflops"], made["max_peak_kb"], made["int8_memory"],
                    made["max_latency_ms"])


def rebuild(raw: dict, path: Path, params: dict, fixed: dict, ceilings: Ceilings, info: data.DataInfo) -> Candidate:
    """The candidate the space `raw` (with `fixed` keys set) draws from `params` under `ceilings`, for the data `info`
    describes. `max_mflops` and `max_params` in `fixed` replace the compute ceiling and the param budget."""
    raw = {**raw, **{s: dict(raw.get(s, {})) for s in SECTIONS}}
    for key, value in fixed.items():
        if key in CEILINGS:
            ceilings = dataclasses.replace(ceilings, **{CEILINGS[key]: value})
            continue
        section = next((s for s, keys in SECTIONS.items() if key in keys), None)
        if section is None:
            keys = ", ".join(k for s in SECTIONS.values() for k in s)
            raise UserError(f"--set {key}: not a space key; keys are epochs, {', '.join(CEILINGS)}, {keys}")
        raw[section][key] = value
    space = parse_space(raw, path)
    trial = optuna.trial.FixedTrial({k: v for k, v in params.items() if k not in fixed})
    try:
        return space.sample(trial, ceilings.params, info.shape, len(info.classes), ceilings.fits_devices)
    except ValueError as e:  # FixedTrial lacks a parameter the changed space asks for
        raise UserError(f"--set {','.join(fixed)}: {e}; set it too") from None


def networks(args, study: optuna.Study, info: data.DataInfo, epochs: int) -> dict[str, tuple[Candidate, int]]:
    """The base and each variant with its training epochs (the study's, unless the variant sets `epochs`), by label;
    the base must rebuild to exactly the trial's stored network."""
    trial = pick_trial(study, args.trial)
    path = Path(args.space)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML ({e})") from None
    space = parse_space(raw, path)
    if space_fingerprint(space) != study.user_attrs.get("space_fingerprint"):
        raise UserError(f"{path} is not the space study {study.study_name!r} was searched with; pass --space")
    if "spec" not in trial.user_attrs:
        raise UserError(f"trial {trial.number} drew no network")
    ceilings = study_ceilings(study, space)
    base = rebuild(raw, path, trial.params, {}, ceilings, info)
    if base.to_dict() != Candidate.from_json(trial.user_attrs["spec"]).to_dict():
        raise UserError(f"trial {trial.number} does not rebuild to its stored network")
    print(f"base: {study.study_name} trial {trial.number} ({trial.state.name.lower()}, val "
          f"{trial.user_attrs.get('val_acc', float('nan')):.2%} in the search)", flush=True)
    found = {"base": (base, epochs)}
    for text in args.set:
        fixed = settings(text)
        variant_epochs = pop_epochs(fixed, epochs)
        found[f"set {text}"] = (rebuild(raw, path, trial.params, fixed, ceilings, info), variant_epochs)
    return found


def run(candidates: dict[str, tuple[Candidate, int]], splits: data.Splits, seeds: int) -> dict[str, list]:
    """(validation accuracy, training seconds) per seed for each network, alternating networks within each seed."""
    results = {label: [] for label in candidates}
    for seed in range(seeds):
        for label, (candidate, epochs) in candidates.items():
            result = train(prepare_model(candidate, seed, torch.device("cpu")), candidate.recipe, splits, epochs,
                           seed=seed, test=False)
            results[label].append((result.val_acc, result.train_seconds))
            print(f"  seed {seed} {label}: val {result.val_acc:.2%} ({result.train_seconds:.1f} s)", flush=True)
    return results


def summary(candidates: dict[str, tuple[Candidate, int]], results: dict[str, list]) -> list[str]:
    """One line per network: params, MFLOPs, validation mean ± sd, paired difference from the base ± its standard error,
    median seconds."""
    base = [acc for acc, _ in results["base"]]
    lines = []
    for label, runs in results.items():
        accs = [acc for acc, _ in runs]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        arch = candidates[label][0].arch
        line = (f"{label:<36} {count_params(arch):>7,} params {count_flops(arch) / 1e6:5.2f} MFLOPs  "
                f"val {statistics.mean(accs):.2%} ± {sd:.2%}")
        if label != "base":
            diffs = [(a - b) * 100 for a, b in zip(accs, base)]
            se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
            line += f"  vs base {statistics.mean(diffs):+.2f} ± {se:.2f} points"
        lines.append(line + f"  {statistics.median(s for _, s in runs):.1f} s")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", required=True)
    p.add_argument("--trial", type=int, help="default: the study's best by validation")
    p.add_argument("--set", action="append", default=[], help="a variant: KEY=VALUE[,KEY=VALUE...]")
    p.add_argument("--results-dir", default="results", help="the folder holding nas.db")
    p.add_argument("--storage", help="a storage URL instead (PostgreSQL)")
    p.add_argument("--space", default=str(DEFAULT_SPACE), help="the study's space file (default: the default space)")
    p.add_argument("--seeds", type=int, default=4, help="training seeds, shared by all networks")
    p.add_argument("--data-dir", help="default: $NAS_DATA_DIR, as search.py")
    p.add_argument("--threads", type=int)
    args = p.parse_args()
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = SearchConfig(results_dir=args.results_dir, storage=args.storage, data_dir=args.data_dir)
    study = stored_study(config, args.study)
    config = as_made(config, args, study)  # the study's data, epochs and training subset
    splits = load_data(config, torch.device("cpu"))
    candidates = networks(args, study, splits.info, config.epochs)
    print(f"{len(candidates)} networks x {args.seeds} seeds, {len(splits.x_train):,} training images, "
          f"{len(splits.x_val):,} validation", flush=True)
    print("\n".join(summary(candidates, run(candidates, splits, args.seeds))))


if __name__ == "__main__":
    run_benchmark(main)

"""One epoch of one default-space candidate (RandomSampler seed SEED, 25k budget) on 20,000 MNIST images, 1 thread,
with the package found in ROOT: run it for two checkouts in turn (A B A B) to compare their trainers.

    NAS_DATA_DIR=../shared/datasets python bench/epoch_ab.py ROOT SEED
"""
import sys
import time

import optuna
import torch

sys.path.insert(0, sys.argv[1])
from nas import data  # noqa: E402
from nas.engine import train
from nas.engine.device import prepare_model  # noqa: E402
from nas.data import to_device
from nas.space.space_file import load_space  # noqa: E402

torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)
splits = to_device(data.load("mnist", train_subset=20_000), torch.device("cpu"))
trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=int(sys.argv[2]))).ask()
candidate = load_space().sample(trial, 25_000)
model = prepare_model(candidate, 0, torch.device("cpu"))
started = time.perf_counter()
result = train.train(model, candidate.recipe, splits, seed=0)
print(f"{sys.argv[1]}: batch {candidate.recipe.batch_size}, train {result.train_seconds:.2f} s, "
      f"wall {time.perf_counter() - started:.2f} s, val {result.val_acc:.2%}")

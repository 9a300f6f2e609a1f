"""One epoch of training over in-memory tensors, and evaluation.

Batches are slices of a `randperm` over tensors already in memory: no DataLoader, no per-image work. The images are
kept as uint8 and normalised a gathered chunk (or an evaluation batch) at a time.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from nas.space.build import inference_copy
from nas.data import DataInfo, Splits, normalise
from nas.space.spec import TrainRecipe
from nas.engine.levers import ConvMuon, Lookahead, muon_filters, param_groups, prepare, step_lr

EVAL_BATCH = 128  # the fastest measured on a 2-core CPU: larger batches fall out of cache (bench/RESULTS.md)
# fractions of the run at which a pruner gets a reading: only early ones, where stopping saves most of the cost
PROGRESS_POINTS = (0.2, 0.4)
# shuffled training images are copied out this many at a time and batches are views into the copy: one gather of
# many images costs less than one per batch of scattered reads (bench/RESULTS.md)
GATHER_IMAGES = 2048
TTA_SHIFTS = ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0))  # (down, right) pixels: the image and its 1-pixel shifts
PROGRESS_VAL_SIZE = 1000  # a slice of the hold-out: cheap enough to read twice an epoch

# on_progress(percent_done, val_slice_accuracy); it may raise (e.g. optuna.TrialPruned) to stop training
ProgressFn = Callable[[int, float], None]
PaceFn = Callable[[float], None]  # called once, after TIME_CHECK_STEPS steps, with the projected seconds of training


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TooSlow(RuntimeError):
    """The run's projected duration is over its time limit; raised after the first steps, not at the end."""


TIME_CHECK_STEPS = 50  # the projection is made from this many steps: a few seconds even for slow candidates


@dataclass
class TrainResult:
    val_acc: float
    test_acc: float | None  # None unless asked for: trials never look at the test set
    train_seconds: float  # the training loop alone
    eval_seconds: float
    steps: int
    final_loss: float
    test_tta: float | None = None  # the test set read with test-time shifts (`evaluate --tta`), only when asked for


def make_optimizer(model: nn.Module, recipe: TrainRecipe) -> torch.optim.Optimizer:
    params = param_groups(model, recipe)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=step_lr(recipe), momentum=recipe.momentum, nesterov=recipe.nesterov and recipe.momentum > 0,
                               weight_decay=recipe.weight_decay, foreach=True)
    cls = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=step_lr(recipe), weight_decay=recipe.weight_decay, foreach=True)


def make_schedule(optimizer, recipe: TrainRecipe, total_steps: int):
    if recipe.schedule == "onecycle" and total_steps > 1:
        peaks = [group["lr"] for group in optimizer.param_groups]  # each group's own peak (BatchNorm biases' x factor)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total_steps,
                                                   pct_start=recipe.warmup, anneal_strategy="cos",
                                                   cycle_momentum=recipe.cycle_momentum)
    return None


def train(model: nn.Module, recipe: TrainRecipe, data: Splits, epochs: int = 1, seed: int = 0,
          on_progress: ProgressFn | None = None, on_pace: PaceFn | None = None, test: bool = True,
          tta: bool = False) -> TrainResult:
    """Trains for `epochs` epochs, then scores on the full validation set, and on the test set if `test` (a search's
    trials pass False: the test set decides nothing, nas.results.scoring scores only the trials a report shows);
    `tta` also scores the test set with test-time shifts (TrainResult.test_tta, reported apart).

    `seed` fixes the batch order and every random draw in the network (dropout), whatever the caller drew before;
    the caller's own random state is left as it was.
    `on_pace` gets the run's projected seconds of training after its first TIME_CHECK_STEPS steps; it may stop the
    run there by raising TooSlow (nas.engine.pace.check).
    """
    device = data.x_train.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _train(model, recipe, data, epochs, seed, on_progress, on_pace, test, tta)


def _train(model: nn.Module, recipe: TrainRecipe, data: Splits, epochs: int, seed: int,
           on_progress: ProgressFn | None, on_pace: PaceFn | None, test: bool, tta: bool) -> TrainResult:
    device = data.x_train.device
    model.to(device)
    n = len(data.x_train)
    batch = min(recipe.batch_size, n)
    steps_per_epoch = n // batch  # drop the ragged last batch: a tiny batch upsets BatchNorm
    gather_steps = max(1, GATHER_IMAGES // batch)
    total = steps_per_epoch * epochs
    prepare(model, recipe, data)
    optimizer = make_optimizer(model, recipe)
    schedule = make_schedule(optimizer, recipe, total)
    filters = muon_filters(model, recipe)
    muon = ConvMuon(filters, recipe, lambda opt: make_schedule(opt, recipe, total)) if filters else None
    lookahead = Lookahead(model, recipe.lookahead, total) if recipe.lookahead else None
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    ema = _Ema(model, recipe.ema) if recipe.ema else None
    checkpoints = {max(1, round(total * f)): round(f * 100) for f in PROGRESS_POINTS} if on_progress and len(data.x_val) else {}
    generator = torch.Generator().manual_seed(seed)

    started = time.perf_counter()
    eval_time = 0.0
    step = 0
    loss = torch.zeros(())
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(device)
        for i in range(steps_per_epoch):
            if i % gather_steps == 0:
                idx = order[i * batch:(i + gather_steps) * batch]
                x_chunk, y_chunk = data.inputs(data.x_train[idx]), data.y_train[idx]
            at = i % gather_steps * batch
            loss = loss_fn(model(x_chunk[at:at + batch]), y_chunk[at:at + batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip, foreach=True)
            optimizer.step()
            if muon is not None:
                muon.step()
            if schedule is not None:
                schedule.step()
            step += 1
            if lookahead is not None:
                lookahead.step(step)
            if ema is not None:
                ema.update(model)
            if step % 50 == 0 or step in checkpoints:
                _check_finite(loss, step)
            if on_pace and step == min(TIME_CHECK_STEPS, total):
                on_pace((time.perf_counter() - started - eval_time) * total / step)
            if step in checkpoints:
                t = time.perf_counter()
                acc = evaluate(ema.model if ema else model, data.x_val[:PROGRESS_VAL_SIZE], data.y_val[:PROGRESS_VAL_SIZE],
                               info=data.info)
                model.train()
                eval_time += time.perf_counter() - t
                on_progress(checkpoints[step], acc)
    _check_finite(loss, step)
    train_seconds = time.perf_counter() - started - eval_time

    t = time.perf_counter()
    final = ema.model if ema else model
    if ema is not None:
        model.load_state_dict(final.state_dict())
    val_acc = evaluate(model, data.x_val, data.y_val, info=data.info) if len(data.x_val) else float("nan")
    test_acc = evaluate(model, data.x_test, data.y_test, info=data.info) if test else None
    test_tta = evaluate(model, data.x_test, data.y_test, info=data.info, shifts=True) if test and tta else None
    eval_time += time.perf_counter() - t
    return TrainResult(val_acc, test_acc, train_seconds, eval_time, step, float(loss.detach()), test_tta)


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = EVAL_BATCH,
             info: DataInfo | None = None, shifts: bool = False) -> float:
    """Accuracy in [0, 1], in eval mode (BatchNorm on its running statistics, folded into the convs), on a copy:
    `model` itself is left as it was. uint8 images are normalised a batch at a time with `info`'s mean and std;
    float images are fed as they are. `shifts`: test-time augmentation, the logits averaged over each image and its
    four 1-pixel shifts (TTA_SHIFTS; edges repeated), five times the inference cost."""
    if x.dtype == torch.uint8 and info is None:
        raise TypeError("evaluate: uint8 images need the DataInfo that normalises them (info=splits.info)")
    model = inference_copy(model)
    correct = 0
    for i in range(0, len(x), batch):
        xb = normalise(x[i:i + batch], info) if x.dtype == torch.uint8 else x[i:i + batch]
        logits = sum(model(view) for view in shifted(xb)) if shifts else model(xb)
        correct += int((logits.argmax(1) == y[i:i + batch]).sum())
    return correct / max(1, len(x))


def shifted(x: torch.Tensor) -> list[torch.Tensor]:
    """The batch and its copies moved by each of TTA_SHIFTS, the edge pixels repeated into the gap."""
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    h, w = x.shape[-2:]
    return [padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in TTA_SHIFTS]


def _check_finite(loss: torch.Tensor, step: int) -> None:
    value = float(loss.detach())
    if not math.isfinite(value):
        raise TrainingDiverged(f"loss became {value} at step {step}")


class _Ema:
    """An exponential moving average of weights and BatchNorm statistics; integer buffers (batch counts) are copied.

    The decay warms up as (1 + t) / (10 + t): a one-epoch run has too few steps for a fixed decay to forget the
    random initial weights.
    Hand-written: AveragedModel gives equal values but measured 4% slower per epoch, 12x per update (bench/RESULTS.md).
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model)
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values()))
        self.floats = tuple(list(t) for t in zip(*[p for p in pairs if p[0].dtype.is_floating_point]))
        self.counters = [p for p in pairs if not p[0].dtype.is_floating_point]  # BatchNorm's batch counts

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        # one fused call rather than a Python call per tensor: at batch 16 this runs ~3,100 times an epoch
        torch._foreach_lerp_(*self.floats, 1 - decay)
        for avg, cur in self.counters:
            avg.copy_(cur)

"""The recipe's short-run levers (issue 42) applied to a network before and while it trains: identity init, patch
whitening of the first conv, BatchNorm settings, BatchNorm biases' own rate, Muon for the conv filters, Lookahead,
an lr stated per batch of a fixed size. At their default values they change nothing. What each does:
docs/search-space.md's recipe table."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from nas.data import Splits
from nas.space.spec import SpecError, TrainRecipe

WHITEN_IMAGES = 5000  # training images whose patches estimate the covariance (airbench's count)
WHITEN_EPS = 5e-4  # added to each eigenvalue before the square root (airbench)


def prepare(model: nn.Module, recipe: TrainRecipe, data: Splits) -> None:
    """The recipe's changes to a freshly built network, before its optimizer is made: the first conv whitening the
    training images' patches (`whiten`), identity init of the convs after the first (`dirac`), BatchNorm's statistics
    momentum and frozen scales. Default values change nothing."""
    if recipe.whiten != "off":
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        if first.groups != 1:
            raise SpecError("recipe.whiten: the network's first conv is grouped; whitening needs a full conv")
        whiten(first, data)
        first.weight.requires_grad_(recipe.whiten == "trained")
    if recipe.dirac:
        # as airbench: the first in-channels filters of each full conv pass their input through, the rest stay random
        full = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
        with torch.no_grad():
            for conv in full[1:]:
                nn.init.dirac_(conv.weight[:conv.in_channels])
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.momentum = recipe.bn_momentum
            if recipe.bn_freeze_scale:
                bn.weight.requires_grad_(False)


@torch.no_grad()
def whiten(conv: nn.Conv2d, data: Splits) -> None:
    """Sets `conv`'s filters to whiten the patches of the first WHITEN_IMAGES training images (never the hold-out or
    the test images), as airbench: each eigenvector of the patch covariance over the square root of its eigenvalue,
    and its negative, largest eigenvalues first; filters past twice the patch size stay random."""
    x = data.inputs(data.x_train[:WHITEN_IMAGES]).float()
    k, s = conv.kernel_size, conv.stride
    patches = nn.functional.unfold(x, k, stride=s).transpose(1, 2).reshape(-1, x.shape[1] * k[0] * k[1])
    covariance = patches.T @ patches / len(patches)
    if not torch.isfinite(covariance).all():
        return  # images holding NaN or inf: left random, the run's loss then fails it as diverged
    values, vectors = torch.linalg.eigh(covariance)
    scaled = (vectors / torch.sqrt(values.clamp(min=0) + WHITEN_EPS)).T.flip(0)  # rows, largest eigenvalue first
    filters = torch.stack((scaled, -scaled), 1).reshape(-1, *conv.weight.shape[1:])[:conv.out_channels]
    conv.weight[:len(filters)] = filters.to(conv.weight.dtype)


def muon_filters(model: nn.Module, recipe: TrainRecipe) -> list[nn.Parameter]:
    """The weights Muon trains when the recipe asks for it: every conv's filters but the first conv's (airbench)."""
    if not recipe.muon_lr:
        return []
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)][1:]


class ConvMuon:
    """torch.optim.Muon on conv filters, with its own OneCycle schedule at the recipe's `muon_lr`. Muon takes 2-D
    parameters only: each (out, in, k, k) filter bank is stepped as an (out, in*k*k) matrix, a view of the same
    storage (its columns in memory order: channels_last puts `in` last, which leaves the orthogonalised update the
    same), and the filters' gradients are cleared after each step (the other optimizer clears its own)."""

    def __init__(self, filters: list[nn.Parameter], recipe: TrainRecipe,
                 schedule: Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler | None]):
        self.filters = filters
        self.orders = [next(o for o in ((0, 1, 2, 3), (0, 2, 3, 1)) if f.permute(o).is_contiguous()) for f in filters]
        self.matrices = [nn.Parameter(f.detach().permute(o).view(len(f), -1)) for f, o in zip(filters, self.orders)]
        self.optimizer = torch.optim.Muon(self.matrices, lr=recipe.muon_lr, momentum=recipe.momentum or 0.95,
                                          weight_decay=recipe.weight_decay)
        self.schedule = schedule(self.optimizer)

    def step(self) -> None:
        for f, o, m in zip(self.filters, self.orders, self.matrices):
            m.grad = None if f.grad is None else f.grad.permute(o).reshape(m.shape)
            f.grad = None
        self.optimizer.step()
        if self.schedule is not None:
            self.schedule.step()


def step_lr(recipe: TrainRecipe) -> float:
    """The peak lr of a step: the recipe's, or with `lr_batch` its lr scaled linearly from that batch to the one used
    (the loss is a batch mean, so a step's size per example stays the same whatever the batch size)."""
    return recipe.lr * recipe.batch_size / recipe.lr_batch if recipe.lr_batch else recipe.lr


class Lookahead:
    """airbench94's Lookahead: every `every` steps the slow copy of the weights and BatchNorm statistics moves toward
    the network's by 1 - decay and the network takes the slow copy; decay = 0.95**every x (step / total)**3, so the
    pull starts at nothing and grows over the run; at the last step the network takes the slow copy as it is."""

    def __init__(self, model: nn.Module, every: int, total: int):
        self.every, self.total = every, total
        self.fast = [t for t in model.state_dict().values() if t.dtype.is_floating_point]
        self.slow = [t.detach().clone() for t in self.fast]

    @torch.no_grad()
    def step(self, step: int) -> None:
        if step == self.total:
            torch._foreach_copy_(self.fast, self.slow)
        elif step % self.every == 0:
            torch._foreach_lerp_(self.slow, self.fast, 1 - 0.95 ** self.every * (step / self.total) ** 3)
            torch._foreach_copy_(self.fast, self.slow)


def param_groups(model: nn.Module, recipe: TrainRecipe) -> list[dict]:
    """The trainable parameters that Muon does not train, BatchNorm biases in a group of their own when they learn at
    another rate."""
    by_muon = {id(p) for p in muon_filters(model, recipe)}
    trainable = [p for p in model.parameters() if p.requires_grad and id(p) not in by_muon]
    if recipe.bn_bias_lr == 1:
        return [{"params": trainable}]
    biases = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.bias is not None}
    groups = [{"params": [p for p in trainable if id(p) not in biases]},
              {"params": [p for p in trainable if id(p) in biases], "lr": step_lr(recipe) * recipe.bn_bias_lr,
               "weight_decay": recipe.weight_decay / recipe.bn_bias_lr}]
    return [g for g in groups if g["params"]]  # a network without BatchNorm has no second group

import dataclasses
import math

import pytest
import torch

from nas import data as data_mod
from nas.engine import train as train_mod
from nas.space.build import build
from nas.engine.device import prepare_model
from nas.data import to_device
from nas.space.spec import ArchSpec, TrainRecipe
from nas.space.blocks import Conv, Dropout, Flatten, GlobalAvgPool, Linear, Pool
from nas.engine.train import PROGRESS_POINTS, TrainingDiverged, evaluate, make_optimizer, make_schedule, shifted, train
from tests.conftest import REFERENCES, Untouchable

# a flatten head: the toy task's class is *where* a band is, which global pooling would throw away
TINY = ArchSpec(blocks=(Conv(8, bn=True, act="relu"), Pool(), Conv(16, bn=True, act="relu"), Pool(), Flatten(),
                        Linear(10)))


@pytest.mark.parametrize("recipe", [
    TrainRecipe(optimizer="sgd", nesterov=True, lr=0.1, batch_size=32, schedule="onecycle"),
    TrainRecipe(optimizer="adam", lr=0.01, batch_size=32, schedule="constant", label_smoothing=0.1),
    TrainRecipe(optimizer="adamw", lr=0.01, batch_size=16, weight_decay=1e-3, grad_clip=1.0, ema=0.9),
])
def test_learns_a_toy_task(toy, recipe):
    before = evaluate(build(TINY, seed=0), toy.x_test, toy.y_test)
    result = train(build(TINY, seed=0), recipe, toy, epochs=3)
    assert result.test_acc > 0.8 > before + 0.3
    assert result.steps == 3 * (len(toy.x_train) // recipe.batch_size)


def test_a_trial_never_reads_the_test_set_and_evaluate_still_scores_it(toy):
    """test=False (a search's trials): no test score, and the test images are never read; test=True (evaluate)."""
    recipe = TrainRecipe(optimizer="adam", lr=0.01, batch_size=32)
    hidden = dataclasses.replace(toy, x_test=Untouchable(), y_test=Untouchable())
    trial = train(build(TINY, seed=0), recipe, hidden, seed=1, test=False)
    assert trial.test_acc is None and trial.val_acc > 0.5
    with pytest.raises(AssertionError, match="the test set was read"):
        train(build(TINY, seed=0), recipe, hidden, seed=1, test=True)
    scored = train(build(TINY, seed=0), recipe, toy, seed=1, test=True)
    assert (scored.val_acc, scored.final_loss) == (trial.val_acc, trial.final_loss) and scored.test_acc > 0.5


@pytest.mark.parametrize("gather_images", [16, 48, 10_000])
def test_each_epoch_feeds_every_image_once_in_the_seeded_shuffle(toy, monkeypatch, gather_images):
    """Whatever the number of images gathered at once (one batch, a few, all): the same batches in the same order."""
    monkeypatch.setattr(train_mod, "GATHER_IMAGES", gather_images)
    model, batch, seen = build(TINY, seed=0), 16, []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()) if module.training else None)
    train(model, TrainRecipe(batch_size=batch), toy, epochs=2, seed=5)
    generator = torch.Generator().manual_seed(5)
    epoch = len(toy.x_train) // batch * batch
    expected = [toy.x_train[torch.randperm(len(toy.x_train), generator=generator)][:epoch] for _ in range(2)]
    assert all(x.shape[0] == batch for x in seen)
    assert torch.equal(torch.cat(seen), torch.cat(expected))


def test_progress_is_reported_within_the_epoch(toy):
    seen = []
    train(build(TINY, seed=0), TrainRecipe(batch_size=16), toy, on_progress=lambda pct, acc: seen.append((pct, acc)))
    assert [p for p, _ in seen] == [round(f * 100) for f in PROGRESS_POINTS]
    assert all(0 <= a <= 1 for _, a in seen)


def test_progress_callback_can_stop_training(toy):
    class Stop(Exception):
        pass

    def stop(pct, acc):
        raise Stop

    with pytest.raises(Stop):
        train(build(TINY, seed=0), TrainRecipe(batch_size=16), toy, on_progress=stop)


def test_a_diverging_loss_is_reported(toy):
    recipe = TrainRecipe(optimizer="sgd", lr=1e6, momentum=0.9, batch_size=16, schedule="constant")
    bad = ArchSpec(blocks=(Conv(8, act="relu"), Pool(), Conv(16, act="relu"), Pool(), GlobalAvgPool(), Linear(10)))
    with pytest.raises(TrainingDiverged, match="nan|inf"):
        train(build(bad, seed=0), recipe, toy)


def test_same_seed_same_result(toy):
    r = TrainRecipe(batch_size=32)
    a = train(build(TINY, seed=1), r, toy, seed=7)
    b = train(build(TINY, seed=1), r, toy, seed=7)
    assert (a.val_acc, a.test_acc, a.final_loss) == (b.val_acc, b.test_acc, b.final_loss)


def test_the_seed_alone_fixes_dropout_whatever_was_drawn_before(toy):
    """Dropout draws from torch's global generator: a run must not depend on what the process drew before it."""
    spec = dataclasses.replace(TINY, blocks=TINY.blocks[:-1] + (Dropout(0.5), Linear(10)))
    r = TrainRecipe(batch_size=32)
    a = train(build(spec, seed=1), r, toy, seed=7)
    torch.rand(1000)  # e.g. an earlier trial's dropout
    before = torch.random.get_rng_state()
    b = train(build(spec, seed=1), r, toy, seed=7)
    assert (a.val_acc, a.test_acc, a.final_loss) == (b.val_acc, b.test_acc, b.final_loss)
    assert torch.equal(torch.random.get_rng_state(), before)  # and the caller's generator is left alone


def test_evaluate_counts_correct_predictions():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 10).float()

    x = torch.zeros(5, 1, 28, 28)
    x[:, 0, 0, 0] = torch.tensor([1, 2, 3, 4, 5])
    y = torch.tensor([1, 2, 3, 0, 0])
    assert evaluate(Fixed(), x, y, batch=2) == pytest.approx(3 / 5)


def test_test_time_shifts_average_the_logits_over_the_image_and_its_four_one_pixel_shifts():
    class Centre(torch.nn.Module):  # predicts the class written in the centre pixel
        def forward(self, x):
            return torch.nn.functional.one_hot(x[:, 0, 14, 14].long(), 10).float()

    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 14, 14] = 3
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        x[0, 0, 14 + dy, 14 + dx] = 5  # each shifted view sees a 5 in the centre
    y = torch.tensor([5])
    assert evaluate(Centre(), x, y) == 0 and evaluate(Centre(), x, y, shifts=True) == 1
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    views = shifted(image)
    assert len(views) == 5 and torch.equal(views[0], image)
    assert torch.equal(views[1][..., :, :3], image[..., :, 1:]) and torch.equal(views[1][..., :, 3], image[..., :, 3])


def test_no_holdout_gives_nan_validation(toy):
    splits = data_mod.Splits(toy.x_train, toy.y_train, toy.x_val[:0], toy.y_val[:0], toy.x_test, toy.y_test)
    assert math.isnan(train(build(TINY, seed=0), TrainRecipe(batch_size=32), splits).val_acc)


@pytest.mark.integration
def test_r1_learns_real_mnist_from_10k_images(mnist):
    """A real-data check a broken trainer cannot pass: R1, its own recipe, 10k images, one epoch.

    Chance is 10%; a model that only learned digit frequencies stays near 11%. R1 reaches ~96-97% here.
    """
    torch.set_num_threads(2)
    splits = to_device(data_mod.Splits(mnist.x_train[:10_000], mnist.y_train[:10_000], mnist.x_val, mnist.y_val,
                                       mnist.x_test, mnist.y_test, mnist.info), torch.device("cpu"))
    r1 = REFERENCES["R1"]
    result = train(prepare_model(r1, 0, torch.device("cpu")), r1.recipe, splits)
    assert result.test_acc > 0.94
    assert result.val_acc > 0.94


def test_a_run_projected_over_its_time_limit_stops_early(toy):
    from nas.engine import pace
    from nas.engine.train import TIME_CHECK_STEPS, TooSlow

    steps, projections = [], []

    def on_pace(projected):
        projections.append(projected)
        pace.check(projected, 1e-6, "a test")

    with pytest.raises(TooSlow, match=r"over the 0 s limit \(a test\)"):
        train(build(TINY, seed=0), TrainRecipe(batch_size=1), toy, on_pace=on_pace,
              on_progress=lambda pct, acc: steps.append(pct))
    assert not steps  # stopped after TIME_CHECK_STEPS steps, before the first 20% reading
    assert TIME_CHECK_STEPS < 0.2 * len(toy.x_train)
    assert len(projections) == 1 and projections[0] > 0
    projections.clear()
    train(build(TINY, seed=0), TrainRecipe(batch_size=64), toy, on_pace=projections.append)  # no limit: runs on
    assert len(projections) == 1


def test_ema_forgets_the_random_initial_weights(toy):
    """A high decay over few steps must not leave the untrained weights a large share of the average."""
    short = TrainRecipe(optimizer="sgd", nesterov=True, lr=0.1, batch_size=32)
    plain = train(build(TINY, seed=0), short, toy, epochs=2)
    averaged = train(build(TINY, seed=0), dataclasses.replace(short, ema=0.999), toy, epochs=2)
    assert averaged.test_acc > plain.test_acc - 0.1


def test_ema_is_the_warmed_up_average_of_weights_and_batchnorm_statistics():
    """Against the rule written out per tensor: decay min(d, (1 + t) / (10 + t)) at update t; batch counts copied."""
    model, decay = build(TINY, seed=0), 0.5
    ema = train_mod._Ema(model, decay)
    expected = {key: value.clone() for key, value in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    for t in range(1, 13):  # the warm-up reaches the decay at t = 8: (1 + 8) / (10 + 8) = 0.5
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g))
            model(torch.randn(4, 1, 28, 28, generator=g))  # train mode: moves BatchNorm's statistics and counts
        ema.update(model)
        d = min(decay, (1 + t) / (10 + t))
        for key, value in model.state_dict().items():
            expected[key] = d * expected[key] + (1 - d) * value if value.dtype.is_floating_point else value.clone()
    averaged = ema.model.state_dict()
    assert averaged.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(averaged[key], value, msg=lambda message: f"{key}: {message}")


@pytest.mark.parametrize("cycle", [True, False])
def test_onecycle_cycles_momentum_only_when_the_recipe_says_so(cycle):
    recipe = TrainRecipe(optimizer="sgd", lr=0.1, momentum=0.9, schedule="onecycle", warmup=0.5, cycle_momentum=cycle)
    layer = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(layer, recipe)
    schedule = make_schedule(optimizer, recipe, total_steps=100)
    seen = []
    for _ in range(50):  # to the LR peak, where a cycled momentum is at its lowest
        layer(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        schedule.step()
        seen.append(optimizer.param_groups[0]["momentum"])
    assert (min(seen) < 0.86) == cycle
    assert cycle or set(seen) == {0.9}


def test_uint8_images_normalised_per_chunk_train_exactly_as_the_float_tensors_of_before():
    """The trainer gathers uint8 images and normalises each chunk and evaluation batch: the same numbers as
    normalising the whole set up front, as the trainer was fed before, so results do not change."""
    g = torch.Generator().manual_seed(3)
    labels = [torch.randint(0, 10, (n,), generator=g) for n in (300, 100, 100)]
    images = [torch.randint(0, 64, (n, 1, 28, 28), generator=g, dtype=torch.uint8) for n in (300, 100, 100)]
    for x, y in zip(images, labels):  # a learnable band, as the toy task's
        for i in range(len(x)):
            x[i, 0, 2 * int(y[i]) + 4] = 255
    info = data_mod.DataInfo("mnist", (1, 28, 28), tuple("0123456789"), (0.1307,), (0.3081,))
    compact = data_mod.Splits(images[0], labels[0], images[1], labels[1], images[2], labels[2], info)
    floats = data_mod.Splits(*[t for x, y in zip(images, labels)
                               for t in (((x.float() / 255.0 - 0.1307) / 0.3081).contiguous(), y)])
    recipe = TrainRecipe(optimizer="adam", lr=0.01, batch_size=32, ema=0.9)
    a = train(build(TINY, seed=0), recipe, to_device(compact, torch.device("cpu")), epochs=3, seed=5)
    b = train(build(TINY, seed=0), recipe, to_device(floats, torch.device("cpu")), epochs=3, seed=5)
    assert (a.val_acc, a.test_acc, a.final_loss) == (b.val_acc, b.test_acc, b.final_loss) and a.test_acc > 0.4
    with pytest.raises(TypeError, match="uint8 images need the DataInfo"):
        evaluate(build(TINY, seed=0), images[2], labels[2])

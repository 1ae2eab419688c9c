import numpy as np
import pytest
import torch

from kdcore.data.batches import batches
from kdcore.data.msd import list_cases
from kdcore.data.slices import SliceSettings, load_slices
from kdcore.errors import ConfigError, NonFiniteLossError
from kdcore.losses import THESIS_WEIGHTS, DistillationLoss
from kdcore.models import build_student
from kdcore.training import Backend, FitSettings, build_optimizer, fit


def test_a_single_leftover_sample_joins_the_previous_batch():
    sizes = [len(b) for b in batches(np.arange(21), 4, np.random.default_rng(0))]
    assert sizes == [4, 4, 4, 4, 5]
    assert sorted(np.concatenate(list(batches(np.arange(21), 4, None)))) == list(range(21))
    assert [len(b) for b in batches(np.arange(1), 4, None)] == [1]


def test_unknown_optimizer_is_rejected():
    with pytest.raises(ConfigError, match="unknown optimizer 'lion'"):
        build_optimizer([], FitSettings(epochs=1, batch_size=2, optimizer="lion"))


def _train(data, epochs, seed, resume=None, stop_after=None, augment=False, channels_last=False):
    torch.manual_seed(seed)
    model = build_student(4)
    loss = DistillationLoss((), THESIS_WEIGHTS)
    saved = {}

    def on_epoch(state, checkpoint):
        if state.evals == stop_after:
            saved.update(torch.load(_roundtrip(checkpoint), weights_only=True))

    state = fit(
        model,
        lambda x, y, _idx: loss(model(x), y),
        data,
        np.arange(12),
        np.arange(12, 16),
        FitSettings(epochs=epochs, batch_size=4, augment=augment, channels_last=channels_last),
        seed,
        on_epoch=on_epoch,
        resume=resume,
    )
    return model, state, saved


def _roundtrip(obj):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


FIT_OPTIONS = [(False, False), (True, False), (False, True)]  # (augment, channels_last)


@pytest.mark.parametrize(("augment", "channels_last"), FIT_OPTIONS)
def test_resumed_training_equals_uninterrupted_training(tiny_msd, tmp_path, augment, channels_last):
    data = load_slices(list_cases(tiny_msd), SliceSettings((0, 255), 16), tmp_path)
    kw = {"augment": augment, "channels_last": channels_last}
    straight, state, saved = _train(data, epochs=3, seed=0, stop_after=1, **kw)
    resumed, state2, _ = _train(data, epochs=3, seed=0, resume=saved, **kw)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert state.best_epoch == state2.best_epoch and len(state2.history) == 3
    assert state.best_val == max(h["val_dice"] for h in state.history)


def test_channels_last_trains_the_same_network_and_hands_it_back_in_nchw(tiny_msd, tmp_path):
    data = load_slices(list_cases(tiny_msd), SliceSettings((0, 255), 16), tmp_path)
    nchw, state, _ = _train(data, epochs=2, seed=0)
    nhwc, state2, _ = _train(data, epochs=2, seed=0, channels_last=True)
    assert all(p.is_contiguous() for p in nhwc.parameters())
    # the same arithmetic in another order: losses equal up to float rounding (the weights
    # are not compared: AdamW turns rounding in near-zero gradients into whole steps)
    for a, b in zip(state.history, state2.history, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
    assert not all(
        torch.equal(a, b) for a, b in zip(nchw.parameters(), nhwc.parameters(), strict=True)
    )


def test_history_holds_the_mean_of_each_loss_term_per_epoch(tiny_msd, tmp_path):
    data = load_slices(list_cases(tiny_msd), SliceSettings((0, 255), 16), tmp_path)
    model = build_student(4)

    def loss_fn(x, y, _idx):
        seg = model(x)["logits"].sigmoid().mean()
        const = torch.tensor(2.0)
        return seg + 0.5 * const, {"seg": seg.detach(), "pmd": const}

    state = fit(model, loss_fn, data, np.arange(12), np.arange(12, 16), FitSettings(2, 4), 0)
    h = state.history[-1]
    assert set(h) == {
        "step",
        "epoch",
        "train_loss",
        "loss_seg",
        "loss_pmd",
        "val_dice",
        "train_s",
        "epoch_s",
    }
    assert h["loss_pmd"] == pytest.approx(2.0)
    assert h["train_loss"] == pytest.approx(h["loss_seg"] + 1.0, rel=1e-5)


def test_a_non_finite_loss_stops_training_naming_epoch_and_term(tiny_msd, tmp_path):
    data = load_slices(list_cases(tiny_msd), SliceSettings((0, 255), 16), tmp_path)
    model = build_student(4)
    calls = []

    def loss_fn(x, y, _idx):
        calls.append(1)
        seg = model(x)["logits"].sigmoid().mean()
        bad = torch.tensor(float("nan") if len(calls) > 4 else 1.0)  # 3 steps per epoch
        return seg + bad, {"seg": seg.detach(), "bottleneck": bad}

    with pytest.raises(NonFiniteLossError) as err:
        fit(
            model,
            loss_fn,
            data,
            np.arange(12),
            np.arange(12, 16),
            FitSettings(3, 4),
            0,
            name="variant 'x' seed 3",
        )
    message = str(err.value)
    assert message.startswith("variant 'x' seed 3: the loss became non-finite in epoch 2")
    assert "term bottleneck = nan" in message and "seg" not in message.split(":")[2]
    assert len(calls) == 5  # stopped at the first non-finite step


def test_select_replaces_the_validation_choice_of_checkpoint(tiny_msd, tmp_path):
    data = load_slices(list_cases(tiny_msd), SliceSettings((0, 255), 16), tmp_path)
    model = build_student(4)
    scores = iter([0.1, 0.9, 0.5])  # the 2nd epoch scores best

    def loss_fn(x, y, _idx):
        seg = model(x)["logits"].sigmoid().mean()
        return seg, {"seg": seg.detach()}

    state = fit(
        model,
        loss_fn,
        data,
        np.arange(12),
        np.arange(12, 16),
        FitSettings(3, 4),
        0,
        select=lambda _model: next(scores),
    )
    assert state.best_epoch == 2 and state.best_val == state.history[1]["val_dice"]


def test_masks_travel_as_text_unchanged():
    from kdcore.trial import pack_masks, unpack_masks

    masks = torch.rand(3, 5, 7) > 0.5
    assert np.array_equal(unpack_masks(pack_masks(masks)), masks.numpy().astype(np.uint8))


def _rank_trains_until_nan(rank: int, world: int, port: int, folder: str, queue) -> None:
    """One rank of a 2-process gloo group: fit with ``DataParallel``, rank 1's loss going
    NaN at its 3rd step; puts (rank, steps run, error text) on ``queue``."""
    import torch.distributed as dist

    from kdcore.training import DataParallel

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        data = load_slices(list_cases(folder), SliceSettings((0, 255), 16), f"{folder}/cache")
        torch.manual_seed(0)
        student = build_student(4)
        loss = DistillationLoss((), THESIS_WEIGHTS, student.tap_channels)
        steps = []

        def loss_fn(x, y, _idx):
            steps.append(1)
            value, parts = loss(student(x), y)
            if rank == 1 and len(steps) == 3:
                value = value * float("nan")
            return value, parts

        idx = np.arange(len(data))
        settings = FitSettings(epochs=3, batch_size=8, lr=1e-3)
        try:
            fit(
                student, loss_fn, data, idx, idx[:8], settings, 0, backend=DataParallel(rank, world)
            )
            queue.put((rank, len(steps), "no error"))
        except NonFiniteLossError as err:
            queue.put((rank, len(steps), str(err)))
    finally:
        dist.destroy_process_group()


def test_every_rank_stops_at_the_step_one_rank_went_non_finite(tiny_msd):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    load_slices(list_cases(tiny_msd), SliceSettings((0, 255), 16), tiny_msd / "cache")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    ranks = [
        ctx.Process(target=_rank_trains_until_nan, args=(r, 2, port, str(tiny_msd), queue))
        for r in range(2)
    ]
    for p in ranks:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in ranks)
    for p in ranks:
        p.join(timeout=30)
    (rank0, steps0, error0), (rank1, steps1, error1) = results
    assert steps0 == steps1 == 3  # both stopped at the step it happened, neither waits
    assert "(rank 1)" in error1 and "non-finite in epoch 1" in error1
    assert "on another of the 2 ranks" in error0


def _constant_fit(data, settings: FitSettings, scores: list[float]):
    """fit with a model whose validation Dice follows ``scores`` (one per validation)."""
    model = build_student(4)
    dice = iter(scores)

    class Scripted(Backend):
        def validate(self, model, data, idx):
            return {"dice": next(dice)}

    def loss_fn(x, y, _idx):
        out = model(x)["logits"].mean() * 0
        return out, {"seg": out.detach()}

    return fit(
        model, loss_fn, data, np.arange(12), np.arange(12, 16), settings, 0, backend=Scripted()
    )


def test_a_step_budget_validates_every_eval_every_steps_and_at_the_end(tiny_msd, tmp_path):
    data = load_slices(list_cases(tiny_msd), SliceSettings((0, 255), 16), tmp_path)
    # 12 slices in batches of 4: 3 steps per pass; 10 steps validated at 4, 8 and 10
    settings = FitSettings(epochs=0, batch_size=4, steps=10, eval_every=4)
    state = _constant_fit(data, settings, [0.1, 0.3, 0.2])
    assert [h["step"] for h in state.history] == [4, 8, 10]
    assert [h["epoch"] for h in state.history] == [1.3333, 2.6667, 3.3333]
    assert state.step == 10 and state.best_step == 8 and not state.stopped_early


def test_early_stopping_ends_a_run_after_patience_steps_without_improvement(tiny_msd, tmp_path):
    data = load_slices(list_cases(tiny_msd), SliceSettings((0, 255), 16), tmp_path)
    settings = FitSettings(0, 4, steps=40, eval_every=2, patience=4, min_steps=10)
    # best at step 4; 4 steps later (step 8) min_steps is not yet done; stops at step 10
    state = _constant_fit(data, settings, [0.1, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    assert state.stopped_early and state.step == 10 and state.best_step == 4
    assert len(state.history) == 5


def test_a_budget_in_epochs_gives_fewer_slices_fewer_steps(tiny_msd, tmp_path):
    data = load_slices(list_cases(tiny_msd), SliceSettings((0, 255), 16), tmp_path)
    state = _constant_fit(data, FitSettings(epochs=2, batch_size=4), [0.1, 0.2])
    assert state.step == 6 and [h["epoch"] for h in state.history] == [1, 2]

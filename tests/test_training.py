import numpy as np
import pytest
import torch

from kdcore.data.msd import list_cases
from kdcore.data.slices import SliceSettings, load_slices
from kdcore.errors import ConfigError
from kdcore.losses import THESIS_WEIGHTS, DistillationLoss
from kdcore.models import build_student
from kdcore.training import FitSettings, batches, fit


def test_a_single_leftover_sample_joins_the_previous_batch():
    sizes = [len(b) for b in batches(np.arange(21), 4, np.random.default_rng(0))]
    assert sizes == [4, 4, 4, 4, 5]
    assert sorted(np.concatenate(list(batches(np.arange(21), 4, None)))) == list(range(21))
    assert [len(b) for b in batches(np.arange(1), 4, None)] == [1]


def test_unknown_optimizer_is_rejected():
    with pytest.raises(ConfigError, match="unknown optimizer 'lion'"):
        FitSettings(epochs=1, batch_size=2, optimizer="lion")


def _train(data, epochs, seed, resume=None, stop_after=None, augment=False):
    torch.manual_seed(seed)
    model = build_student(4)
    loss = DistillationLoss((), THESIS_WEIGHTS)
    saved = {}

    def on_epoch(state, checkpoint):
        if state.epoch == stop_after:
            saved.update(torch.load(_roundtrip(checkpoint), weights_only=True))

    state = fit(
        model,
        lambda x, y, _idx: loss(model(x), y),
        data,
        np.arange(12),
        np.arange(12, 16),
        FitSettings(epochs=epochs, batch_size=4, augment=augment),
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


@pytest.mark.parametrize("augment", [False, True])
def test_resumed_training_equals_uninterrupted_training(tiny_msd, tmp_path, augment):
    data = load_slices(list_cases(tiny_msd), SliceSettings((0, 255), 16), tmp_path)
    straight, state, saved = _train(data, epochs=3, seed=0, stop_after=1, augment=augment)
    resumed, state2, _ = _train(data, epochs=3, seed=0, resume=saved, augment=augment)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert state.best_epoch == state2.best_epoch and len(state2.history) == 3
    assert state.best_val == max(h["val_dice"] for h in state.history)

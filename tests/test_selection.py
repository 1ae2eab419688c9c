"""Which epoch's weights a trial ends with: the one chosen on validation Dice by default,
the one with the lowest test loss under the thesis protocol (``protocol.select=test_loss``).

The model is a threshold on intensity, ``logits = 20 * (x - b)``, and the loss moves ``b``
along a fixed schedule, one value per epoch (its gradient is 0, so the optimiser changes
nothing): every epoch's weights, validation Dice and test loss are known beforehand.
"""

import copy

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from kdcore import trial  # not `from`: pytest would collect test_loss_selection as a test
from kdcore.data.slices import SliceData
from kdcore.losses import build_seg_loss
from kdcore.protocols import SELECT_TEST_LOSS, SELECT_VAL_DICE
from kdcore.training import FitSettings, evaluate, fit, mean_loss

# Each slice is 2x2: two foreground pixels, two background pixels.
#   train and validation slices: foreground 0.6 and 0.8, background 0.2 and 0.4
#   test slices: foreground 0.9 and 0.95, background 0.7 and 0.75
VAL_IMAGE = [[0.6, 0.8], [0.2, 0.4]]
TEST_IMAGE = [[0.9, 0.95], [0.7, 0.75]]
MASK = [[1, 1], [0, 0]]
TRAIN, VAL, TEST = np.arange(0, 4), np.arange(4, 8), np.arange(8, 12)

# b per epoch (1-based). Validation Dice (pixels x > b predicted foreground):
#   b = 0.3: tp 2, fp 1, fn 0 -> 4/5; b = 0.5: 1.0 (the peak, epoch 2);
#   b = 0.7: tp 1, fn 1 -> 2/3;       b = 0.85: tp 0 -> 0.
# Test: b = 0.85 separates 0.9/0.95 from 0.7/0.75, the lowest test loss (epoch 4);
# b = 0.3 predicts all four pixels, the highest.
SCHEDULE = (0.3, 0.5, 0.7, 0.85)
VAL_DICE = (4 / 5, 1.0, 2 / 3, 0.0)


def slices() -> SliceData:
    images = np.array([VAL_IMAGE] * 8 + [TEST_IMAGE] * 4, dtype=np.float16)
    masks = np.array([MASK] * 12, dtype=np.uint8)
    case = np.repeat([0, 1, 2], 4)  # train, validation, test: one volume each
    return SliceData(images, masks, case, np.tile(np.arange(4), 3), ["tr", "va", "te"], "s")


class Threshold(nn.Module):
    """``logits = 20 * (x - b)`` on the first channel; the taps a student returns."""

    def __init__(self):
        super().__init__()
        self.b = nn.Parameter(torch.tensor(0.0))

    def forward(self, x, with_recon=False):
        return {"logits": 20 * (x[:, :1] - self.b)}


def run(select=None):
    """fit over the schedule; returns the model, the fit state and each epoch's weights."""
    model = Threshold()
    calls = iter(SCHEDULE)  # one batch per epoch: the whole training set

    def loss_fn(x, y, _idx):
        with torch.no_grad():
            model.b.fill_(next(calls))
        return 0 * model.b, {}

    weights = {}

    def on_epoch(state, checkpoint):
        weights[state.evals] = copy.deepcopy(checkpoint["model"])

    state = fit(
        model=model,
        loss_fn=loss_fn,
        data=slices(),
        train_idx=TRAIN,
        val_idx=VAL,
        settings=FitSettings(epochs=len(SCHEDULE), batch_size=len(TRAIN), optimizer="sgd"),
        seed=0,
        on_epoch=on_epoch,
        select=select,
    )
    return model, state, weights


def test_the_weights_of_the_best_validation_epoch_are_the_ones_kept():
    model, state, weights = run()
    assert [h["val_dice"] for h in state.history] == pytest.approx(VAL_DICE)
    assert [float(w["b"]) for w in weights.values()] == pytest.approx(SCHEDULE)
    assert state.best_epoch == 2 and state.best_val == pytest.approx(1.0)
    # the model tested afterwards holds epoch 2's weights, not the last epoch's
    assert torch.equal(model.state_dict()["b"], weights[2]["b"])
    assert not torch.equal(model.state_dict()["b"], weights[len(SCHEDULE)]["b"])
    assert evaluate(model, slices(), VAL)["dice"] == pytest.approx(1.0)


def test_the_thesis_test_loss_selection_keeps_the_epoch_of_lowest_test_loss():
    cfg = OmegaConf.create({"protocol": {"select": SELECT_TEST_LOSS}})
    seg = build_seg_loss("dicebce")
    data = slices()
    select = trial.test_loss_selection(cfg, seg, data, TEST)
    model, state, weights = run(select)

    def test_loss(epoch):
        probe = Threshold()
        probe.load_state_dict(weights[epoch])
        return mean_loss(probe, seg, data, TEST)

    losses = [test_loss(e) for e in range(1, len(SCHEDULE) + 1)]
    assert int(np.argmin(losses)) + 1 == 4 and int(np.argmax(losses)) + 1 == 1
    # higher score = lower loss: the lowest test loss wins, whatever validation says
    assert select(model) == pytest.approx(-losses[3])
    assert state.best_epoch == 4 and state.best_val == pytest.approx(0.0)
    assert torch.equal(model.state_dict()["b"], weights[4]["b"])


def test_the_fair_protocol_has_no_test_selection():
    cfg = OmegaConf.create({"protocol": {"select": SELECT_VAL_DICE}})
    assert trial.test_loss_selection(cfg, build_seg_loss("dicebce"), slices(), TEST) is None

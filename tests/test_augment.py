import numpy as np
import torch

from kdcore.augment import augment_batch, augmenter
from kdcore.data.msd import list_cases
from kdcore.data.slices import SliceSettings, load_slices
from kdcore.models import build_student
from kdcore.training import FitSettings, fit


def test_image_and_mask_move_together_and_the_seed_fixes_the_draws():
    x = torch.rand(8, 3, 16, 16)
    y = (x[:, :1] > 0.5).float()
    xa, ya = augment_batch(augmenter(3), x, y)
    assert xa.shape == x.shape and ya.shape == y.shape
    assert torch.equal(ya, (xa[:, :1] > 0.5).float())  # same flips/rotations on both
    assert not torch.equal(xa, x)  # 8 slices: some were flipped or rotated
    assert torch.equal(augment_batch(augmenter(3), x, y)[0], xa)
    assert not torch.equal(augment_batch(augmenter(4), x, y)[0], xa)


def test_fit_with_augmentation_trains_on_transformed_slices(tiny_msd, tmp_path):
    data = load_slices(list_cases(tiny_msd), SliceSettings((0, 255), 16), tmp_path)
    model = build_student(4)
    seen = []

    def loss_fn(x, y, idx):
        seen.append((x[:, 0].clone(), idx))
        return (model(x)["logits"] - y).pow(2).mean(), {}

    fit(model, loss_fn, data, np.arange(12), np.arange(12, 16), FitSettings(1, 4, augment=True), 0)
    stored = [torch.from_numpy(np.asarray(data.images[i], dtype=np.float32)) for i in range(12)]
    changed = [
        not torch.equal(img, stored[i]) for x, idx in seen for img, i in zip(x, idx, strict=True)
    ]
    assert len(changed) == 12 and any(changed)

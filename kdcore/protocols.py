"""The protocols a grid can follow, and how a student's checkpoint is chosen."""

from __future__ import annotations

PROTOCOLS = ("fair", "thesis")  # this suite's procedure; the thesis's, as its code ran it

SELECT_VAL_DICE = "val_dice"  # the checkpoint with the best validation Dice (fair)
SELECT_TEST_LOSS = "test_loss"  # the thesis's: the lowest segmentation loss on TEST data
SELECTIONS = (SELECT_VAL_DICE, SELECT_TEST_LOSS)

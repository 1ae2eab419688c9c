"""Tissue classes painted into the phantom's tissue map, and the organ label each one
carries by default (``labels``); painting can name another organ."""

from kdcore.data.phantom import labels

AIR, FAT, MUSCLE, SKIN, BONE, LIVER, SPLEEN, KIDNEY = range(8)
STOMACH, BOWEL, PANCREAS, VESSEL, LUNG, FLUID, HEART, TABLE, GAS = range(8, 17)

DEFAULT_ORGAN = {
    LIVER: labels.LIVER,
    SPLEEN: labels.SPLEEN,
    STOMACH: labels.STOMACH,
    PANCREAS: labels.PANCREAS,
    LUNG: labels.LUNGS,
    HEART: labels.HEART,
}

"""Tissue classes painted into the phantom's label map; only SPLEEN is exported."""

AIR, FAT, MUSCLE, SKIN, BONE, LIVER, SPLEEN, KIDNEY = range(8)
STOMACH, BOWEL, PANCREAS, VESSEL, LUNG, FLUID, HEART, TABLE, GAS = range(8, 17)

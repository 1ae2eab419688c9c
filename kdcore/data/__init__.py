"""Data: MSD-layout datasets (real or the generated phantom) -> cached 2D slices -> splits."""

from kdcore.data.msd import Case, list_cases, locate_msd_task
from kdcore.data.phantom import generate_patient, write_phantom_dataset
from kdcore.data.slices import SliceData, SliceSettings, load_slices
from kdcore.data.splits import Splits, make_splits, nested_subset

__all__ = [
    "Case",
    "SliceData",
    "SliceSettings",
    "Splits",
    "generate_patient",
    "list_cases",
    "load_slices",
    "locate_msd_task",
    "make_splits",
    "nested_subset",
    "write_phantom_dataset",
]

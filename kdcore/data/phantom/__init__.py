"""Procedural abdominal CT phantom written in the MSD Task09_Spleen layout.

Stands in for the Medical Segmentation Decathlon spleen task when no real data is at hand.
Every patient is an upper-abdominal CT volume in Hounsfield units, packed with organs:
body wall (skin, subcutaneous fat, muscle layers), liver with
portal and hepatic veins, gallbladder, stomach with an air-fluid level, duodenum, small
bowel and colon with gas and content, pancreas, spleen, both kidneys (cortex, medulla,
sinus), aorta, IVC and mesenteric/renal/splenic vessels, spine, ribs, psoas, diaphragm
with lung bases and heart, and the CT table. Every organ is labelled (``labels``: 1 is
the spleen, which the binary task segments). How each scan looks (contrast phase, dose,
kernel, slice thickness, field of view, lesions, streaks) is drawn per patient by the
difficulty preset (``appearance``); ``easy`` is the original portal-venous phantom.

Geometry is defined in millimetres with smooth implicit shapes, so ``shape`` and
``spacing`` change the resolution and field of view, not the anatomy (in ``standard`` and
``hard`` the in-plane spacing follows each scan's drawn field of view); the default
(128, 128, 40) voxels of (2.8, 2.8, 5.0) mm cover 358 x 358 x 200 mm. For a smaller
``shape`` with the same field of view use ``spacing_for_shape(shape)``.

Arrays are indexed (x, y, z) like MSD NIfTI files: x grows towards the patient's left
(the liver is at low x, the spleen at high x), y towards anterior and z towards superior
(z is the axial slice index). The files carry the matching LAS affine
diag(-sx, sy, sz), so the loader, which reorients every volume to RAS, shows the phantom
the same way up as real scans.
"""

from kdcore.data.phantom.dataset import (
    DEFAULT_FOV_MM,
    DEFAULT_SHAPE,
    DEFAULT_SPACING,
    generate_patient,
    patient_seed,
    spacing_for_shape,
    write_phantom_dataset,
)

__all__ = [
    "DEFAULT_FOV_MM",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "generate_patient",
    "patient_seed",
    "spacing_for_shape",
    "write_phantom_dataset",
]

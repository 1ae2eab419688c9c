"""A gallery of the phantom: one axial slice through the spleen of the same patients in
each difficulty, and in ``standard`` with each contrast phase forced, spleen outlined.

    python bench/phantom_gallery.py [--out results/phantom/gallery.png] [--patients 5]

Slices are shown in an abdominal window (W 400, L 40); the title of each row names the
preset or phase, each panel the drawn dose, noise SD, slice thickness and field of view.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kdcore.data.phantom import generate_patient, patient_seed  # noqa: E402
from kdcore.data.phantom.appearance import PHASES, PRESETS  # noqa: E402
from kdcore.io import atomic_path  # noqa: E402

SHAPE, SPACING = (128, 128, 32), (2.8, 2.8, 6.0)  # the quick profile's grid
PHASE_NAMES = {
    "none": "no contrast",
    "arterial": "arterial",
    "portal": "portal venous",
    "delayed": "delayed",
}


def rows() -> list[tuple[str, object]]:
    """(row title, appearance) of every row: easy, standard per phase, standard, hard."""
    out = [("easy", None)]
    for i, phase in enumerate(PHASES):
        forced = tuple(1.0 if j == i else 0.0 for j in range(len(PHASES)))
        out.append((f"standard, {PHASE_NAMES[phase]}", replace(PRESETS["standard"], phases=forced)))
    out += [
        ("standard (drawn phase)", PRESETS["standard"]),
        ("hard (drawn phase)", PRESETS["hard"]),
    ]
    return out


def spleen_slice(labels: np.ndarray) -> int:
    """The axial slice with the most spleen."""
    return int(np.argmax((labels == 1).sum(axis=(0, 1))))


def draw_gallery(out: Path, patients: int, seed: int = 0) -> Path:
    """Write the gallery PNG to ``out`` (atomically) and return it."""
    table = rows()
    fig, axes = plt.subplots(
        len(table), patients, figsize=(2.1 * patients, 2.35 * len(table)), squeeze=False
    )
    for r, (title, app) in enumerate(table):
        for c in range(patients):
            scan = generate_patient(patient_seed(seed, c), SHAPE, SPACING, app)
            k = spleen_slice(scan.labels)
            # RAS display: patient's right on the image's left, anterior up.
            image = np.flipud(np.clip(scan.image[:, :, k].T, -160, 240))
            mask = np.flipud((scan.labels[:, :, k] == 1).T)
            ax = axes[r, c]
            ax.imshow(image, cmap="gray", vmin=-160, vmax=240)
            ax.contour(mask, levels=[0.5], colors=["#ff3b30"], linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            look = scan.look
            note = (
                "portal, 1 look"
                if look is None
                else f"{look.phase}, dose {look.dose:.2f}\nSD {look.noise_sd:.0f} HU, "
                f"{look.slice_mm:.1f} mm, FOV {look.fov_mm:.0f}"
            )
            ax.set_xlabel(note, fontsize=6.5, labelpad=2)
            if c == 0:
                ax.set_ylabel(title, fontsize=8)
    fig.suptitle(
        f"Phantom CT, patients 0-{patients - 1} of seed {seed}: the spleen's largest slice, "
        "W400 L40, spleen outlined",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/phantom/gallery.png"))
    parser.add_argument("--patients", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(draw_gallery(args.out, args.patients, args.seed))


if __name__ == "__main__":
    main()

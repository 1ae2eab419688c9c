"""Realism of the phantom's drawn looks, measured in the images it makes and compared with
the sources cited in kdcore/data/phantom/appearance.py: organ attenuation in each contrast
phase, noise against dose, the partial-volume edge against slice thickness, the field of
view; and one volume per seed.

Volumes are small (coarse pixels), so the file runs in seconds. What would hide the
quantity measured (noise, streaks, lesions, steatosis) is switched off with the knobs.
Run as a script (``python tests/data/test_phantom_realism.py``) it prints the measurements.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from functools import cache

import numpy as np
import pytest
from scipy import ndimage, stats

from kdcore.data.phantom import generate_patient, labels
from kdcore.data.phantom.appearance import HU_RANGES, PHASES, PRESETS, Appearance
from kdcore.data.phantom.finish import HU_MIN, slab_positions

SEEDS = (0, 1, 2, 3)
ORGANS = {"spleen": labels.SPLEEN, "liver": labels.LIVER, "aorta": labels.AORTA}
HU_SHAPE, HU_SPACING = (64, 64, 16), (0.0, 0.0, 6.0)  # in-plane spacing: from the FOV
FOV_MM = 358.4  # 5.6 mm pixels at 64
# A scan's smooth bias field (finish.finalise_scan: up to 8 HU times a unit field over
# 250 mm) moves a whole organ's mean by up to about 15 HU, and the arterial spleen's
# arciform bands move its median: one patient's organ is allowed this far outside the
# cited range of patient means. The mean over the patients must lie within TEXTURE_HU.
SHADING_HU = 15.0
TEXTURE_HU = 5.0


def quiet(**knobs) -> Appearance:
    """The standard preset with noise, streaks, lesions and steatosis off, 2 mm slices
    and a fixed field of view, then ``knobs``."""
    base = dataclasses.replace(
        PRESETS["standard"],
        noise_hu=0.0,
        streaks=0.0,
        lesions_spleen=0.0,
        lesions_liver=0.0,
        fatty_liver=0.0,
        slice_mm=(2.0, 2.0),
        fov_mm=(FOV_MM, FOV_MM),
    )
    return dataclasses.replace(base, **knobs)


def only(phase: str) -> tuple[float, ...]:
    """``phases`` that always draw ``phase``."""
    return tuple(float(p == phase) for p in PHASES)


def interior(scan, organ: int) -> np.ndarray:
    """The organ's voxels one voxel or more from its surface (no partial volume)."""
    return ndimage.binary_erosion(scan.labels == organ, np.ones((3, 3, 3), bool))


@dataclasses.dataclass
class OrganHU:
    """An organ's interior attenuation in one scan (HU): the median (a radiologist's ROI
    placed between vessels: the liver's label holds its veins), SD, and robust SD."""

    median: float
    sd: float
    robust_sd: float


def organ_hu(scan, organ: int, min_voxels: int = 3) -> OrganHU | None:
    """``OrganHU`` of ``organ`` in ``scan``, or None if too little of it is in view."""
    values = scan.image[interior(scan, organ)].astype(float)
    if values.size < min_voxels:
        return None
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    return OrganHU(median, float(values.std()), 1.4826 * mad)


@cache
def measured(look: str) -> tuple[dict, ...]:
    """Per patient of SEEDS, {organ name: OrganHU or None, "zebra": bool} for ``look``:
    a phase of PHASES, or "fatty" (unenhanced, steatosis in every patient)."""
    phase, fatty = ("none", 1.0) if look == "fatty" else (look, 0.0)
    app = quiet(phases=only(phase), fatty_liver=fatty)
    out = []
    for seed in SEEDS:
        scan = generate_patient(seed, HU_SHAPE, HU_SPACING, app)
        row = {name: organ_hu(scan, organ) for name, organ in ORGANS.items()}
        out.append({**row, "zebra": scan.look.zebra_hu > 0})
    return tuple(out)


def medians(look: str, organ: str) -> np.ndarray:
    """The organ's median HU per patient (NaN where it is not in view)."""
    return np.array([r[organ].median if r[organ] else np.nan for r in measured(look)])


# ---- (a) attenuation per phase ------------------------------------------------------------


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("organ", ORGANS)
def test_organ_hu_lies_in_the_cited_range_of_its_phase(phase, organ):
    lo, hi = HU_RANGES[phase][organ]
    values = medians(phase, organ)
    values = values[~np.isnan(values)]
    assert len(values) >= 2, f"{organ} in view in too few patients"
    assert np.all(values > lo - SHADING_HU) and np.all(values < hi + SHADING_HU), values
    assert lo - TEXTURE_HU < values.mean() < hi + TEXTURE_HU, values


@pytest.mark.parametrize("phase", PHASES)
def test_organs_have_a_small_but_nonzero_texture(phase):
    for row in measured(phase):
        liver, spleen = row["liver"], row["spleen"]
        assert 1.0 < liver.robust_sd < 10.0, liver  # the SD itself counts its veins
        if row["zebra"]:  # arterial: arciform, heterogeneous enhancement (Glazer 1981)
            assert spleen.sd > 10.0, spleen
        else:
            assert 1.0 < spleen.sd < 8.0, spleen


def test_unenhanced_liver_is_above_the_spleen_unless_fatty():
    # Kodama 2007, Boyce 2010: unenhanced, the liver is about 8-10 HU above the spleen;
    # steatosis puts it below.
    normal = medians("none", "liver") - medians("none", "spleen")
    fatty = medians("fatty", "liver") - medians("fatty", "spleen")
    assert 4.0 < normal.mean() < 20.0, normal
    assert np.all(normal > -10.0), normal  # none reads as steatosis (L - S < -10)
    assert fatty.mean() < 0.0, fatty
    drop = medians("none", "liver") - medians("fatty", "liver")  # same patients, same look
    assert np.all(drop >= 14.0) and np.all(drop <= 46.0), drop


def test_contrast_enhances_the_organs_in_the_phases_the_sources_give():
    # Bae 2010: the spleen and liver enhance well in the portal phase (the liver by about
    # 50-60 HU at its peak), the aorta peaks in the arterial phase, and in the delayed
    # (equilibrium) phase the liver and spleen are nearly equal.
    spleen_gain = medians("portal", "spleen") - medians("none", "spleen")
    liver_gain = medians("portal", "liver") - medians("none", "liver")
    assert np.all(spleen_gain > 40.0), spleen_gain
    assert np.all(liver_gain > 30.0), liver_gain
    aorta = {phase: medians(phase, "aorta") for phase in PHASES}
    seen = ~np.isnan(aorta["arterial"])
    assert seen.sum() >= 2
    assert aorta["arterial"][seen].mean() > 250.0, aorta["arterial"]
    assert np.all(aorta["arterial"][seen] > aorta["portal"][seen]), aorta
    assert np.all(aorta["portal"][seen] > aorta["none"][seen] + 60.0), aorta
    delayed = medians("delayed", "liver") - medians("delayed", "spleen")
    assert abs(delayed.mean()) < 10.0, delayed


# ---- (b) noise against dose ----------------------------------------------------------------

NOISE_SHAPE, NOISE_SPACING = (64, 64, 8), (0.0, 0.0, 5.0)
NOISE_HU = 12.0  # the SD at dose 1, 5 mm slices and 1 mm kernel blur, set here


@cache
def noise_of(dose: float, seed: int = 5) -> dict:
    """The noise of one patient at ``dose`` (5 mm slices, 1 mm kernel, no table): the
    image minus the same patient without noise, in fat and in air, and the look's SD."""
    app = quiet(dose=(dose, dose), slice_mm=(5.0, 5.0), blur_mm=(1.0, 1.0), table=0.0)
    clean = generate_patient(seed, NOISE_SHAPE, NOISE_SPACING, app)
    noisy_app = dataclasses.replace(app, noise_hu=NOISE_HU)
    noisy = generate_patient(seed, NOISE_SHAPE, NOISE_SPACING, noisy_app)
    diff = noisy.image.astype(float) - clean.image
    background = clean.labels == labels.BACKGROUND
    fat = background & (clean.image > -150) & (clean.image < -50)
    air = background & (clean.image == -1000)
    assert fat.sum() > 2000 and air.sum() > 2000
    return {"fat": diff[fat].std(), "air": diff[air].std(), "look": noisy.look.noise_sd}


def clipped_sd(sd: float, floor: float) -> float:
    """SD of max(X, floor) for X ~ N(0, sd^2): the noise of air stored at HU_MIN."""
    a = floor / sd
    cdf, pdf = stats.norm.cdf(a), stats.norm.pdf(a)
    mean = a * cdf + pdf
    second = a * a * cdf + (1 - cdf) + a * pdf
    return sd * math.sqrt(second - mean * mean)


@pytest.mark.parametrize("dose", [1.0, 0.25])
def test_noise_in_fat_is_the_drawn_sd(dose):
    noise = noise_of(dose)
    assert noise["look"] == pytest.approx(NOISE_HU / math.sqrt(dose))
    assert noise["fat"] == pytest.approx(noise["look"], rel=0.1)


def test_a_quarter_of_the_dose_doubles_the_noise():
    assert noise_of(0.25)["fat"] / noise_of(1.0)["fat"] == pytest.approx(2.0, rel=0.1)


def test_noise_in_air_is_the_drawn_sd_cut_at_the_scanner_floor():
    # At 6 HU the floor (24 HU under air's -1000) is 4 SD away and cuts nothing.
    assert noise_of(4.0)["air"] == pytest.approx(noise_of(4.0)["look"], rel=0.1)
    # At 24 HU it is 1 SD away: air's noise is lower than the patient's, as in scans
    # stored from -1024 HU.
    low = noise_of(0.25)
    expected = clipped_sd(low["look"], HU_MIN + 1000)
    assert expected < 0.9 * low["look"]
    assert low["air"] == pytest.approx(expected, rel=0.05)


# ---- (c) slice thickness: the partial-volume edge along z ---------------------------------

EDGE_SHAPE, EDGE_SPACING = (32, 32, 160), (0.0, 0.0, 0.5)
EDGE_HALF = 14  # samples (7 mm) each side of an edge: past half of a 5 mm slice


@cache
def edge_widths(thickness: float, seed: int = 0) -> np.ndarray:
    """The 10-90 % widths (mm) along z, at ``thickness``, of every sharp z-edge of the
    patient: columns where a thin scan steps once by over 100 HU and is flat for 7 mm
    either side."""
    columns = sharp_edges(seed)
    image = edge_scan(thickness, seed).astype(float)
    return np.array(
        [rise_mm(image[i, j, k - EDGE_HALF : k + EDGE_HALF + 2]) for i, j, k in columns]
    )


@cache
def edge_scan(thickness: float, seed: int) -> np.ndarray:
    app = quiet(
        phases=only("portal"),
        slice_mm=(thickness, thickness),
        blur_mm=(1.0, 1.0),
        off_centre_mm=0.0,
        table=0.0,
    )
    return generate_patient(seed, EDGE_SHAPE, EDGE_SPACING, app).image


def sharp_edges(seed: int) -> list[tuple[int, int, int]]:
    """(x, y, z) of the sample before each isolated step of the thinnest scan."""
    steps = np.abs(np.diff(edge_scan(0.5, seed).astype(float), axis=2))
    out = []
    for i, j, k in np.argwhere(steps > 100):
        if EDGE_HALF <= k < steps.shape[2] - EDGE_HALF:
            around = np.delete(steps[i, j, k - EDGE_HALF : k + EDGE_HALF + 1], EDGE_HALF)
            if around.max() <= 3:
                out.append((int(i), int(j), int(k)))
    return out


def rise_mm(profile: np.ndarray) -> float:
    """Distance (mm) from 10 % to 90 % of a step between the profile's two ends."""
    f = (profile - profile[0]) / (profile[-1] - profile[0])
    z = np.arange(len(f)) * EDGE_SPACING[2]

    def crossing(level: float) -> float:
        i = int(np.argmax(f >= level))  # first sample at or above the level
        return z[i - 1] + (level - f[i - 1]) / (f[i] - f[i - 1]) * (z[i] - z[i - 1])

    return crossing(0.9) - crossing(0.1)


@pytest.mark.parametrize("thickness", [5.0, 2.5])
def test_slice_thickness_sets_the_partial_volume_edge_width(thickness):
    # A slice averages its thickness T (a box profile), so a sharp z-edge rises from 10 %
    # to 90 % over 0.8 T.
    widths = edge_widths(thickness)
    assert len(widths) >= 10
    assert np.median(widths) == pytest.approx(0.8 * thickness, rel=0.2)


def test_thicker_slices_give_wider_edges():
    w1, w2, w5 = (np.median(edge_widths(t)) for t in (1.0, 2.5, 5.0))
    assert w1 < w2 < w5
    # 0.8 mm is below what the 0.5 mm grid resolves (an edge reads as up to ~2 samples)
    assert w1 <= 1.25


def test_every_slice_averages_sub_slices_across_its_thickness():
    for thickness in (0.5, 1.0, 2.5, 5.0):
        positions, slabs = slab_positions(4, 6.0, 0.0, thickness)
        k = slabs.shape[1]
        assert k >= 3 and k % 2 == 1
        z = positions[slabs]
        assert np.all(np.diff(positions) >= 0)
        assert np.allclose(z[:, -1] - z[:, 0], thickness * (k - 1) / k)
        assert np.allclose(z[:, k // 2], (np.arange(4) - 1.5) * 6.0)  # the slice centres


# ---- (d) one seed, one volume; (e) field of view -------------------------------------------


def test_one_seed_gives_one_volume():
    def digest(seed: int) -> str:
        scan = generate_patient(seed, (48, 48, 12), (0.0, 0.0, 10.0), PRESETS["standard"])
        return hashlib.sha256(scan.image.tobytes() + scan.labels.tobytes()).hexdigest()

    assert digest(11) == digest(11)
    assert digest(11) != digest(12)


def test_pixel_spacing_follows_the_drawn_field_of_view():
    shape, z_mm = (48, 48, 6), 7.0
    low, high = PRESETS["standard"].fov_mm
    fovs = []
    for seed in range(8):
        scan = generate_patient(seed, shape, (1.0, 1.0, z_mm), PRESETS["standard"])
        fov = scan.look.fov_mm
        assert low <= fov <= high
        assert scan.spacing[0] == scan.spacing[1] == pytest.approx(fov / shape[0])
        assert scan.spacing[2] == z_mm
        fovs.append(fov)
    assert len(set(fovs)) == len(fovs)  # drawn per patient


def print_measurements() -> None:
    """Print what the tests measure, for calibrating the presets."""
    for look in (*PHASES, "fatty"):
        for organ in ORGANS:
            rows = [r[organ] for r in measured(look) if r[organ]]
            values = " ".join(f"{r.median:6.1f} (sd {r.sd:4.1f})" for r in rows)
            cited = HU_RANGES["none" if look == "fatty" else look][organ]
            print(f"{look:9s} {organ:7s} cited {cited}: {values}")
    for dose in (4.0, 1.0, 0.25):
        n = noise_of(dose)
        print(f"dose {dose}: drawn SD {n['look']:.2f}, fat {n['fat']:.2f}, air {n['air']:.2f}")
    for thickness in (1.0, 2.5, 5.0):
        widths = edge_widths(thickness)
        print(
            f"slice {thickness} mm: 10-90 % edge {np.median(widths):.2f} mm ({len(widths)} edges)"
        )


if __name__ == "__main__":
    print_measurements()

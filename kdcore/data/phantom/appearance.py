"""How each patient's scan looks: the difficulty presets and the per-patient draws.

``easy`` is the original phantom (every scan portal-venous like, one noise model, one
field of view), kept byte for byte so that earlier tables stay reproducible. ``standard``
and ``hard`` draw, per patient and from a generator of its own (so the anatomy of a seed
is the same in every preset), a contrast phase, organ attenuations for that phase, dose
and hence noise, reconstruction kernel, slice thickness, field of view and centring,
steatosis, lesions, streaks and whether the table is in view; the anatomy knobs (habitus,
spleen size) change the anatomy's own draws.

Attenuation of each phase (patient means, HU; ``HU_RANGES``), read from:

- Lamba R, McGahan JP, Corwin MT, et al. CT Hounsfield numbers of soft tissues on
  unenhanced abdominal CT scans: variability between two different manufacturers' MDCT
  scanners. AJR 2014;203:1013-1020. (unenhanced liver, spleen, muscle, kidney, blood,
  pancreas, fat; ranges widened to cover both scanners)
- Kodama Y, Ng CS, Wu TT, et al. Comparison of CT methods for determining the fat content
  of the liver. AJR 2007;188:1307-1312; Boyce CJ, Pickhardt PJ, Kim DH, et al. Hepatic
  steatosis (fatty liver disease) in asymptomatic adults identified by unenhanced low-dose
  CT. AJR 2010;194:623-628. (unenhanced liver about 8-10 HU above the spleen; steatosis
  puts it below, in about one adult in five)
- Bae KT. Intravenous contrast medium administration and scan timing at CT:
  considerations and approaches. Radiology 2010;256:32-61. (aortic, portal and hepatic
  enhancement over time: arterial aorta 250-400 HU, hepatic peak +50-60 HU in the
  portal-venous phase, equilibrium later)
- Glazer GM, Axel L, Goldberg HI, Moss AA. Dynamic CT of the normal spleen. AJR
  1981;137:343-346. (heterogeneous, arciform "zebra" splenic enhancement in the arterial
  phase, homogeneous later)
- Yuh BI, Cohan RH. Different phases of renal enhancement: role in detecting and
  characterizing renal masses during helical CT. AJR 1999;173:747-755. (corticomedullary,
  nephrographic and excretory phases)
- Noise: the quantum noise SD of CT grows as 1/sqrt(tube current x time) and
  1/sqrt(slice thickness), and falls with a smoother kernel (Kalra MK, Maher MM, Toth TL,
  et al. Strategies for CT radiation dose optimization. Radiology 2004;230:619-628).

Ranges are the spread of patient means, drawn uniformly; texture and noise come on top.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from kdcore.errors import ConfigError

DIFFICULTIES = ("easy", "standard", "hard")
PHASES = ("none", "arterial", "portal", "delayed")  # none: no intravenous contrast

# Patient-mean HU per phase and tissue key of ``plan.hu``. Keys absent here (fat, fluid,
# bone, lung, skin, oral contrast) do not depend on the phase and keep their anatomy draw.
HU_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "none": {
        "spleen": (40, 52),
        "liver": (50, 66),
        "muscle": (38, 56),
        "aorta": (32, 50),
        "portal": (32, 50),
        "ivc": (32, 50),
        "cortex": (26, 40),
        "medulla": (22, 36),
        "pancreas": (32, 48),
        "stomach_wall": (30, 45),
        "bowel_wall": (30, 45),
        "myocardium": (38, 52),
    },
    "arterial": {
        "spleen": (95, 140),
        "liver": (60, 85),
        "muscle": (45, 62),
        "aorta": (250, 400),
        "portal": (100, 170),
        "ivc": (60, 110),
        "cortex": (150, 230),
        "medulla": (60, 110),
        "pancreas": (100, 150),
        "stomach_wall": (55, 80),
        "bowel_wall": (55, 85),
        "myocardium": (100, 150),
    },
    "portal": {
        "spleen": (100, 135),
        "liver": (90, 120),
        "muscle": (50, 65),
        "aorta": (130, 200),
        "portal": (150, 200),
        "ivc": (110, 160),
        "cortex": (150, 210),
        "medulla": (110, 170),
        "pancreas": (80, 115),
        "stomach_wall": (50, 75),
        "bowel_wall": (55, 95),
        "myocardium": (80, 120),
    },
    "delayed": {
        "spleen": (75, 100),
        "liver": (75, 100),
        "muscle": (50, 62),
        "aorta": (100, 140),
        "portal": (100, 135),
        "ivc": (100, 135),
        "cortex": (120, 170),
        "medulla": (120, 180),
        "pancreas": (65, 90),
        "stomach_wall": (50, 70),
        "bowel_wall": (50, 80),
        "myocardium": (70, 100),
    },
}
# Mucosa above the wall (enhancing mucosa) per phase, HU.
MUCOSA_GAIN = {"none": (0, 8), "arterial": (30, 70), "portal": (15, 50), "delayed": (5, 25)}
STEATOSIS_DROP = (15.0, 45.0)  # HU a fatty liver loses
CYST_HU = (0.0, 20.0)  # simple cysts: water attenuation
METASTASIS_FACTOR = (0.5, 0.8)  # hypovascular metastases: a fraction of the organ's enhancement
EXCRETED_HU = (300.0, 900.0)  # contrast excreted into the renal pelvis (delayed phase)
REFERENCE_SLICE_MM, REFERENCE_BLUR_MM = 5.0, 1.0


@dataclass(frozen=True)
class Appearance:
    """The distributions a difficulty draws every patient's scan from (``phantom.*``).

    Ranges are [low, high]; ``dose`` is drawn log-uniformly, the others uniformly.
    """

    phases: tuple[float, ...]  # probability of each of PHASES
    dose: tuple[float, float]  # tube current x time relative to a standard abdominal scan
    noise_hu: float  # noise SD at dose 1, 5 mm slices, 1 mm kernel blur
    blur_mm: tuple[float, float]  # in-plane kernel blur SD: sharp (low) .. smooth (high)
    slice_mm: tuple[float, float]  # slice thickness, averaged over (partial volume)
    fov_mm: tuple[float, float]  # limits of the reconstructed field of view
    fov_margin: tuple[float, float]  # field of view / body width, before the limits
    off_centre_mm: float  # the body's centre moves up to this far from the image centre
    scan_shift_mm: float  # the scanned range moves up to this far head- or footwards
    habitus: tuple[float, float]  # 0 slim .. 1 obese
    spleen_size: tuple[float, float, float]  # probability of small, normal, enlarged
    fatty_liver: float  # probability of hepatic steatosis
    lesions_spleen: float  # probability of 1-3 cysts or metastases in the spleen
    lesions_liver: float  # ... in the liver
    streaks: float  # probability of streaks from bone and dense contrast
    table: float  # probability that the scanner table is in the field of view


KNOBS = tuple(Appearance.__dataclass_fields__)

# The original phantom's anatomy draws, which easy keeps.
EASY_HABITUS, EASY_SPLEEN_SIZE = (0.0, 1.0), (0.1, 0.8, 0.1)

PRESETS: dict[str, Appearance] = {
    # Calibrated in the quick profile (S1 at 50% of the training patients): see the README.
    "standard": Appearance(
        phases=(0.5, 0.25, 0.15, 0.1),
        dose=(0.12, 0.7),
        noise_hu=12.0,
        blur_mm=(0.5, 1.6),
        slice_mm=(0.8, 5.0),
        fov_mm=(300.0, 500.0),
        fov_margin=(0.95, 1.5),
        off_centre_mm=25.0,
        scan_shift_mm=40.0,
        habitus=(0.0, 1.0),
        spleen_size=(0.2, 0.6, 0.2),
        fatty_liver=0.3,
        lesions_spleen=0.25,
        lesions_liver=0.35,
        streaks=0.6,
        table=0.8,
    ),
    "hard": Appearance(
        phases=(0.6, 0.2, 0.1, 0.1),
        dose=(0.05, 0.4),
        noise_hu=12.0,
        blur_mm=(0.4, 2.0),
        slice_mm=(0.6, 5.0),
        fov_mm=(300.0, 500.0),
        fov_margin=(0.9, 1.6),
        off_centre_mm=35.0,
        scan_shift_mm=50.0,
        habitus=(0.0, 1.0),
        spleen_size=(0.3, 0.4, 0.3),
        fatty_liver=0.4,
        lesions_spleen=0.35,
        lesions_liver=0.5,
        streaks=0.75,
        table=0.7,
    ),
}


def resolve_appearance(difficulty: str, overrides: dict | None = None) -> Appearance | None:
    """The appearance of ``difficulty`` with the non-null ``overrides`` (knob -> value)
    applied; None for ``easy``. ConfigError for an unknown difficulty, or for a knob set
    with ``easy``, whose appearance is fixed."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if difficulty not in DIFFICULTIES:
        raise ConfigError(
            f"phantom.difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}"
        )
    unknown = sorted(set(overrides) - set(KNOBS))
    if unknown:
        raise ConfigError(f"phantom.{unknown[0]} is not a setting of the phantom: remove it")
    if difficulty == "easy":
        if overrides:
            raise ConfigError(
                f"phantom.{sorted(overrides)[0]} is set, but phantom.difficulty=easy is the "
                "fixed phantom of the earlier tables and has no appearance settings: use "
                "phantom.difficulty=standard (or hard) to change it, or leave it null"
            )
        return None
    values = asdict(PRESETS[difficulty])
    for key, value in overrides.items():
        values[key] = tuple(value) if isinstance(value, list | tuple) else value
    if not math.isclose(sum(values["phases"]), 1.0, abs_tol=1e-6):
        raise ConfigError(f"phantom.phases must sum to 1, got {list(values['phases'])}")
    if not math.isclose(sum(values["spleen_size"]), 1.0, abs_tol=1e-6):
        raise ConfigError(f"phantom.spleen_size must sum to 1, got {list(values['spleen_size'])}")
    return Appearance(**values)


@dataclass
class Lesion:
    """A round lesion: organ label, centre (mm), radius (mm), HU."""

    organ: int
    centre: tuple[float, float, float]
    radius: float
    hu: float


@dataclass
class Look:
    """One patient's scan settings, drawn from an ``Appearance``."""

    phase: str
    dose: float
    blur_mm: float
    slice_mm: float
    noise_sd: float  # HU, at this dose, thickness and kernel
    fov_mm: float
    shift_mm: tuple[float, float, float]  # of the body from the image centre (x, y, z)
    fatty_liver: bool
    zebra_hu: float  # amplitude of the arterial-phase arciform splenic pattern (0: none)
    streak_hu: float  # streak amplitude (0: none)
    table: bool
    excreted: bool  # contrast in the renal pelvis
    draws: dict = field(default_factory=dict)  # further draws (lesion counts, seeds)

    def summary(self) -> dict:
        """The scan settings as plain numbers, for the dataset's per-case record."""
        return {
            "phase": self.phase,
            "dose": round(self.dose, 3),
            "noise_sd_hu": round(self.noise_sd, 1),
            "kernel_blur_mm": round(self.blur_mm, 2),
            "slice_mm": round(self.slice_mm, 2),
            "fov_mm": round(self.fov_mm, 1),
            "fatty_liver": self.fatty_liver,
            "zebra_spleen": self.zebra_hu > 0,
            "streaks": self.streak_hu > 0,
            "table": self.table,
        }


def look_rng(seed: int) -> np.random.Generator:
    """The generator of a patient's appearance draws, apart from its anatomy's."""
    return np.random.default_rng([int(seed), 0xA11])


def draw_look(rng: np.random.Generator, app: Appearance, body_width_mm: float) -> Look:
    """Draw one patient's scan settings; the field of view follows the body's width."""
    phase = PHASES[int(rng.choice(len(PHASES), p=np.asarray(app.phases) / sum(app.phases)))]
    dose = float(np.exp(rng.uniform(np.log(app.dose[0]), np.log(app.dose[1]))))
    blur = float(rng.uniform(*app.blur_mm))
    thick = float(rng.uniform(*app.slice_mm))
    noise_sd = (
        app.noise_hu
        / math.sqrt(dose)
        * math.sqrt(REFERENCE_SLICE_MM / thick)
        * (REFERENCE_BLUR_MM / blur)
    )
    fov = float(np.clip(body_width_mm * rng.uniform(*app.fov_margin), *app.fov_mm))
    r, a = app.off_centre_mm * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
    zebra = rng.random() < 0.7 and phase == "arterial"
    return Look(
        phase=phase,
        dose=dose,
        blur_mm=blur,
        slice_mm=thick,
        noise_sd=float(noise_sd),
        fov_mm=fov,
        shift_mm=(
            r * math.cos(a),
            r * math.sin(a),
            float(rng.uniform(-app.scan_shift_mm, app.scan_shift_mm)),
        ),
        fatty_liver=bool(rng.random() < app.fatty_liver),
        zebra_hu=float(rng.uniform(20, 50)) if zebra else 0.0,
        streak_hu=float(rng.uniform(30, 120)) if rng.random() < app.streaks else 0.0,
        table=bool(rng.random() < app.table),
        excreted=phase == "delayed" and bool(rng.random() < 0.7),
        draws={
            "lesions_spleen": int(rng.integers(1, 4)) if rng.random() < app.lesions_spleen else 0,
            "lesions_liver": int(rng.integers(1, 4)) if rng.random() < app.lesions_liver else 0,
            "seed": int(rng.integers(0, 2**31)),
        },
    )


def phase_hu(rng: np.random.Generator, look: Look, hu: dict) -> dict:
    """``hu`` (the anatomy's draw) with the phase-dependent attenuations of ``look``."""
    out = dict(hu)
    for key, (lo, hi) in HU_RANGES[look.phase].items():
        out[key] = float(rng.uniform(lo, hi))
    out["mucosa"] = out["stomach_wall"] + float(rng.uniform(*MUCOSA_GAIN[look.phase]))
    if look.fatty_liver:
        out["liver"] -= float(rng.uniform(*STEATOSIS_DROP))
    if look.excreted:
        out["pelvis"] = float(rng.uniform(*EXCRETED_HU))
    return out

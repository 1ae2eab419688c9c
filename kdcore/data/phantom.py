"""Procedural abdominal CT phantom written in the MSD Task09_Spleen layout.

Stands in for the Medical Segmentation Decathlon spleen task when no real data is at hand.
Every patient is an upper-abdominal CT volume in Hounsfield units, packed with organs as in
a portal-venous phase scan: body wall (skin, subcutaneous fat, muscle layers), liver with
portal and hepatic veins, gallbladder, stomach with an air-fluid level, duodenum, small
bowel and colon with gas and content, pancreas, spleen, both kidneys (cortex, medulla,
sinus), aorta, IVC and mesenteric/renal/splenic vessels, spine, ribs, psoas, diaphragm
with lung bases and heart, and the CT table. The label is the spleen.

Geometry is defined in millimetres with smooth implicit shapes, so ``shape`` and
``spacing`` change the resolution and field of view, not the anatomy; the default
(128, 128, 40) voxels of (2.8, 2.8, 5.0) mm cover 358 x 358 x 200 mm. For a smaller
``shape`` with the same field of view use ``spacing_for_shape(shape)``.

Arrays are indexed (x, y, z) like MSD NIfTI files. The affine is diag(spacing), i.e. RAS:
x grows towards the patient's left (the liver is at low x, the spleen at high x),
y towards anterior and z towards superior (z is the axial slice index).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from kdcore.io import atomic_path, write_text_atomic

DEFAULT_SHAPE = (128, 128, 40)
DEFAULT_SPACING = (2.8, 2.8, 5.0)
DEFAULT_FOV_MM = tuple(n * s for n, s in zip(DEFAULT_SHAPE, DEFAULT_SPACING, strict=True))

_DEG = np.pi / 180.0
_HU_MIN, _HU_MAX = -1024, 3071

# Tissue classes painted into the label map; only _SPLEEN is exported.
_AIR, _FAT, _MUSCLE, _SKIN, _BONE, _LIVER, _SPLEEN, _KIDNEY = range(8)
_STOMACH, _BOWEL, _PANCREAS, _VESSEL, _LUNG, _FLUID, _HEART, _TABLE, _GAS = range(8, 17)


def spacing_for_shape(
    shape: tuple[int, int, int], fov_mm: tuple[float, float, float] = DEFAULT_FOV_MM
) -> tuple[float, float, float]:
    """Voxel spacing (mm) that makes a volume of ``shape`` cover ``fov_mm`` (default FOV)."""
    return tuple(float(f) / int(n) for f, n in zip(fov_mm, shape, strict=True))


# --------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------


@dataclass
class _Body:
    """Outer body contour and wall layers, all functions of polar angle and z (mm).

    Angles are measured in the axial plane around the body centre from +x (patient left)
    towards +y (anterior); -90 deg is the posterior midline.
    """

    half_width: float
    half_ap_ant: float
    half_ap_post: float
    width_z: tuple[float, float]
    ap_z: float
    fourier: list[tuple[int, float, float, float]]
    squareness: float
    groove: float
    fat0: float
    fat_ant: float
    fat_lat: float
    muscle_lat: float
    muscle_ant: float
    muscle_post: float
    muscle_post_width: float

    def radius(self, th, z):
        """Distance from the body centre to the skin along angle ``th`` at height ``z``."""
        zt = np.asarray(z, np.float32) / 100.0
        c, s = np.cos(th), np.sin(th)
        a = self.half_width * (1.0 + self.width_z[0] * zt - self.width_z[1] * zt * zt)
        b_side = np.where(s >= 0, np.float32(self.half_ap_ant), np.float32(self.half_ap_post))
        b_z = 1.0 + self.ap_z * zt
        r = 1.0 / np.sqrt((c * c) / (a * a) + (s * s) / (b_side * b_side) / (b_z * b_z))
        # cos(k th + psi(z)) expanded so that no 3D trigonometric function is evaluated.
        pert = -self.squareness * np.cos(4 * th)
        for k, amp, phase, drift in self.fourier:
            psi = phase + drift * zt
            pert = pert + amp * (np.cos(k * th) * np.cos(psi) - np.sin(k * th) * np.sin(psi))
        groove = self.groove * np.exp(-(((th + np.pi / 2) / 0.12) ** 2))
        return r * (1.0 + pert) - groove

    def fat(self, th, z):
        """Subcutaneous fat thickness (mm): thicker anteriorly and over the flanks."""
        zt = np.asarray(z, np.float32) / 100.0
        ang = 1.0 + self.fat_ant * np.sin(th) + self.fat_lat * np.cos(th) ** 2
        return np.maximum(self.fat0 * ang * (1.0 - 0.15 * zt), 2.0)

    def muscle(self, th, z):
        """Muscle layer thickness (mm): obliques, rectus with linea alba, and thicker
        posteriorly (quadratus lumborum, latissimus)."""
        zt = np.asarray(z, np.float32) / 100.0
        s = np.sin(th)
        m = self.muscle_lat + (self.muscle_ant - self.muscle_lat) * np.maximum(s, 0) ** 2
        m = m * (1.0 - 0.8 * np.exp(-(((th - np.pi / 2) / 0.05) ** 2)))
        post = np.exp(-(((th + np.pi / 2) / self.muscle_post_width) ** 2))
        m = m + (self.muscle_post - m) * post
        return m * (1.0 + 0.08 * zt)

    def inner_radius(self, th, z):
        """Distance from the body centre to the inner surface of the abdominal wall."""
        return self.radius(th, z) - self.fat(th, z) - self.muscle(th, z)

    def point(self, th_deg: float, depth: float, z: float) -> np.ndarray:
        """The point ``depth`` mm inside the inner wall along angle ``th_deg`` at ``z``."""
        th = th_deg * _DEG
        rho = float(self.inner_radius(th, z)) - depth
        return np.array([rho * np.cos(th), rho * np.sin(th), z])

    def cavity_depth(self, p: np.ndarray) -> float:
        """How deep (mm) a point lies inside the abdominal cavity (negative: outside)."""
        th = float(np.arctan2(p[1], p[0]))
        return float(self.inner_radius(th, p[2])) - float(np.hypot(p[0], p[1]))


class _Canvas:
    """HU volume and tissue map being painted, with body-centred mm coordinates."""

    def __init__(self, shape, spacing, offset):
        self.shape = tuple(int(n) for n in shape)
        self.axes = [
            ((np.arange(n) - (n - 1) / 2.0) * s - o).astype(np.float32)
            for n, s, o in zip(self.shape, spacing, offset, strict=True)
        ]
        self.hu = np.full(self.shape, -1000.0, np.float32)
        self.tissue = np.zeros(self.shape, np.uint8)
        x, y = self.axes[0][:, None], self.axes[1][None, :]
        self.theta = np.arctan2(y, x).astype(np.float32)  # (nx, ny)
        self.rho = np.hypot(x, y).astype(np.float32)
        self.cav = None  # depth inside the abdominal cavity, set by _draw_body_wall
        self.texture = None  # smooth zero-mean field for organ parenchyma

    def box(self, lo, hi):
        """Index slices of the voxels whose centres lie in the mm box [lo, hi], or None."""
        sl = []
        for ax, a, b in zip(self.axes, lo, hi, strict=True):
            i0, i1 = np.searchsorted(ax, a, "left"), np.searchsorted(ax, b, "right")
            if i0 >= i1:
                return None
            sl.append(slice(int(i0), int(i1)))
        return tuple(sl)

    def coords(self, sl):
        """Broadcastable (X, Y, Z) mm coordinates of a box."""
        x, y, z = (ax[s] for ax, s in zip(self.axes, sl, strict=True))
        return x[:, None, None], y[None, :, None], z[None, None, :]

    def paint(self, sl, mask, value, tissue, tex=0.0, keep=()):
        """Set HU ``value`` (scalar or broadcastable array) and ``tissue`` where ``mask``.

        ``tex`` adds that many HU of the smooth parenchymal texture; tissues in ``keep``
        are not overwritten.
        """
        hu, ts = self.hu[sl], self.tissue[sl]
        mask = np.broadcast_to(mask, hu.shape)
        for t in keep:
            mask = mask & (ts != t)
        if tex:
            value = value + tex * self.texture[sl]
        if np.ndim(value) == 0:
            hu[mask] = value
        else:
            hu[mask] = np.broadcast_to(value, hu.shape)[mask]
        ts[mask] = tissue


def _smooth_field(rng, axes, wavelength: float, n_terms: int = 6) -> np.ndarray:
    """Zero-mean, roughly unit-variance smooth random field on the grid ``axes``.

    A sum of separable products of cosines: cheap (two 3D operations per term) and its
    random parameters do not depend on the grid, so anatomy is resolution independent.
    """
    x, y, z = axes
    out = np.zeros((len(x), len(y), len(z)), np.float32)
    for _ in range(n_terms):
        k = 2 * np.pi / (wavelength * rng.uniform(0.7, 1.4))
        d = rng.normal(size=3)
        d = d / np.linalg.norm(d) * k
        ph = rng.uniform(0, 2 * np.pi, 3)
        cx = np.cos(d[0] * x + ph[0]).astype(np.float32)
        cy = np.cos(d[1] * y + ph[1]).astype(np.float32)
        cz = np.cos(d[2] * z + ph[2]).astype(np.float32)
        out += cx[:, None, None] * cy[None, :, None] * cz[None, None, :]
    return out / np.float32(0.354 * np.sqrt(n_terms))


def _spline(ctrl, n: int = 6) -> np.ndarray:
    """Catmull-Rom curve through the control points, ``n`` samples per span."""
    p = np.asarray(ctrl, float)
    p = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    t = np.linspace(0, 1, n, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1 : i + 3]
        out.append(
            0.5
            * (
                2 * p1
                + (p2 - p0) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (3 * p1 - p0 - 3 * p2 + p3) * t**3
            )
        )
    out.append(p[-2][None])
    return np.vstack(out)


@dataclass
class _Tube:
    """Approximate signed distance to a tube, sampled on a box of the canvas."""

    sl: tuple
    sdf: np.ndarray  # mm, negative inside
    arc: np.ndarray  # arc length (mm) of the nearest centreline point
    dy: np.ndarray  # y offset (mm) from the nearest centreline point


def _tube(cv: _Canvas, pts, radii) -> _Tube | None:
    """Tube along the polyline ``pts`` (n, 3); ``radii`` is a scalar or radii at evenly
    spaced stations along it, interpolated linearly.

    Each segment only touches its own bounding box, so long, thin tubes stay cheap.
    """
    pts = np.asarray(pts, float)
    radii = np.atleast_1d(np.asarray(radii, float))
    # Radii given at fewer (evenly spaced) stations than points are interpolated.
    radii = np.interp(np.linspace(0, 1, len(pts)), np.linspace(0, 1, len(radii)), radii)
    pad = radii.max() + 1.0
    outer = cv.box(pts.min(0) - pad, pts.max(0) + pad)
    if outer is None:
        return None
    size = tuple(s.stop - s.start for s in outer)
    sdf = np.full(size, np.inf, np.float32)
    arc = np.zeros(size, np.float32)
    dyo = np.zeros(size, np.float32)
    seg = np.diff(pts, axis=0)
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(seg, axis=1))])
    for k in range(len(seg)):
        a, d = pts[k], seg[k]
        ra, rb = float(radii[k]), float(radii[k + 1])
        r = max(ra, rb) + 1.0
        sl = cv.box(np.minimum(a, a + d) - r, np.maximum(a, a + d) + r)
        if sl is None:
            continue
        X, Y, Z = cv.coords(sl)
        dx, dy, dz = X - float(a[0]), Y - float(a[1]), Z - float(a[2])
        d0, d1, d2 = (float(v) for v in d)
        length2 = max(d0 * d0 + d1 * d1 + d2 * d2, 1e-6)
        t = np.clip((dx * d0 + dy * d1 + dz * d2) / length2, 0.0, 1.0)
        ey = dy - t * d1
        dist = np.sqrt((dx - t * d0) ** 2 + ey * ey + (dz - t * d2) ** 2)
        val = dist - (ra + t * (rb - ra))
        loc = tuple(
            slice(s.start - o.start, s.stop - o.start) for s, o in zip(sl, outer, strict=True)
        )
        cur = sdf[loc]
        better = val < cur
        cur[better] = val[better]
        arc[loc][better] = (cum[k] + t * np.sqrt(length2))[better]
        dyo[loc][better] = np.broadcast_to(ey, better.shape)[better]
    return _Tube(outer, sdf, arc, dyo)


def _gauss_kernel(sigma_vox: float) -> np.ndarray:
    """Normalised 1D Gaussian taps (at least 3)."""
    radius = max(1, int(np.ceil(2.0 * sigma_vox)))
    x = np.arange(-radius, radius + 1, dtype=float)
    k = np.exp(-0.5 * (x / max(sigma_vox, 1e-3)) ** 2)
    return (k / k.sum()).astype(np.float32)


def _convolve_axis(vol: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """Separable convolution along one axis with edge replication."""
    r = len(kernel) // 2
    if vol.shape[axis] < 2 or r == 0:
        return vol
    pad = [(0, 0)] * vol.ndim
    pad[axis] = (r, r)
    padded = np.pad(vol, pad, mode="edge")
    n = vol.shape[axis]
    out = np.zeros_like(vol)
    for i, w in enumerate(kernel):
        out += w * padded[(slice(None),) * axis + (slice(i, i + n),)]
    return out


# --------------------------------------------------------------------------------------
# Per-patient plan: landmarks and intensities drawn from the rng (grid independent)
# --------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """Scalar anatomy of one patient shared by the drawing functions (mm, HU)."""

    body: _Body
    hu: dict
    z_shift: float
    dome_r: float
    dome_l: float
    dome_curv: float
    vert: dict
    aorta: tuple[float, float, float]
    ivc: tuple[float, float, float, float]
    spleen: dict
    kidneys: list
    liver: dict
    extra: dict = field(default_factory=dict)

    def dome(self, x, y):
        """Height (z, mm) of the diaphragm surface above (x, y): two domes and a tendon."""
        a = self.body.half_width
        c = self.dome_curv
        right = self.dome_r - ((x + 0.42 * a) ** 2 + (y - 5.0) ** 2) / (2 * c)
        left = self.dome_l - ((x - 0.42 * a) ** 2 + (y + 5.0) ** 2) / (2 * c)
        centre = min(self.dome_r, self.dome_l) - 12.0 - (x * x + (y - 40.0) ** 2) / (3 * c)
        return np.maximum(np.maximum(right, left), centre)


def _draw_hu(rng) -> dict:
    """Tissue intensities (HU) of one patient, portal-venous phase like."""
    hu = {
        "fat": rng.uniform(-115, -85),
        "muscle": rng.uniform(40, 60),
        "skin": rng.uniform(20, 45),
        "aorta": rng.uniform(130, 200),
        "fluid": rng.uniform(0, 25),
        "bone": rng.uniform(550, 950),
        "cancellous": rng.uniform(180, 300),
        "lung": rng.uniform(-880, -820),
        "pancreas": rng.uniform(80, 125),
        "stomach_wall": rng.uniform(40, 70),
        "bowel_wall": rng.uniform(50, 100),
        "cortex": rng.uniform(150, 210),
        "myocardium": rng.uniform(80, 120),
    }
    hu["portal"] = hu["aorta"] * rng.uniform(0.8, 1.0)
    hu["ivc"] = hu["aorta"] * rng.uniform(0.6, 0.85)
    hu["mucosa"] = hu["stomach_wall"] + rng.uniform(15, 50)
    corticomedullary = rng.random() < 0.5
    hu["medulla"] = hu["cortex"] - (rng.uniform(50, 90) if corticomedullary else rng.uniform(5, 25))
    if rng.random() < 0.3:  # spleen nearly isodense to an enhancing liver
        hu["liver"] = rng.uniform(85, 115)
        hu["spleen"] = hu["liver"] + rng.normal(0, 5)
    else:
        hu["liver"] = rng.uniform(55, 75)
        hu["spleen"] = rng.uniform(90, 130)
    hu["oral_contrast"] = rng.uniform(150, 350) if rng.random() < 0.25 else None
    return {k: (float(v) if v is not None else None) for k, v in hu.items()}


def _make_body(rng) -> _Body:
    """Body contour and wall thicknesses; habitus (thin .. obese) drives size and fat."""
    habitus = rng.uniform(0, 1)
    fourier = [
        (k, rng.uniform(0, amp), rng.uniform(0, 2 * np.pi), rng.uniform(-1.0, 1.0))
        for k, amp in ((2, 0.025), (3, 0.012), (5, 0.01))
    ]
    half_width = rng.uniform(128, 145) + 25 * habitus
    b_ant = half_width * rng.uniform(0.65, 0.8)
    return _Body(
        half_width=half_width,
        half_ap_ant=b_ant,
        half_ap_post=b_ant * rng.uniform(0.78, 0.92),
        width_z=(rng.uniform(-0.08, 0.04), rng.uniform(0.0, 0.08)),
        ap_z=rng.uniform(-0.08, 0.05),
        fourier=fourier,
        squareness=rng.uniform(0.0, 0.05),
        groove=rng.uniform(3, 10),
        fat0=rng.uniform(5, 10) + 25 * habitus * rng.uniform(0.6, 1.2),
        fat_ant=rng.uniform(0.0, 0.5),
        fat_lat=rng.uniform(0.0, 0.5),
        muscle_lat=rng.uniform(12, 19),
        muscle_ant=rng.uniform(8, 13),
        muscle_post=rng.uniform(20, 32),
        muscle_post_width=rng.uniform(0.6, 0.8),
    )


def _posterior_wall_y(body: _Body, x: float, z: float) -> float:
    """y (mm) where the cavity begins when walking forward from the back at (x, z)."""
    for y in np.arange(-body.half_ap_post, body.half_ap_ant, 1.0):
        if body.cavity_depth(np.array([x, y, z])) >= 0:
            return float(y)
    return 0.0


def _make_plan(rng) -> _Plan:
    """Draw the landmarks of one patient."""
    body = _make_body(rng)
    hu = _draw_hu(rng)
    z_shift = rng.uniform(-20, 20)
    dome_r = rng.uniform(60, 85)
    dome_l = dome_r - rng.uniform(5, 20)

    # Spine: from the back, spinous process, canal, vertebral body (paraspinal muscles
    # are drawn around them, see _draw_spine).
    vert = {
        "a": rng.uniform(20, 25),
        "b": rng.uniform(15, 18),
        "canal": rng.uniform(7.5, 10),
        "period": rng.uniform(30, 36),
        "phase": rng.uniform(0, 36),
        "disc": rng.uniform(7, 10),
        "spinous": rng.uniform(18, 28),
        "erector": (rng.uniform(22, 30), rng.uniform(-3, 5)),
    }
    vert["back"] = -float(body.radius(-np.pi / 2, 0.0) - body.fat(-np.pi / 2, 0.0))
    vert["y"] = vert["back"] + vert["spinous"] + 2 * vert["canal"] + 4 + vert["b"]

    r_ao = rng.uniform(9, 13)
    aorta = (rng.uniform(4, 14), vert["y"] + vert["b"] + r_ao + rng.uniform(0, 4), r_ao)
    ivc = (
        -rng.uniform(20, 28),
        vert["y"] + vert["b"] + rng.uniform(8, 14),
        rng.uniform(11, 15),
        rng.uniform(7, 11),
    )

    # Spleen: a band hugging the postero-lateral wall of the left upper quadrant.
    size = rng.choice(3, p=[0.1, 0.8, 0.1])  # small, normal, enlarged
    length = rng.uniform(*[(60, 90), (90, 140), (140, 165)][size])
    top = dome_l - rng.uniform(0, 15)
    spleen = {
        "length": length,
        "zc": top - length / 2,
        "theta": rng.uniform(-40, -15) * _DEG,
        "tilt": rng.uniform(0.15, 0.45) * _DEG,  # rad per mm: lower pole more anterior
        "width": rng.uniform(*[(25, 35), (35, 52), (50, 60)][size]) * _DEG,
        "thick": rng.uniform(*[(25, 35), (38, 62), (60, 75)][size]),
        "gap": rng.uniform(1, 4),
        "lobes": rng.uniform(0, 0.15),
        "lobe_phase": rng.uniform(0, 2 * np.pi, 2),
    }
    th_h = spleen["theta"] / _DEG
    spleen["hilum"] = body.point(th_h, spleen["gap"] + spleen["thick"] - 2, spleen["zc"])

    kidneys = []
    # The left kidney's upper pole lies medial to the lower part of the spleen.
    z_left = spleen["zc"] - length * rng.uniform(0.1, 0.3) - rng.uniform(30, 45)
    for side in (+1, -1):
        k = {
            "side": side,
            "a": rng.uniform(26, 32),
            "b": rng.uniform(20, 25),
            "c": rng.uniform(45, 58),
            "alpha": rng.uniform(30, 60) * _DEG,
            "halo": rng.uniform(2, 5) + 6 * (body.fat0 / 35),
            "zc": z_left if side > 0 else z_left - rng.uniform(5, 20),
            "tilt": rng.uniform(0.1, 0.25),
        }
        x = side * (vert["a"] + rng.uniform(0.2, 0.3) * body.half_width)
        y = _posterior_wall_y(body, x, k["zc"]) + k["b"] + 0.5 * k["halo"]
        k["centre"] = np.array([x, y, k["zc"]])
        kidneys.append(k)

    liver_mid = rng.uniform(-15, 15)
    liver = {
        "mid_z": liver_mid,
        "tip_z": liver_mid - rng.uniform(40, 80),
        "x_post": -rng.uniform(0.05, 0.15) * body.half_width,
        "left_reach": rng.uniform(-0.1, 0.55) * body.half_width,
        "left_bottom": liver_mid + rng.uniform(0, 25),
        "left_thick": rng.uniform(45, 80),
        "hinge": rng.uniform(-0.05, 0.15) * body.half_ap_ant,
        "hinge_tilt": rng.uniform(-0.3, 0.4),
        "bulge": (
            rng.uniform(10, 30),
            rng.uniform(-0.4, 0.2) * body.half_ap_post,
            rng.uniform(35, 60),
        ),
        "gap": rng.uniform(0.5, 3),
        "wobble": rng.uniform(5, 12),
        "phase": rng.uniform(0, 2 * np.pi, 3),
    }
    return _Plan(
        body=body,
        hu=hu,
        z_shift=z_shift,
        dome_r=dome_r,
        dome_l=dome_l,
        dome_curv=rng.uniform(70, 110),
        vert=vert,
        aorta=aorta,
        ivc=ivc,
        spleen=spleen,
        kidneys=kidneys,
        liver=liver,
    )


# --------------------------------------------------------------------------------------
# Drawing, in painting order: later structures overwrite earlier ones where they meet,
# which packs the organs against each other with fat left in the gaps.
# --------------------------------------------------------------------------------------


def _draw_body_wall(cv: _Canvas, plan: _Plan) -> None:
    """Skin, subcutaneous fat, muscle layers, and visceral fat filling the cavity."""
    body, hu = plan.body, plan.hu
    th = cv.theta[:, :, None]
    z = cv.axes[2][None, None, :]
    depth = body.radius(th, z).astype(np.float32) - cv.rho[:, :, None]
    fat = body.fat(th, z).astype(np.float32)
    muscle = body.muscle(th, z).astype(np.float32)
    cv.cav = depth - fat - muscle
    inside = depth > 0
    layers = [
        (inside, hu["fat"], _FAT),
        (inside & (depth >= fat) & (cv.cav < 0), hu["muscle"], _MUSCLE),
        # thin fat planes between the oblique muscles of the lateral wall
        (
            inside
            & (np.abs(depth - fat - 0.5 * muscle) < 0.7)
            & (muscle < 25)
            & (np.abs(np.cos(th)) > 0.7),
            hu["fat"],
            _FAT,
        ),
        (inside & (depth < 2.0), hu["skin"], _SKIN),
    ]
    for mask, value, tissue in layers:
        cv.hu[mask] = value
        cv.tissue[mask] = tissue


def _bowel_region(plan: _Plan, p: np.ndarray, r: float, z_top: float) -> bool:
    """Whether a small-bowel centreline point fits: intraperitoneal, below ``z_top``."""
    v = plan.vert
    return (
        -140 < p[2] < z_top
        and p[1] > v["y"] + v["b"] + 20
        and abs(p[0]) < 0.75 * plan.body.half_width
        and plan.body.cavity_depth(p) > r + 2
    )


def _random_walk(rng, plan: _Plan, n: int, step: float, r: float, z_top: float):
    """A meandering small-bowel centreline confined to the bowel region."""
    a, b = plan.body.half_width, plan.body.half_ap_ant
    for _ in range(200):
        p = np.array(
            [rng.uniform(-0.7, 0.7) * a, rng.uniform(-0.3, 0.8) * b, rng.uniform(-140, z_top)]
        )
        if _bowel_region(plan, p, r, z_top):
            break
    else:
        return np.zeros((0, 3))
    pts, d = [p], rng.normal(size=3)
    for _ in range(n):
        for _ in range(12):
            nd = d / np.linalg.norm(d) + 0.9 * rng.normal(size=3)
            nd = nd / np.linalg.norm(nd)
            q = pts[-1] + step * nd
            if _bowel_region(plan, q, r, z_top):
                pts.append(q)
                d = nd
                break
        else:
            d = -d
    return np.array(pts)


def _paint_viscus(cv, tube, mask, wall_t, wall_hu, content, gas, tissue, mucosa=None):
    """Wall (with an enhancing inner mucosa if given), content, and gas where ``gas``."""
    sl = tube.sl
    cv.paint(sl, mask, wall_hu, tissue)
    lumen = mask & (tube.sdf < -wall_t)
    if mucosa is not None:
        cv.paint(sl, mask & (tube.sdf < -wall_t + 2.5) & ~lumen, mucosa, tissue)
    cv.paint(sl, lumen, content, _FLUID)
    cv.paint(sl, lumen & gas, -1000.0, _GAS)


def _gas_above_level(tube: _Tube, r: float, fraction) -> np.ndarray:
    """Gas filling ``fraction`` of a loop of radius ``r`` from its anterior side: air-fluid
    levels are horizontal (coronal) planes because the patient lies supine."""
    return tube.dy > r * (1.0 - 2.0 * fraction)


def _draw_bowel(cv: _Canvas, plan: _Plan, rng) -> None:
    """Small-bowel loops, colon with haustra and stool, and a few mesenteric vessels."""
    hu, body = plan.hu, plan.body
    z_top = plan.liver["mid_z"] + rng.uniform(-10, 15)
    n_chains = int(rng.integers(5, 10))
    for _ in range(n_chains):
        r = rng.uniform(8, 14)
        pts = _random_walk(rng, plan, int(rng.integers(12, 30)), rng.uniform(16, 22), r, z_top)
        kind = rng.choice(["fluid", "collapsed", "gas", "contrast"], p=[0.45, 0.25, 0.15, 0.15])
        if len(pts) < 3:
            continue
        if kind == "contrast" and hu["oral_contrast"] is None:
            kind = "fluid"
        content = {
            "fluid": hu["fluid"] + rng.uniform(0, 15),
            "collapsed": hu["bowel_wall"],
            "gas": hu["fluid"],
            "contrast": hu["oral_contrast"],
        }[kind]
        wall_t = rng.uniform(3.5, 6) if kind == "collapsed" else rng.uniform(1.8, 3)
        g0 = {"gas": 0.6}.get(kind, rng.uniform(-0.3, 0.2))
        lam, ph = rng.uniform(30, 80), rng.uniform(0, 2 * np.pi)
        tube = _tube(cv, _spline(pts, 4), r * (0.75 if kind == "collapsed" else 1.0))
        if tube is None:
            continue
        gas_frac = np.clip(g0 + 0.45 * np.sin(2 * np.pi * tube.arc / lam + ph), 0, 0.9)
        mask = (tube.sdf < 0) & (cv.cav[tube.sl] > 1)
        gas = _gas_above_level(tube, r, gas_frac)
        _paint_viscus(cv, tube, mask, wall_t, hu["bowel_wall"], content, gas, _BOWEL)

    # Colon framing the abdomen: ascending, hepatic flexure, transverse, splenic flexure
    # (just below the spleen), descending.
    rc = rng.uniform(16, 24)
    sp = plan.spleen
    z_sf = sp["zc"] - sp["length"] / 2 + rng.uniform(-5, 25)
    z_hf = plan.liver["tip_z"] + rng.uniform(0, 30)
    z_tc = min(z_hf, z_sf) - rng.uniform(0, 40)
    ctrl = [
        body.point(-170 + rng.uniform(-8, 8), rc + 3, -160),
        body.point(-172 + rng.uniform(-8, 8), rc + 3, z_hf - 40),
        body.point(165 + rng.uniform(-10, 5), rc + 5, z_hf),
        body.point(125 + rng.uniform(-10, 10), rc + rng.uniform(5, 30), z_tc + 10),
        body.point(90 + rng.uniform(-10, 10), rc + rng.uniform(5, 40), z_tc),
        body.point(50 + rng.uniform(-10, 10), rc + rng.uniform(5, 30), z_tc + 15),
        body.point(15 + rng.uniform(-10, 10), rc + 4, z_sf),
        body.point(-8 + rng.uniform(-8, 8), rc + 3, z_sf - 40),
        body.point(-12 + rng.uniform(-8, 8), rc + 3, -160),
    ]
    haustra, stool = rng.uniform(18, 30), rng.uniform(-120, 10)
    g0, lam, ph = rng.uniform(-0.2, 0.5), rng.uniform(60, 150), rng.uniform(0, 2 * np.pi)
    tex_params = rng.integers(0, 2**31)
    tube = _tube(cv, _spline(ctrl, 6), rc)
    if tube is not None:
        ax = [a[s] for a, s in zip(cv.axes, tube.sl, strict=True)]
        mottle = _smooth_field(np.random.default_rng(tex_params), ax, 10.0)
        tube.sdf = tube.sdf - 0.12 * rc * np.cos(2 * np.pi * tube.arc / haustra)
        mask = (tube.sdf < 0) & (cv.cav[tube.sl] > 1)
        content = np.where(mottle > 1.3, -900.0, stool + 60.0 * mottle)  # gas bubbles in stool
        gas_frac = np.clip(g0 + 0.5 * np.sin(2 * np.pi * tube.arc / lam + ph), 0, 0.95)
        gas = _gas_above_level(tube, rc, gas_frac)
        _paint_viscus(cv, tube, mask, 2.0, hu["bowel_wall"], content, gas, _BOWEL)

    # Mesenteric vessels: short bright tubes in the fat between loops.
    for _ in range(14):
        p = np.array(
            [
                rng.uniform(-0.5, 0.5) * body.half_width,
                rng.uniform(0.0, 0.7) * body.half_ap_ant,
                rng.uniform(-140, z_top),
            ]
        )
        q = p + rng.normal(size=3) * 15
        r = rng.uniform(1.5, 2.8)
        tube = _tube(cv, [p, q], r)
        if tube is not None:
            mask = (tube.sdf < 0) & (cv.tissue[tube.sl] == _FAT) & (cv.cav[tube.sl] > 0)
            cv.paint(tube.sl, mask, hu["portal"], _VESSEL)


def _draw_liver(cv: _Canvas, plan: _Plan, rng) -> None:
    """Liver hugging the right wall under the dome, left lobe across the midline,
    gallbladder on its inferior surface, portal and hepatic veins inside."""
    lv, body, hu = plan.liver, plan.body, plan.hu
    a = body.half_width
    sl = cv.box(
        (-a - 10, -body.half_ap_post - 10, lv["tip_z"] - 5),
        (a + 10, body.half_ap_ant + 10, plan.dome_r + 5),
    )
    if sl is not None:
        X, Y, Z = cv.coords(sl)
        cav = cv.cav[sl]
        dome = plan.dome(X[..., 0], Y[..., 0])[..., None]
        # The right lobe's medial border moves laterally towards the inferior tip.
        t = np.clip((lv["mid_z"] - Z) / (lv["mid_z"] - lv["tip_z"]), 0, 1)
        x_right = lv["x_post"] - (a + lv["x_post"]) * t**1.3
        # Medial border: convex towards the midline, gently undulating.
        bulge, y_bulge, span = lv["bulge"]
        x_right = x_right + bulge * np.maximum(1 - ((Y - y_bulge) / span) ** 2, -0.6)
        wobble = lv["wobble"] * (
            np.sin(Y / 35 + lv["phase"][0]) * np.cos(Z / 45 + lv["phase"][1])
            + 0.4 * np.sin(Y / 13 + Z / 30 + lv["phase"][2])
        )
        right = X < x_right + wobble
        # The left lobe is a wedge under the anterior wall that thins towards its tip.
        z_top = plan.dome_r - 10
        reach = (
            lv["x_post"]
            + (lv["left_reach"] - lv["x_post"])
            * np.clip((Z - lv["left_bottom"]) / max(z_top - lv["left_bottom"], 1.0), 0, 1) ** 0.6
        )
        frac = np.clip((X - lv["x_post"]) / np.maximum(reach - lv["x_post"], 1.0), 0, 1)
        hinge = (
            lv["hinge"]
            + lv["hinge_tilt"] * (X - lv["x_post"])
            + 6 * np.sin(X / 22 + lv["phase"][2])
        )
        left = (X < reach) & (Y > hinge) & (cav < lv["left_thick"] * (1 - frac) ** 0.7 + 5)
        mask = (cav > lv["gap"]) & (Z < dome - 2) & (right | left)
        cv.paint(sl, mask, hu["liver"], _LIVER, tex=4.0)

    # Gallbladder: a pear-shaped sac at the liver's inferior surface.
    if rng.random() < 0.8:
        c = np.array(
            [
                -rng.uniform(0.15, 0.35) * a,
                rng.uniform(0.15, 0.45) * body.half_ap_ant,
                lv["mid_z"] - rng.uniform(-5, 15),
            ]
        )
        fundus = c + np.array([rng.uniform(-10, 10), rng.uniform(0, 15), -rng.uniform(25, 45)])
        tube = _tube(
            cv,
            _spline([c, (c + fundus) / 2, fundus], 4),
            [rng.uniform(6, 9)] * 3 + [rng.uniform(12, 18)] * 4 + [rng.uniform(10, 16)],
        )
        bile = rng.uniform(0, 20)
        if tube is not None:
            mask = (tube.sdf < 0) & (cv.cav[tube.sl] > 2)
            cv.paint(tube.sl, mask, hu["mucosa"], _FLUID)
            cv.paint(tube.sl, mask & (tube.sdf < -2), bile, _FLUID)

    # Portal vein branches from the hilum; hepatic veins converge on the IVC under the dome.
    hilum = np.array([-rng.uniform(35, 55), rng.uniform(-5, 25), lv["mid_z"] + rng.uniform(15, 30)])
    plan.extra["liver_hilum"] = hilum
    branches = [
        (hilum, np.array([-0.65 * a, rng.uniform(-30, 10), hilum[2] + 10]), 6.0, 3.0),
        (hilum, np.array([0.0, 0.35 * body.half_ap_ant, hilum[2] + 15]), 5.0, 2.5),
    ]
    for _ in range(6):
        start = hilum + rng.uniform(0.2, 0.7) * (branches[rng.integers(0, 2)][1] - hilum)
        end = start + rng.normal(size=3) * np.array([25, 25, 15])
        branches.append((start, end, rng.uniform(2.5, 4), 1.5))
    ivc_top = np.array([plan.ivc[0], plan.ivc[1], plan.dome_r - rng.uniform(15, 30)])
    for target, r0 in (
        ((-0.75 * a, -0.2 * body.half_ap_post, -40), 6.5),
        ((-0.3 * a, 0.45 * body.half_ap_ant, -45), 5.5),
        ((0.0, 0.5 * body.half_ap_ant, -30), 5.0),
    ):
        end = np.array([target[0], target[1], ivc_top[2] + target[2]]) + rng.normal(size=3) * 8
        branches.append((ivc_top, end, r0, 2.0))
    for start, end, r0, r1 in branches:
        mid = (start + end) / 2 + rng.normal(size=3) * 6
        tube = _tube(cv, _spline([start, mid, end], 4), np.linspace(r0, r1, 9))
        if tube is not None:
            mask = (tube.sdf < 0) & (cv.tissue[tube.sl] == _LIVER)
            cv.paint(tube.sl, mask, hu["portal"], _VESSEL)


def _draw_stomach(cv: _Canvas, plan: _Plan, rng) -> None:
    """J-shaped stomach from the fundus (beside the spleen) to the pylorus, then the
    duodenal C-loop. Distension varies from collapsed (thick wall) to gas/fluid filled."""
    body, hu, sp = plan.body, plan.hu, plan.spleen
    dist = rng.uniform(0, 1)
    rf, rb, ra = 18 + 24 * dist, 14 + 18 * dist, 11 + 9 * dist
    th0 = sp["theta"] / _DEG
    z_f = plan.dome_l - 0.6 * rf  # the fundus fills the left dome (clipped below it)
    z_a = rng.uniform(-25, 5)
    ctrl = [
        body.point(th0 + rng.uniform(15, 35), sp["thick"] * 0.6 + rf, z_f),
        body.point(rng.uniform(25, 45), rb + rng.uniform(5, 25), (z_f + z_a) / 2 + 10),
        body.point(rng.uniform(60, 80), rb + rng.uniform(10, 30), z_a + 10),
        body.point(rng.uniform(95, 115), ra + rng.uniform(15, 45), z_a),
        body.point(rng.uniform(125, 140), 8 + rng.uniform(30, 55), z_a + rng.uniform(0, 12)),
    ]
    radii = [rf, rb, (rb + ra) / 2, ra, 8]
    wall_t = 3 + 7 * (1 - dist) + rng.uniform(-1, 1)
    food = rng.random() < 0.4
    content = hu["fluid"] + rng.uniform(0, 20)
    gas_frac = rng.uniform(0, 0.6)
    path = _spline(ctrl, 6)
    rad = np.interp(np.linspace(0, len(ctrl) - 1, len(path)), np.arange(len(ctrl)), radii)
    tex_seed = rng.integers(0, 2**31)
    tube = _tube(cv, path, rad)
    if tube is not None:
        X, Y, Z = cv.coords(tube.sl)
        dome = plan.dome(X[..., 0], Y[..., 0])[..., None]
        mask = (tube.sdf < 0) & (cv.cav[tube.sl] > 1) & (Z < dome - 3)
        if food:
            ax = [a[s] for a, s in zip(cv.axes, tube.sl, strict=True)]
            content = content + 15 * _smooth_field(np.random.default_rng(tex_seed), ax, 8.0)
        # One horizontal (coronal) air-fluid level for the whole stomach.
        y_top = float(np.max(path[:, 1] + rad))
        y_bottom = float(np.min(path[:, 1] - rad))
        gas = Y > y_top - gas_frac * (y_top - y_bottom)
        _paint_viscus(
            cv, tube, mask, wall_t, hu["stomach_wall"], content, gas, _STOMACH, hu["mucosa"]
        )

    # Duodenum around the pancreatic head.
    v, ao = plan.vert, plan.aorta
    head = plan.extra["pancreas_head"]
    rd = rng.uniform(8, 12)
    ctrl = [
        ctrl[-1],
        (head[0] - 25, head[1] + 10, head[2] + 8),
        (head[0] - 28, head[1] - 5, head[2] - 25),
        (head[0] - 10, v["y"] + v["b"] + 2 * ao[2] + 5, head[2] - 50),
        (ao[0] + 25, v["y"] + v["b"] + 2 * ao[2] + 10, head[2] - 40),
    ]
    gas_frac = rng.uniform(-0.2, 0.5)
    tube = _tube(cv, _spline(ctrl, 5), rd)
    if tube is not None:
        mask = (tube.sdf < 0) & (cv.cav[tube.sl] > 1)
        gas = _gas_above_level(tube, rd, gas_frac)
        _paint_viscus(cv, tube, mask, 2.5, hu["bowel_wall"], hu["fluid"], gas, _BOWEL)


def _plan_pancreas(plan: _Plan, rng) -> None:
    """Pancreas centreline from the head (right of the SMV) to the tail at the splenic
    hilum; stored in the plan because the duodenum and vessels follow it."""
    v, ao, hil = plan.vert, plan.aorta, plan.spleen["hilum"]
    y0 = v["y"] + v["b"] + 2 * ao[2]
    z_head = rng.uniform(-35, -10)
    head = np.array([-rng.uniform(25, 40), y0 + rng.uniform(15, 25), z_head])
    neck = np.array([rng.uniform(-8, 4), y0 + rng.uniform(22, 32), z_head + rng.uniform(5, 15)])
    body_pt = np.array([0.35 * hil[0] + 10, y0 + rng.uniform(10, 25), (z_head + hil[2]) / 2 + 5])
    tail = hil + (body_pt - hil) * rng.uniform(0.1, 0.25)
    plan.extra["pancreas_head"] = head
    plan.extra["pancreas"] = _spline([head, neck, body_pt, tail], 6)
    plan.extra["pancreas_r"] = (
        rng.uniform(14, 20),
        rng.uniform(8, 11),
        rng.uniform(9, 13),
        rng.uniform(8, 12),
    )
    plan.extra["pancreas_lobes"] = (rng.uniform(0.8, 2.5), rng.uniform(0, 2 * np.pi))


def _draw_pancreas_and_vessels(cv: _Canvas, plan: _Plan, rng) -> None:
    """Pancreas, then the great vessels, portal venous system and splenic vessels."""
    hu, v = plan.hu, plan.vert
    path = plan.extra["pancreas"]
    r = np.interp(np.linspace(0, 3, len(path)), np.arange(4), plan.extra["pancreas_r"])
    amp, ph = plan.extra["pancreas_lobes"]
    tube = _tube(cv, path, r)
    if tube is not None:
        lobulated = tube.sdf + amp * np.sin(tube.arc / 7.0 + ph)
        cv.paint(
            tube.sl, (lobulated < 0) & (cv.cav[tube.sl] > 1), hu["pancreas"], _PANCREAS, tex=3.0
        )

    # Aorta and IVC run the full length; the IVC joins the right atrium above the dome.
    ax_, ay, r_ao = plan.aorta
    tube = _tube(cv, [(ax_ + 4, ay + 3, -250), (ax_, ay, 0), (ax_ - 2, ay - 6, 250)], r_ao)
    calcified = rng.random() < 0.3
    if tube is not None:
        cv.paint(tube.sl, tube.sdf < 0, hu["aorta"], _VESSEL)
        if calcified:
            X, Y, Z = cv.coords(tube.sl)
            spots = (tube.sdf > -1.5) & (np.sin(Z / 9.0 + np.arctan2(Y - ay, X - ax_) * 3) > 0.9)
            cv.paint(tube.sl, (tube.sdf < 0) & spots, hu["bone"], _VESSEL)
    ix, iy, ia, ib = plan.ivc
    sl = cv.box((ix - ia, iy - ib, -250), (ix + ia, iy + ib, plan.dome_r + 10))
    if sl is not None:
        X, Y, Z = cv.coords(sl)
        cv.paint(sl, ((X - ix) / ia) ** 2 + ((Y - iy) / ib) ** 2 < 1, hu["ivc"], _VESSEL)

    # Portal vein from the confluence behind the pancreatic neck to the liver hilum,
    # SMV and SMA running down into the mesentery, splenic vein and artery to the spleen.
    neck = path[len(path) // 3]
    conf = neck + np.array([0, -plan.extra["pancreas_r"][1] - 3, 0])
    hilum = plan.extra["liver_hilum"]
    vessels = [
        ([conf, (conf + hilum) / 2 + rng.normal(size=3) * 5, hilum], rng.uniform(6, 8), "portal"),
        ([conf, conf + (5, 10, -40), conf + (8, 25, -120)], rng.uniform(4.5, 6), "portal"),
        (
            [
                (ax_, ay + r_ao - 3, conf[2] + 15),
                (ax_ + 2, ay + r_ao + 15, conf[2]),
                (ax_ + 6, ay + r_ao + 28, conf[2] - 40),
                (ax_ + 12, ay + 45, conf[2] - 120),
            ],
            rng.uniform(3, 4.5),
            "aorta",
        ),
    ]
    r_p = plan.extra["pancreas_r"]
    behind = path[len(path) // 3 :] - np.array([0, 1, 0]) * (np.mean(r_p[1:]) + 2)
    sv = np.vstack([conf, behind, plan.spleen["hilum"]])
    vessels.append((sv[:: max(1, len(sv) // 8)].tolist() + [sv[-1]], rng.uniform(4, 5.5), "portal"))
    sa = path[len(path) // 3 :] + np.array([0, 0, 1]) * (np.mean(r_p[1:]) + 4)
    sa = sa + np.outer(np.sin(np.linspace(0, rng.uniform(8, 14), len(sa))), [0, 6, 0])
    vessels.append(
        (np.vstack([(ax_, ay + r_ao - 2, sa[0, 2]), sa]), rng.uniform(2.5, 3.5), "aorta")
    )
    for pts, rv, kind in vessels:
        tube = _tube(cv, pts, rv)
        if tube is not None:
            mask = (tube.sdf < 0) & (cv.cav[tube.sl] > -2)
            cv.paint(tube.sl, mask, hu[kind], _VESSEL, keep=(_BONE,))

    # Psoas muscles beside the lumbar spine, growing caudally; crura around the aorta.
    z_top = rng.uniform(-10, 20)
    r_max = rng.uniform(16, 26)
    sl = cv.box(
        (-v["a"] - 2 * r_max - 10, v["y"] - 2 * r_max, -250),
        (v["a"] + 2 * r_max + 10, v["y"] + 2 * r_max, z_top),
    )
    if sl is not None:
        X, Y, Z = cv.coords(sl)
        rz = r_max * np.clip((z_top - Z) / 80.0, 0, 1) ** 0.6
        for side in (-1, 1):
            cx = side * (v["a"] + 0.8 * rz + 2)
            mask = ((X - cx) / np.maximum(rz, 1e-3)) ** 2 + (
                (Y - v["y"] - 0.1 * rz) / np.maximum(0.85 * rz, 1e-3)
            ) ** 2 < 1
            cv.paint(sl, mask, hu["muscle"], _MUSCLE, keep=(_BONE, _VESSEL))
    for side in (-1, 1):
        pts = [
            (side * (v["a"] - 4), v["y"] - 2, -20),
            (side * (r_ao + 4) + ax_, ay + 2, 0),
            (side * (r_ao + 6) + ax_, ay + 8, plan.dome_l - 10),
        ]
        tube = _tube(cv, pts, rng.uniform(3, 5))
        if tube is not None:
            cv.paint(tube.sl, tube.sdf < 0, hu["muscle"], _MUSCLE, keep=(_BONE, _VESSEL))


def _draw_spleen(cv: _Canvas, plan: _Plan) -> None:
    """Spleen: a crescent band along the postero-lateral wall of the left upper quadrant,
    tapering towards both poles, its lower pole swinging anteriorly, under the left dome."""
    sp, body = plan.spleen, plan.body
    half = sp["length"] / 2
    sl = cv.box(
        (-10, -body.half_ap_post - 5, sp["zc"] - half - 2),
        (body.half_width + 30, body.half_ap_ant, sp["zc"] + half + 2),
    )
    if sl is None:
        return
    X, Y, Z = cv.coords(sl)
    th = cv.theta[sl[0], sl[1]][..., None]
    prof = np.clip(1 - ((Z - sp["zc"]) / half) ** 2, 0, 1)
    centre = sp["theta"] + sp["tilt"] * (sp["zc"] - Z)
    width = sp["width"] * (0.4 + 0.6 * np.sqrt(prof))
    u = (th - centre) / width
    lobes = 1 + sp["lobes"] * np.sin(2.5 * np.pi * u + sp["lobe_phase"][0]) * np.cos(
        Z / 30 + sp["lobe_phase"][1]
    )
    thick = sp["thick"] * np.clip(1 - u * u, 0, 1) ** 0.5 * prof**0.35 * lobes
    cav = cv.cav[sl]
    dome = plan.dome(X[..., 0], Y[..., 0])[..., None]
    mask = (cav > sp["gap"]) & (cav < sp["gap"] + thick) & (Z < dome - 3)
    # The spleen lies lateral to the left kidney, not behind it: where the kidney is, the
    # posterior space medial to its lateral border is left to the kidney and its fat.
    kid = next(k for k in plan.kidneys if k["side"] > 0)
    kx, ky, rx, ry = _kidney_section(kid, Z)
    rx, ry = rx + kid["halo"] + 4, ry + kid["halo"] + 4
    behind = (rx > kid["halo"] + 4) & (((X - kx) / rx) ** 2 + ((Y - ky + ry) / (2 * ry)) ** 2 < 1)
    behind |= X < plan.vert["a"] + 25  # nor in the paravertebral gutter
    cv.paint(sl, mask & ~behind, plan.hu["spleen"], _SPLEEN, tex=3.0)


def _kidney_section(k: dict, z):
    """Centre (x, y) and half-extents along x and y (mm) of a kidney's cross-section at
    height ``z``; half-extents are 0 outside the kidney."""
    w = z - k["centre"][2]
    scale = np.sqrt(np.clip(1 - (w / k["c"]) ** 2, 0, 1))
    ux, uy = k["side"] * np.cos(k["alpha"]), np.sin(k["alpha"])
    vx, vy = -k["side"] * np.sin(k["alpha"]), np.cos(k["alpha"])
    rx = scale * np.hypot(k["a"] * ux, k["b"] * vx)
    ry = scale * np.hypot(k["a"] * uy, k["b"] * vy)
    cx = k["centre"][0] - k["side"] * k["tilt"] * w
    cy = k["centre"][1] - 0.1 * w
    return cx, cy, rx, ry


def _draw_kidneys(cv: _Canvas, plan: _Plan, rng) -> None:
    """Both kidneys in perirenal fat: cortex, medullary pyramids, sinus fat and pelvis,
    hilum facing antero-medially, renal veins draining into the IVC."""
    hu = plan.hu
    for k in plan.kidneys:
        s, a, b, c = k["side"], k["a"], k["b"], k["c"]
        ux, uy = s * np.cos(k["alpha"]), np.sin(k["alpha"])  # long in-plane axis
        vx, vy = -s * np.sin(k["alpha"]), np.cos(k["alpha"])  # towards the hilum
        cz = k["centre"][2]
        cx, cy = k["centre"][:2]
        pyramids, ph = int(rng.integers(5, 9)), rng.uniform(0, 2 * np.pi)
        cortex_t = rng.uniform(5, 8)
        ext = a + k["halo"] + k["tilt"] * c + 2
        sl = cv.box(
            (cx - ext, cy - ext, cz - c - k["halo"]), (cx + ext, cy + ext, cz + c + k["halo"])
        )
        if sl is not None:
            X, Y, Z = cv.coords(sl)
            w = Z - cz
            kx, ky, _, _ = _kidney_section(k, Z)  # upper pole tilted medially
            dx, dy = X - kx, Y - ky
            u, v = dx * ux + dy * uy, dx * vx + dy * vy
            inside = cv.cav[sl] > -1
            halo = (
                (u / (a + k["halo"])) ** 2 + (v / (b + k["halo"])) ** 2 + (w / (c + k["halo"])) ** 2
            )
            cv.paint(
                sl, inside & (halo < 1), hu["fat"], _FAT, keep=(_BONE, _VESSEL, _MUSCLE, _SPLEEN)
            )
            un, vn, wn = u / a, v / b, w / c
            q = np.sqrt(un**2 + vn**2 + wn**2)
            kidney = inside & (q < 1) & ~((vn > 0.55) & (np.abs(un) < 0.4) & (np.abs(wn) < 0.45))
            cv.paint(sl, kidney, hu["cortex"], _KIDNEY, keep=(_BONE, _VESSEL))
            ang = np.arctan2(vn, un)
            medulla = (
                kidney
                & (q > 0.4)
                & (q < 1 - cortex_t / b)
                & (np.cos(pyramids * ang + 2.5 * wn + ph) > -0.2)
            )
            cv.paint(sl, medulla, hu["medulla"], _KIDNEY)
            sinus = kidney & (vn > 0.15) & (q < 0.65) & (np.abs(wn) < 0.45)
            cv.paint(sl, sinus, hu["fat"], _FAT)
            pelvis = sinus & (vn > 0.25) & (q < 0.55) & (np.abs(wn) < 0.35)
            cv.paint(sl, pelvis, hu["fluid"], _FLUID)
        # Renal vein: the left one crosses in front of the aorta.
        hil = np.array([cx + vx * b, cy + vy * b, cz])
        ix, iy = plan.ivc[:2]
        ax_, ay, r_ao = plan.aorta
        if s > 0:
            pts = [hil, (ax_ + r_ao, ay + r_ao + 6, cz + 5), (ix, iy, cz + 8)]
        else:
            pts = [hil, ((hil[0] + ix) / 2, (hil[1] + iy) / 2, cz + 4), (ix, iy, cz + 6)]
        tube = _tube(cv, pts, rng.uniform(4, 6))
        if tube is not None:
            cv.paint(
                tube.sl,
                (tube.sdf < 0) & (cv.cav[tube.sl] > -1),
                hu["portal"],
                _VESSEL,
                keep=(_BONE, _KIDNEY),
            )


def _draw_thorax(cv: _Canvas, plan: _Plan, rng) -> None:
    """Diaphragm, lung bases in the costophrenic recesses, and the heart on the tendon."""
    hu, body, v = plan.hu, plan.body, plan.vert
    t_d = rng.uniform(2, 4)
    semi = np.array([rng.uniform(55, 65), rng.uniform(40, 50), rng.uniform(45, 55)])
    ax_, ay, r_ao = plan.aorta
    hc = np.array(
        [
            0.12 * body.half_width,
            ay + r_ao + semi[1] + rng.uniform(2, 10),
            min(plan.dome_r, plan.dome_l) + rng.uniform(25, 45),
        ]
    )
    sl = cv.box((-400, -400, min(plan.dome_r, plan.dome_l) - 150), (400, 400, 400))
    if sl is None:
        return
    X, Y, Z = cv.coords(sl)
    dome = plan.dome(X[..., 0], Y[..., 0])[..., None]
    cav = cv.cav[sl]
    above = (cav > 0) & (Z > dome)
    cv.paint(sl, above, hu["muscle"], _MUSCLE, keep=(_BONE,))
    chest = above & (Z > dome + t_d)
    mediastinum = (np.abs(X - ax_) < 20 + 0.3 * np.maximum(Y - v["y"], 0)) & (Y > v["y"] - v["b"])
    lung = chest & (cav > 2) & ~mediastinum
    cv.paint(sl, chest & ~lung, hu["fat"], _FAT, keep=(_BONE, _VESSEL))
    cv.paint(sl, lung, hu["lung"], _LUNG)
    # Heart: pericardial fat, myocardium and blood pool resting on the central tendon.
    q = np.sqrt(
        ((X - hc[0]) / semi[0]) ** 2 + ((Y - hc[1]) / semi[1]) ** 2 + ((Z - hc[2]) / semi[2]) ** 2
    )
    keep = (_BONE, _VESSEL)
    cv.paint(sl, chest & (q < 1 + 6 / semi.min()), hu["fat"], _FAT, keep=keep)
    cv.paint(sl, chest & (q < 1), hu["myocardium"], _HEART, keep=keep)
    cv.paint(sl, chest & (q < 1 - 10 / semi.min()), hu["aorta"], _HEART, keep=keep)


def _draw_spine(cv: _Canvas, plan: _Plan) -> None:
    """Paraspinal muscles, then vertebral bodies (cortex, cancellous core) with discs,
    canal, arch, spinous and transverse processes."""
    v, hu = plan.vert, plan.hu
    yb = v["y"] - v["b"] - 2 - v["canal"]  # canal centre
    ex, ey_extra = v["erector"]
    ey = (yb - v["back"]) / 2 + 4 + ey_extra
    sl = cv.box((-2 * ex - 50, v["back"] - 5, -400), (2 * ex + 50, v["y"] + v["b"] + 3, 400))
    if sl is None:
        return
    X, Y, Z = cv.coords(sl)
    for side in (-1, 1):
        erector = ((X - side * (ex + 3)) / ex) ** 2 + ((Y - v["back"] - ey + 6) / ey) ** 2 < 1
        cv.paint(sl, erector & (cv.tissue[sl] != _AIR), hu["muscle"], _MUSCLE)
    dz = np.abs((Z - v["phase"] + v["period"] / 2) % v["period"] - v["period"] / 2)
    disc = dz < v["disc"] / 2
    mid = dz > v["period"] * 0.3  # middle of a vertebra: pedicles, transverse processes
    qb = (X / v["a"]) ** 2 + ((Y - v["y"]) / v["b"]) ** 2
    cv.paint(sl, qb < 1, hu["bone"], _BONE)
    cancellous = (qb < (1 - 3 / v["b"]) ** 2) & (dz > v["disc"] / 2 + 2)
    cv.paint(sl, cancellous, hu["cancellous"], _BONE, tex=25.0)
    cv.paint(sl, (qb < 1.03) & disc, hu["muscle"] + 35, _SKIN)
    rr = np.sqrt(X**2 + (Y - yb) ** 2)
    rc = v["canal"]
    arch = ~disc & (rr > rc) & (rr < rc + 5) & ((Y < yb + 2) | mid)
    pedicle = mid & (np.abs(X) > rc - 2) & (np.abs(X) < rc + 6) & (Y > yb) & (Y < v["y"])
    spinous = ~disc & (np.abs(X) < 3.5) & (Y < yb - rc) & (Y > v["back"] + 4)
    lumbar = Z < plan.dome_l - 60
    transverse = mid & lumbar & (np.abs(X) > rc) & (np.abs(X) < rc + 30) & (np.abs(Y - yb - 4) < 3)
    cv.paint(sl, arch | pedicle | spinous | transverse, hu["bone"] * 0.85, _BONE)
    cv.paint(sl, rr < rc, hu["fluid"] + 10, _FLUID)


def _draw_ribs(cv: _Canvas, plan: _Plan, rng) -> None:
    """Ribs as oblique bony bands near the inner wall, nearly horizontal at the spine and
    descending ever more steeply towards the front, so that each axial slice cuts several
    short arcs; costal cartilage continues the upper ones anteriorly."""
    hu = plan.hu
    period = rng.uniform(24, 30)  # mm between ribs at the spine
    c1, c2 = rng.uniform(0.1, 0.25), rng.uniform(0.35, 0.55)  # z drop: c1 phi + c2 phi^2/180
    z12 = plan.dome_r - rng.uniform(85, 110)  # 12th rib at the spine
    height, depth, thick = rng.uniform(8, 11), rng.uniform(2, 5), rng.uniform(6, 8)
    ends = {12: rng.uniform(60, 85), 11: rng.uniform(95, 115)}
    band = (cv.cav < -depth) & (cv.cav > -depth - thick) & (cv.axes[2][None, None, :] > z12 - 130)
    idx = np.nonzero(band)
    if idx[0].size == 0:
        return
    x, y, z = cv.axes[0][idx[0]], cv.axes[1][idx[1]], cv.axes[2][idx[2]]
    bone = np.zeros(x.shape, bool)
    cartilage = np.zeros(x.shape, bool)
    for side in (-1, 1):
        phi = (np.arctan2(y, side * x) / _DEG) + 90.0  # 0 at the spine, 180 at the sternum
        for rib, end in ((12, ends[12]), (11, ends[11])) + tuple((r, 140.0) for r in range(5, 11)):
            # Past the bony end the costal cartilage turns upwards to the sternum.
            along = np.where(phi > end, end - 0.8 * (phi - end), phi)
            zeta = z + c1 * along + c2 * along * along / 180.0 - z12 - (12 - rib) * period
            on = (np.abs(zeta) < height / 2) & (phi > 35)
            bone |= on & (phi < end)
            cartilage |= on & (rib <= 10) & (phi >= end) & (phi < 172)
    cv.hu[tuple(i[bone] for i in idx)] = hu["bone"] * 0.8
    cv.tissue[tuple(i[bone] for i in idx)] = _BONE
    cv.hu[tuple(i[cartilage] for i in idx)] = hu["muscle"] + 90
    cv.tissue[tuple(i[cartilage] for i in idx)] = _BONE


def _draw_table(cv: _Canvas, plan: _Plan, rng) -> None:
    """Curved carbon-fibre CT table below the patient: two thin shells over foam."""
    y0 = -plan.body.half_ap_post - rng.uniform(3, 15)
    shell_hu = rng.uniform(80, 250)
    sl = cv.box((-250, y0 - 60, -400), (250, y0 + 30, 400))
    if sl is None:
        return
    X, Y, _ = cv.coords(sl)
    top = y0 + X**2 / 1400.0
    d = top - Y
    body = cv.tissue[sl] != _AIR
    cv.paint(sl, ~body & (d > 0) & (d < 30) & (np.abs(X) < 220), -950.0, _TABLE)
    shell = (d > 0) & ((d < 3) | ((d > 27) & (d < 30))) & (np.abs(X) < 220)
    cv.paint(sl, ~body & shell, shell_hu, _TABLE)


def _finalise(cv: _Canvas, spacing, rng) -> np.ndarray:
    """Bias field, partial-volume blur, correlated noise; clipped int16 HU."""
    inhom_amp, blur_mm = rng.uniform(0, 8), rng.uniform(0.8, 1.6)
    sigma, inhom_seed = rng.uniform(8, 20), rng.integers(0, 2**31)
    hu = cv.hu
    if inhom_amp > 0:
        bias = _smooth_field(np.random.default_rng(inhom_seed), cv.axes, 250.0, 3)
        hu += np.where(cv.tissue != _AIR, np.float32(inhom_amp) * bias, np.float32(0))
    # In-plane blur of the reconstruction kernel; along z the slice sensitivity profile.
    sigmas = (blur_mm, blur_mm, 0.4 * spacing[2])
    for axis, s in enumerate(sigmas):
        hu = _convolve_axis(hu, _gauss_kernel(s / spacing[axis]), axis)
    # CT noise is spatially correlated in-plane; this kernel halves the white-noise std.
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    k = np.array([1, 4, 1], np.float32) / 6
    for axis in (0, 1):
        noise = _convolve_axis(noise, k, axis)
    hu += np.float32(2.0 * sigma) * noise
    return np.clip(np.rint(hu), _HU_MIN, _HU_MAX).astype(np.int16)


def generate_patient(
    seed: int,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (image_hu int16 array of `shape` (X, Y, Z), spleen label uint8 array of `shape`).

    The anatomy depends on ``seed`` only; ``shape`` and ``spacing`` (mm, x y z) set the
    sampling grid, centred on the body. Only the noise realisation depends on the grid.
    """
    rng = np.random.default_rng(seed)
    plan = _make_plan(rng)
    _plan_pancreas(plan, rng)
    offset = (
        rng.uniform(-8, 8),
        (plan.body.half_ap_ant - plan.body.half_ap_post) / 2 + rng.uniform(-8, 8),
        -plan.z_shift,
    )
    cv = _Canvas(shape, spacing, offset)
    cv.texture = _smooth_field(rng, cv.axes, 25.0)
    _draw_body_wall(cv, plan)
    _draw_bowel(cv, plan, rng)
    _draw_liver(cv, plan, rng)
    _draw_stomach(cv, plan, rng)
    _draw_pancreas_and_vessels(cv, plan, rng)
    _draw_spleen(cv, plan)
    _draw_kidneys(cv, plan, rng)
    _draw_thorax(cv, plan, rng)
    _draw_spine(cv, plan)
    _draw_ribs(cv, plan, rng)
    _draw_table(cv, plan, rng)
    label = (cv.tissue == _SPLEEN).astype(np.uint8)
    image = _finalise(cv, spacing, rng)
    return image, label


def patient_seed(seed: int, index: int) -> int:
    """The ``generate_patient`` seed of patient ``index`` of a dataset with seed ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _save_nifti(array: np.ndarray, spacing, path: Path) -> None:
    """Write a NIfTI file under a temporary name in the same folder, then rename it."""
    affine = np.diag([float(s) for s in spacing] + [1.0])
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def write_phantom_dataset(
    root: str | Path,
    num_patients: int,
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
) -> Path:
    """Write root/dataset.json, root/imagesTr/spleen_{i:03d}.nii.gz,
    root/labelsTr/spleen_{i:03d}.nii.gz; return root.

    Patient ``i`` is ``generate_patient(patient_seed(seed, i))``, so it does not depend on
    ``num_patients``. Every file is written under a temporary name and renamed,
    and dataset.json comes last, so an interrupted run leaves no truncated file behind.
    """
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(int(num_patients)):
        image, label = generate_patient(patient_seed(seed, i), shape, spacing)
        name = f"spleen_{i:03d}.nii.gz"
        _save_nifti(image, spacing, root / "imagesTr" / name)
        _save_nifti(label, spacing, root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    manifest = {
        "name": "Phantom spleen",
        "description": "Procedural abdominal CT phantoms (portal-venous phase like) with "
        "spleen labels, in the layout of MSD Task09_Spleen",
        "reference": "kdcore.data.phantom",
        "licence": "CC0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "spleen"},
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
    }
    write_text_atomic(root / "dataset.json", json.dumps(manifest, indent=4))
    return root

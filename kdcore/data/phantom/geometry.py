"""Geometry of the phantom: body contour, painting canvas, smooth random fields, splines
and tubes. All lengths are in millimetres in body-centred coordinates (x, y, z)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdcore.data.phantom.tissues import DEFAULT_ORGAN

DEG = np.pi / 180.0


@dataclass
class Body:
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
        th = th_deg * DEG
        rho = float(self.inner_radius(th, z)) - depth
        return np.array([rho * np.cos(th), rho * np.sin(th), z])

    def cavity_depth(self, p: np.ndarray) -> float:
        """How deep (mm) a point lies inside the abdominal cavity (negative: outside)."""
        th = float(np.arctan2(p[1], p[0]))
        return float(self.inner_radius(th, p[2])) - float(np.hypot(p[0], p[1]))


class Canvas:
    """HU volume, tissue map and organ label map being painted, with body-centred mm
    coordinates. ``z_axis`` (mm, increasing) replaces the regular z axis when given: the
    sub-slices a thick slice is averaged over."""

    def __init__(self, shape, spacing, offset, z_axis=None):
        self.axes = [
            ((np.arange(n) - (n - 1) / 2.0) * s - o).astype(np.float32)
            for n, s, o in zip(shape, spacing, offset, strict=True)
        ]
        if z_axis is not None:
            self.axes[2] = np.asarray(z_axis, np.float32)
        self.shape = tuple(len(ax) for ax in self.axes)
        self.hu = np.full(self.shape, -1000.0, np.float32)
        self.tissue = np.zeros(self.shape, np.uint8)
        self.organ = np.zeros(self.shape, np.uint8)
        x, y = self.axes[0][:, None], self.axes[1][None, :]
        self.theta = np.arctan2(y, x).astype(np.float32)  # (nx, ny)
        self.rho = np.hypot(x, y).astype(np.float32)
        self.cav = None  # depth inside the abdominal cavity, set by draw_body_wall
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

    def paint(self, sl, mask, value, tissue, tex=0.0, keep=(), organ=None):
        """Set HU ``value`` (scalar or broadcastable array), ``tissue`` and its organ label
        (``organ``, else the tissue's default) where ``mask``.

        ``tex`` adds that many HU of the smooth parenchymal texture; tissues in ``keep``
        are not overwritten. The organ map never feeds back into the image.
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
        self.organ[sl][mask] = DEFAULT_ORGAN.get(tissue, 0) if organ is None else organ


def smooth_field(rng, axes, wavelength: float, n_terms: int = 6) -> np.ndarray:
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


def spline(ctrl, n: int = 6) -> np.ndarray:
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
class Tube:
    """Approximate signed distance to a tube, sampled on a box of the canvas."""

    sl: tuple
    sdf: np.ndarray  # mm, negative inside
    arc: np.ndarray  # arc length (mm) of the nearest centreline point
    dy: np.ndarray  # y offset (mm) from the nearest centreline point


def sample_tube(cv: Canvas, pts, radii) -> Tube | None:
    """Tube along the polyline ``pts`` (n, 3); ``radii`` is a scalar or radii at evenly
    spaced stations along it, interpolated linearly. None if it misses the canvas.

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
    arc = np.zeros(size, np.float32)
    tube = Tube(outer, np.full(size, np.inf, np.float32), arc, np.zeros_like(arc))
    seg = np.diff(pts, axis=0)
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(seg, axis=1))])
    for k in range(len(seg)):
        _add_segment(cv, tube, pts[k], seg[k], float(radii[k]), float(radii[k + 1]), cum[k])
    return tube


def _add_segment(cv: Canvas, tube: Tube, a, d, ra: float, rb: float, arc0: float) -> None:
    """Merge the cone segment from ``a`` to ``a + d`` (radii ``ra`` to ``rb``, starting at
    arc length ``arc0``) into ``tube``, keeping the nearest surface at every voxel."""
    r = max(ra, rb) + 1.0
    sl = cv.box(np.minimum(a, a + d) - r, np.maximum(a, a + d) + r)
    if sl is None:
        return
    X, Y, Z = cv.coords(sl)
    dx, dy, dz = X - float(a[0]), Y - float(a[1]), Z - float(a[2])
    d0, d1, d2 = (float(v) for v in d)
    length2 = max(d0 * d0 + d1 * d1 + d2 * d2, 1e-6)
    t = np.clip((dx * d0 + dy * d1 + dz * d2) / length2, 0.0, 1.0)
    ey = dy - t * d1
    dist = np.sqrt((dx - t * d0) ** 2 + ey * ey + (dz - t * d2) ** 2)
    val = dist - (ra + t * (rb - ra))
    loc = tuple(
        slice(s.start - o.start, s.stop - o.start) for s, o in zip(sl, tube.sl, strict=True)
    )
    cur = tube.sdf[loc]
    better = val < cur
    cur[better] = val[better]
    tube.arc[loc][better] = (arc0 + t * np.sqrt(length2))[better]
    tube.dy[loc][better] = np.broadcast_to(ey, better.shape)[better]

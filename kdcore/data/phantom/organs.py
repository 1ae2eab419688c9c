"""Solid and hollow organs of the upper abdomen: liver (with gallbladder, portal and
hepatic veins), stomach and duodenum, pancreas, spleen and kidneys."""

from __future__ import annotations

import numpy as np

from kdcore.data.phantom import labels
from kdcore.data.phantom.appearance import CYST_HU, METASTASIS_FACTOR, Look
from kdcore.data.phantom.bowel import gas_above_level, paint_viscus
from kdcore.data.phantom.geometry import DEG, Canvas, sample_tube, smooth_field, spline
from kdcore.data.phantom.plan import Plan
from kdcore.data.phantom.tissues import (
    BONE,
    BOWEL,
    FAT,
    FLUID,
    KIDNEY,
    LIVER,
    MUSCLE,
    PANCREAS,
    SPLEEN,
    STOMACH,
    VESSEL,
)

# --------------------------------------------------------------------------------------
# Liver
# --------------------------------------------------------------------------------------


def draw_liver(cv: Canvas, plan: Plan, rng: np.random.Generator) -> None:
    """Liver hugging the right wall under the dome, left lobe across the midline,
    gallbladder on its inferior surface, portal and hepatic veins inside.

    Records the liver hilum in ``plan.extra`` for the portal vein.
    """
    _draw_liver_parenchyma(cv, plan)
    _draw_gallbladder(cv, plan, rng)
    _draw_liver_veins(cv, plan, rng)


def _draw_liver_parenchyma(cv: Canvas, plan: Plan) -> None:
    """Right lobe against the right wall plus the left lobe wedge, under the dome."""
    lv, body = plan.liver, plan.body
    a = body.half_width
    sl = cv.box(
        (-a - 10, -body.half_ap_post - 10, lv["tip_z"] - 5),
        (a + 10, body.half_ap_ant + 10, plan.dome_r + 5),
    )
    if sl is None:
        return
    X, Y, Z = cv.coords(sl)
    cav = cv.cav[sl]
    dome = plan.dome(X[..., 0], Y[..., 0])[..., None]
    right = _right_lobe(lv, a, X, Y, Z)
    left = _left_lobe(lv, plan.dome_r, X, Y, Z, cav)
    mask = (cav > lv["gap"]) & (Z < dome - 2) & (right | left)
    cv.paint(sl, mask, plan.hu["liver"], LIVER, tex=4.0)


def _right_lobe(lv: dict, a: float, X, Y, Z) -> np.ndarray:
    """Right lobe: everything right of an undulating medial border."""
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
    return X < x_right + wobble


def _left_lobe(lv: dict, dome_r: float, X, Y, Z, cav) -> np.ndarray:
    """The left lobe: a wedge under the anterior wall that thins towards its tip."""
    z_top = dome_r - 10
    reach = (
        lv["x_post"]
        + (lv["left_reach"] - lv["x_post"])
        * np.clip((Z - lv["left_bottom"]) / max(z_top - lv["left_bottom"], 1.0), 0, 1) ** 0.6
    )
    frac = np.clip((X - lv["x_post"]) / np.maximum(reach - lv["x_post"], 1.0), 0, 1)
    # Posterior limit of the left lobe: a tilted, wavy coronal plane.
    hinge = (
        lv["hinge"] + lv["hinge_tilt"] * (X - lv["x_post"]) + 6 * np.sin(X / 22 + lv["phase"][2])
    )
    return (X < reach) & (Y > hinge) & (cav < lv["left_thick"] * (1 - frac) ** 0.7 + 5)


def _draw_gallbladder(cv: Canvas, plan: Plan, rng) -> None:
    """Gallbladder (in 80 % of patients): a pear-shaped sac at the liver's inferior surface."""
    if rng.random() >= 0.8:
        return
    a, b = plan.body.half_width, plan.body.half_ap_ant
    c = np.array(
        [
            -rng.uniform(0.15, 0.35) * a,
            rng.uniform(0.15, 0.45) * b,
            plan.liver["mid_z"] - rng.uniform(-5, 15),
        ]
    )
    fundus = c + np.array([rng.uniform(-10, 10), rng.uniform(0, 15), -rng.uniform(25, 45)])
    tube = sample_tube(
        cv,
        spline([c, (c + fundus) / 2, fundus], 4),
        [rng.uniform(6, 9)] * 3 + [rng.uniform(12, 18)] * 4 + [rng.uniform(10, 16)],
    )
    bile = rng.uniform(0, 20)
    if tube is not None:
        mask = (tube.sdf < 0) & (cv.cav[tube.sl] > 2)
        cv.paint(tube.sl, mask, plan.hu["mucosa"], FLUID, organ=labels.GALLBLADDER)
        cv.paint(tube.sl, mask & (tube.sdf < -2), bile, FLUID, organ=labels.GALLBLADDER)


def _draw_liver_veins(cv: Canvas, plan: Plan, rng) -> None:
    """Portal vein branches from the hilum; hepatic veins converge on the IVC under the
    dome. Only voxels already painted as liver are changed."""
    a, body = plan.body.half_width, plan.body
    hilum = np.array(
        [-rng.uniform(35, 55), rng.uniform(-5, 25), plan.liver["mid_z"] + rng.uniform(15, 30)]
    )
    plan.extra["liver_hilum"] = hilum
    branches = [
        (hilum, np.array([-0.65 * a, rng.uniform(-30, 10), hilum[2] + 10]), 6.0, 3.0),
        (hilum, np.array([0.0, 0.35 * body.half_ap_ant, hilum[2] + 15]), 5.0, 2.5),
    ]
    for _ in range(6):  # smaller branches off the two main ones
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
        tube = sample_tube(cv, spline([start, mid, end], 4), np.linspace(r0, r1, 9))
        if tube is not None:
            mask = (tube.sdf < 0) & (cv.tissue[tube.sl] == LIVER)
            cv.paint(tube.sl, mask, plan.hu["portal"], VESSEL, organ=labels.LIVER)


# --------------------------------------------------------------------------------------
# Stomach and duodenum
# --------------------------------------------------------------------------------------


def draw_stomach(cv: Canvas, plan: Plan, rng: np.random.Generator) -> None:
    """J-shaped stomach from the fundus (beside the spleen) to the pylorus, then the
    duodenal C-loop. Distension varies from collapsed (thick wall) to gas/fluid filled."""
    pylorus = _draw_stomach_body(cv, plan, rng)
    _draw_duodenum(cv, plan, rng, pylorus)


def _stomach_path(plan: Plan, rng, dist: float) -> tuple[list, list]:
    """Control points and radii from the fundus to the pylorus, for distension ``dist``."""
    body, sp = plan.body, plan.spleen
    rf, rb, ra = 18 + 24 * dist, 14 + 18 * dist, 11 + 9 * dist
    th0 = sp["theta"] / DEG
    z_f = plan.dome_l - 0.6 * rf  # the fundus fills the left dome (clipped below it)
    z_a = rng.uniform(-25, 5)
    ctrl = [
        body.point(th0 + rng.uniform(15, 35), sp["thick"] * 0.6 + rf, z_f),
        body.point(rng.uniform(25, 45), rb + rng.uniform(5, 25), (z_f + z_a) / 2 + 10),
        body.point(rng.uniform(60, 80), rb + rng.uniform(10, 30), z_a + 10),
        body.point(rng.uniform(95, 115), ra + rng.uniform(15, 45), z_a),
        body.point(rng.uniform(125, 140), 8 + rng.uniform(30, 55), z_a + rng.uniform(0, 12)),
    ]
    return ctrl, [rf, rb, (rb + ra) / 2, ra, 8]


def _draw_stomach_body(cv: Canvas, plan: Plan, rng) -> np.ndarray:
    """The stomach with its rugal mucosa, content and gas; returns the pylorus point."""
    hu = plan.hu
    dist = rng.uniform(0, 1)
    ctrl, radii = _stomach_path(plan, rng, dist)
    wall_t = 3 + 7 * (1 - dist) + rng.uniform(-1, 1)
    food = rng.random() < 0.4
    content = hu["fluid"] + rng.uniform(0, 20)
    gas_frac = rng.uniform(0, 0.6)
    path = spline(ctrl, 6)
    rad = np.interp(np.linspace(0, len(ctrl) - 1, len(path)), np.arange(len(ctrl)), radii)
    tex_seed = rng.integers(0, 2**31)
    tube = sample_tube(cv, path, rad)
    if tube is not None:
        X, Y, Z = cv.coords(tube.sl)
        dome = plan.dome(X[..., 0], Y[..., 0])[..., None]
        mask = (tube.sdf < 0) & (cv.cav[tube.sl] > 1) & (Z < dome - 3)
        if food:
            ax = [a[s] for a, s in zip(cv.axes, tube.sl, strict=True)]
            content = content + 15 * smooth_field(np.random.default_rng(tex_seed), ax, 8.0)
        # One horizontal (coronal) air-fluid level for the whole stomach.
        y_top = float(np.max(path[:, 1] + rad))
        y_bottom = float(np.min(path[:, 1] - rad))
        gas = Y > y_top - gas_frac * (y_top - y_bottom)
        paint_viscus(
            cv,
            tube,
            mask,
            wall_t,
            hu["stomach_wall"],
            content,
            gas,
            STOMACH,
            labels.STOMACH,
            hu["mucosa"],
        )
    return ctrl[-1]


def _draw_duodenum(cv: Canvas, plan: Plan, rng, pylorus: np.ndarray) -> None:
    """Duodenal C-loop from the pylorus around the pancreatic head."""
    v, ao = plan.vert, plan.aorta
    head = plan.extra["pancreas_head"]
    rd = rng.uniform(8, 12)
    ctrl = [
        pylorus,
        (head[0] - 25, head[1] + 10, head[2] + 8),
        (head[0] - 28, head[1] - 5, head[2] - 25),
        (head[0] - 10, v["y"] + v["b"] + 2 * ao[2] + 5, head[2] - 50),
        (ao[0] + 25, v["y"] + v["b"] + 2 * ao[2] + 10, head[2] - 40),
    ]
    gas_frac = rng.uniform(-0.2, 0.5)
    tube = sample_tube(cv, spline(ctrl, 5), rd)
    if tube is not None:
        mask = (tube.sdf < 0) & (cv.cav[tube.sl] > 1)
        gas = gas_above_level(tube, rd, gas_frac)
        fluid = plan.hu["fluid"]
        paint_viscus(cv, tube, mask, 2.5, plan.hu["bowel_wall"], fluid, gas, BOWEL, labels.DUODENUM)


# --------------------------------------------------------------------------------------
# Pancreas, spleen, kidneys
# --------------------------------------------------------------------------------------


def draw_pancreas(cv: Canvas, plan: Plan) -> None:
    """Lobulated pancreas along the centreline planned by ``plan_pancreas``."""
    path = plan.extra["pancreas"]
    r = np.interp(np.linspace(0, 3, len(path)), np.arange(4), plan.extra["pancreas_r"])
    amp, ph = plan.extra["pancreas_lobes"]
    tube = sample_tube(cv, path, r)
    if tube is not None:
        lobulated = tube.sdf + amp * np.sin(tube.arc / 7.0 + ph)
        mask = (lobulated < 0) & (cv.cav[tube.sl] > 1)
        cv.paint(tube.sl, mask, plan.hu["pancreas"], PANCREAS, tex=3.0)


def draw_spleen(cv: Canvas, plan: Plan) -> None:
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
    kx, ky, rx, ry = kidney_section(kid, Z)
    rx, ry = rx + kid["halo"] + 4, ry + kid["halo"] + 4
    behind = (rx > kid["halo"] + 4) & (((X - kx) / rx) ** 2 + ((Y - ky + ry) / (2 * ry)) ** 2 < 1)
    behind |= X < plan.vert["a"] + 25  # nor in the paravertebral gutter
    value = plan.hu["spleen"]
    if "zebra" in plan.extra:  # arterial phase: arciform bands of enhancement
        amp, bands, phase = plan.extra["zebra"]
        warp = 1.5 * cv.texture[sl]
        value = value + amp * np.cos(np.pi * bands * u + Z / 25.0 + phase + warp)
    cv.paint(sl, mask & ~behind, value, SPLEEN, tex=3.0)


def kidney_section(k: dict, z):
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


def draw_kidneys(cv: Canvas, plan: Plan, rng: np.random.Generator) -> None:
    """Both kidneys in perirenal fat: cortex, medullary pyramids, sinus fat and pelvis,
    hilum facing antero-medially, renal veins draining into the IVC."""
    for k in plan.kidneys:
        _draw_kidney(cv, plan, k, rng)
        _draw_renal_vein(cv, plan, k, rng)


def _kidney_axes(k: dict) -> tuple[float, float, float, float]:
    """In-plane unit vectors (ux, uy) along the kidney's long axis and (vx, vy) towards
    its hilum."""
    ux, uy = k["side"] * np.cos(k["alpha"]), np.sin(k["alpha"])
    vx, vy = -k["side"] * np.sin(k["alpha"]), np.cos(k["alpha"])
    return ux, uy, vx, vy


def _draw_kidney(cv: Canvas, plan: Plan, k: dict, rng) -> None:
    """One kidney: perirenal fat halo, cortex, pyramids, sinus fat and pelvis."""
    hu = plan.hu
    a, b, c = k["a"], k["b"], k["c"]
    ux, uy, vx, vy = _kidney_axes(k)
    cz = k["centre"][2]
    cx, cy = k["centre"][:2]
    pyramids, ph = int(rng.integers(5, 9)), rng.uniform(0, 2 * np.pi)
    cortex_t = rng.uniform(5, 8)
    ext = a + k["halo"] + k["tilt"] * c + 2
    sl = cv.box((cx - ext, cy - ext, cz - c - k["halo"]), (cx + ext, cy + ext, cz + c + k["halo"]))
    if sl is None:
        return
    X, Y, Z = cv.coords(sl)
    w = Z - cz
    kx, ky, _, _ = kidney_section(k, Z)  # upper pole tilted medially
    dx, dy = X - kx, Y - ky
    u, v = dx * ux + dy * uy, dx * vx + dy * vy
    inside = cv.cav[sl] > -1
    halo = (u / (a + k["halo"])) ** 2 + (v / (b + k["halo"])) ** 2 + (w / (c + k["halo"])) ** 2
    cv.paint(sl, inside & (halo < 1), hu["fat"], FAT, keep=(BONE, VESSEL, MUSCLE, SPLEEN))
    un, vn, wn = u / a, v / b, w / c
    q = np.sqrt(un**2 + vn**2 + wn**2)
    # The hilum is a notch on the medial side.
    kidney = inside & (q < 1) & ~((vn > 0.55) & (np.abs(un) < 0.4) & (np.abs(wn) < 0.45))
    organ = labels.LEFT_KIDNEY if k["side"] > 0 else labels.RIGHT_KIDNEY
    cv.paint(sl, kidney, hu["cortex"], KIDNEY, keep=(BONE, VESSEL), organ=organ)
    ang = np.arctan2(vn, un)
    medulla = (
        kidney
        & (q > 0.4)
        & (q < 1 - cortex_t / b)
        & (np.cos(pyramids * ang + 2.5 * wn + ph) > -0.2)
    )
    cv.paint(sl, medulla, hu["medulla"], KIDNEY, organ=organ)
    sinus = kidney & (vn > 0.15) & (q < 0.65) & (np.abs(wn) < 0.45)
    cv.paint(sl, sinus, hu["fat"], FAT)
    pelvis = sinus & (vn > 0.25) & (q < 0.55) & (np.abs(wn) < 0.35)
    cv.paint(sl, pelvis, hu.get("pelvis", hu["fluid"]), FLUID, organ=organ)


def _draw_renal_vein(cv: Canvas, plan: Plan, k: dict, rng) -> None:
    """Renal vein from the hilum to the IVC; the left one crosses in front of the aorta."""
    _, _, vx, vy = _kidney_axes(k)
    cx, cy, cz = k["centre"]
    hil = np.array([cx + vx * k["b"], cy + vy * k["b"], cz])
    ix, iy = plan.ivc[:2]
    ax_, ay, r_ao = plan.aorta
    if k["side"] > 0:
        pts = [hil, (ax_ + r_ao, ay + r_ao + 6, cz + 5), (ix, iy, cz + 8)]
    else:
        pts = [hil, ((hil[0] + ix) / 2, (hil[1] + iy) / 2, cz + 4), (ix, iy, cz + 6)]
    tube = sample_tube(cv, pts, rng.uniform(4, 6))
    if tube is not None:
        mask = (tube.sdf < 0) & (cv.cav[tube.sl] > -1)
        cv.paint(tube.sl, mask, plan.hu["portal"], VESSEL, keep=(BONE, KIDNEY))


def draw_lesions(cv: Canvas, plan: Plan, look: Look) -> None:
    """Round hypodense lesions inside the spleen and the liver: simple cysts (water) or
    hypovascular metastases (a fraction of the organ's attenuation). They keep the organ's
    label, as organ segmentations do."""
    rng = np.random.default_rng([look.draws["seed"], 2])
    for organ, tissue, key, radii in (
        (labels.SPLEEN, SPLEEN, "spleen", (4.0, 14.0)),
        (labels.LIVER, LIVER, "liver", (5.0, 20.0)),
    ):
        count = look.draws[f"lesions_{key}"]
        voxels = np.argwhere(cv.organ == organ) if count else ()
        for _ in range(count if len(voxels) else 0):
            voxel = voxels[rng.integers(len(voxels))]
            centre = [float(ax[i]) for ax, i in zip(cv.axes, voxel, strict=True)]
            r = rng.uniform(*radii)
            cyst = rng.random() < 0.5
            hu = rng.uniform(*CYST_HU) if cyst else plan.hu[key] * rng.uniform(*METASTASIS_FACTOR)
            sl = cv.box(np.subtract(centre, r), np.add(centre, r))
            if sl is None:
                continue
            X, Y, Z = cv.coords(sl)
            ball = (X - centre[0]) ** 2 + (Y - centre[1]) ** 2 + (Z - centre[2]) ** 2 < r * r
            cv.paint(sl, ball & (cv.organ[sl] == organ), hu, tissue, tex=2.0, organ=organ)

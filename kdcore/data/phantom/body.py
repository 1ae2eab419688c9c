"""Body wall, thorax (diaphragm, lung bases, heart), spine, ribs, psoas and crura, and
the CT table."""

from __future__ import annotations

import numpy as np

from kdcore.data.phantom import labels
from kdcore.data.phantom.geometry import DEG, Canvas, sample_tube
from kdcore.data.phantom.plan import Plan
from kdcore.data.phantom.tissues import (
    AIR,
    BONE,
    FAT,
    FLUID,
    HEART,
    LUNG,
    MUSCLE,
    SKIN,
    TABLE,
    VESSEL,
)


def draw_body_wall(cv: Canvas, plan: Plan) -> None:
    """Skin, subcutaneous fat, muscle layers, and visceral fat filling the cavity.

    Also sets ``cv.cav``, the depth inside the abdominal cavity every later step uses.
    """
    body, hu = plan.body, plan.hu
    th = cv.theta[:, :, None]
    z = cv.axes[2][None, None, :]
    depth = body.radius(th, z).astype(np.float32) - cv.rho[:, :, None]
    fat = body.fat(th, z).astype(np.float32)
    muscle = body.muscle(th, z).astype(np.float32)
    cv.cav = depth - fat - muscle
    inside = depth > 0
    layers = [
        (inside, hu["fat"], FAT),
        (inside & (depth >= fat) & (cv.cav < 0), hu["muscle"], MUSCLE),
        # thin fat planes between the oblique muscles of the lateral wall
        (
            inside
            & (np.abs(depth - fat - 0.5 * muscle) < 0.7)
            & (muscle < 25)
            & (np.abs(np.cos(th)) > 0.7),
            hu["fat"],
            FAT,
        ),
        (inside & (depth < 2.0), hu["skin"], SKIN),
    ]
    for mask, value, tissue in layers:
        cv.hu[mask] = value
        cv.tissue[mask] = tissue


def draw_psoas_and_crura(cv: Canvas, plan: Plan, rng: np.random.Generator) -> None:
    """Psoas muscles beside the lumbar spine, growing caudally; crura around the aorta."""
    v, hu = plan.vert, plan.hu
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
            cv.paint(sl, mask, hu["muscle"], MUSCLE, keep=(BONE, VESSEL))
    ax_, ay, r_ao = plan.aorta
    for side in (-1, 1):
        pts = [
            (side * (v["a"] - 4), v["y"] - 2, -20),
            (side * (r_ao + 4) + ax_, ay + 2, 0),
            (side * (r_ao + 6) + ax_, ay + 8, plan.dome_l - 10),
        ]
        tube = sample_tube(cv, pts, rng.uniform(3, 5))
        if tube is not None:
            cv.paint(tube.sl, tube.sdf < 0, hu["muscle"], MUSCLE, keep=(BONE, VESSEL))


def draw_thorax(cv: Canvas, plan: Plan, rng: np.random.Generator) -> None:
    """Diaphragm, lung bases in the costophrenic recesses, and the heart on the tendon."""
    hu, v = plan.hu, plan.vert
    t_d = rng.uniform(2, 4)
    semi = np.array([rng.uniform(55, 65), rng.uniform(40, 50), rng.uniform(45, 55)])
    ax_, ay, r_ao = plan.aorta
    hc = np.array(
        [
            0.12 * plan.body.half_width,
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
    cv.paint(sl, above, hu["muscle"], MUSCLE, keep=(BONE,))
    chest = above & (Z > dome + t_d)
    mediastinum = (np.abs(X - ax_) < 20 + 0.3 * np.maximum(Y - v["y"], 0)) & (Y > v["y"] - v["b"])
    lung = chest & (cav > 2) & ~mediastinum
    cv.paint(sl, chest & ~lung, hu["fat"], FAT, keep=(BONE, VESSEL))
    cv.paint(sl, lung, hu["lung"], LUNG)
    # Heart: pericardial fat, myocardium and blood pool resting on the central tendon.
    q = np.sqrt(
        ((X - hc[0]) / semi[0]) ** 2 + ((Y - hc[1]) / semi[1]) ** 2 + ((Z - hc[2]) / semi[2]) ** 2
    )
    keep = (BONE, VESSEL)
    cv.paint(sl, chest & (q < 1 + 6 / semi.min()), hu["fat"], FAT, keep=keep)
    cv.paint(sl, chest & (q < 1), hu["myocardium"], HEART, keep=keep)
    cv.paint(sl, chest & (q < 1 - 10 / semi.min()), hu["aorta"], HEART, keep=keep)


def draw_spine(cv: Canvas, plan: Plan) -> None:
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
        cv.paint(sl, erector & (cv.tissue[sl] != AIR), hu["muscle"], MUSCLE)
    dz = np.abs((Z - v["phase"] + v["period"] / 2) % v["period"] - v["period"] / 2)
    disc = dz < v["disc"] / 2
    mid = dz > v["period"] * 0.3  # middle of a vertebra: pedicles, transverse processes
    qb = (X / v["a"]) ** 2 + ((Y - v["y"]) / v["b"]) ** 2
    cv.paint(sl, qb < 1, hu["bone"], BONE, organ=labels.VERTEBRAE)
    cancellous = (qb < (1 - 3 / v["b"]) ** 2) & (dz > v["disc"] / 2 + 2)
    cv.paint(sl, cancellous, hu["cancellous"], BONE, tex=25.0, organ=labels.VERTEBRAE)
    cv.paint(sl, (qb < 1.03) & disc, hu["muscle"] + 35, SKIN)
    rr = np.sqrt(X**2 + (Y - yb) ** 2)
    rc = v["canal"]
    arch = ~disc & (rr > rc) & (rr < rc + 5) & ((Y < yb + 2) | mid)
    pedicle = mid & (np.abs(X) > rc - 2) & (np.abs(X) < rc + 6) & (Y > yb) & (Y < v["y"])
    spinous = ~disc & (np.abs(X) < 3.5) & (Y < yb - rc) & (Y > v["back"] + 4)
    lumbar = Z < plan.dome_l - 60
    transverse = mid & lumbar & (np.abs(X) > rc) & (np.abs(X) < rc + 30) & (np.abs(Y - yb - 4) < 3)
    posterior = arch | pedicle | spinous | transverse
    cv.paint(sl, posterior, hu["bone"] * 0.85, BONE, organ=labels.VERTEBRAE)
    cv.paint(sl, rr < rc, hu["fluid"] + 10, FLUID)


def draw_ribs(cv: Canvas, plan: Plan, rng: np.random.Generator) -> None:
    """Ribs as oblique bony bands near the inner wall, nearly horizontal at the spine and
    descending ever more steeply towards the front, so that each axial slice cuts several
    short arcs; costal cartilage continues the upper ones anteriorly."""
    hu = plan.hu
    period = rng.uniform(24, 30)  # mm between ribs at the spine
    c1, c2 = rng.uniform(0.1, 0.25), rng.uniform(0.35, 0.55)  # z drop: c1 phi + c2 phi^2/180
    z12 = plan.dome_r - rng.uniform(85, 110)  # 12th rib at the spine
    height, depth, thick = rng.uniform(8, 11), rng.uniform(2, 5), rng.uniform(6, 8)
    ends = {12: rng.uniform(60, 85), 11: rng.uniform(95, 115)}
    # Only voxels of a shell just outside the cavity can be rib: work on their list.
    band = (cv.cav < -depth) & (cv.cav > -depth - thick) & (cv.axes[2][None, None, :] > z12 - 130)
    idx = np.nonzero(band)
    if idx[0].size == 0:
        return
    x, y, z = cv.axes[0][idx[0]], cv.axes[1][idx[1]], cv.axes[2][idx[2]]
    bone = np.zeros(x.shape, bool)
    cartilage = np.zeros(x.shape, bool)
    for side in (-1, 1):
        phi = (np.arctan2(y, side * x) / DEG) + 90.0  # 0 at the spine, 180 at the sternum
        for rib, end in ((12, ends[12]), (11, ends[11])) + tuple((r, 140.0) for r in range(5, 11)):
            # Past the bony end the costal cartilage turns upwards to the sternum.
            along = np.where(phi > end, end - 0.8 * (phi - end), phi)
            zeta = z + c1 * along + c2 * along * along / 180.0 - z12 - (12 - rib) * period
            on = (np.abs(zeta) < height / 2) & (phi > 35)
            bone |= on & (phi < end)
            cartilage |= on & (rib <= 10) & (phi >= end) & (phi < 172)
    cv.hu[tuple(i[bone] for i in idx)] = hu["bone"] * 0.8
    cv.tissue[tuple(i[bone] for i in idx)] = BONE
    cv.organ[tuple(i[bone] for i in idx)] = labels.RIBS
    cv.hu[tuple(i[cartilage] for i in idx)] = hu["muscle"] + 90
    cv.tissue[tuple(i[cartilage] for i in idx)] = BONE
    cv.organ[tuple(i[cartilage] for i in idx)] = labels.BACKGROUND


def draw_table(cv: Canvas, plan: Plan, rng: np.random.Generator) -> None:
    """Curved carbon-fibre CT table below the patient: two thin shells over foam."""
    y0 = -plan.body.half_ap_post - rng.uniform(3, 15)
    shell_hu = rng.uniform(80, 250)
    sl = cv.box((-250, y0 - 60, -400), (250, y0 + 30, 400))
    if sl is None:
        return
    X, Y, _ = cv.coords(sl)
    top = y0 + X**2 / 1400.0
    d = top - Y
    body = cv.tissue[sl] != AIR
    cv.paint(sl, ~body & (d > 0) & (d < 30) & (np.abs(X) < 220), -950.0, TABLE)
    shell = (d > 0) & ((d < 3) | ((d > 27) & (d < 30))) & (np.abs(X) < 220)
    cv.paint(sl, ~body & shell, shell_hu, TABLE)

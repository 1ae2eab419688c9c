"""Great vessels (aorta, IVC) and the portal venous system with the mesenteric and
splenic vessels. Vessels inside organs (liver, kidneys, bowel) are drawn with them."""

from __future__ import annotations

import numpy as np

from kdcore.data.phantom import labels
from kdcore.data.phantom.geometry import Canvas, sample_tube
from kdcore.data.phantom.plan import Plan
from kdcore.data.phantom.tissues import BONE, VESSEL


def draw_aorta_and_ivc(cv: Canvas, plan: Plan, rng: np.random.Generator) -> None:
    """Aorta (sometimes with calcified plaques) and IVC over the full length; the IVC
    joins the right atrium above the dome."""
    hu = plan.hu
    ax_, ay, r_ao = plan.aorta
    tube = sample_tube(cv, [(ax_ + 4, ay + 3, -250), (ax_, ay, 0), (ax_ - 2, ay - 6, 250)], r_ao)
    calcified = rng.random() < 0.3
    if tube is not None:
        cv.paint(tube.sl, tube.sdf < 0, hu["aorta"], VESSEL, organ=labels.AORTA)
        if calcified:
            X, Y, Z = cv.coords(tube.sl)
            spots = (tube.sdf > -1.5) & (np.sin(Z / 9.0 + np.arctan2(Y - ay, X - ax_) * 3) > 0.9)
            cv.paint(tube.sl, (tube.sdf < 0) & spots, hu["bone"], VESSEL, organ=labels.AORTA)
    ix, iy, ia, ib = plan.ivc
    sl = cv.box((ix - ia, iy - ib, -250), (ix + ia, iy + ib, plan.dome_r + 10))
    if sl is not None:
        X, Y, Z = cv.coords(sl)
        ivc = ((X - ix) / ia) ** 2 + ((Y - iy) / ib) ** 2 < 1
        cv.paint(sl, ivc, hu["ivc"], VESSEL, organ=labels.IVC)


def draw_portal_system(cv: Canvas, plan: Plan, rng: np.random.Generator) -> None:
    """Portal vein from the confluence behind the pancreatic neck to the liver hilum, SMV
    and SMA running down into the mesentery, splenic vein and artery to the spleen.

    Needs the pancreas centreline and the liver hilum recorded in ``plan.extra``.
    """
    for pts, rv, kind in _portal_paths(plan, rng):
        tube = sample_tube(cv, pts, rv)
        if tube is not None:
            mask = (tube.sdf < 0) & (cv.cav[tube.sl] > -2)
            organ = labels.PORTAL_VEINS if kind == "portal" else 0
            cv.paint(tube.sl, mask, plan.hu[kind], VESSEL, keep=(BONE,), organ=organ)


def _portal_paths(plan: Plan, rng) -> list[tuple]:
    """(centreline points, radius, HU key) of the portal vein, SMV, SMA, splenic vein and
    splenic artery, in drawing order."""
    ax_, ay, r_ao = plan.aorta
    path = plan.extra["pancreas"]
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
    # Splenic vein behind the pancreas body and tail; the artery runs tortuously above it.
    r_p = plan.extra["pancreas_r"]
    behind = path[len(path) // 3 :] - np.array([0, 1, 0]) * (np.mean(r_p[1:]) + 2)
    sv = np.vstack([conf, behind, plan.spleen["hilum"]])
    vessels.append((sv[:: max(1, len(sv) // 8)].tolist() + [sv[-1]], rng.uniform(4, 5.5), "portal"))
    sa = path[len(path) // 3 :] + np.array([0, 0, 1]) * (np.mean(r_p[1:]) + 4)
    sa = sa + np.outer(np.sin(np.linspace(0, rng.uniform(8, 14), len(sa))), [0, 6, 0])
    vessels.append(
        (np.vstack([(ax_, ay + r_ao - 2, sa[0, 2]), sa]), rng.uniform(2.5, 3.5), "aorta")
    )
    return vessels

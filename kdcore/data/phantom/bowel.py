"""Small bowel, colon and mesenteric vessels, and the hollow-viscus painting (wall,
mucosa, content, gas) they share with the stomach and duodenum."""

from __future__ import annotations

import numpy as np

from kdcore.data.phantom import labels
from kdcore.data.phantom.geometry import Canvas, Tube, sample_tube, smooth_field, spline
from kdcore.data.phantom.plan import Plan
from kdcore.data.phantom.tissues import BOWEL, FAT, FLUID, GAS, VESSEL


def paint_viscus(
    cv: Canvas,
    tube: Tube,
    mask: np.ndarray,
    wall_t: float,
    wall_hu: float,
    content,
    gas: np.ndarray,
    tissue: int,
    organ: int,
    mucosa: float | None = None,
) -> None:
    """Wall (with an enhancing inner mucosa if given), content (HU, scalar or array) and
    gas where ``gas``, inside ``mask`` of a hollow organ along ``tube``; all of it carries
    the label ``organ``."""
    sl = tube.sl
    cv.paint(sl, mask, wall_hu, tissue, organ=organ)
    lumen = mask & (tube.sdf < -wall_t)
    if mucosa is not None:
        cv.paint(sl, mask & (tube.sdf < -wall_t + 2.5) & ~lumen, mucosa, tissue, organ=organ)
    cv.paint(sl, lumen, content, FLUID, organ=organ)
    cv.paint(sl, lumen & gas, -1000.0, GAS, organ=organ)


def gas_above_level(tube: Tube, r: float, fraction) -> np.ndarray:
    """Gas filling ``fraction`` of a loop of radius ``r`` from its anterior side: air-fluid
    levels are horizontal (coronal) planes because the patient lies supine."""
    return tube.dy > r * (1.0 - 2.0 * fraction)


def draw_bowel(cv: Canvas, plan: Plan, rng: np.random.Generator) -> None:
    """Small-bowel loops, colon with haustra and stool, and a few mesenteric vessels."""
    z_top = plan.liver["mid_z"] + rng.uniform(-10, 15)
    n_chains = int(rng.integers(5, 10))
    for _ in range(n_chains):
        _draw_small_bowel_loop(cv, plan, rng, z_top)
    _draw_colon(cv, plan, rng)
    _draw_mesenteric_vessels(cv, plan, rng, z_top)


def _bowel_region(plan: Plan, p: np.ndarray, r: float, z_top: float) -> bool:
    """Whether a small-bowel centreline point fits: intraperitoneal, below ``z_top``."""
    v = plan.vert
    return (
        -140 < p[2] < z_top
        and p[1] > v["y"] + v["b"] + 20
        and abs(p[0]) < 0.75 * plan.body.half_width
        and plan.body.cavity_depth(p) > r + 2
    )


def _random_walk(rng, plan: Plan, n: int, step: float, r: float, z_top: float) -> np.ndarray:
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
            d = -d  # stuck against the region's border: turn back
    return np.array(pts)


def _draw_small_bowel_loop(cv: Canvas, plan: Plan, rng, z_top: float) -> None:
    """One small-bowel chain filled with fluid, gas or oral contrast, or collapsed."""
    hu = plan.hu
    r = rng.uniform(8, 14)
    pts = _random_walk(rng, plan, int(rng.integers(12, 30)), rng.uniform(16, 22), r, z_top)
    kind = rng.choice(["fluid", "collapsed", "gas", "contrast"], p=[0.45, 0.25, 0.15, 0.15])
    if len(pts) < 3:
        return
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
    tube = sample_tube(cv, spline(pts, 4), r * (0.75 if kind == "collapsed" else 1.0))
    if tube is None:
        return
    # The gas fraction varies along the loop, so levels come and go between slices.
    gas_frac = np.clip(g0 + 0.45 * np.sin(2 * np.pi * tube.arc / lam + ph), 0, 0.9)
    mask = (tube.sdf < 0) & (cv.cav[tube.sl] > 1)
    gas = gas_above_level(tube, r, gas_frac)
    paint_viscus(cv, tube, mask, wall_t, hu["bowel_wall"], content, gas, BOWEL, labels.SMALL_BOWEL)


def _colon_path(plan: Plan, rng, rc: float) -> list:
    """Control points of the colon framing the abdomen: ascending, hepatic flexure,
    transverse, splenic flexure (just below the spleen), descending."""
    body, sp = plan.body, plan.spleen
    z_sf = sp["zc"] - sp["length"] / 2 + rng.uniform(-5, 25)
    z_hf = plan.liver["tip_z"] + rng.uniform(0, 30)
    z_tc = min(z_hf, z_sf) - rng.uniform(0, 40)
    return [
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


def _draw_colon(cv: Canvas, plan: Plan, rng) -> None:
    """Colon with haustral folds, mottled stool with gas bubbles, and air-fluid levels."""
    rc = rng.uniform(16, 24)
    ctrl = _colon_path(plan, rng, rc)
    haustra, stool = rng.uniform(18, 30), rng.uniform(-120, 10)
    g0, lam, ph = rng.uniform(-0.2, 0.5), rng.uniform(60, 150), rng.uniform(0, 2 * np.pi)
    tex_params = rng.integers(0, 2**31)
    tube = sample_tube(cv, spline(ctrl, 6), rc)
    if tube is None:
        return
    ax = [a[s] for a, s in zip(cv.axes, tube.sl, strict=True)]
    # A separate generator, so the stool texture does not shift the main draws.
    mottle = smooth_field(np.random.default_rng(tex_params), ax, 10.0)
    tube.sdf = tube.sdf - 0.12 * rc * np.cos(2 * np.pi * tube.arc / haustra)
    mask = (tube.sdf < 0) & (cv.cav[tube.sl] > 1)
    content = np.where(mottle > 1.3, -900.0, stool + 60.0 * mottle)  # gas bubbles in stool
    gas_frac = np.clip(g0 + 0.5 * np.sin(2 * np.pi * tube.arc / lam + ph), 0, 0.95)
    gas = gas_above_level(tube, rc, gas_frac)
    paint_viscus(cv, tube, mask, 2.0, plan.hu["bowel_wall"], content, gas, BOWEL, labels.COLON)


def _draw_mesenteric_vessels(cv: Canvas, plan: Plan, rng, z_top: float) -> None:
    """Mesenteric vessels: short bright tubes in the fat between loops."""
    body = plan.body
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
        tube = sample_tube(cv, [p, q], r)
        if tube is not None:
            mask = (tube.sdf < 0) & (cv.tissue[tube.sl] == FAT) & (cv.cav[tube.sl] > 0)
            cv.paint(tube.sl, mask, plan.hu["portal"], VESSEL)

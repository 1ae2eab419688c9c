"""The per-patient plan: landmarks, sizes and intensities drawn from the random generator.

Nothing here depends on the sampling grid, so a patient's anatomy is the same at every
resolution. The order of the draws is part of the phantom's definition: reordering them
changes every patient.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kdcore.data.phantom.geometry import DEG, Body, spline


@dataclass
class Plan:
    """Scalar anatomy of one patient shared by the drawing functions (mm, HU).

    ``extra`` carries what is decided later and used by other structures: the pancreas
    centreline (``plan_pancreas``) and the liver hilum (set while drawing the liver).
    """

    body: Body
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


def make_plan(
    rng: np.random.Generator,
    habitus: tuple[float, float] = (0.0, 1.0),
    spleen_size: tuple[float, float, float] = (0.1, 0.8, 0.1),
) -> Plan:
    """Draw the landmarks of one patient; ``habitus`` is the range of body habitus (0 slim
    .. 1 obese), ``spleen_size`` the probabilities of a small, normal and enlarged spleen."""
    body = make_body(rng, habitus)
    hu = draw_hu(rng)
    z_shift = rng.uniform(-20, 20)
    dome_r = rng.uniform(60, 85)
    dome_l = dome_r - rng.uniform(5, 20)
    vert = _plan_spine(rng, body)
    aorta, ivc = _plan_great_vessels(rng, vert)
    spleen = _plan_spleen(rng, body, dome_l, spleen_size)
    kidneys = _plan_kidneys(rng, body, vert, spleen)
    liver = _plan_liver(rng, body)
    return Plan(
        body=body,
        hu=hu,
        z_shift=z_shift,
        dome_r=dome_r,
        dome_l=dome_l,
        dome_curv=rng.uniform(70, 110),  # drawn last: keeps the order of the draws
        vert=vert,
        aorta=aorta,
        ivc=ivc,
        spleen=spleen,
        kidneys=kidneys,
        liver=liver,
    )


def make_body(rng: np.random.Generator, habitus_range=(0.0, 1.0)) -> Body:
    """Body contour and wall thicknesses; habitus (thin .. obese) drives size and fat."""
    habitus = rng.uniform(*habitus_range)
    fourier = [
        (k, rng.uniform(0, amp), rng.uniform(0, 2 * np.pi), rng.uniform(-1.0, 1.0))
        for k, amp in ((2, 0.025), (3, 0.012), (5, 0.01))
    ]
    half_width = rng.uniform(128, 145) + 25 * habitus
    b_ant = half_width * rng.uniform(0.65, 0.8)
    return Body(
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


def draw_hu(rng: np.random.Generator) -> dict:
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


def _plan_spine(rng: np.random.Generator, body: Body) -> dict:
    """Vertebrae: from the back, spinous process, canal, vertebral body (paraspinal
    muscles are drawn around them, see ``draw_spine``)."""
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
    return vert


def _plan_great_vessels(rng: np.random.Generator, vert: dict) -> tuple[tuple, tuple]:
    """Aorta (x, y, radius) in front of the spine and IVC (x, y, semi-axes) to its right."""
    r_ao = rng.uniform(9, 13)
    aorta = (rng.uniform(4, 14), vert["y"] + vert["b"] + r_ao + rng.uniform(0, 4), r_ao)
    ivc = (
        -rng.uniform(20, 28),
        vert["y"] + vert["b"] + rng.uniform(8, 14),
        rng.uniform(11, 15),
        rng.uniform(7, 11),
    )
    return aorta, ivc


def _plan_spleen(rng: np.random.Generator, body: Body, dome_l: float, sizes) -> dict:
    """Spleen: a band hugging the postero-lateral wall of the left upper quadrant."""
    size = rng.choice(3, p=list(sizes))  # small, normal, enlarged
    length = rng.uniform(*[(60, 90), (90, 140), (140, 165)][size])
    top = dome_l - rng.uniform(0, 15)
    spleen = {
        "length": length,
        "zc": top - length / 2,
        "theta": rng.uniform(-40, -15) * DEG,
        "tilt": rng.uniform(0.15, 0.45) * DEG,  # rad per mm: lower pole more anterior
        "width": rng.uniform(*[(25, 35), (35, 52), (50, 60)][size]) * DEG,
        "thick": rng.uniform(*[(25, 35), (38, 62), (60, 75)][size]),
        "gap": rng.uniform(1, 4),
        "lobes": rng.uniform(0, 0.15),
        "lobe_phase": rng.uniform(0, 2 * np.pi, 2),
    }
    th_h = spleen["theta"] / DEG
    spleen["hilum"] = body.point(th_h, spleen["gap"] + spleen["thick"] - 2, spleen["zc"])
    return spleen


def _plan_kidneys(rng: np.random.Generator, body: Body, vert: dict, spleen: dict) -> list:
    """Left then right kidney: ellipsoid semi-axes, rotation, height and centre."""
    kidneys = []
    # The left kidney's upper pole lies medial to the lower part of the spleen.
    z_left = spleen["zc"] - spleen["length"] * rng.uniform(0.1, 0.3) - rng.uniform(30, 45)
    for side in (+1, -1):
        k = {
            "side": side,
            "a": rng.uniform(26, 32),
            "b": rng.uniform(20, 25),
            "c": rng.uniform(45, 58),
            "alpha": rng.uniform(30, 60) * DEG,
            "halo": rng.uniform(2, 5) + 6 * (body.fat0 / 35),
            "zc": z_left if side > 0 else z_left - rng.uniform(5, 20),
            "tilt": rng.uniform(0.1, 0.25),
        }
        x = side * (vert["a"] + rng.uniform(0.2, 0.3) * body.half_width)
        y = _posterior_wall_y(body, x, k["zc"]) + k["b"] + 0.5 * k["halo"]
        k["centre"] = np.array([x, y, k["zc"]])
        kidneys.append(k)
    return kidneys


def _posterior_wall_y(body: Body, x: float, z: float) -> float:
    """y (mm) where the cavity begins when walking forward from the back at (x, z)."""
    for y in np.arange(-body.half_ap_post, body.half_ap_ant, 1.0):
        if body.cavity_depth(np.array([x, y, z])) >= 0:
            return float(y)
    return 0.0


def _plan_liver(rng: np.random.Generator, body: Body) -> dict:
    """Liver extent: right lobe borders, left lobe reach and thickness, surface wobble."""
    liver_mid = rng.uniform(-15, 15)
    return {
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


def plan_pancreas(plan: Plan, rng: np.random.Generator) -> None:
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
    plan.extra["pancreas"] = spline([head, neck, body_pt, tail], 6)
    plan.extra["pancreas_r"] = (
        rng.uniform(14, 20),
        rng.uniform(8, 11),
        rng.uniform(9, 13),
        rng.uniform(8, 12),
    )
    plan.extra["pancreas_lobes"] = (rng.uniform(0.8, 2.5), rng.uniform(0, 2 * np.pi))

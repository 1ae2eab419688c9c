"""kdcore: knowledge distillation for medical image segmentation (library, no CLI).

``kdcore.run_job(cfg)`` runs a whole job (data, teacher, grid, tables) from a Hydra
config. The stages (``job``, ``grid``, ``tuning``, ``trial``, ``teacher``) call services
(``gate``, ``runtime``, ``zero``, ``teacher_cache``, ``tracking``, the tables and
figures), which call the kinds (``models``, ``losses``, ``data``, ``training``), which call
the basics (``settings``, ``axes``, ``io``, ``errors``, ``progress``, ``rows``).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["run_job"]


def __getattr__(name: str) -> Any:
    # Imported on first use: ``import kdcore.report`` must not pull in torch and Ray.
    if name == "run_job":
        from kdcore.job import run_job

        return run_job
    raise AttributeError(f"module 'kdcore' has no attribute {name!r}")

"""kdcore: knowledge distillation for medical image segmentation (library, no CLI)."""

__version__ = "0.1.0"

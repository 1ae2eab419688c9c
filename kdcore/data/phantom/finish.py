"""Imaging: turn the painted HU map into a CT image (bias field, reconstruction blur,
correlated noise, int16 HU clipped to the scanner range)."""

from __future__ import annotations

import numpy as np

from kdcore.data.phantom.geometry import Canvas, smooth_field
from kdcore.data.phantom.tissues import AIR

HU_MIN, HU_MAX = -1024, 3071


def finalise(cv: Canvas, spacing, rng: np.random.Generator) -> np.ndarray:
    """Bias field, partial-volume blur, correlated noise; clipped int16 HU."""
    inhom_amp, blur_mm = rng.uniform(0, 8), rng.uniform(0.8, 1.6)
    sigma, inhom_seed = rng.uniform(8, 20), rng.integers(0, 2**31)
    hu = cv.hu
    if inhom_amp > 0:
        bias = smooth_field(np.random.default_rng(inhom_seed), cv.axes, 250.0, 3)
        hu += np.where(cv.tissue != AIR, np.float32(inhom_amp) * bias, np.float32(0))
    # In-plane blur of the reconstruction kernel; along z the slice sensitivity profile.
    sigmas = (blur_mm, blur_mm, 0.4 * spacing[2])
    for axis, s in enumerate(sigmas):
        hu = convolve_axis(hu, gauss_kernel(s / spacing[axis]), axis)
    # CT noise is spatially correlated in-plane; this kernel halves the white-noise std.
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    k = np.array([1, 4, 1], np.float32) / 6
    for axis in (0, 1):
        noise = convolve_axis(noise, k, axis)
    hu += np.float32(2.0 * sigma) * noise
    return np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)


def gauss_kernel(sigma_vox: float) -> np.ndarray:
    """Normalised 1D Gaussian taps (at least 3)."""
    radius = max(1, int(np.ceil(2.0 * sigma_vox)))
    x = np.arange(-radius, radius + 1, dtype=float)
    k = np.exp(-0.5 * (x / max(sigma_vox, 1e-3)) ** 2)
    return (k / k.sum()).astype(np.float32)


def convolve_axis(vol: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
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

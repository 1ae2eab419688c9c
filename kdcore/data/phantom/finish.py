"""Imaging: turn the painted HU map into a CT image (bias field, slice thickness,
streaks, reconstruction blur, correlated noise, int16 HU clipped to the scanner range).

``finalise`` is the easy phantom's imaging, unchanged; ``finalise_scan`` images a scan
with a drawn look."""

from __future__ import annotations

import math

import numpy as np

from kdcore.data.phantom.appearance import Look
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


def slab_positions(n: int, dz: float, z_offset: float, thick: float):
    """Sub-slice z positions (mm, increasing) for ``n`` slices ``dz`` apart, each
    averaging ``thick`` mm, and the (n, k) indices of each slice's ``k`` sub-slices (k odd
    and at least 3, sub-slices at most 1 mm apart; the middle one is the slice centre)."""
    k = max(3, math.ceil(thick / 1.0))
    k += 1 - k % 2
    centres = (np.arange(n) - (n - 1) / 2.0) * dz - z_offset
    offsets = (np.arange(k) - (k - 1) / 2.0) * (thick / k)
    positions = (centres[:, None] + offsets[None, :]).ravel()
    order = np.argsort(positions, kind="stable")
    where = np.empty_like(order)
    where[order] = np.arange(order.size)
    return positions[order], where.reshape(n, k)


def finalise_scan(cv: Canvas, look: Look, slabs: np.ndarray, spacing) -> tuple:
    """A drawn scan's image and labels: bias field, slice-thickness averaging (partial
    volume), streaks, kernel blur, noise of SD ``look.noise_sd`` with the kernel's grain;
    (int16 HU, uint8 labels of each slice's centre)."""
    rng = np.random.default_rng([look.draws["seed"], 1])
    hu = cv.hu
    amp = rng.uniform(0, 3)  # within a scanner's uniformity (a few HU)
    bias = smooth_field(np.random.default_rng(rng.integers(0, 2**31)), cv.axes, 250.0, 3)
    hu += np.where(cv.tissue != AIR, np.float32(amp) * bias, np.float32(0))
    hu = hu[..., slabs].mean(axis=-1, dtype=np.float32)
    organ = cv.organ[..., slabs[:, slabs.shape[1] // 2]]
    if look.streak_hu:
        add_streaks(hu, spacing, look.streak_hu, rng)
    kernel = gauss_kernel(look.blur_mm / spacing[0])
    for axis in (0, 1):
        hu = convolve_axis(hu, kernel, axis)
    # Noise passes through the same kernel: filter white noise, rescale to unit SD.
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    for axis in (0, 1):
        noise = convolve_axis(noise, kernel, axis)
    noise /= np.float32(np.sum(kernel**2))  # two axes of sqrt(sum k^2) each
    hu += np.float32(look.noise_sd) * noise
    return np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16), organ


def add_streaks(hu: np.ndarray, spacing, amp: float, rng: np.random.Generator) -> None:
    """Streaks through dense voxels (bone, dense contrast) of each slice, in place: thin
    lines, mostly dark, fading with distance from their source."""
    nx, ny, _ = hu.shape
    x = (np.arange(nx) - (nx - 1) / 2.0)[:, None] * spacing[0]
    y = (np.arange(ny) - (ny - 1) / 2.0)[None, :] * spacing[1]
    for k in range(hu.shape[2]):
        dense = np.argwhere(hu[:, :, k] > 400)
        if len(dense) == 0:
            continue
        for _ in range(int(rng.integers(3, 9))):
            i, j = dense[rng.integers(len(dense))]
            angle = rng.uniform(0, np.pi)
            dx, dy = x - x[i, 0], y - y[0, j]
            across = dx * np.sin(angle) - dy * np.cos(angle)
            along = np.abs(dx * np.cos(angle) + dy * np.sin(angle))
            width = rng.uniform(0.8, 2.0)
            sign = -1.0 if rng.random() < 0.7 else 1.0
            line = np.exp(-0.5 * (across / width) ** 2 - along / 150.0)
            hu[:, :, k] += np.float32(sign * amp * rng.uniform(0.4, 1.0)) * line.astype(np.float32)

"""PNG plots of calibration results: per-view reprojection error, Allan deviation, correlation peak.

matplotlib is imported lazily (Agg backend) so the calibration layer stays numpy + cv2 at import time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    tmp.replace(path)
    _plt().close(fig)
    return path


def plot_reprojection(views, path, title="Per-view reprojection error") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    used = [v for v in views if np.isfinite(v.rms_px)]
    ax.bar(range(len(used)), [v.rms_px for v in used], color=["tab:blue" if v.used else "tab:red" for v in used])
    ax.set_xlabel("view (red: rejected)")
    ax.set_ylabel("RMS error [px]")
    ax.set_title(title)
    return _save(fig, path)


def plot_allan(cal, path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, adev, fit, name in ((axes[0], cal.gyro_adev, cal.gyro, "gyroscope [rad/s]"),
                                (axes[1], cal.accel_adev, cal.accel, "accelerometer [m/s^2]")):
        for i in range(adev.shape[1]):
            ax.loglog(cal.taus_s, adev[:, i], label="xyz"[i])
        t = cal.taus_s
        ax.loglog(t, fit.noise_density / np.sqrt(t), "k--", lw=1, label=f"N={fit.noise_density:.3g}")
        ax.loglog(t, fit.random_walk * np.sqrt(t / 3), "k:", lw=1, label=f"K={fit.random_walk:.3g}")
        ax.set_xlabel("tau [s]")
        ax.set_ylabel("Allan deviation")
        ax.set_title(name)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_correlation(est, path, title="Cross-correlation") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(1000 * est.lags_s, est.correlation)
    ax.axvline(1000 * est.delay_s, color="r", ls="--", label=f"peak {1000 * est.delay_s:.1f} ms")
    ax.set_xlabel("lag [ms]")
    ax.set_ylabel("normalised correlation")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)

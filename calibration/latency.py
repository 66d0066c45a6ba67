"""Latency from logged data: command-to-state delay and camera timestamp offset.

Both are the lag of the peak of the normalised cross-correlation between a
reference signal and its delayed response. Signals are differentiated first
by default: that removes offsets and slow drift and sharpens the peak. The
peak lag measures dead time plus the plant's group delay (about 1/omega for a
critically damped servo of bandwidth omega); for a stiff servo sampled at the
control rate, the group delay is well below one sample.

Imports numpy and ``onboard.errors`` only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onboard.errors import OnboardError


@dataclass
class DelayEstimate:
    delay_s: float
    lag_samples: int
    dt_s: float
    peak_correlation: float
    lags_s: np.ndarray
    correlation: np.ndarray


def _standardise(x):
    x = x - x.mean()
    s = x.std()
    return x / s if s > 0 else x


def estimate_delay(reference, response, dt_s: float, *, max_lag_s: float = 0.5,
                   differentiate: bool = True, min_correlation: float = 0.2) -> DelayEstimate:
    """Delay of ``response`` after ``reference`` (uniformly sampled at ``dt_s``; (N,) or (N, channels))."""
    u = np.asarray(reference, dtype=np.float64)
    y = np.asarray(response, dtype=np.float64)
    if u.shape != y.shape or u.shape[0] < 10:
        raise OnboardError(f"reference {u.shape} and response {y.shape} must have the same shape with >= 10 "
                           "samples", field="command/state", fix="log both signals on the same time base")
    if not (np.all(np.isfinite(u)) and np.all(np.isfinite(y))):
        raise OnboardError("signals contain NaN or inf", field="command/state", fix="drop the broken samples")
    if u.ndim == 1:
        u, y = u[:, None], y[:, None]
    if differentiate:
        u, y = np.diff(u, axis=0), np.diff(y, axis=0)
    n = u.shape[0]
    max_lag = int(min(round(max_lag_s / dt_s), n // 2))
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.zeros(len(lags))
    used = 0
    for c in range(u.shape[1]):
        if u[:, c].std() == 0 or y[:, c].std() == 0:
            continue
        a, b = _standardise(u[:, c]), _standardise(y[:, c])
        full = np.correlate(b, a, mode="full") / n       # index n-1 is lag 0; positive lag: b after a
        corr += full[n - 1 - max_lag: n + max_lag]
        used += 1
    if used == 0:
        raise OnboardError("the command never changes, so no delay can be seen", field="command",
                           fix="log a segment where the robot moves (steps or a chirp)")
    corr /= used
    k = int(np.argmax(corr))
    if corr[k] < min_correlation:
        raise OnboardError(f"no clear correlation peak (max {corr[k]:.2f} < {min_correlation})",
                           field="command/state", fix="check that the two columns belong to the same joint "
                           "and that the log covers real motion")
    return DelayEstimate(float(lags[k] * dt_s), int(lags[k]), dt_s, float(corr[k]), lags * dt_s, corr)


def resample(t_s, x, grid_s) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        return np.interp(grid_s, t_s, x)
    return np.stack([np.interp(grid_s, t_s, x[:, c]) for c in range(x.shape[1])], axis=1)


def camera_time_offset(camera_t_s, camera_motion, joint_t_s, joint_motion, *, dt_s: float = 0.005,
                       max_lag_s: float = 0.3) -> DelayEstimate:
    """How late the camera timestamps are relative to the joint timestamps.

    ``camera_motion`` and ``joint_motion`` are speeds (image-derived, e.g. the
    board's pixel speed; joint-derived, e.g. the joint speed norm). Both are
    resampled on a common grid. If camera stamps read ``true time + offset``,
    the camera's motion appears ``offset`` late and ``delay_s == offset``:
    subtract it from camera timestamps.
    """
    camera_t_s, joint_t_s = np.asarray(camera_t_s, float), np.asarray(joint_t_s, float)
    lo, hi = max(camera_t_s[0], joint_t_s[0]), min(camera_t_s[-1], joint_t_s[-1])
    if hi - lo < 20 * dt_s:
        raise OnboardError("camera and joint logs barely overlap in time", field="t",
                           fix="record both streams over the same motion")
    grid = np.arange(lo, hi, dt_s)
    return estimate_delay(resample(joint_t_s, joint_motion, grid), resample(camera_t_s, camera_motion, grid),
                          dt_s, max_lag_s=max_lag_s, differentiate=False)


def white_noise_std(x) -> float:
    """Measurement-noise std of a sampled signal from its second differences (robust to motion steps)."""
    d2 = np.diff(np.asarray(x, dtype=np.float64), n=2, axis=0).ravel()
    mad = np.median(np.abs(d2 - np.median(d2)))
    return float(1.4826 * mad / np.sqrt(6.0))   # var(d2) = 6 sigma^2 for white noise


def latency_dict(est: DelayEstimate, *, state_noise_std: float | None = None, camera: DelayEstimate | None = None,
                 units: str = "rad") -> dict:
    doc = {"calibration_kind": "latency", "command_to_state_delay_s": est.delay_s, "lag_samples": est.lag_samples,
           "dt_s": est.dt_s, "peak_correlation": est.peak_correlation}
    if state_noise_std is not None:
        doc["state_noise_std"] = state_noise_std
        doc["state_units"] = units
    if camera is not None:
        doc["camera_time_offset_s"] = camera.delay_s
        doc["camera_peak_correlation"] = camera.peak_correlation
    return doc

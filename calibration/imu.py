"""IMU noise calibration from a static recording: bias, Allan deviation, Kalibr-style parameters.

- Bias: the mean of each gyroscope axis; for the accelerometer, the mean
  minus gravity along the measured gravity direction (a static recording
  cannot separate the rest).
- Overlapping Allan deviation at log-spaced cluster times.
- Noise density N (the -1/2 slope line read at tau = 1 s) and random walk K
  (the +1/2 slope line read at tau = 3 s): a weighted least-squares fit of
  ``avar(tau) = N^2 / tau + B^2 + K^2 tau / 3`` (B: the flat bias-instability
  floor), weighted by the number of clusters behind each point.

Units: rad/s/sqrt(Hz) and rad/s^2/sqrt(Hz) (gyro); m/s^2/sqrt(Hz) and
m/s^3/sqrt(Hz) (accelerometer), as Kalibr's imu.yaml expects.

Imports numpy and ``onboard.errors`` only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onboard.errors import OnboardError

GRAVITY = 9.80665


def allan_deviation(x: np.ndarray, rate_hz: float, taus_s: np.ndarray | None = None,
                    n_taus: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlapping Allan deviation of a rate signal ``x`` (N,) or (N, axes).

    Returns ``(taus_s, adev, n_clusters)``; adev has x's trailing shape.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    dt = 1.0 / rate_hz
    if taus_s is None:
        m = np.unique(np.logspace(0, np.log10(max(1, (n - 1) // 9)), n_taus).astype(int))
    else:
        m = np.unique(np.clip(np.round(np.asarray(taus_s) * rate_hz).astype(int), 1, (n - 1) // 2))
    theta = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0)]) * dt
    adev = []
    for mi in m:
        d = theta[2 * mi:] - 2 * theta[mi:-mi] + theta[:-2 * mi]
        avar = np.sum(d ** 2, axis=0) / (2.0 * (mi * dt) ** 2 * (n + 1 - 2 * mi))
        adev.append(np.sqrt(avar))
    return m * dt, np.asarray(adev), (n / m).astype(float)


@dataclass
class NoiseFit:
    noise_density: float       # N
    random_walk: float         # K
    bias_instability: float    # B (the flat floor, reported for information)


def fit_noise(taus_s, adev, n_clusters, *, min_clusters: float = 8.0) -> NoiseFit:
    """N and K from an Allan deviation curve (axes averaged in variance)."""
    taus_s = np.asarray(taus_s, dtype=np.float64)
    avar = np.asarray(adev, dtype=np.float64) ** 2
    if avar.ndim == 2:
        avar = avar.mean(axis=1)
    keep = np.asarray(n_clusters) >= min_clusters
    t, a, nc = taus_s[keep], avar[keep], np.asarray(n_clusters)[keep]
    A = np.stack([1.0 / t, np.ones_like(t), t / 3.0], axis=1)
    model = a.copy()
    coef = np.zeros(3)
    for _ in range(4):   # reweight by the model's own variance: var(avar) ~ avar^2 / clusters
        w = np.sqrt(nc) / np.maximum(model, 1e-300)
        coef, *_ = np.linalg.lstsq(A * w[:, None], a * w, rcond=None)
        coef = np.maximum(coef, 0.0)
        model = A @ coef
    return NoiseFit(float(np.sqrt(coef[0])), float(np.sqrt(coef[2])), float(np.sqrt(coef[1]) / 0.664))


@dataclass
class ImuCalibration:
    rate_hz: float
    duration_s: float
    gyro_bias: np.ndarray
    accel_bias: np.ndarray
    gyro: NoiseFit
    accel: NoiseFit
    taus_s: np.ndarray
    gyro_adev: np.ndarray
    accel_adev: np.ndarray

    def kalibr_dict(self, rostopic: str = "/imu") -> dict:
        return {
            "accelerometer_noise_density": self.accel.noise_density,
            "accelerometer_random_walk": self.accel.random_walk,
            "gyroscope_noise_density": self.gyro.noise_density,
            "gyroscope_random_walk": self.gyro.random_walk,
            "rostopic": rostopic,
            "update_rate": self.rate_hz,
            # Not read by Kalibr; kept for the deployment loop and for people.
            "calibration_kind": "imu",
            "gyroscope_bias": self.gyro_bias.tolist(),
            "accelerometer_bias": self.accel_bias.tolist(),
            "recording_duration_s": self.duration_s,
        }


def calibrate_imu(t_s: np.ndarray, accel: np.ndarray, gyro: np.ndarray, *, min_duration_s: float = 600.0,
                  progress=None) -> ImuCalibration:
    """Bias and noise parameters from a static recording (t (N,), accel (N, 3), gyro (N, 3))."""
    t_s = np.asarray(t_s, dtype=np.float64)
    accel = np.asarray(accel, dtype=np.float64)
    gyro = np.asarray(gyro, dtype=np.float64)
    if accel.shape != (len(t_s), 3) or gyro.shape != (len(t_s), 3):
        raise OnboardError(f"expected t (N,), accel (N, 3), gyro (N, 3); got {t_s.shape}, {accel.shape}, "
                           f"{gyro.shape}", field="accel/gyro", fix="log all three axes at every sample")
    if not (np.all(np.isfinite(accel)) and np.all(np.isfinite(gyro))):
        raise OnboardError("recording contains NaN or inf", field="accel/gyro", fix="drop the broken samples")
    dts = np.diff(t_s)
    if len(t_s) < 100 or np.any(dts <= 0):
        raise OnboardError("timestamps must increase and the recording needs >= 100 samples", field="t",
                           fix="record a static IMU log with monotonic timestamps")
    duration = float(t_s[-1] - t_s[0])
    if duration < min_duration_s:
        raise OnboardError(f"recording is {duration:.0f} s; random walk needs >= {min_duration_s:.0f} s "
                           "(hours are better)", field="t", fix="record the IMU at rest for longer")
    rate = 1.0 / float(np.median(dts))
    g_mean = gyro.mean(axis=0)
    a_mean = accel.mean(axis=0)
    a_bias = a_mean - GRAVITY * a_mean / np.linalg.norm(a_mean)
    taus, g_adev, nc = allan_deviation(gyro, rate)
    if progress:
        progress(f"gyroscope Allan deviation: {len(taus)} cluster times up to {taus[-1]:.0f} s")
    _, a_adev, _ = allan_deviation(accel, rate)
    if progress:
        progress("accelerometer Allan deviation done")
    return ImuCalibration(rate, duration, g_mean, a_bias, fit_noise(taus, g_adev, nc), fit_noise(taus, a_adev, nc),
                          taus, g_adev, a_adev)


def simulate_noise(n: int, rate_hz: float, noise_density: float, random_walk: float, rng: np.random.Generator,
                   axes: int = 3) -> np.ndarray:
    """White noise (density N) plus a random-walk bias (K), sampled at ``rate_hz``: the Kalibr noise model."""
    dt = 1.0 / rate_hz
    white = rng.normal(0.0, noise_density / np.sqrt(dt), (n, axes))
    walk = np.cumsum(rng.normal(0.0, random_walk * np.sqrt(dt), (n, axes)), axis=0)
    return white + walk

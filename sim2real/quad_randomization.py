"""Domain randomization for the quadrotor: plant figures, true latencies, sensor noise, wind.

Owns the quadrotor DR config (``config/randomization/crazyflie2x_<task>.yaml``,
ranges as plain numbers) and the per-episode draw. The arm's
``sim2real.randomization`` is written around MuJoCo model fields of the arm
scene (object, joints, actuators, cameras); the quadrotor's randomized figures
live mostly outside the MuJoCo model (rotor coefficients, motor lag, delays,
wind), so this module keeps its own short schema in the same YAML style
(``[low, high]`` uniform ranges, noise as a Gaussian std).

Each episode draws, per drone:
- plant: mass, inertia, kf, km (scales of the nominal figures), motor time
  constant [s], thrust-to-weight scale (max rotor speed such that the max
  thrust scales by it). The firmware rate loop keeps the nominal model;
- latency: action and observation delays in ms, rounded to whole physics
  steps (2 ms) and realised by FIFOs in ``sim.quad_env`` (true delays, never
  low-pass filters);
- sensors: gyro noise std and a constant gyro bias (IMU); odometry position,
  velocity and attitude noise stds;
- wind: a mean wind (speed uniform, horizontal direction uniform) plus
  Ornstein-Uhlenbeck gusts with the drawn std and correlation time.

``QuadDomainRandomizer.new_episode(env, idx, rng)`` writes the draws into the
env's knobs for drones ``idx``; the same generator state gives the same draws.

Imports numpy and onboard (config loader). Never imports policies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onboard.paths import config_dir
from sim2real.randomization import DRConfig, load_dr_sections

# section -> {key: kind}; kinds as sim2real.randomization.RANGE_KINDS.
SCHEMA = {
    "physics": {"mass_scale": "scale", "inertia_scale": "scale", "kf_scale": "scale", "km_scale": "scale",
                "motor_tau_s": "scale", "thrust_to_weight_scale": "scale"},
    "latency": {"action_delay_ms": "nonneg", "obs_delay_ms": "nonneg"},
    "imu": {"gyro_noise_std_rad_s": "std", "gyro_bias_std_rad_s": "std"},
    "odometry": {"pos_noise_std_m": "std", "vel_noise_std_m_s": "std", "att_noise_std_rad": "std"},
    "wind": {"mean_speed_m_s": "nonneg", "gust_std_m_s": "nonneg", "gust_tau_s": "scale"},
}

QuadDRConfig = DRConfig   # one validated-config type for every robot


def default_quad_dr_path(task: str, robot: str = "crazyflie2x") -> Path:
    return config_dir() / "randomization" / f"{robot}_{task}.yaml"


def load_quad_dr_config(path=None, *, task: str = "track", robot: str = "crazyflie2x") -> DRConfig:
    """Read and validate a quadrotor DR YAML; every error names the file and the field."""
    return load_dr_sections(Path(path) if path is not None else default_quad_dr_path(task, robot), SCHEMA)


@dataclass
class QuadDraw:
    """One episode's draws for ``k`` drones (arrays of length k, or (k, 3))."""
    mass_kg: np.ndarray
    inertia_kgm2: np.ndarray
    kf: np.ndarray
    km: np.ndarray
    motor_tau_s: np.ndarray
    thrust_to_weight_scale: np.ndarray
    action_delay_steps: np.ndarray
    obs_delay_steps: np.ndarray
    gyro_noise_std: np.ndarray
    gyro_bias: np.ndarray
    pos_noise_std: np.ndarray
    vel_noise_std: np.ndarray
    att_noise_std: np.ndarray
    wind_mean_m_s: np.ndarray
    gust_std_m_s: np.ndarray
    gust_tau_s: np.ndarray


def draw(cfg: QuadDRConfig, nominal, k: int, rng: np.random.Generator, physics_dt_s: float) -> QuadDraw:
    """Draw ``k`` drones' parameters around ``nominal`` (a ``sim.quadrotor.QuadParams``).

    The draw order is fixed, so a generator in the same state gives the same draws."""
    def u(sec, key, default):
        r = cfg.get(sec, key)
        return rng.uniform(r[0], r[1], k) if r else np.full(k, float(default))

    def std(sec, key):
        return np.full(k, float(cfg.get(sec, key, 0.0)))

    mass = nominal.mass_kg * u("physics", "mass_scale", 1.0)
    inertia = np.asarray(nominal.inertia_kgm2)[None, :] * u("physics", "inertia_scale", 1.0)[:, None]
    kf = nominal.kf * u("physics", "kf_scale", 1.0)
    km = nominal.km * u("physics", "km_scale", 1.0)
    tau = u("physics", "motor_tau_s", nominal.motor_tau_s)
    tw = u("physics", "thrust_to_weight_scale", 1.0)
    to_steps = 1e-3 / physics_dt_s
    act_delay = np.rint(u("latency", "action_delay_ms", 0.0) * to_steps).astype(int)
    obs_delay = np.rint(u("latency", "obs_delay_ms", 0.0) * to_steps).astype(int)
    gyro_std = std("imu", "gyro_noise_std_rad_s")
    gyro_bias = rng.standard_normal((k, 3)) * std("imu", "gyro_bias_std_rad_s")[:, None]
    speed = u("wind", "mean_speed_m_s", 0.0)
    heading = rng.uniform(-math.pi, math.pi, k)
    wind = np.stack([speed * np.cos(heading), speed * np.sin(heading), np.zeros(k)], axis=1)
    return QuadDraw(mass_kg=mass, inertia_kgm2=inertia, kf=kf, km=km, motor_tau_s=tau,
                    thrust_to_weight_scale=tw, action_delay_steps=act_delay, obs_delay_steps=obs_delay,
                    gyro_noise_std=gyro_std, gyro_bias=gyro_bias,
                    pos_noise_std=std("odometry", "pos_noise_std_m"),
                    vel_noise_std=std("odometry", "vel_noise_std_m_s"),
                    att_noise_std=std("odometry", "att_noise_std_rad"),
                    wind_mean_m_s=wind, gust_std_m_s=u("wind", "gust_std_m_s", 0.0),
                    gust_tau_s=u("wind", "gust_tau_s", 1.0))


class QuadDomainRandomizer:
    """Applies a ``QuadDRConfig`` to a ``sim.quad_env.QuadVecEnv`` for the drones being reset."""

    def __init__(self, cfg: QuadDRConfig):
        self.cfg = cfg

    def new_episode(self, env, idx: np.ndarray, rng: np.random.Generator) -> QuadDraw:
        sim = env.sim
        d = draw(self.cfg, sim.nominal, len(idx), rng, sim.dt_s)
        sim.set_plant(idx, mass_kg=d.mass_kg, inertia_kgm2=d.inertia_kgm2, kf=d.kf, km=d.km,
                      motor_tau_s=d.motor_tau_s, thrust_to_weight_scale=d.thrust_to_weight_scale)
        sim.gyro_noise_std[idx] = d.gyro_noise_std
        sim.gyro_bias[idx] = d.gyro_bias
        env.set_disturbances(idx, action_delay_steps=d.action_delay_steps, obs_delay_steps=d.obs_delay_steps,
                             pos_noise_std=d.pos_noise_std, vel_noise_std=d.vel_noise_std,
                             att_noise_std=d.att_noise_std, wind_mean_m_s=d.wind_mean_m_s,
                             gust_std_m_s=d.gust_std_m_s, gust_tau_s=d.gust_tau_s)
        return d

    def ranges(self) -> dict:
        """The ranges as plain lists, for the artifact's provenance."""
        return {s: {k: list(v) if isinstance(v, tuple) else v for k, v in body.items()}
                for s, body in self.cfg.sections.items()}

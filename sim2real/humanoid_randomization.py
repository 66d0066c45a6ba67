"""Domain randomization for the G1 legs: physics, PD, true delays, observation noise, pushes.

Owns the humanoid DR config (``config/randomization/g1_12dof_<task>.yaml``,
ranges as plain numbers, the same YAML style as the quadrotor's) and the
per-episode draw. Each episode draws, per robot, in a fixed order:

- physics: foot-floor friction, added pelvis (upper body) mass [kg], pelvis CoM
  offset [m] per axis, a mass scale per link;
- pd: a kp and a kd scale per joint, a joint zero offset per joint [rad] (the
  encoders read ``q + offset``: the PD and the observation both see it);
- latency: action and observation delays in ms, rounded to whole physics
  steps (2 ms in the reference sim, the env's ``physics_dt_s``) and realised by FIFOs in ``sim.humanoid_env`` (true delays, never
  low-pass filters);
- observation_noise: Gaussian stds of the gyro, projected gravity, joint
  position and joint velocity readings (per sample);
- pushes: the interval [s] between pushes and the largest base velocity
  change [m/s] (the push direction and size are drawn at push time from the
  env's per-robot generator).

``HumanoidDomainRandomizer.new_episode(env, i, rng)`` writes the draws through
``env.set_episode_params``; the same generator state gives the same draws.

Imports numpy and onboard (config loader). Never imports policies.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onboard.paths import config_dir
from sim2real.randomization import DRConfig, load_dr_sections

# section -> {key: kind}; kinds as sim2real.randomization.RANGE_KINDS ("std" under pushes: one number >= 0).
SCHEMA = {
    "physics": {"friction": "nonneg", "added_base_mass_kg": "range", "com_offset_m": "range",
                "link_mass_scale": "scale"},
    "pd": {"kp_scale": "scale", "kd_scale": "scale", "joint_offset_rad": "range"},
    "latency": {"action_delay_ms": "nonneg", "obs_delay_ms": "nonneg"},
    "observation_noise": {"ang_vel_rad_s": "std", "gravity": "std", "joint_pos_rad": "std",
                          "joint_vel_rad_s": "std"},
    "pushes": {"interval_s": "scale", "max_vel_m_s": "std"},   # "std" kind: one number >= 0
}


HumanoidDRConfig = DRConfig   # one validated-config type for every robot


def default_humanoid_dr_path(task: str, robot: str = "g1_12dof") -> Path:
    return config_dir() / "randomization" / f"{robot}_{task}.yaml"


def load_humanoid_dr_config(path=None, *, task: str = "stand", robot: str = "g1_12dof") -> DRConfig:
    """Read and validate a humanoid DR YAML; every error names the file and the field."""
    return load_dr_sections(Path(path) if path is not None else default_humanoid_dr_path(task, robot), SCHEMA)


@dataclass
class HumanoidDraw:
    """One robot's episode draws."""
    friction: float
    added_base_mass_kg: float
    com_offset_m: np.ndarray
    link_mass_scale: np.ndarray
    kp_scale: np.ndarray
    kd_scale: np.ndarray
    joint_offset_rad: np.ndarray
    action_delay_steps: int
    obs_delay_steps: int
    noise_std: np.ndarray          # ang vel, gravity, joint pos, joint vel
    push_interval_s: tuple | None
    push_max_vel_m_s: float


def draw(cfg: HumanoidDRConfig, rng: np.random.Generator, n_links: int = 13, n_joints: int = 12,
         physics_dt_s: float = 0.002) -> HumanoidDraw:
    """One robot's draws. The order is fixed: the same generator state gives the same draws."""
    def u(sec, key, default, size=None):
        r = cfg.get(sec, key)
        if r:
            return rng.uniform(r[0], r[1], size)
        return np.full(size, float(default)) if size else float(default)

    to_steps = 1e-3 / physics_dt_s
    noise = np.array([cfg.get("observation_noise", k, 0.0)
                      for k in ("ang_vel_rad_s", "gravity", "joint_pos_rad", "joint_vel_rad_s")])
    interval = cfg.get("pushes", "interval_s")
    return HumanoidDraw(
        friction=float(u("physics", "friction", 1.0)),
        added_base_mass_kg=float(u("physics", "added_base_mass_kg", 0.0)),
        com_offset_m=u("physics", "com_offset_m", 0.0, 3),
        link_mass_scale=u("physics", "link_mass_scale", 1.0, n_links),
        kp_scale=u("pd", "kp_scale", 1.0, n_joints),
        kd_scale=u("pd", "kd_scale", 1.0, n_joints),
        joint_offset_rad=u("pd", "joint_offset_rad", 0.0, n_joints),
        action_delay_steps=int(round(u("latency", "action_delay_ms", 0.0) * to_steps)),
        obs_delay_steps=int(round(u("latency", "obs_delay_ms", 0.0) * to_steps)),
        noise_std=noise,
        push_interval_s=tuple(interval) if interval else None,
        push_max_vel_m_s=float(cfg.get("pushes", "max_vel_m_s", 0.0)),
    )


class HumanoidDomainRandomizer:
    """Applies a ``HumanoidDRConfig`` to a ``sim.humanoid_env.HumanoidVecEnv`` robot being reset."""

    def __init__(self, cfg: HumanoidDRConfig):
        self.cfg = cfg

    def new_episode(self, env, i: int, rng: np.random.Generator) -> HumanoidDraw:
        d = draw(self.cfg, rng, physics_dt_s=getattr(env, "physics_dt_s", 0.002))
        env.set_episode_params(i, friction=d.friction, added_mass_kg=d.added_base_mass_kg,
                               com_offset_m=d.com_offset_m, link_mass_scale=d.link_mass_scale,
                               kp_scale=d.kp_scale, kd_scale=d.kd_scale, joint_offset_rad=d.joint_offset_rad,
                               action_delay_steps=d.action_delay_steps, obs_delay_steps=d.obs_delay_steps,
                               noise_std=d.noise_std, push_interval_s=d.push_interval_s,
                               push_max_vel_m_s=d.push_max_vel_m_s)
        return d

    def ranges(self) -> dict:
        """The ranges as plain lists, for the artifact's provenance."""
        return {s: {k: list(v) if isinstance(v, tuple) else v for k, v in body.items()}
                for s, body in self.cfg.sections.items()}

"""Baseline quadrotor controller: geometric position control to collective thrust + body rates.

Owns ``GeometricController``: a cascaded controller in the style of Lee,
Leok and McClamroch (2010) / Mellinger and Kumar (2011), cut at the body-rate
interface that real firmware exposes:

    a_des = a_ref - Kp e_p - Kd (v - v_ref) - Ki int(e_p) + g z
    thrust = m_nom * a_des . b3                  (collective thrust, N)
    R_des  = [b1_des, b2_des, a_des/|a_des|]      (yaw held at 0)
    rates  = -K_R vee(R_des^T R - R^T R_des) / 2  (body rates, rad/s)

The tilt of ``a_des`` is capped at ``max_tilt_rad``; the integrator runs only
within ``integral_zone_m`` of the reference and is clamped (anti-windup).
It reads only the env's observation dict (the delayed, noisy measurements
the policy sees), so the same controller can run next to the runtime on the
robot, and it returns the env's normalized action.
Batched: every array has a leading batch axis.

Imports numpy only (it runs on the robot next to the runtime). Never imports policies.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

GRAVITY_M_S2 = 9.81
# The env's body-rate range (sim.quad_env.MAX_RATES_RAD_S); kept here as numbers so this
# module stays numpy-only for the robot path.
MAX_RATES_RAD_S = np.array([3.84, 3.84, 3.49])


@dataclass
class GeometricGains:
    kp: np.ndarray = field(default_factory=lambda: np.array([6.0, 6.0, 8.0]))       # 1/s^2
    kd: np.ndarray = field(default_factory=lambda: np.array([4.0, 4.0, 5.0]))       # 1/s
    ki: np.ndarray = field(default_factory=lambda: np.array([1.5, 1.5, 3.0]))       # 1/s^3
    k_rot: np.ndarray = field(default_factory=lambda: np.array([9.0, 9.0, 3.0]))    # 1/s
    integral_limit_m_s: float = 0.3
    integral_zone_m: float = 0.1
    max_tilt_rad: float = 0.6


class GeometricController:
    """Observation dict (batched) -> normalized action (n, 4) in [-1, 1]."""

    def __init__(self, mass_kg: float, max_thrust_n: float, dt_s: float, num_envs: int = 1,
                 gains: GeometricGains | None = None):
        self.mass_kg, self.max_thrust_n, self.dt_s = float(mass_kg), float(max_thrust_n), float(dt_s)
        self.gains = gains or GeometricGains()
        self.integral = np.zeros((num_envs, 3))

    @classmethod
    def for_env(cls, env, gains: GeometricGains | None = None) -> "GeometricController":
        """Built from the env's NOMINAL figures (the controller never sees the DR draws)."""
        return cls(env.sim.nominal.mass_kg, env.max_thrust_n, env.dt_s, env.num_envs, gains)

    def reset(self, idx=None) -> None:
        if idx is None:
            self.integral[:] = 0.0
        else:
            self.integral[idx] = 0.0

    def act(self, obs: dict) -> np.ndarray:
        g = self.gains
        e_p = np.asarray(obs["pos_error_m"], dtype=float)
        e_v = np.asarray(obs["vel_m_s"], dtype=float) - np.asarray(obs["ref_vel_m_s"], dtype=float)
        # Conditional integration (anti-windup): integrate only near the reference, so the
        # transient after a setpoint change does not wind the integrator up.
        near = np.abs(e_p) < g.integral_zone_m
        self.integral = np.clip(self.integral + np.where(near, e_p, 0.0) * self.dt_s,
                                -g.integral_limit_m_s, g.integral_limit_m_s)
        a_des = (np.asarray(obs["ref_acc_m_s2"], dtype=float) - g.kp * e_p - g.kd * e_v - g.ki * self.integral)
        a_des[:, 2] = np.maximum(a_des[:, 2] + GRAVITY_M_S2, 0.3 * GRAVITY_M_S2)
        # Cap the tilt: |a_xy| <= tan(max_tilt) * a_z.
        a_xy = np.linalg.norm(a_des[:, :2], axis=1)
        cap = np.tan(g.max_tilt_rad) * a_des[:, 2]
        a_des[:, :2] *= np.minimum(1.0, cap / np.maximum(a_xy, 1e-9))[:, None]

        r6 = np.asarray(obs["rot6d"], dtype=float)
        c1, c2 = r6[:, 0:3], r6[:, 3:6]
        c1 = c1 / np.linalg.norm(c1, axis=1, keepdims=True)
        c2 = c2 - np.sum(c1 * c2, axis=1, keepdims=True) * c1
        c2 = c2 / np.linalg.norm(c2, axis=1, keepdims=True)
        rot = np.stack([c1, c2, np.cross(c1, c2)], axis=2)             # columns = body axes in world

        thrust = self.mass_kg * np.sum(a_des * rot[:, :, 2], axis=1)
        b3 = a_des / np.linalg.norm(a_des, axis=1, keepdims=True)
        b2 = np.cross(b3, np.array([1.0, 0.0, 0.0]))
        b2 /= np.linalg.norm(b2, axis=1, keepdims=True)
        b1 = np.cross(b2, b3)
        rot_des = np.stack([b1, b2, b3], axis=2)
        m = np.einsum("nji,njk->nik", rot_des, rot) - np.einsum("nji,njk->nik", rot, rot_des)
        e_rot = 0.5 * np.stack([m[:, 2, 1], m[:, 0, 2], m[:, 1, 0]], axis=1)
        rates = -g.k_rot * e_rot
        a0 = 2.0 * thrust / self.max_thrust_n - 1.0
        return np.clip(np.concatenate([a0[:, None], rates / MAX_RATES_RAD_S], axis=1), -1.0, 1.0)

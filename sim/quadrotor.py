"""Crazyflie 2.x class quadrotor in MuJoCo: rotor physics plus a firmware-like rate loop.

Owns the quadrotor plant and its onboard loop, batched: ``QuadrotorBatch(n)``
builds one MuJoCo world (``MjSpec``) holding ``n`` independent airframes that
never collide with each other (only with the floor), so one ``mj_step``
advances every drone and the per-rotor maths is numpy over the batch.

Per physics step (500 Hz, the firmware's rate-loop rate):

1. rate loop (firmware, uses NOMINAL parameters): PI on body rates from the
   gyro + gyroscopic feed-forward -> body torques;
2. mixer (nominal allocation matrix, "air mode": attitude torque keeps
   priority, collective shifts to fit) -> rotor thrusts -> commanded rpm;
3. motors (PLANT parameters): first-order lag ``d rpm/dt = (rpm_cmd - rpm)/tau``,
   discretized exactly, rpm clipped at the plant's max speed;
4. rotor forces ``kf * rpm^2`` (times the ground-effect factor near the floor)
   and yaw torques ``+-km * rpm^2``; rotor drag ``-c * sum(omega_rotor) * v_air``
   in the body frame (gym-pybullet-drones model) plus a quadratic body drag;
   all applied through ``xfrc_applied`` at the centre of mass, then ``mj_step``.

Frames: world z up; body FLU. Rotor order and positions from
``config/robots/crazyflie2x.yaml`` (X layout); rotors 0 and 2 spin so that
their reaction torque is negative about body z, rotors 1 and 3 positive.

The policy-facing command is collective thrust [N] + body rates [rad/s]
(``set_command``); the env holds it for 5 physics steps (100 Hz).

Imports numpy, mujoco and onboard.spec. Never imports sim2real or policies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import mujoco
import numpy as np

from onboard.spec.robot import load_robot

GRAVITY_M_S2 = 9.81
# Figures from ../shared/robots/crazyflie2x.yaml that the profile does not carry.
PROP_RADIUS_M = 0.0231348
GROUND_EFFECT_COEFF = 11.36859
COLLISION_RADIUS_M = 0.06
COLLISION_HALF_LENGTH_M = 0.0125
# Assumed (not in the shared figures): motor time constant of a 7 mm coreless motor with a
# 46 mm prop, and a quadratic body drag 0.5 * rho * Cd * A with A ~ 0.003 m^2 (frontal), Cd ~ 1.
MOTOR_TAU_S = 0.02
BODY_DRAG_N_PER_M2_S2 = 0.002
# Rate-loop gains in angular acceleration per rate error (1/s) and per integrated error (1/s^2):
# critically-damped-ish with the 20 ms motor lag (omega_n ~ 35 rad/s, zeta ~ 0.7).
RATE_KP = np.array([25.0, 25.0, 15.0])
RATE_KI = np.array([30.0, 30.0, 10.0])
RATE_I_LIMIT_RAD = np.array([0.3, 0.3, 0.3])      # anti-windup on the integrated rate error
YAW_SIGN = np.array([-1.0, 1.0, -1.0, 1.0])       # reaction-torque sign per rotor (cf2x)


@dataclass(frozen=True)
class QuadParams:
    """Physical figures of one airframe (SI; rpm for rotor speed)."""
    mass_kg: float
    inertia_kgm2: tuple            # (ixx, iyy, izz)
    rotor_xy_m: tuple              # 4 x (x, y) in the body frame
    kf: float                      # N / rpm^2
    km: float                      # N m / rpm^2
    thrust_to_weight: float
    drag_xy: float                 # rotor drag, N per (m/s * rad/s of summed rotor speed)
    drag_z: float
    motor_tau_s: float = MOTOR_TAU_S
    body_drag: float = BODY_DRAG_N_PER_M2_S2
    ground_effect: bool = True

    @property
    def weight_n(self) -> float:
        return self.mass_kg * GRAVITY_M_S2

    @property
    def max_thrust_n(self) -> float:
        return self.thrust_to_weight * self.weight_n

    @property
    def max_rpm(self) -> float:
        return math.sqrt(self.max_thrust_n / 4.0 / self.kf)

    @property
    def hover_rpm(self) -> float:
        return math.sqrt(self.weight_n / 4.0 / self.kf)

    @classmethod
    def from_profile(cls, robot="crazyflie2x", **overrides) -> "QuadParams":
        raw = load_robot(robot).raw
        inertia = raw["inertia_kgm2"]
        drag = raw["drag_coefficients"]
        p = cls(mass_kg=float(raw["mass_kg"]),
                inertia_kgm2=(float(inertia["ixx"]), float(inertia["iyy"]), float(inertia["izz"])),
                rotor_xy_m=tuple(tuple(float(v) for v in xy) for xy in raw["rotor_positions_xy_m"]),
                kf=float(raw["thrust_coefficient_kf_N_per_rpm2"]),
                km=float(raw["torque_coefficient_km_Nm_per_rpm2"]),
                thrust_to_weight=float(raw["thrust_to_weight"]),
                drag_xy=float(drag["xy"]), drag_z=float(drag["z"]))
        return replace(p, **overrides)

    def allocation(self) -> np.ndarray:
        """(4, 4) map from rotor thrusts [N] to [collective N, tau_x, tau_y, tau_z N m]."""
        xy = np.asarray(self.rotor_xy_m)
        return np.stack([np.ones(4), xy[:, 1], -xy[:, 0], YAW_SIGN * self.km / self.kf])


def quat_to_rotmat(q: np.ndarray) -> np.ndarray:
    """(N, 4) unit quaternions (w, x, y, z) -> (N, 3, 3) body-to-world rotation matrices."""
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    r = np.empty((q.shape[0], 3, 3))
    r[:, 0, 0] = 1 - 2 * (y * y + z * z)
    r[:, 0, 1] = 2 * (x * y - w * z)
    r[:, 0, 2] = 2 * (x * z + w * y)
    r[:, 1, 0] = 2 * (x * y + w * z)
    r[:, 1, 1] = 1 - 2 * (x * x + z * z)
    r[:, 1, 2] = 2 * (y * z - w * x)
    r[:, 2, 0] = 2 * (x * z - w * y)
    r[:, 2, 1] = 2 * (y * z + w * x)
    r[:, 2, 2] = 1 - 2 * (x * x + y * y)
    return r


def build_world(n: int, params: QuadParams, physics_hz: float) -> mujoco.MjModel:
    """One floor and ``n`` free-flying airframes; drones collide with the floor only."""
    spec = mujoco.MjSpec()
    spec.option.timestep = 1.0 / physics_hz
    spec.option.gravity = [0.0, 0.0, -GRAVITY_M_S2]
    # contype/conaffinity: floor (1, 2), drones (2, 1) -> floor-drone pairs collide, drone-drone never.
    spec.worldbody.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[10, 10, 0.1],
                            contype=1, conaffinity=2, rgba=[0.8, 0.8, 0.8, 1])
    for i in range(n):
        b = spec.worldbody.add_body(name=f"quad{i}", pos=[0, 0, 0])
        b.explicitinertial = True
        b.ipos = [0, 0, 0]           # centre of mass at the body origin (set explicitly: not a default here)
        b.mass = params.mass_kg
        b.inertia = list(params.inertia_kgm2)
        b.add_freejoint(name=f"quad{i}_free")
        b.add_geom(name=f"quad{i}_hull", type=mujoco.mjtGeom.mjGEOM_CYLINDER,
                   size=[COLLISION_RADIUS_M, COLLISION_HALF_LENGTH_M, 0], contype=2, conaffinity=1,
                   mass=0, density=0, rgba=[0.2, 0.2, 0.9, 0.4])
        for k, (x, y) in enumerate(params.rotor_xy_m):
            b.add_site(name=f"quad{i}_rotor{k}", pos=[x, y, COLLISION_HALF_LENGTH_M], size=[PROP_RADIUS_M, 0, 0])
    return spec.compile()


class QuadrotorBatch:
    """``n`` quadrotors with per-drone plant parameters and the firmware rate loop."""

    def __init__(self, n: int = 1, robot: str = "crazyflie2x", physics_hz: float = 500.0,
                 ground_effect: bool = True):
        self.n = int(n)
        self.nominal = QuadParams.from_profile(robot, ground_effect=ground_effect)
        self.dt_s = 1.0 / physics_hz
        self.model = build_world(self.n, self.nominal, physics_hz)
        self.data = mujoco.MjData(self.model)
        self.body_ids = np.array([self.model.body(f"quad{i}").id for i in range(self.n)])
        self.qpos_adr = np.array([self.model.jnt_qposadr[self.model.joint(f"quad{i}_free").id]
                                  for i in range(self.n)])
        self.qvel_adr = np.array([self.model.jnt_dofadr[self.model.joint(f"quad{i}_free").id]
                                  for i in range(self.n)])
        self._qp = self.qpos_adr[:, None] + np.arange(7)
        self._qv = self.qvel_adr[:, None] + np.arange(6)
        # Firmware (nominal) quantities.
        p = self.nominal
        self.J_nom = np.asarray(p.inertia_kgm2)
        self.mix = np.linalg.inv(p.allocation())          # [T, tau] -> rotor thrusts
        self.rotor_xy = np.asarray(p.rotor_xy_m)
        self.fw_max_rotor_n = p.max_thrust_n / 4.0
        self.fw_kf = p.kf
        # Plant quantities, per drone (the randomizer overwrites these via set_plant).
        self.kf = np.full(self.n, p.kf)
        self.km = np.full(self.n, p.km)
        self.motor_tau_s = np.full(self.n, p.motor_tau_s)
        self.max_rpm = np.full(self.n, p.max_rpm)
        self.drag = np.tile([p.drag_xy, p.drag_xy, p.drag_z], (self.n, 1))
        self.body_drag = np.full(self.n, p.body_drag)
        self.ground_effect = ground_effect
        # Disturbances and sensors.
        self.wind_m_s = np.zeros((self.n, 3))            # air velocity (world)
        self.gyro_noise_std = np.zeros(self.n)
        self.gyro_bias = np.zeros((self.n, 3))
        self.rng = np.random.default_rng(0)
        # Loop state.
        self.cmd_thrust_n = np.full(self.n, p.weight_n)
        self.cmd_rates = np.zeros((self.n, 3))
        self.rpm = np.full(self.n, p.hover_rpm)[:, None].repeat(4, 1)
        self.rpm_cmd = self.rpm.copy()
        self.rate_integral = np.zeros((self.n, 3))
        mujoco.mj_forward(self.model, self.data)

    # ---- configuration ------------------------------------------------------------------------
    def set_plant(self, idx, *, mass_kg=None, inertia_kgm2=None, kf=None, km=None, motor_tau_s=None,
                  thrust_to_weight_scale=None) -> None:
        """Per-drone plant figures (the firmware keeps its nominal model). ``idx``: drone indices."""
        idx = np.atleast_1d(idx)
        p = self.nominal
        if mass_kg is not None:
            self.model.body_mass[self.body_ids[idx]] = mass_kg
        if inertia_kgm2 is not None:
            self.model.body_inertia[self.body_ids[idx]] = inertia_kgm2
        if kf is not None:
            self.kf[idx] = kf
        if km is not None:
            self.km[idx] = km
        if motor_tau_s is not None:
            self.motor_tau_s[idx] = motor_tau_s
        kf_now = self.kf[idx]
        tw = 1.0 if thrust_to_weight_scale is None else np.asarray(thrust_to_weight_scale)
        # Max rotor speed such that the plant's max thrust = nominal max thrust * scale.
        self.max_rpm[idx] = np.sqrt(p.max_thrust_n * tw / 4.0 / kf_now)

    def reset_drones(self, idx, pos, quat=None, vel=None, omega_body=None) -> None:
        """Place drones ``idx`` (array) at ``pos`` (k, 3); motors at the nominal hover speed."""
        idx = np.atleast_1d(idx)
        k = len(idx)
        quat = np.tile([1.0, 0, 0, 0], (k, 1)) if quat is None else np.asarray(quat)
        vel = np.zeros((k, 3)) if vel is None else np.asarray(vel)
        omega_body = np.zeros((k, 3)) if omega_body is None else np.asarray(omega_body)
        self.data.qpos[self._qp[idx]] = np.concatenate([np.asarray(pos), quat], axis=1)
        self.data.qvel[self._qv[idx]] = np.concatenate([vel, omega_body], axis=1)
        self.data.xfrc_applied[self.body_ids[idx]] = 0.0
        self.rpm[idx] = self.nominal.hover_rpm
        self.rpm_cmd[idx] = self.nominal.hover_rpm
        self.rate_integral[idx] = 0.0
        self.cmd_thrust_n[idx] = self.nominal.weight_n
        self.cmd_rates[idx] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def set_command(self, thrust_n, rates_rad_s) -> None:
        """Collective thrust [N] (n,) and body-rate setpoints [rad/s] (n, 3) for the rate loop."""
        self.cmd_thrust_n = np.clip(np.asarray(thrust_n, dtype=float), 0.0, 4 * self.fw_max_rotor_n)
        self.cmd_rates = np.asarray(rates_rad_s, dtype=float)

    # ---- state --------------------------------------------------------------------------------
    @property
    def pos(self) -> np.ndarray:
        return self.data.qpos[self._qp[:, :3]]

    @property
    def quat(self) -> np.ndarray:
        return self.data.qpos[self._qp[:, 3:]]

    @property
    def vel(self) -> np.ndarray:
        """Linear velocity, world frame [m/s]."""
        return self.data.qvel[self._qv[:, :3]]

    @property
    def omega_body(self) -> np.ndarray:
        """Body rates [rad/s] (MuJoCo's free-joint angular velocity is in the body frame)."""
        return self.data.qvel[self._qv[:, 3:]]

    def rotation(self) -> np.ndarray:
        return quat_to_rotmat(self.quat)

    # ---- the loop -----------------------------------------------------------------------------
    def rate_loop(self, gyro: np.ndarray) -> np.ndarray:
        """Firmware: body-rate PI + gyroscopic feed-forward -> torque -> mixer -> rpm command."""
        err = self.cmd_rates - gyro
        self.rate_integral = np.clip(self.rate_integral + err * self.dt_s, -RATE_I_LIMIT_RAD, RATE_I_LIMIT_RAD)
        alpha = RATE_KP * err + RATE_KI * self.rate_integral
        jw = self.J_nom * gyro
        tau = self.J_nom * alpha + np.cross(gyro, jw)
        f_tau = tau @ self.mix[:, 1:].T                            # (n, 4), sums to zero per drone
        fmax = self.fw_max_rotor_n
        span = f_tau.max(1) - f_tau.min(1)
        f_tau *= np.minimum(1.0, fmax / np.maximum(span, 1e-12))[:, None]
        f = (self.cmd_thrust_n / 4.0)[:, None] + f_tau
        f -= np.minimum(f.min(1), 0.0)[:, None]                      # air mode: keep the torque,
        f -= np.maximum(f.max(1) - fmax, 0.0)[:, None]               # move the collective to fit
        f = np.clip(f, 0.0, fmax)
        return np.sqrt(f / self.fw_kf)

    def step(self) -> None:
        """One physics step (``dt_s``): rate loop, motors, forces, ``mj_step``."""
        gyro = self.omega_body + self.gyro_bias
        if np.any(self.gyro_noise_std > 0):
            gyro = gyro + self.rng.standard_normal((self.n, 3)) * self.gyro_noise_std[:, None]
        self.rpm_cmd = np.minimum(self.rate_loop(gyro), self.max_rpm[:, None])
        a = 1.0 - np.exp(-self.dt_s / self.motor_tau_s)
        self.rpm += a[:, None] * (self.rpm_cmd - self.rpm)
        self.apply_forces()
        mujoco.mj_step(self.model, self.data)

    def rotor_thrusts(self, rot: np.ndarray | None = None) -> np.ndarray:
        """(n, 4) rotor thrusts [N] from the current rotor speeds, with ground effect."""
        f = self.kf[:, None] * self.rpm ** 2
        if self.ground_effect:
            rot = self.rotation() if rot is None else rot
            # Rotor heights: body origin + R @ rotor offset (gym-pybullet-drones' model, capped).
            offs = np.concatenate([self.rotor_xy, np.zeros((4, 1))], 1)        # (4, 3)
            h = self.pos[:, 2:3] + np.einsum("nj,kj->nk", rot[:, 2, :], offs)
            h = np.maximum(h, 1e-3)
            ge = GROUND_EFFECT_COEFF * (PROP_RADIUS_M / (4.0 * h)) ** 2
            f = f * (1.0 + np.minimum(ge, 0.5))
        return f

    def apply_forces(self) -> None:
        rot = self.rotation()
        f = self.rotor_thrusts(rot)
        force_b = np.zeros((self.n, 3))
        force_b[:, 2] = f.sum(1)
        torque_b = np.stack([f @ self.rotor_xy[:, 1], -(f @ self.rotor_xy[:, 0]),
                             (self.km[:, None] * self.rpm ** 2) @ YAW_SIGN], axis=1)
        v_air = self.vel - self.wind_m_s                                       # world
        v_air_b = np.einsum("nji,nj->ni", rot, v_air)
        omega_sum = self.rpm.sum(1) * (2 * math.pi / 60.0)
        force_b -= self.drag * omega_sum[:, None] * v_air_b
        force_w = np.einsum("nij,nj->ni", rot, force_b)
        force_w -= self.body_drag[:, None] * np.linalg.norm(v_air, axis=1, keepdims=True) * v_air
        torque_w = np.einsum("nij,nj->ni", rot, torque_b)
        self.data.xfrc_applied[self.body_ids, :3] = force_w
        self.data.xfrc_applied[self.body_ids, 3:] = torque_w

    def on_ground(self) -> np.ndarray:
        """(n,) bool: the hull touches (or is below) the floor."""
        return self.pos[:, 2] < 0.035

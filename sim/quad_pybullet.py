"""The same Crazyflie 2.x quadrotor, implemented independently on PyBullet (for sim-to-sim checks).

Owns ``PyBulletQuadBatch``: ``n`` airframes in one PyBullet world
(``p.DIRECT``, 500 Hz, Bullet's own rigid-body integrator and contact with a
floor plane), with the plant and the firmware written again here rather than
shared with ``sim.quadrotor``:

- firmware rate loop: PI on the body-rate error from the gyro, torque demand
  ``J_nom * alpha + omega x J_nom omega``, then the mixer solves for squared
  rotor speeds directly (``rpm^2 = A^-1 [T, tau] / kf_nom``), sheds
  collective (never attitude torque) when a rotor would saturate or go
  negative;
- motors: first-order lag integrated with a forward-Euler step (the MuJoCo
  plant uses the exact exponential), clipped at the plant's max rpm;
- rotors: one thrust force per rotor at its own position; the moment comes
  from ``r_i x F_i`` summed in the world frame (not from an allocation
  matrix), plus the reaction torque ``+-km rpm^2`` about body z; ground
  effect per rotor from the rotor height;
- drag: rotor drag proportional to the summed rotor speed and the body-frame
  air velocity, and a quadratic body drag, in the world frame.

The physical figures come from the same robot profile
(``config/robots/crazyflie2x.yaml``) and the same assumed constants
(motor lag, body drag, rate gains) as ``sim.quadrotor``: sim-to-sim compares
two implementations of one quadrotor, not two quadrotors. The object exposes
the plant interface ``sim.quad_env.QuadVecEnv`` drives (``set_plant``,
``reset_drones``, ``set_command``, ``step``, ``pos``/``vel``/``omega_body``,
``rotation``, ``on_ground``, wind and gyro fields), so the task harness,
latency FIFOs, noise and DR draws are identical and only the physics differs.

Imports numpy, pybullet and the figures of ``sim.quadrotor``. Never sim2real or policies.
"""
from __future__ import annotations

import math

import numpy as np
import pybullet as pb

from sim.quadrotor import (BODY_DRAG_N_PER_M2_S2, COLLISION_HALF_LENGTH_M, COLLISION_RADIUS_M,
                           GRAVITY_M_S2, GROUND_EFFECT_COEFF, PROP_RADIUS_M, RATE_I_LIMIT_RAD, RATE_KI,
                           RATE_KP, YAW_SIGN, QuadParams)

RPM_TO_RAD_S = 2.0 * math.pi / 60.0


def _rot_from_xyzw(q) -> np.ndarray:
    return np.asarray(pb.getMatrixFromQuaternion(q), dtype=float).reshape(3, 3)


class PyBulletQuadBatch:
    """``n`` quadrotors in one PyBullet DIRECT world; the plant interface of ``sim.quadrotor.QuadrotorBatch``."""

    def __init__(self, n: int = 1, robot: str = "crazyflie2x", physics_hz: float = 500.0,
                 ground_effect: bool = True):
        self.n = int(n)
        self.nominal = QuadParams.from_profile(robot, ground_effect=ground_effect)
        p = self.nominal
        self.dt_s = 1.0 / physics_hz
        self.ground_effect = ground_effect
        self.cid = pb.connect(pb.DIRECT)
        pb.setGravity(0, 0, -GRAVITY_M_S2, physicsClientId=self.cid)
        pb.setTimeStep(self.dt_s, physicsClientId=self.cid)
        pb.setPhysicsEngineParameter(numSubSteps=0, physicsClientId=self.cid)
        plane = pb.createCollisionShape(pb.GEOM_PLANE, physicsClientId=self.cid)
        self.floor = pb.createMultiBody(0, plane, physicsClientId=self.cid)
        hull = pb.createCollisionShape(pb.GEOM_CYLINDER, radius=COLLISION_RADIUS_M,
                                       height=2 * COLLISION_HALF_LENGTH_M, physicsClientId=self.cid)
        self.bodies = []
        for i in range(self.n):
            b = pb.createMultiBody(p.mass_kg, hull, basePosition=[3.0 * i, 0, 1], physicsClientId=self.cid)
            pb.changeDynamics(b, -1, localInertiaDiagonal=list(p.inertia_kgm2), linearDamping=0.0,
                              angularDamping=0.0, lateralFriction=0.5, physicsClientId=self.cid)
            self.bodies.append(b)
        for i, a in enumerate(self.bodies):     # drones meet the floor, never each other
            for b in self.bodies[i + 1:]:
                pb.setCollisionFilterPair(a, b, -1, -1, 0, physicsClientId=self.cid)
        # Firmware: nominal figures.
        self.J_nom = np.asarray(p.inertia_kgm2)
        xy = np.asarray(p.rotor_xy_m)
        self.rotor_xy = xy
        self.rotor_b = np.concatenate([xy, np.zeros((4, 1))], 1)     # rotor hubs, in the CoM plane
        # rows: collective, tau_x, tau_y, tau_z per unit rpm^2 (nominal kf, km)
        self._alloc = np.stack([np.full(4, p.kf), p.kf * xy[:, 1], -p.kf * xy[:, 0], YAW_SIGN * p.km])
        self._alloc_inv = np.linalg.inv(self._alloc)
        self.fw_max_rpm2 = p.max_thrust_n / 4.0 / p.kf
        # Plant figures per drone (DR writes these through set_plant).
        self.mass = np.full(self.n, p.mass_kg)
        self.kf = np.full(self.n, p.kf)
        self.km = np.full(self.n, p.km)
        self.motor_tau_s = np.full(self.n, p.motor_tau_s)
        self.max_rpm = np.full(self.n, p.max_rpm)
        self.drag = np.tile([p.drag_xy, p.drag_xy, p.drag_z], (self.n, 1))
        self.body_drag = np.full(self.n, BODY_DRAG_N_PER_M2_S2)
        self.wind_m_s = np.zeros((self.n, 3))
        self.gyro_noise_std = np.zeros(self.n)
        self.gyro_bias = np.zeros((self.n, 3))
        self.rng = np.random.default_rng(0)
        self.cmd_thrust_n = np.full(self.n, p.weight_n)
        self.cmd_rates = np.zeros((self.n, 3))
        self.rpm = np.full((self.n, 4), p.hover_rpm)
        self.rate_integral = np.zeros((self.n, 3))
        self._read()

    def close(self) -> None:
        if self.cid is not None and pb.isConnected(self.cid):
            pb.disconnect(self.cid)
        self.cid = None

    def __del__(self):
        try:
            self.close()
        except Exception:   # noqa: BLE001 - interpreter shutdown
            pass

    # ---- configuration ------------------------------------------------------------------------
    def set_plant(self, idx, *, mass_kg=None, inertia_kgm2=None, kf=None, km=None, motor_tau_s=None,
                  thrust_to_weight_scale=None) -> None:
        idx = np.atleast_1d(idx)
        if mass_kg is not None:
            self.mass[idx] = mass_kg
        inertia = None if inertia_kgm2 is None else np.broadcast_to(np.asarray(inertia_kgm2, float), (len(idx), 3))
        for j, i in enumerate(idx):
            kw = {"mass": float(self.mass[i])}
            if inertia is not None:
                kw["localInertiaDiagonal"] = inertia[j].tolist()
            pb.changeDynamics(self.bodies[i], -1, physicsClientId=self.cid, **kw)
        if kf is not None:
            self.kf[idx] = kf
        if km is not None:
            self.km[idx] = km
        if motor_tau_s is not None:
            self.motor_tau_s[idx] = motor_tau_s
        tw = 1.0 if thrust_to_weight_scale is None else np.asarray(thrust_to_weight_scale)
        self.max_rpm[idx] = np.sqrt(self.nominal.max_thrust_n * tw / 4.0 / self.kf[idx])

    def reset_drones(self, idx, pos, quat=None, vel=None, omega_body=None) -> None:
        """``quat`` is (w, x, y, z) as in ``sim.quadrotor``."""
        idx = np.atleast_1d(idx)
        k = len(idx)
        quat = np.tile([1.0, 0, 0, 0], (k, 1)) if quat is None else np.asarray(quat, float)
        vel = np.zeros((k, 3)) if vel is None else np.asarray(vel, float)
        omega_body = np.zeros((k, 3)) if omega_body is None else np.asarray(omega_body, float)
        for j, i in enumerate(idx):
            w, x, y, z = quat[j]
            q = [x, y, z, w]
            pb.resetBasePositionAndOrientation(self.bodies[i], np.asarray(pos[j], float).tolist(), q,
                                               physicsClientId=self.cid)
            w_world = _rot_from_xyzw(q) @ omega_body[j]
            pb.resetBaseVelocity(self.bodies[i], vel[j].tolist(), w_world.tolist(), physicsClientId=self.cid)
        self.rpm[idx] = self.nominal.hover_rpm
        self.rate_integral[idx] = 0.0
        self.cmd_thrust_n[idx] = self.nominal.weight_n
        self.cmd_rates[idx] = 0.0
        self._read()

    def set_command(self, thrust_n, rates_rad_s) -> None:
        self.cmd_thrust_n = np.clip(np.asarray(thrust_n, dtype=float), 0.0, self.nominal.max_thrust_n)
        self.cmd_rates = np.asarray(rates_rad_s, dtype=float)

    # ---- state --------------------------------------------------------------------------------
    def _read(self) -> None:
        n = self.n
        self._pos, self._vel = np.zeros((n, 3)), np.zeros((n, 3))
        self._rot, self._wb = np.zeros((n, 3, 3)), np.zeros((n, 3))
        for i, b in enumerate(self.bodies):
            pos, q = pb.getBasePositionAndOrientation(b, physicsClientId=self.cid)
            v, w = pb.getBaseVelocity(b, physicsClientId=self.cid)
            r = _rot_from_xyzw(q)
            self._pos[i], self._vel[i], self._rot[i] = pos, v, r
            self._wb[i] = r.T @ np.asarray(w)

    @property
    def pos(self) -> np.ndarray:
        return self._pos

    @property
    def vel(self) -> np.ndarray:
        return self._vel

    @property
    def omega_body(self) -> np.ndarray:
        return self._wb

    def rotation(self) -> np.ndarray:
        return self._rot

    def on_ground(self) -> np.ndarray:
        return self._pos[:, 2] < 0.035

    # ---- the loop -----------------------------------------------------------------------------
    def _firmware(self, gyro: np.ndarray) -> np.ndarray:
        """Commanded rpm (n, 4) from the rate setpoints and collective thrust (nominal model)."""
        err = self.cmd_rates - gyro
        self.rate_integral = np.clip(self.rate_integral + err * self.dt_s, -RATE_I_LIMIT_RAD, RATE_I_LIMIT_RAD)
        alpha = RATE_KP * err + RATE_KI * self.rate_integral
        tau = self.J_nom * alpha + np.cross(gyro, self.J_nom * gyro)
        # Squared speeds for the torque alone (sums to zero collective), then for the collective.
        w2_tau = np.concatenate([np.zeros((self.n, 1)), tau], 1) @ self._alloc_inv.T
        w2_col = (self.cmd_thrust_n / (4.0 * self.nominal.kf))[:, None]
        span = w2_tau.max(1) - w2_tau.min(1)
        w2_tau = w2_tau * np.minimum(1.0, self.fw_max_rpm2 / np.maximum(span, 1e-9))[:, None]
        w2 = w2_col + w2_tau
        lift = np.maximum(-w2.min(1), 0.0)                       # raise the collective to keep the torque
        drop = np.maximum(w2.max(1) + lift - self.fw_max_rpm2, 0.0)
        w2 = np.clip(w2 + (lift - drop)[:, None], 0.0, self.fw_max_rpm2)
        return np.sqrt(w2)

    def step(self) -> None:
        gyro = self._wb + self.gyro_bias
        if np.any(self.gyro_noise_std > 0):
            gyro = gyro + self.rng.standard_normal((self.n, 3)) * self.gyro_noise_std[:, None]
        rpm_cmd = np.minimum(self._firmware(gyro), self.max_rpm[:, None])
        self.rpm = self.rpm + (self.dt_s / self.motor_tau_s)[:, None] * (rpm_cmd - self.rpm)   # forward Euler
        f = self.kf[:, None] * self.rpm**2                                                    # (n, 4) N
        rot = self._rot
        rotor_w = np.einsum("nij,kj->nki", rot, self.rotor_b)                                 # (n, 4, 3) world offsets
        if self.ground_effect:
            h = np.maximum(self._pos[:, None, 2] + rotor_w[:, :, 2], 1e-3)
            f = f * (1.0 + np.minimum(GROUND_EFFECT_COEFF * (PROP_RADIUS_M / (4.0 * h)) ** 2, 0.5))
        z_w = rot[:, :, 2]                                                                    # body z in world
        f_rot = f[:, :, None] * z_w[:, None, :]                                               # (n, 4, 3)
        force = f_rot.sum(1)
        torque = np.cross(rotor_w, f_rot).sum(1) + ((self.km[:, None] * self.rpm**2) @ YAW_SIGN)[:, None] * z_w
        v_air = self._vel - self.wind_m_s
        v_air_b = np.einsum("nji,nj->ni", rot, v_air)
        drag_b = -self.drag * (self.rpm.sum(1) * RPM_TO_RAD_S)[:, None] * v_air_b
        force += np.einsum("nij,nj->ni", rot, drag_b)
        force -= self.body_drag[:, None] * np.linalg.norm(v_air, axis=1, keepdims=True) * v_air
        for i, b in enumerate(self.bodies):
            pb.applyExternalForce(b, -1, force[i].tolist(), self._pos[i].tolist(), pb.WORLD_FRAME,
                                  physicsClientId=self.cid)
            pb.applyExternalTorque(b, -1, torque[i].tolist(), pb.WORLD_FRAME, physicsClientId=self.cid)
        pb.stepSimulation(physicsClientId=self.cid)
        self._read()

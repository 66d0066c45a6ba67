"""Differential inverse kinematics for the simulated arm (damped least squares on MuJoCo Jacobians).

Owns ``PandaIK``: TCP pose -> 7 joint positions, with a null-space pull toward
the ready pose so that the same TCP pose always maps to a consistent joint
configuration (no elbow flips between demonstrations). It works on a private
``MjData`` so it never disturbs the simulation it plans for.

Imports: numpy, mujoco. Never imports sim2real or policies.
"""
from __future__ import annotations

import math

import mujoco
import numpy as np

# TCP orientation of the ready pose: gripper pointing down, hand x along world x.
DOWN = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])


def down_rotation(yaw: float) -> np.ndarray:
    """TCP rotation pointing straight down, turned by ``yaw`` [rad] about world z."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ DOWN


class PandaIK:
    def __init__(self, model: mujoco.MjModel, qpos_adr, dof_adr, site_id: int, q_rest,
                 q_limits, damping: float = 0.03, null_gain: float = 0.3, rot_weight: float = 0.5):
        self.m = model
        self.d = mujoco.MjData(model)
        self.qpos_adr = np.asarray(qpos_adr)
        self.dof_adr = np.asarray(dof_adr)
        self.site = site_id
        self.q_rest = np.asarray(q_rest, dtype=float)
        self.low, self.high = np.asarray(q_limits, dtype=float).T
        self.damping = damping
        self.null_gain = null_gain
        self.rot_weight = rot_weight
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self._quat = np.zeros(4)
        self._qerr = np.zeros(4)
        self._vel = np.zeros(3)

    def forward(self, q) -> tuple[np.ndarray, np.ndarray]:
        """TCP position and rotation matrix at joint positions ``q``."""
        self.d.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.m, self.d)
        return self.d.site_xpos[self.site].copy(), self.d.site_xmat[self.site].reshape(3, 3).copy()

    def _rot_error(self, R_target, R) -> np.ndarray:
        """World-frame rotation vector taking R to R_target."""
        mujoco.mju_mat2Quat(self._quat, (R_target @ R.T).ravel())
        mujoco.mju_quat2Vel(self._vel, self._quat, 1.0)
        return self._vel.copy()

    def solve(self, q_seed, pos, rot, iters: int = 4) -> np.ndarray:
        q = np.asarray(q_seed, dtype=float).copy()
        lam2 = self.damping ** 2
        for _ in range(iters):
            x, R = self.forward(q)
            mujoco.mj_comPos(self.m, self.d)
            err = np.concatenate([pos - x, self.rot_weight * self._rot_error(rot, R)])
            mujoco.mj_jacSite(self.m, self.d, self._jacp, self._jacr, self.site)
            J = np.vstack([self._jacp[:, self.dof_adr], self.rot_weight * self._jacr[:, self.dof_adr]])
            JJt = J @ J.T + lam2 * np.eye(6)
            dq = J.T @ np.linalg.solve(JJt, err)
            J_pinv = J.T @ np.linalg.solve(JJt, np.eye(6))
            dq += (np.eye(len(q)) - J_pinv @ J) @ (self.null_gain * (self.q_rest - q))
            q = np.clip(q + dq, self.low, self.high)
        return q

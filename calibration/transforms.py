"""Rigid transforms as 4x4 numpy arrays: build, invert, compare, convert.

Naming: ``T_a_b`` maps points in frame b into frame a (``p_a = T_a_b @ p_b``).

Imports numpy and cv2 only.
"""
from __future__ import annotations

import math

import cv2
import numpy as np


def make_T(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def inv_T(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def rotvec_to_R(rvec) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(rvec, dtype=np.float64).reshape(3, 1))[0]


def R_to_rotvec(R: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(R, dtype=np.float64))[0].reshape(3)


def T_from_rvec_tvec(rvec, tvec) -> np.ndarray:
    return make_T(rotvec_to_R(rvec), tvec)


def rotation_angle_rad(R: np.ndarray) -> float:
    return float(math.acos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)))


def pose_error(T_est: np.ndarray, T_true: np.ndarray) -> tuple[float, float]:
    """(translation error in mm, rotation error in degrees) between two transforms."""
    dt_mm = 1000.0 * float(np.linalg.norm(T_est[:3, 3] - T_true[:3, 3]))
    dR_deg = math.degrees(rotation_angle_rad(T_est[:3, :3].T @ T_true[:3, :3]))
    return dt_mm, dR_deg


def quat_wxyz_from_R(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2]) * 2
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2]) * 2
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1]) * 2
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def R_from_quat_wxyz(q) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def project(K: np.ndarray, T_cam_world: np.ndarray, points_world: np.ndarray) -> np.ndarray:
    """Ideal pinhole projection (no distortion) of (N, 3) points to (N, 2) pixels."""
    p = (T_cam_world[:3, :3] @ np.asarray(points_world, dtype=np.float64).T).T + T_cam_world[:3, 3]
    uv = (K @ (p / p[:, 2:3]).T).T
    return uv[:, :2]

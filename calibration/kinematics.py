"""Serial-arm forward kinematics from a modified (Craig) DH table, in numpy.

The table is the robot profile's ``kinematics.dh_modified`` list: one row per
joint plus an optional fixed ``flange`` row, each ``{a, d, alpha}`` in metres
and radians; row i gives ``RotX(alpha) TransX(a) RotZ(theta_i) TransZ(d)``.
The caller passes the rows, so this module needs no profile loader.

Imports numpy only.
"""
from __future__ import annotations

import math

import numpy as np


def _row_T(a: float, d: float, alpha: float, theta: float) -> np.ndarray:
    ca, sa, ct, st = math.cos(alpha), math.sin(alpha), math.cos(theta), math.sin(theta)
    return np.array([
        [ct, -st, 0.0, a],
        [st * ca, ct * ca, -sa, -d * sa],
        [st * sa, ct * sa, ca, d * ca],
        [0.0, 0.0, 0.0, 1.0],
    ])


class DHChain:
    """``fk(q) -> T_base_flange``; joints are the rows whose ``joint`` is not ``flange``."""

    def __init__(self, dh_rows: list[dict]):
        self.rows = [(float(r["a"]), float(r["d"]), float(r["alpha"]), str(r.get("joint", ""))) for r in dh_rows]
        self.n_joints = sum(1 for r in self.rows if r[3] != "flange")

    def fk(self, q) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64).ravel()
        if q.shape[0] != self.n_joints:
            raise ValueError(f"expected {self.n_joints} joint positions, got {q.shape[0]}")
        T = np.eye(4)
        i = 0
        for a, d, alpha, name in self.rows:
            theta = 0.0
            if name != "flange":
                theta = q[i]
                i += 1
            T = T @ _row_T(a, d, alpha, theta)
        return T

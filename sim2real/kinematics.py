"""Forward kinematics and the position Jacobian of a serial arm from its robot profile.

Owns the numpy FK used by the safety filter's workspace box and the arm CBF:
modified (Craig) Denavit-Hartenberg parameters from the profile's ``kinematics``
section plus a tool-centre-point offset along the flange z axis.

Imports numpy and onboard.spec only (no simulator: the filter must run on the robot).
"""
from __future__ import annotations

import math

import numpy as np

from onboard.errors import ConfigError


class SerialArmKinematics:
    """Position FK and Jacobian of a revolute chain in modified DH.

    Frame i is attached at joint i; its z axis is the joint axis. The transform from
    frame i-1 to frame i is ``RotX(alpha) TransX(a) RotZ(theta) TransZ(d)``. Rows after
    the last joint (``joint: flange``) are fixed transforms.
    """

    def __init__(self, dh_rows: list[dict], n_joints: int, tcp_offset_m: float = 0.0,
                 *, file: str | None = None):
        if len(dh_rows) < n_joints:
            raise ConfigError(f"expected at least {n_joints} DH rows, got {len(dh_rows)}", file=file,
                              field="kinematics.dh_modified", fix="one row per joint plus the flange")
        self.n = n_joints
        self._const = []   # RotX(alpha) TransX(a) for every row
        self._d = []
        for i, row in enumerate(dh_rows):
            try:
                a, d, alpha = float(row["a"]), float(row["d"]), float(row["alpha"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"row {i} is {row!r}", file=file, field=f"kinematics.dh_modified[{i}]",
                                  fix="write {joint: ..., a: ..., d: ..., alpha: ...}") from exc
            ca, sa = math.cos(alpha), math.sin(alpha)
            self._const.append(np.array([[1, 0, 0, a], [0, ca, -sa, 0], [0, sa, ca, 0], [0, 0, 0, 1.0]]))
            self._d.append(d)
        # Fixed tail: the rows after the last joint, then the TCP offset along flange z.
        tail = np.eye(4)
        for i in range(n_joints, len(dh_rows)):
            tz = np.eye(4)
            tz[2, 3] = self._d[i]
            tail = tail @ self._const[i] @ tz
        tcp = np.eye(4)
        tcp[2, 3] = tcp_offset_m
        self._tail = tail @ tcp
        self._K = None

    @classmethod
    def from_profile(cls, profile) -> "SerialArmKinematics":
        kin = profile.raw.get("kinematics")
        file = str(profile.path)
        if not isinstance(kin, dict) or not isinstance(kin.get("dh_modified"), list):
            raise ConfigError("the arm profile has no kinematics.dh_modified table", file=file,
                              field="kinematics.dh_modified", fix="add the modified-DH rows of the arm")
        if kin.get("convention", "dh_modified") != "dh_modified":
            raise ConfigError(f"unsupported convention {kin.get('convention')!r}", file=file,
                              field="kinematics.convention", fix="use dh_modified")
        return cls(kin["dh_modified"], profile.n_joints, float(kin.get("tcp_offset_m", 0.0)), file=file)

    def _frames(self, q: np.ndarray):
        """World transforms of the joint frames 1..n and of the TCP."""
        c = np.cos(q[: self.n])
        s = np.sin(q[: self.n])
        T = np.eye(4)
        rz = np.eye(4)
        frames = []
        for i in range(self.n):
            rz[0, 0] = c[i]; rz[0, 1] = -s[i]; rz[1, 0] = s[i]; rz[1, 1] = c[i]; rz[2, 3] = self._d[i]
            T = T @ self._const[i] @ rz
            frames.append(T)
        return frames, T @ self._tail

    def _link_transforms(self, q: np.ndarray) -> np.ndarray:
        """(n, 4, 4): RotX(alpha) TransX(a) RotZ(q) TransZ(d) of every joint, built in one shot."""
        if self._K is None:
            K0, Kc, Ks = (np.zeros((self.n, 4, 4)) for _ in range(3))
            for i in range(self.n):
                C = self._const[i]
                ca, sa, a, d = C[1, 1], C[2, 1], C[0, 3], self._d[i]
                K0[i] = [[0, 0, 0, a], [0, 0, -sa, -sa * d], [0, 0, ca, ca * d], [0, 0, 0, 1]]
                Kc[i] = [[1, 0, 0, 0], [0, ca, 0, 0], [0, sa, 0, 0], [0, 0, 0, 0]]
                Ks[i] = [[0, -1, 0, 0], [ca, 0, 0, 0], [sa, 0, 0, 0], [0, 0, 0, 0]]
            self._K = (K0, Kc, Ks)
        K0, Kc, Ks = self._K
        qn = q[: self.n]
        return K0 + Kc * np.cos(qn)[:, None, None] + Ks * np.sin(qn)[:, None, None]

    def tcp_position(self, q: np.ndarray) -> np.ndarray:
        """TCP position (3,) in the base frame."""
        M = self._link_transforms(q)
        T = M[0]
        for i in range(1, self.n):
            T = T @ M[i]
        return T[:3, :] @ self._tail[:, 3]

    def position_jacobian(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(TCP position (3,), position Jacobian (3, n)) at ``q``."""
        frames, tcp = self._frames(q)
        p = tcp[:3, 3]
        F = np.stack(frames)            # (n, 4, 4)
        z = F[:, :3, 2]
        r = p - F[:, :3, 3]
        J = np.empty((3, self.n))     # z_i x (p - o_i), written out: np.cross is slow on tiny arrays
        J[0] = z[:, 1] * r[:, 2] - z[:, 2] * r[:, 1]
        J[1] = z[:, 2] * r[:, 0] - z[:, 0] * r[:, 2]
        J[2] = z[:, 0] * r[:, 1] - z[:, 1] * r[:, 0]
        return p, J

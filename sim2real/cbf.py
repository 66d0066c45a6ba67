"""Control-barrier-function QPs with slack, solved by OSQP (one problem object reused).

Owns the generic safety QP

    min_u,s  ||u - u_nom||^2 + w * ||s||^2
    s.t.     G u + s >= b          (one row per barrier: dh/dt >= -alpha h)
             s >= 0,  u_lo <= u <= u_hi

and the two barrier models the filter uses:

- ``ArmWorkspaceCBF``: a TCP box, velocity level in joint space through the
  position Jacobian: h = distances to the six faces, grad(h) J qdot >= -alpha h.
- ``GeofenceCBF``: a position box plus a speed limit for a double integrator
  (acceleration command): second-order barriers for the faces and a first-order
  barrier on v_max^2 - |v|^2.

When u_nom already satisfies every row and bound it is returned unchanged (exactly:
no solver round-off), so the filter is the identity when there is no conflict.

Imports numpy, scipy.sparse and osqp only.
"""
from __future__ import annotations

import numpy as np
import osqp
from scipy import sparse


class SlackQP:
    """The QP above with a fixed sparsity pattern; values are updated in place per call."""

    def __init__(self, n_u: int, n_rows: int, slack_weight: float = 1e4):
        self.n_u, self.m = n_u, n_rows
        n = n_u + n_rows
        self._P = sparse.diags(np.r_[np.full(n_u, 2.0), np.full(n_rows, 2.0 * slack_weight)]).tocsc()
        # A = [[G, I], [I_u, 0], [0, I_s]]; G is dense, so its pattern is fixed by a ones block.
        G_ids = np.arange(1, n_rows * n_u + 1, dtype=float).reshape(n_rows, n_u)
        top = sparse.hstack([sparse.csc_matrix(G_ids), sparse.identity(n_rows) * -1.0])
        A_ids = sparse.vstack([top, sparse.hstack([sparse.identity(n_u) * -2.0, sparse.csc_matrix((n_u, n_rows))]),
                               sparse.hstack([sparse.csc_matrix((n_rows, n_u)), sparse.identity(n_rows) * -3.0])]).tocsc()
        A_ids.sort_indices()
        ids = A_ids.data.copy()
        self._g_pos = np.flatnonzero(ids > 0)              # positions of G entries in A.data
        self._g_src = (ids[self._g_pos] - 1).astype(int)   # their index in G.ravel()
        self._A_data = np.where(ids > 0, 0.0, 1.0)         # identity blocks are 1
        self._A = sparse.csc_matrix((self._A_data.copy(), A_ids.indices, A_ids.indptr), shape=A_ids.shape)
        self._l = np.r_[np.zeros(n_rows), np.full(n_u, -np.inf), np.zeros(n_rows)]
        self._u = np.r_[np.full(n_rows, np.inf), np.full(n_u, np.inf), np.full(n_rows, np.inf)]
        self._solver = osqp.OSQP()
        self._solver.setup(self._P, np.zeros(n), self._A, self._l, self._u, verbose=False,
                           eps_abs=1e-6, eps_rel=1e-6, polishing=True, warm_starting=True,
                           max_iter=4000)
        self.last_status = "identity"
        self.last_slack = np.zeros(n_rows)

    def solve(self, u_nom: np.ndarray, G: np.ndarray, b: np.ndarray, u_lo: np.ndarray,
              u_hi: np.ndarray) -> np.ndarray:
        u_nom = np.clip(u_nom, u_lo, u_hi)
        if np.all(G @ u_nom >= b):
            self.last_status = "identity"
            self.last_slack = np.zeros(self.m)
            return u_nom
        Ax = self._A_data.copy()
        Ax[self._g_pos] = G.ravel()[self._g_src]
        self._l[: self.m] = b
        self._l[self.m: self.m + self.n_u] = u_lo
        self._u[self.m: self.m + self.n_u] = u_hi
        q = np.r_[-2.0 * u_nom, np.zeros(self.m)]
        self._solver.update(q=q, l=self._l, u=self._u, Ax=Ax)
        res = self._solver.solve(raise_error=False)
        self.last_status = str(res.info.status)
        x = res.x
        if x is None or not np.all(np.isfinite(x[: self.n_u])):
            # Solver failure: the safest point we know is the bounded nominal's closest
            # point to zero motion, which callers treat as "stop moving".
            self.last_slack = np.full(self.m, np.nan)
            return np.clip(np.zeros(self.n_u), u_lo, u_hi)
        self.last_slack = np.maximum(x[self.n_u:], 0.0)
        return np.clip(x[: self.n_u], u_lo, u_hi)


class ArmWorkspaceCBF:
    """TCP box barrier at the velocity level: rows [J; -J] qdot >= -alpha [x - lo; hi - x]."""

    def __init__(self, kinematics, box_lo, box_hi, alpha: float, slack_weight: float):
        self.kin = kinematics
        self.lo, self.hi = np.asarray(box_lo, float), np.asarray(box_hi, float)
        self.alpha = float(alpha)
        self.qp = SlackQP(kinematics.n, 6, slack_weight)

    def rows(self, q: np.ndarray):
        x, J = self.kin.position_jacobian(q)
        G = np.vstack([J, -J])
        h = np.r_[x - self.lo, self.hi - x]
        return G, -self.alpha * h

    def filter_velocity(self, q: np.ndarray, qdot_nom: np.ndarray, qdot_lo: np.ndarray,
                        qdot_hi: np.ndarray) -> np.ndarray:
        G, b = self.rows(q)
        return self.qp.solve(qdot_nom, G, b, qdot_lo, qdot_hi)


class GeofenceCBF:
    """Double integrator p'' = a in a box with |v| <= v_max.

    Faces use the second-order (exponential) barrier psi = h' + a1 h, psi' + a2 psi >= 0:
    upper face  -a >= (a1 + a2) v - a1 a2 (hi - p);  lower face a >= -(a1 + a2) v - a1 a2 (p - lo).
    Speed: h = v_max^2 - |v|^2, h' = -2 v.a >= -alpha_v h.
    """

    def __init__(self, box_lo, box_hi, v_max: float, alpha1: float, alpha2: float, alpha_v: float,
                 slack_weight: float):
        self.lo, self.hi = np.asarray(box_lo, float), np.asarray(box_hi, float)
        self.v_max, self.a1, self.a2, self.av = float(v_max), float(alpha1), float(alpha2), float(alpha_v)
        self.qp = SlackQP(3, 7, slack_weight)
        self._G = np.vstack([-np.eye(3), np.eye(3), np.zeros((1, 3))])

    def rows(self, p: np.ndarray, v: np.ndarray):
        k1, k2 = self.a1 + self.a2, self.a1 * self.a2
        b_up = k1 * v - k2 * (self.hi - p)      # -a >= b_up
        b_lo = -k1 * v - k2 * (p - self.lo)     #  a >= b_lo
        G = self._G.copy()
        G[6] = -2.0 * v
        b = np.r_[b_up, b_lo, -self.av * (self.v_max ** 2 - float(v @ v))]
        return G, b

    def filter_accel(self, p, v, a_nom, a_lo, a_hi) -> np.ndarray:
        G, b = self.rows(np.asarray(p, float), np.asarray(v, float))
        return self.qp.solve(np.asarray(a_nom, float), G, b, np.asarray(a_lo, float), np.asarray(a_hi, float))

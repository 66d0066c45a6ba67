"""A small Levenberg-Marquardt solver for the nonlinear calibrations (numpy only).

Used for hand-eye reprojection refinement and joint zero offsets. Jacobians
are forward differences: these problems have at most a few dozen parameters.

Imports numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class LsqResult:
    x: np.ndarray
    cost: float              # 0.5 * sum(r^2) at x
    iterations: int
    converged: bool
    jacobian: np.ndarray

    def covariance(self, n_residuals: int | None = None) -> np.ndarray:
        """Parameter covariance, scaled by the residual variance."""
        J = self.jacobian
        m = n_residuals or J.shape[0]
        dof = max(1, m - J.shape[1])
        sigma2 = 2.0 * self.cost / dof
        return sigma2 * np.linalg.pinv(J.T @ J)


def numeric_jacobian(fun: Callable[[np.ndarray], np.ndarray], x: np.ndarray, r0: np.ndarray,
                     step: float = 1e-6) -> np.ndarray:
    J = np.empty((r0.size, x.size))
    for j in range(x.size):
        dx = np.zeros_like(x)
        dx[j] = step * max(1.0, abs(x[j]))
        J[:, j] = (fun(x + dx) - r0) / dx[j]
    return J


def levenberg_marquardt(fun: Callable[[np.ndarray], np.ndarray], x0, *, max_iter: int = 50,
                        tol: float = 1e-10, lam: float = 1e-3) -> LsqResult:
    """Minimise 0.5 * ||fun(x)||^2 from ``x0``."""
    x = np.asarray(x0, dtype=np.float64).copy()
    r = fun(x)
    cost = 0.5 * float(r @ r)
    J = numeric_jacobian(fun, x, r)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        A = J.T @ J
        g = J.T @ r
        while True:
            step = -np.linalg.solve(A + lam * np.diag(np.maximum(np.diag(A), 1e-12)), g)
            x_new = x + step
            r_new = fun(x_new)
            cost_new = 0.5 * float(r_new @ r_new)
            if cost_new < cost:
                lam = max(lam / 3.0, 1e-12)
                break
            lam *= 4.0
            if lam > 1e12:
                return LsqResult(x, cost, it, True, J)   # no downhill step left: at the minimum
        rel = (cost - cost_new) / max(cost, 1e-300)
        x, r, cost = x_new, r_new, cost_new
        J = numeric_jacobian(fun, x, r)
        if rel < tol or np.linalg.norm(step) < tol * (1.0 + np.linalg.norm(x)):
            converged = True
            break
    return LsqResult(x, cost, it, converged, J)

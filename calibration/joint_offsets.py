"""Joint zero-offset calibration for serial arms from fiducial observations.

Fiducials (markers at known positions on the flange tool) are observed in the
robot base frame (a tracker, or a calibrated camera through the hand-eye
result) at several joint configurations. The per-joint offsets ``delta`` that
make forward kinematics agree with the observations,
``p_observed = FK(q_measured + delta) @ p_marker``, are found by
Levenberg-Marquardt. Sign convention: the true joint angle is the encoder
reading plus the offset.

Imports numpy and ``onboard.errors`` only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration.kinematics import DHChain
from calibration.lsq import levenberg_marquardt
from onboard.errors import OnboardError


@dataclass
class JointOffsetResult:
    offsets_rad: np.ndarray          # (n_joints,) add to encoder readings
    std_rad: np.ndarray              # 1-sigma from the residual covariance
    residual_rms_mm: float
    residual_rms_mm_before: float
    n_poses: int


def predict_points(chain: DHChain, q: np.ndarray, marker_points: np.ndarray) -> np.ndarray:
    """(N, M, 3) marker positions in the base frame for joint rows ``q`` (N, n)."""
    mk = np.c_[marker_points, np.ones(len(marker_points))]
    return np.stack([(chain.fk(qi) @ mk.T).T[:, :3] for qi in q])


def estimate_joint_offsets(chain: DHChain, q_measured, points_observed, marker_points, *,
                           min_poses: int = 8) -> JointOffsetResult:
    """Per-joint zero offsets from observed marker positions (metres) at ``N`` poses."""
    q = np.asarray(q_measured, dtype=np.float64)
    P = np.asarray(points_observed, dtype=np.float64)
    mk = np.asarray(marker_points, dtype=np.float64).reshape(-1, 3)
    if q.ndim != 2 or q.shape[1] != chain.n_joints:
        raise OnboardError(f"joint positions have shape {q.shape}, expected (N, {chain.n_joints})",
                           field="q", fix="log one row of joint positions per observation")
    if P.shape != (len(q), len(mk), 3):
        raise OnboardError(f"observed points have shape {P.shape}, expected {(len(q), len(mk), 3)}",
                           field="points", fix="give every marker's position at every pose")
    if len(q) < min_poses:
        raise OnboardError(f"only {len(q)} poses; at least {min_poses} are needed", field="q",
                           fix="observe the markers at more, widely spread joint configurations")

    def residuals(delta):
        return (predict_points(chain, q + delta, mk) - P).ravel()

    r0 = residuals(np.zeros(chain.n_joints))
    sol = levenberg_marquardt(residuals, np.zeros(chain.n_joints))
    JTJ = sol.jacobian.T @ sol.jacobian
    ev = np.linalg.eigvalsh(JTJ)
    if ev[0] < 1e-8 * ev[-1]:
        raise OnboardError("the poses do not determine every joint offset (rank-deficient)", field="q",
                           fix="move every joint, including the wrist, between poses, and use at least "
                               "two markers off the flange axis")
    cov = sol.covariance()
    return JointOffsetResult(offsets_rad=sol.x, std_rad=np.sqrt(np.clip(np.diag(cov), 0, None)),
                             residual_rms_mm=1000 * float(np.sqrt(2 * sol.cost / (r0.size / 3))),
                             residual_rms_mm_before=1000 * float(np.sqrt(np.mean(np.sum(r0.reshape(-1, 3) ** 2, 1)))),
                             n_poses=len(q))

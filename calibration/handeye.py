"""Hand-eye calibration: eye-in-hand and eye-to-hand, all five OpenCV methods.

Inputs are robot poses ``T_base_gripper`` (from forward kinematics) and board
poses ``T_cam_target`` (from PnP on board detections), one pair per station.

- eye-in-hand (camera on the gripper): solves ``T_gripper_cam``; the board is
  fixed in the base frame.
- eye-to-hand (camera fixed, board on the gripper): solves ``T_base_cam``;
  OpenCV's solver is fed the inverted robot poses.

Residuals: the transform that must stay constant across stations (board in
base for eye-in-hand, board in gripper for eye-to-hand) is computed per
station; the spread around its mean is reported in mm and degrees. Held-out
stations are predicted from the solution and compared with what the camera saw.

Degenerate motion (no rotation, or rotation about one axis only) leaves the
solution undetermined; it raises OnboardError instead of returning a number.

Imports numpy, cv2 and ``onboard.errors`` only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from calibration.transforms import R_to_rotvec, inv_T, make_T, pose_error, rotvec_to_R
from onboard.errors import OnboardError

METHODS = {
    "tsai": cv2.CALIB_HAND_EYE_TSAI,
    "park": cv2.CALIB_HAND_EYE_PARK,
    "horaud": cv2.CALIB_HAND_EYE_HORAUD,
    "andreff": cv2.CALIB_HAND_EYE_ANDREFF,
    "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS,
}
SETUPS = ("eye_in_hand", "eye_to_hand")
MIN_STATIONS = 3
MIN_ROTATION_DEG = 5.0


@dataclass
class HandEyeResult:
    setup: str
    method: str
    T: np.ndarray                      # T_gripper_cam (eye_in_hand) or T_base_cam (eye_to_hand)
    T_fixed: np.ndarray                # T_base_target (eye_in_hand) or T_gripper_target (eye_to_hand)
    residual_mm: np.ndarray            # per training station
    residual_deg: np.ndarray
    heldout_mm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    heldout_deg: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def frames(self) -> tuple[str, str]:
        return ("gripper", "camera") if self.setup == "eye_in_hand" else ("base", "camera")

    def summary(self) -> dict:
        def stats(a):
            return {"rms": float(np.sqrt(np.mean(a ** 2))) if len(a) else None,
                    "max": float(np.max(a)) if len(a) else None}
        return {"method": self.method, "residual_mm": stats(self.residual_mm),
                "residual_deg": stats(self.residual_deg), "heldout_mm": stats(self.heldout_mm),
                "heldout_deg": stats(self.heldout_deg)}


def check_motion(T_base_gripper: list[np.ndarray], *, min_rotation_deg: float = MIN_ROTATION_DEG) -> None:
    """Raise OnboardError unless the stations rotate about at least two distinct axes."""
    if len(T_base_gripper) < MIN_STATIONS:
        raise OnboardError(f"only {len(T_base_gripper)} stations; hand-eye needs at least {MIN_STATIONS} "
                           "(15-25 recommended)", field="stations",
                           fix="record more robot poses with the board in view")
    T0inv = inv_T(T_base_gripper[0])
    rv = np.array([R_to_rotvec((T0inv @ T)[:3, :3]) for T in T_base_gripper[1:]])
    ang = np.degrees(np.linalg.norm(rv, axis=1))
    if ang.max() < min_rotation_deg:
        raise OnboardError(f"degenerate motion: the gripper rotates at most {ang.max():.2f} deg between "
                           "stations; translation-only motion leaves the hand-eye rotation undetermined",
                           field="stations", fix=f"rotate the wrist by more than {min_rotation_deg:.0f} deg "
                           "about at least two different axes between stations")
    big = rv[ang >= min_rotation_deg]
    axes = big / np.linalg.norm(big, axis=1, keepdims=True)
    # Relative rotations about one axis only: the axis matrix has rank 1.
    sv = np.linalg.svd(np.vstack([axes, -axes]), compute_uv=False)
    if len(big) < 2 or sv[1] / sv[0] < 0.05:
        raise OnboardError("degenerate motion: every rotation between stations is about the same axis, "
                           "so the translation along it is undetermined", field="stations",
                           fix="rotate the wrist about at least two non-parallel axes between stations")


def _solve(T_base_gripper, T_cam_target, setup, method) -> np.ndarray:
    if setup == "eye_in_hand":
        robot = T_base_gripper
    else:
        robot = [inv_T(T) for T in T_base_gripper]
    R, t = cv2.calibrateHandEye([T[:3, :3] for T in robot], [T[:3, 3] for T in robot],
                                [T[:3, :3] for T in T_cam_target], [T[:3, 3] for T in T_cam_target],
                                method=METHODS[method])
    return make_T(R, t.ravel())


def _fixed_per_station(X, T_base_gripper, T_cam_target, setup):
    if setup == "eye_in_hand":
        return [G @ X @ C for G, C in zip(T_base_gripper, T_cam_target)]          # T_base_target
    return [inv_T(G) @ X @ C for G, C in zip(T_base_gripper, T_cam_target)]        # T_gripper_target


def mean_transform(Ts: list[np.ndarray]) -> np.ndarray:
    """Chordal mean rotation (SVD projection) and mean translation."""
    M = sum(T[:3, :3] for T in Ts)
    U, _, Vt = np.linalg.svd(M)
    R = U @ np.diag([1, 1, np.sign(np.linalg.det(U @ Vt))]) @ Vt
    return make_T(R, np.mean([T[:3, 3] for T in Ts], axis=0))


def predict_cam_target(X, T_fixed, T_base_gripper, setup) -> np.ndarray:
    if setup == "eye_in_hand":
        return inv_T(X) @ inv_T(T_base_gripper) @ T_fixed
    return inv_T(X) @ T_base_gripper @ T_fixed


def calibrate_handeye(T_base_gripper: list[np.ndarray], T_cam_target: list[np.ndarray], *,
                      setup: str = "eye_in_hand", method: str = "park",
                      heldout: tuple[list, list] | None = None) -> HandEyeResult:
    """Solve one method; ``heldout=(T_base_gripper, T_cam_target)`` adds validation errors."""
    if setup not in SETUPS:
        raise OnboardError(f"unknown setup {setup!r}", field="setup", fix=f"use one of {SETUPS}")
    if method not in METHODS:
        raise OnboardError(f"unknown method {method!r}", field="method", fix=f"use one of {sorted(METHODS)}")
    if len(T_base_gripper) != len(T_cam_target):
        raise OnboardError(f"{len(T_base_gripper)} robot poses but {len(T_cam_target)} board poses",
                           field="stations", fix="record one robot pose per image")
    check_motion(T_base_gripper)
    X = _solve(T_base_gripper, T_cam_target, setup, method)
    if not np.all(np.isfinite(X)):
        raise OnboardError(f"method {method} returned a non-finite transform", field="stations",
                           fix="add stations with larger, more varied wrist rotations")
    fixed = _fixed_per_station(X, T_base_gripper, T_cam_target, setup)
    T_fixed = mean_transform(fixed)
    err = np.array([pose_error(F, T_fixed) for F in fixed])
    res = HandEyeResult(setup, method, X, T_fixed, err[:, 0], err[:, 1])
    if heldout is not None and len(heldout[0]):
        herr = np.array([pose_error(predict_cam_target(X, T_fixed, G, setup), C) for G, C in zip(*heldout)])
        res.heldout_mm, res.heldout_deg = herr[:, 0], herr[:, 1]
    return res


def calibrate_all_methods(T_base_gripper, T_cam_target, *, setup="eye_in_hand", heldout_fraction: float = 0.2,
                          seed: int = 0) -> tuple[HandEyeResult, dict[str, HandEyeResult]]:
    """Every method on the same training split; the best by held-out error (training error if none).

    The returned best result is re-solved on all stations with the winning method.
    """
    n = len(T_base_gripper)
    idx = np.random.default_rng(seed).permutation(n)
    n_hold = int(round(heldout_fraction * n)) if n - int(round(heldout_fraction * n)) >= max(MIN_STATIONS, 5) else 0
    hold, train = idx[:n_hold], idx[n_hold:]
    tr = ([T_base_gripper[i] for i in train], [T_cam_target[i] for i in train])
    ho = ([T_base_gripper[i] for i in hold], [T_cam_target[i] for i in hold])
    results = {m: calibrate_handeye(*tr, setup=setup, method=m, heldout=ho) for m in METHODS}

    def score(r: HandEyeResult):
        mm, deg = (r.heldout_mm, r.heldout_deg) if len(r.heldout_mm) else (r.residual_mm, r.residual_deg)
        # 1 deg weighs like 10 mm: both are typical half-metre lever-arm effects.
        return float(np.sqrt(np.mean(mm ** 2)) + 10.0 * np.sqrt(np.mean(deg ** 2)))

    best_method = min(results, key=lambda m: score(results[m]))
    best = calibrate_handeye(T_base_gripper, T_cam_target, setup=setup, method=best_method)
    best.heldout_mm, best.heldout_deg = results[best_method].heldout_mm, results[best_method].heldout_deg
    return best, results


def perturb(T: np.ndarray, rng: np.random.Generator, trans_std_m: float, rot_std_rad: float) -> np.ndarray:
    """T with a small random rigid perturbation (for noise studies)."""
    dT = make_T(rotvec_to_R(rng.normal(0, rot_std_rad, 3)), rng.normal(0, trans_std_m, 3))
    return T @ dT


def angle_deg(T: np.ndarray) -> float:
    return math.degrees(np.linalg.norm(R_to_rotvec(T[:3, :3])))


def refine_reprojection(result: HandEyeResult, T_base_gripper: list[np.ndarray], detections: list,
                        board_points: np.ndarray, K: np.ndarray, dist: np.ndarray,
                        T_cam_target: list[np.ndarray] | None = None) -> HandEyeResult:
    """Jointly refine the hand-eye transform and the fixed board pose by minimising pixel error.

    The closed-form methods fit transforms, not pixels, and PnP depth is the
    noisiest direction; refining on the corners themselves weighs every
    measurement by what the camera actually resolved. ``detections[i]`` has
    ``ids`` (into ``board_points``) and ``pixels`` for station i.
    """
    X0, F0, setup = result.T, result.T_fixed, result.setup
    obj = [np.asarray(board_points, dtype=np.float64)[d.ids] for d in detections]
    pix = [np.asarray(d.pixels, dtype=np.float64) for d in detections]

    def unpack(p):
        X = X0 @ make_T(rotvec_to_R(p[0:3]), p[3:6])
        F = F0 @ make_T(rotvec_to_R(p[6:9]), p[9:12])
        return X, F

    def residuals(p):
        X, F = unpack(p)
        out = []
        for G, o, u in zip(T_base_gripper, obj, pix):
            C = predict_cam_target(X, F, G, setup)
            proj, _ = cv2.projectPoints(o, cv2.Rodrigues(C[:3, :3])[0], C[:3, 3], K, dist)
            out.append((proj.reshape(-1, 2) - u).ravel())
        return np.concatenate(out)

    from calibration.lsq import levenberg_marquardt
    sol = levenberg_marquardt(residuals, np.zeros(12))
    X, F = unpack(sol.x)
    if T_cam_target is not None:
        err = np.array([pose_error(predict_cam_target(X, F, G, setup), C) for G, C in zip(T_base_gripper, T_cam_target)])
    else:
        err = np.zeros((len(T_base_gripper), 2))
    res = HandEyeResult(setup, result.method + "+reprojection", X, F, err[:, 0], err[:, 1],
                        result.heldout_mm, result.heldout_deg)
    res.reprojection_rms_px = float(np.sqrt(2.0 * sol.cost / max(1, sum(len(o) for o in obj))))
    return res

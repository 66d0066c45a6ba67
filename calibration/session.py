"""An interactive calibration session: capture samples one by one, then solve and write the YAML.

The plain-Python core of ``ros_nodes/calibration_node`` (and usable from any
driver loop): ``capture(image, q)`` detects the board and keeps the sample,
``solve()`` runs the camera or hand-eye calibration and writes the YAML
atomically. Errors that need the operator (no board in view, too few
samples, degenerate motion) are OnboardErrors with a fix.

Imports numpy, cv2 and ``onboard.errors`` only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration.board import BoardDetector, BoardSpec
from calibration.camera import board_pose, calibrate_camera
from calibration.handeye import calibrate_all_methods, refine_reprojection
from calibration.io import transform_dict, write_camera_info, write_yaml_atomic
from onboard.errors import OnboardError

MODES = ("camera", "handeye")


class CalibrationSession:
    def __init__(self, mode: str, board: BoardSpec, out_path: str | Path, *, chain=None, K=None, dist=None,
                 setup: str = "eye_in_hand", parent_frame: str = "panda_link8",
                 child_frame: str = "camera_optical_frame", camera_name: str = "camera"):
        if mode not in MODES:
            raise OnboardError(f"unknown mode {mode!r}", field="mode", fix=f"use one of {MODES}")
        if mode == "handeye" and (chain is None or K is None):
            raise OnboardError("hand-eye needs the robot kinematics and the camera intrinsics", field="camera_info",
                               fix="run `onboard calibrate camera` first and pass its camera_info YAML")
        self.mode, self.board, self.out_path = mode, board, Path(out_path)
        self.chain, self.K = chain, None if K is None else np.asarray(K, dtype=np.float64)
        self.dist = np.zeros(5) if dist is None else np.asarray(dist, dtype=np.float64)
        self.setup, self.parent_frame, self.child_frame, self.camera_name = setup, parent_frame, child_frame, camera_name
        self.detector = BoardDetector(board)
        self.detections, self.joint_positions, self.board_poses = [], [], []
        self.result_T: np.ndarray | None = None

    @property
    def n_samples(self) -> int:
        return len(self.detections)

    def capture(self, image: np.ndarray, q=None) -> str:
        """Keep one sample; returns a one-line summary. No board in view -> OnboardError."""
        det = self.detector.detect(image, source=f"sample[{self.n_samples}]")
        if det is None:
            raise OnboardError("the board is not visible (fewer than 6 corners found)", field="image",
                               fix="move the board (or the robot) so that the whole board is in view")
        if self.mode == "handeye":
            if q is None:
                raise OnboardError("no joint state received yet", field="joint_states",
                                   fix="check that /joint_states is published")
            T = board_pose(self.board, det, self.K, self.dist)
            if T is None:
                raise OnboardError("board pose could not be estimated", field="image", fix="capture another view")
            self.joint_positions.append(np.asarray(q, dtype=np.float64))
            self.board_poses.append(T)
        self.detections.append(det)
        return f"sample {self.n_samples}: {len(det)} corners"

    def solve(self) -> str:
        """Solve, write ``out_path`` atomically, return a summary line."""
        if self.mode == "camera":
            cal = calibrate_camera(self.board, self.detections)
            write_camera_info(self.out_path, cal.K, cal.dist, cal.image_size, self.camera_name)
            return (f"fx={cal.fx:.2f} fy={cal.fy:.2f} cx={cal.cx:.2f} cy={cal.cy:.2f} rms={cal.rms_px:.3f} px "
                    f"from {sum(v.used for v in cal.views)} views -> {self.out_path}")
        G = [self.chain.fk(q) for q in self.joint_positions]
        best, results = calibrate_all_methods(G, self.board_poses, setup=self.setup)
        refined = refine_reprojection(best, G, self.detections, self.board.corner_points(), self.K, self.dist,
                                      T_cam_target=self.board_poses)
        self.result_T = refined.T
        s = best.summary()
        write_yaml_atomic(self.out_path, transform_dict(
            refined.T, self.parent_frame, self.child_frame, setup=self.setup, method=refined.method,
            stations=len(G), validation={"heldout_mm": s["heldout_mm"], "heldout_deg": s["heldout_deg"],
                                         "reprojection_rms_px": refined.reprojection_rms_px},
            methods={m: r.summary() for m, r in results.items()}))
        return (f"{self.parent_frame} -> {self.child_frame}: t={np.round(refined.T[:3, 3], 4).tolist()} m, "
                f"reprojection {refined.reprojection_rms_px:.3f} px -> {self.out_path}")

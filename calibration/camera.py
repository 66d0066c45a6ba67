"""Camera intrinsics from ChArUco (or chessboard) views.

Owns: detection over a set of images, ``cv2.calibrateCamera``, the per-image
reprojection-error report, and rejection of bad views (views whose error is
far above the rest are dropped and the solve repeated).

Imports numpy, cv2 and ``onboard.errors`` only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from calibration.board import BoardDetector, BoardSpec, Detection, read_gray
from onboard.errors import OnboardError

MIN_VIEWS = 6


@dataclass
class ViewReport:
    source: str
    n_corners: int
    rms_px: float
    used: bool
    reason: str = ""


@dataclass
class CameraCalibration:
    K: np.ndarray
    dist: np.ndarray
    image_size: tuple[int, int]
    rms_px: float                    # RMS over all corners of the used views
    views: list[ViewReport] = field(default_factory=list)
    rvecs: list = field(default_factory=list)
    tvecs: list = field(default_factory=list)

    @property
    def fx(self): return float(self.K[0, 0])

    @property
    def fy(self): return float(self.K[1, 1])

    @property
    def cx(self): return float(self.K[0, 2])

    @property
    def cy(self): return float(self.K[1, 2])

    def report(self) -> str:
        lines = [f"{'view':<32} {'corners':>7} {'rms_px':>7}  status"]
        for v in self.views:
            lines.append(f"{v.source[-32:]:<32} {v.n_corners:>7d} {v.rms_px:>7.3f}  "
                         f"{'used' if v.used else 'rejected: ' + v.reason}")
        lines.append(f"fx={self.fx:.2f} fy={self.fy:.2f} cx={self.cx:.2f} cy={self.cy:.2f} "
                     f"dist={np.round(self.dist.ravel(), 5).tolist()} rms={self.rms_px:.3f} px")
        return "\n".join(lines)


def detect_images(board: BoardSpec, images: Iterable, *, progress: Callable[[str], None] | None = None
                  ) -> tuple[list[Detection], list[ViewReport]]:
    """Detect the board in paths or arrays. Unreadable files raise; views without the board are reported."""
    detector = BoardDetector(board)
    found, skipped = [], []
    size = None
    for i, item in enumerate(images):
        source = str(item) if isinstance(item, (str, Path)) else f"image[{i}]"
        img = read_gray(item) if isinstance(item, (str, Path)) else item
        det = detector.detect(img, source=source)
        h, w = img.shape[:2]
        if size is None:
            size = (w, h)
        elif size != (w, h):
            raise OnboardError(f"image is {w}x{h} but earlier images are {size[0]}x{size[1]}",
                               file=source, field="image size",
                               fix="calibrate one camera at one resolution at a time")
        if det is None:
            skipped.append(ViewReport(source, 0, float("nan"), False, "board not found"))
        else:
            found.append(det)
        if progress:
            progress(f"[{i + 1}] {source}: " + (f"{len(det)} corners" if det else "board not found"))
    return found, skipped


def calibrate_camera(board: BoardSpec, detections: list[Detection], *, min_views: int = MIN_VIEWS,
                     reject_factor: float = 3.0, reject_floor_px: float = 1.0, flags: int = 0,
                     skipped: list[ViewReport] | None = None) -> CameraCalibration:
    """Intrinsics (K, plumb_bob distortion) from board detections.

    A view is rejected when its RMS error exceeds both ``reject_floor_px`` and
    ``reject_factor`` times the median view RMS; the solve then repeats.
    Fewer than ``min_views`` usable views raise OnboardError.
    """
    dets = [d for d in detections if len(d) >= 6]
    if len(dets) < min_views:
        raise OnboardError(f"only {len(dets)} usable views (board seen with >= 6 corners); "
                           f"at least {min_views} are needed", field="images",
                           fix="capture more views of the whole board at varied tilts and distances")
    size = dets[0].image_size
    pts3d = board.corner_points()
    rejected: list[ViewReport] = []
    while True:
        obj = [pts3d[d.ids].astype(np.float32) for d in dets]
        img = [d.pixels.astype(np.float32).reshape(-1, 1, 2) for d in dets]
        rms, K, dist, rvecs, tvecs = cv2.calibrateCamera(obj, img, size, None, None, flags=flags)
        per_view = []
        for o, p, r, t in zip(obj, img, rvecs, tvecs):
            proj, _ = cv2.projectPoints(o, r, t, K, dist)
            per_view.append(float(np.sqrt(np.mean(np.sum((proj - p) ** 2, axis=2)))))
        per_view = np.asarray(per_view)
        limit = max(reject_floor_px, reject_factor * float(np.median(per_view)))
        worst = int(np.argmax(per_view))
        if per_view[worst] <= limit or len(dets) - 1 < min_views:
            break
        rejected.append(ViewReport(dets[worst].source, len(dets[worst]), float(per_view[worst]), False,
                                   f"rms {per_view[worst]:.2f} px > {limit:.2f} px"))
        dets.pop(worst)
    views = [ViewReport(d.source, len(d), float(e), True) for d, e in zip(dets, per_view)]
    return CameraCalibration(K=K, dist=dist.ravel(), image_size=size, rms_px=float(rms),
                             views=views + rejected + list(skipped or []),
                             rvecs=list(rvecs), tvecs=list(tvecs))


def board_pose(board: BoardSpec, det: Detection, K: np.ndarray, dist: np.ndarray) -> np.ndarray | None:
    """T_cam_board from one detection (iterative PnP), or None when it fails."""
    from calibration.transforms import T_from_rvec_tvec
    if len(det) < 6:
        return None
    obj = board.corner_points()[det.ids].astype(np.float64)
    ok, rvec, tvec = cv2.solvePnP(obj, det.pixels.astype(np.float64), K, dist, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return None
    rvec, tvec = cv2.solvePnPRefineLM(obj, det.pixels.astype(np.float64), K, dist, rvec, tvec)
    return T_from_rvec_tvec(rvec, tvec)

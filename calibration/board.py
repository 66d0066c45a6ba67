"""Calibration targets: the ChArUco board (and a plain chessboard) and their detection.

Owns the board description (squares, square and marker sizes in metres, ArUco
dictionary), image generation for printing or rendering, and corner detection
with the current OpenCV ArUco API (``cv2.aruco.CharucoDetector``).

Imports numpy, cv2 and ``onboard.errors`` (a leaf module) only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from onboard.errors import OnboardError


@dataclass(frozen=True)
class BoardSpec:
    """A ChArUco board: ``squares_x`` by ``squares_y`` squares; sizes in metres.

    Board frame (OpenCV): origin at the outer corner of square (0, 0), x along
    the columns, y along the rows, z into the board (right-handed).
    ``kind="chessboard"`` uses the same square grid without markers.
    """
    squares_x: int = 7
    squares_y: int = 5
    square_m: float = 0.04
    marker_m: float = 0.03
    dictionary: str = "DICT_5X5_100"
    kind: str = "charuco"

    def __post_init__(self):
        if self.kind not in ("charuco", "chessboard"):
            raise OnboardError(f"unknown board kind {self.kind!r}", field="board.kind",
                               fix="use 'charuco' or 'chessboard'")
        if self.squares_x < 3 or self.squares_y < 3:
            raise OnboardError("a board needs at least 3x3 squares", field="board.squares_x/squares_y",
                               fix="describe the printed board")
        if not 0 < self.marker_m < self.square_m:
            raise OnboardError(f"marker_m={self.marker_m} must be in (0, square_m={self.square_m})",
                               field="board.marker_m", fix="measure the printed marker side")
        if not hasattr(cv2.aruco, self.dictionary):
            raise OnboardError(f"unknown ArUco dictionary {self.dictionary!r}", field="board.dictionary",
                               fix="use a cv2.aruco name such as DICT_5X5_100")

    @property
    def size_m(self) -> tuple[float, float]:
        return self.squares_x * self.square_m, self.squares_y * self.square_m

    def to_dict(self) -> dict:
        return asdict(self)

    def cv_board(self) -> "cv2.aruco.CharucoBoard":
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_m, self.marker_m, d)

    def corner_points(self) -> np.ndarray:
        """(K, 3) inner-corner positions in the board frame, indexed by ChArUco corner id."""
        return np.asarray(self.cv_board().getChessboardCorners(), dtype=np.float64).reshape(-1, 3)

    def image(self, px_per_square: int = 100, margin_px: int = 0) -> np.ndarray:
        """Grayscale uint8 image of the whole board, exactly ``squares * px_per_square`` pixels plus margin."""
        w = self.squares_x * px_per_square + 2 * margin_px
        h = self.squares_y * px_per_square + 2 * margin_px
        if self.kind == "chessboard":
            ys, xs = np.mgrid[0:h - 2 * margin_px, 0:w - 2 * margin_px] // px_per_square
            board = np.where((xs + ys) % 2 == 0, 0, 255).astype(np.uint8)
            return cv2.copyMakeBorder(board, margin_px, margin_px, margin_px, margin_px,
                                      cv2.BORDER_CONSTANT, value=255)
        return self.cv_board().generateImage((w, h), marginSize=margin_px, borderBits=1)


@dataclass
class Detection:
    """Corners found in one image: ids index ``BoardSpec.corner_points()``; pixels are (K, 2)."""
    ids: np.ndarray
    pixels: np.ndarray
    image_size: tuple[int, int]   # (width, height)
    source: str = ""

    def __len__(self) -> int:
        return len(self.ids)


def read_gray(path: str | Path) -> np.ndarray:
    """Read an image as grayscale; unreadable or missing files raise OnboardError."""
    path = Path(path)
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path.is_file() else None
    if img is None:
        raise OnboardError("image cannot be read (missing, empty or not an image)", file=str(path),
                           field="image", fix="pass PNG/JPEG files written by the camera driver")
    return img


def to_gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2GRAY)
    if image.ndim != 2:
        raise OnboardError(f"image has shape {image.shape}, expected (H, W) or (H, W, 3)",
                           field="image", fix="pass a grayscale or RGB uint8 image")
    return image


class BoardDetector:
    """Finds board corners in images; one detector reused for every view."""

    def __init__(self, board: BoardSpec, min_corners: int = 6):
        self.board = board
        self.min_corners = min_corners
        if board.kind == "charuco":
            params = cv2.aruco.CharucoParameters()
            det = cv2.aruco.DetectorParameters()
            det.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
            self._charuco = cv2.aruco.CharucoDetector(board.cv_board(), params, det)

    def detect(self, image: np.ndarray, source: str = "") -> Detection | None:
        """Corners with sub-pixel refinement, or None when fewer than ``min_corners`` are seen."""
        gray = to_gray(image)
        h, w = gray.shape
        if self.board.kind == "chessboard":
            pattern = (self.board.squares_x - 1, self.board.squares_y - 1)
            ok, corners = cv2.findChessboardCorners(gray, pattern,
                                                    cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE)
            if not ok:
                return None
            corners = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1),
                                       (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3))
            ids = np.arange(len(corners))
            return Detection(ids, corners.reshape(-1, 2).astype(np.float64), (w, h), source)
        corners, ids, _, _ = self._charuco.detectBoard(gray)
        if ids is None or len(ids) < self.min_corners:
            return None
        # Refine once more on the image itself: ChArUco interpolation leaves ~0.1 px bias.
        corners = cv2.cornerSubPix(gray, corners.astype(np.float32), (5, 5), (-1, -1),
                                   (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3))
        return Detection(ids.reshape(-1).astype(int), corners.reshape(-1, 2).astype(np.float64), (w, h), source)

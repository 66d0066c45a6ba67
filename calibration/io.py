"""Calibration files: ROS ``camera_info`` YAML, hand-eye transforms, Kalibr IMU YAML, latency YAML.

Every file is written atomically (temp file, then rename) so a crash never
leaves half a calibration. Files carry a ``calibration_kind`` key (the ROS
``camera_info`` format is kept exactly as ``camera_calibration_parsers``
reads it, so it is recognised by its keys instead).

Imports numpy, cv2 (through siblings), yaml (a pure format library, the same
one ``onboard.config`` uses) and ``onboard.errors`` only.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import yaml

from onboard.errors import OnboardError


def write_yaml_atomic(path: str | Path, doc: dict, header: str = "") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = header + yaml.safe_dump(_plain(doc), sort_keys=False, default_flow_style=None)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_yaml(path: str | Path, what: str = "calibration") -> dict:
    path = Path(path)
    if not path.is_file():
        raise OnboardError(f"{what} file not found", file=str(path), fix="check the path")
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise OnboardError(f"cannot parse {what} YAML: {exc}", file=str(path),
                           fix="pass a file written by `onboard calibrate`") from exc
    if not isinstance(doc, dict):
        raise OnboardError(f"{what} YAML must be a mapping", file=str(path), field="<root>",
                           fix="pass a file written by `onboard calibrate`")
    return doc


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _plain(x):
    """numpy scalars/arrays -> Python floats/lists so the YAML stays readable by any parser."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x


def _matrix(rows: int, cols: int, values) -> dict:
    return {"rows": rows, "cols": cols, "data": [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]}


# ---- camera_info (camera_calibration_parsers format) ------------------------------------------
def camera_info_dict(K: np.ndarray, dist: np.ndarray, image_size: tuple[int, int],
                     camera_name: str = "camera") -> dict:
    """The mapping ``camera_calibration_parsers::readCalibrationYml`` reads (plumb_bob model)."""
    w, h = image_size
    d = np.zeros(5)
    dv = np.asarray(dist, dtype=np.float64).ravel()[:5]
    d[:len(dv)] = dv
    P = np.zeros((3, 4))
    P[:3, :3] = K
    return {
        "image_width": int(w),
        "image_height": int(h),
        "camera_name": camera_name,
        "camera_matrix": _matrix(3, 3, K),
        "distortion_model": "plumb_bob",
        "distortion_coefficients": _matrix(1, 5, d),
        "rectification_matrix": _matrix(3, 3, np.eye(3)),
        "projection_matrix": _matrix(3, 4, P),
    }


def write_camera_info(path, K, dist, image_size, camera_name="camera", comment: str = "") -> Path:
    header = "".join(f"# {line}\n" for line in comment.splitlines()) if comment else ""
    return write_yaml_atomic(path, camera_info_dict(K, dist, image_size, camera_name), header=header)


def read_camera_info(path) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(K, dist, (width, height)) from a camera_info YAML; malformed fields raise OnboardError."""
    doc = read_yaml(path, "camera_info")
    try:
        K = np.asarray(doc["camera_matrix"]["data"], dtype=np.float64).reshape(3, 3)
        dist = np.asarray(doc["distortion_coefficients"]["data"], dtype=np.float64).ravel()
        size = (int(doc["image_width"]), int(doc["image_height"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise OnboardError(f"camera_info is missing or malformed ({exc})", file=str(path),
                           field="camera_matrix/distortion_coefficients/image_width/image_height",
                           fix="write it with `onboard calibrate camera`") from exc
    return K, dist, size


# ---- transforms ----------------------------------------------------------------------------------
def transform_dict(T: np.ndarray, parent: str, child: str, **extra) -> dict:
    from calibration.transforms import quat_wxyz_from_R
    q = quat_wxyz_from_R(T[:3, :3])
    return {
        "calibration_kind": "handeye",
        "parent_frame": parent,
        "child_frame": child,
        "translation": {"x": float(T[0, 3]), "y": float(T[1, 3]), "z": float(T[2, 3])},
        "rotation": {"x": float(q[1]), "y": float(q[2]), "z": float(q[3]), "w": float(q[0])},
        "matrix": np.asarray(T, dtype=np.float64).tolist(),
        **extra,
    }


def read_transform(path) -> tuple[np.ndarray, str, str]:
    doc = read_yaml(path, "hand-eye")
    try:
        T = np.asarray(doc["matrix"], dtype=np.float64).reshape(4, 4)
        return T, str(doc["parent_frame"]), str(doc["child_frame"])
    except (KeyError, TypeError, ValueError) as exc:
        raise OnboardError(f"transform is missing or malformed ({exc})", file=str(path),
                           field="matrix/parent_frame/child_frame",
                           fix="write it with `onboard calibrate handeye`") from exc


def calibration_kind(doc: dict) -> str:
    """'camera', 'handeye', 'joints', 'imu', 'latency', or '' when unknown."""
    if "camera_matrix" in doc and "distortion_coefficients" in doc:
        return "camera"
    if "calibration_kind" in doc:
        return str(doc["calibration_kind"])
    if any(isinstance(v, dict) and "accelerometer_noise_density" in v for v in doc.values()) \
            or "accelerometer_noise_density" in doc:
        return "imu"
    return ""

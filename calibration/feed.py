"""Calibration results into the sim-to-real loop: DR overrides and contract provenance.

``dr_overrides_from_calibration(paths, control_hz)`` reads calibration YAMLs
written by ``onboard calibrate`` and returns DR sections in the shape of
``sim2real.randomization.DRConfig.sections``:

- latency YAML -> ``latency.action_delay_steps = (floor, ceil)`` of the measured
  command-to-state delay in control steps, widened by one log sample of
  uncertainty each side;
- latency YAML ``state_noise_std`` -> ``observation_noise.joint_pos`` and
  ``joint_vel`` (finite difference at the control rate: sqrt(2) sigma * rate);
- hand-eye YAML held-out error -> ``observation_noise.object_pos`` (m): object
  positions seen by the camera are only as good as the camera's extrinsics;
- IMU YAML -> ``imu_noise`` (per control step std = noise density * sqrt(rate);
  not an arm DR section, for the quadrotor and humanoid configs).

``calibration_provenance(paths)`` is what the policy contract records under
``provenance.calibration``: file names, kinds and sha256 digests.

Imports numpy, yaml (through calibration.io) and ``onboard.errors`` only.
"""
from __future__ import annotations

import math
from pathlib import Path

from calibration.io import calibration_kind, read_yaml, sha256_file
from onboard.errors import OnboardError


def _num(doc, key, path):
    v = doc.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise OnboardError(f"expected a non-negative number, got {v!r}", file=str(path), field=key,
                           fix="re-run `onboard calibrate` to regenerate the file")
    return float(v)


def dr_overrides_from_calibration(paths, control_hz: float = 10.0) -> dict:
    """DR sections measured by calibration; later files override earlier ones key by key."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: dict = {}
    for path in paths:
        doc = read_yaml(path)
        kind = calibration_kind(doc)
        if kind == "latency":
            delay_s = _num(doc, "command_to_state_delay_s", path)
            slack = float(doc.get("dt_s", 0.0))
            lo = max(0, math.floor((delay_s - slack) * control_hz + 1e-9))
            hi = max(lo, math.ceil((delay_s + slack) * control_hz - 1e-9))
            out.setdefault("latency", {})["action_delay_steps"] = (int(lo), int(hi))
            if "state_noise_std" in doc:
                sigma = _num(doc, "state_noise_std", path)
                noise = out.setdefault("observation_noise", {})
                noise["joint_pos"] = sigma
                noise["joint_vel"] = math.sqrt(2.0) * sigma * control_hz
        elif kind == "handeye":
            held = (doc.get("validation") or {}).get("heldout_mm", {}) or {}
            rms = held.get("rms") if isinstance(held, dict) else None
            if rms is None:
                rms = ((doc.get("validation") or {}).get("residual_mm") or {}).get("rms")
            if rms is not None:
                out.setdefault("observation_noise", {})["object_pos"] = float(rms) / 1000.0
        elif kind == "imu":
            out["imu_noise"] = {
                "gyro": _num(doc, "gyroscope_noise_density", path) * math.sqrt(control_hz),
                "accel": _num(doc, "accelerometer_noise_density", path) * math.sqrt(control_hz),
            }
        elif kind in ("camera", "joints"):
            pass   # intrinsics and offsets correct the model; they set no DR range
        else:
            raise OnboardError("not a calibration file written by `onboard calibrate`", file=str(path),
                               field="calibration_kind", fix="pass camera_info, hand-eye, joints, imu or latency YAMLs")
    return out


def calibration_provenance(paths) -> dict:
    """``{"calibration": [{"file", "kind", "sha256"}, ...]}`` for the policy contract's provenance."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    items = []
    for path in paths:
        doc = read_yaml(path)
        items.append({"file": Path(path).name, "kind": calibration_kind(doc), "sha256": sha256_file(path)})
    return {"calibration": items}


def apply_overrides(sections: dict, overrides: dict) -> dict:
    """DR sections with calibration overrides merged in (a new dict; unknown sections are left out)."""
    merged = {k: dict(v) for k, v in sections.items()}
    for sec, body in overrides.items():
        if sec == "imu_noise":
            continue
        merged.setdefault(sec, {}).update(body)
    return merged

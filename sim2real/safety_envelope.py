"""The safety envelope: config/safety/<robot>.yaml, parsed and validated into a typed object.

Owns the schema of the envelope (one section per check, each with a ``response``)
and its validation: unknown sections or responses, negative margins, empty boxes
and the like raise ConfigError naming the file and the field. The figures the
envelope derives from the robot profile (quadrotor thrust bounds from mass, kf and
thrust-to-weight) are computed here too.

Imports numpy and onboard only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import numpy as np

from onboard.config import load_yaml
from onboard.errors import ConfigError

G = 9.81

# Which responses each check accepts. "hold" is the embodiment's safe command
# (arm: brake to a stop; humanoid: damping targets; quadrotor: hover/level).
CHECKS = {
    "nonfinite": ("clamp", "hold", "stop"),
    "joint_limits": ("clamp", "scale", "hold", "stop"),
    "gripper": ("clamp", "hold", "stop"),
    "workspace": ("clamp", "hold", "stop"),
    "thrust": ("clamp", "hold", "stop"),
    "body_rate": ("clamp", "scale", "hold", "stop"),
    "tilt": ("clamp", "scale", "hold", "stop"),
    "geofence": ("clamp", "land", "stop"),
    "attitude": ("damping", "stop"),
    "watchdog": ("hold", "damping", "land", "stop"),
}
CHUNK_CHECKS = {
    "nonfinite": ("clamp", "hold", "stop"),
    "bounds": ("clamp", "hold", "stop"),
    "first_step": ("scale", "hold", "stop"),
    "velocity": ("scale", "hold", "stop"),
    "jerk": ("scale", "hold", "stop"),
}
SECTIONS_BY_KIND = {
    "arm": ("nonfinite", "joint_limits", "gripper", "workspace", "cbf", "chunk", "watchdog", "ramp_in"),
    "humanoid": ("nonfinite", "joint_limits", "attitude", "chunk", "watchdog", "ramp_in"),
    "quadrotor": ("nonfinite", "thrust", "body_rate", "tilt", "geofence", "cbf", "chunk", "watchdog",
                  "ramp_in", "land"),
}
DEFAULT_RESPONSE = {"nonfinite": "hold", "joint_limits": "clamp", "gripper": "clamp",
                    "workspace": "clamp", "thrust": "clamp", "body_rate": "clamp", "tilt": "scale",
                    "geofence": "clamp", "attitude": "damping"}
DEFAULT_WATCHDOG = {"arm": "hold", "humanoid": "damping", "quadrotor": "land"}


@dataclass
class Envelope:
    robot: str
    kind: str
    source: str
    responses: dict                       # check -> response
    chunk: dict                           # chunk check -> response
    log_size: int = 200
    # joints
    position_margin: np.ndarray | None = None
    limit_scale: dict = dc_field(default_factory=dict)   # velocity/acceleration/jerk fractions
    chunk_max_first_step: np.ndarray | None = None
    # arm workspace and CBF
    workspace_enabled: bool = False
    box_min: np.ndarray | None = None
    box_max: np.ndarray | None = None
    cbf_enabled: bool = False
    cbf: dict = dc_field(default_factory=dict)
    # humanoid
    max_roll: float = math.inf
    max_pitch: float = math.inf
    # quadrotor
    mass_kg: float = 0.0
    thrust_min: float = 0.0
    thrust_max: float = 0.0
    max_body_rate: np.ndarray | None = None
    max_tilt: float = math.inf
    level_gain: float = 4.0
    max_speed: float = math.inf
    land: dict = dc_field(default_factory=dict)
    # watchdog / ramp-in
    state_timeout_s: float = 0.2
    command_timeout_s: float = 0.5
    auto_resume: bool = True
    ramp_in_s: float = 1.0


class _Reader:
    """Field access with errors that name the file and the dotted field."""

    def __init__(self, source: str):
        self.source = source

    def err(self, field: str, problem: str, fix: str):
        return ConfigError(problem, file=self.source, field=field, fix=fix)

    def section(self, doc: dict, key: str) -> dict:
        v = doc.get(key, {})
        if v is None:
            v = {}
        if not isinstance(v, dict):
            raise self.err(key, f"expected a mapping, got {type(v).__name__}", f"write '{key}:' as key: value pairs")
        return v

    def number(self, doc: dict, key: str, prefix: str, default=None, *, min_value=None, positive=False):
        name = f"{prefix}.{key}" if prefix else key
        v = doc.get(key, default)
        if v is None:
            raise self.err(name, "required field is missing", f"add '{key}:'")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.err(name, f"expected a finite number, got {v!r}", f"set '{key}' to a number")
        v = float(v)
        if positive and v <= 0:
            raise self.err(name, f"must be positive, got {v}", f"set '{key}' above 0")
        if min_value is not None and v < min_value:
            raise self.err(name, f"must be >= {min_value}, got {v}", f"set '{key}' to at least {min_value}")
        return v

    def vector(self, doc: dict, key: str, prefix: str, n: int, default=None, *, min_value=None,
               positive=False) -> np.ndarray:
        name = f"{prefix}.{key}" if prefix else key
        v = doc.get(key, default)
        if v is None:
            raise self.err(name, "required field is missing", f"add '{key}:'")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = [v] * n
        if not isinstance(v, (list, tuple)) or len(v) != n:
            raise self.err(name, f"expected {n} numbers (or one for all), got {v!r}", f"give {n} values")
        out = []
        for i, x in enumerate(v):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise self.err(f"{name}[{i}]", f"{x!r} is not a finite number", "use finite numbers")
            if positive and x <= 0:
                raise self.err(f"{name}[{i}]", f"must be positive, got {x}", "use values above 0")
            if min_value is not None and x < min_value:
                raise self.err(f"{name}[{i}]", f"must be >= {min_value}, got {x}", f"use values >= {min_value}")
            out.append(float(x))
        return np.asarray(out)

    def response(self, doc: dict, key: str, prefix: str, allowed, default):
        name = f"{prefix}.{key}" if prefix else key
        v = doc.get(key, default)
        if v not in allowed:
            raise self.err(name, f"unknown response {v!r}", f"use one of {list(allowed)}")
        return v

    def flag(self, doc: dict, key: str, prefix: str, default: bool) -> bool:
        v = doc.get(key, default)
        if not isinstance(v, bool):
            raise self.err(f"{prefix}.{key}", f"expected true/false, got {v!r}", f"set '{key}: true' or false")
        return v

    def known(self, doc: dict, prefix: str, keys):
        for k in doc:
            if k not in keys:
                raise self.err(f"{prefix}.{k}" if prefix else k, "unknown field",
                               f"remove it or use one of {sorted(keys)}")


def load_envelope(profile, path_or_doc, *, source: str | None = None) -> Envelope:
    """Parse an envelope from a YAML path or an already-loaded dict."""
    if isinstance(path_or_doc, dict):
        doc = path_or_doc
        source = source or "<envelope dict>"
    else:
        source = str(path_or_doc)
        doc = load_yaml(Path(path_or_doc), "safety envelope")
    r = _Reader(source)
    kind = profile.kind
    allowed_sections = SECTIONS_BY_KIND[kind]
    r.known(doc, "", set(allowed_sections) | {"robot", "log_size", "description"})
    robot = doc.get("robot", profile.name)
    if robot != profile.name:
        raise r.err("robot", f"envelope is for '{robot}' but the profile is '{profile.name}'",
                    f"use config/safety/{profile.name}.yaml")
    env = Envelope(robot=profile.name, kind=kind, source=source, responses={}, chunk={})
    env.log_size = int(r.number(doc, "log_size", "", 200, positive=True))

    for check in ("nonfinite", "joint_limits", "gripper", "workspace", "thrust", "body_rate", "tilt",
                  "geofence", "attitude"):
        if check in allowed_sections:
            sec = r.section(doc, check)
            env.responses[check] = r.response(sec, "response", check, CHECKS[check], DEFAULT_RESPONSE[check])

    if kind in ("arm", "humanoid"):
        n = profile.n_joints
        sec = r.section(doc, "joint_limits")
        r.known(sec, "joint_limits", {"response", "position_margin_rad", "velocity_scale",
                                      "acceleration_scale", "jerk_scale"})
        margin = r.vector(sec, "position_margin_rad", "joint_limits", n, 0.0, min_value=0.0)
        span = profile.limits.position[:, 1] - profile.limits.position[:, 0]
        if np.any(2 * margin >= span):
            i = int(np.argmax(2 * margin - span))
            raise r.err(f"joint_limits.position_margin_rad[{i}]", "margin leaves no room inside the limits",
                        "use a margin below half the joint range")
        env.position_margin = margin
        for key in ("velocity", "acceleration", "jerk"):
            s = r.number(sec, f"{key}_scale", "joint_limits", 1.0, positive=True)
            if s > 1.0:
                raise r.err(f"joint_limits.{key}_scale", f"{s} would exceed the robot's limits",
                            "use a fraction in (0, 1]")
            env.limit_scale[key] = s
        chunk = r.section(doc, "chunk")
        r.known(chunk, "chunk", set(CHUNK_CHECKS) | {"max_first_step"})
        for c, allowed in CHUNK_CHECKS.items():
            env.chunk[c] = r.response(chunk, c, "chunk", allowed,
                                      {"nonfinite": "hold", "bounds": "clamp"}.get(c, "scale"))
        env.chunk_max_first_step = r.vector(chunk, "max_first_step", "chunk", n, 0.5, positive=True)
    else:
        chunk = r.section(doc, "chunk")
        r.known(chunk, "chunk", {"nonfinite", "bounds"})
        env.chunk["nonfinite"] = r.response(chunk, "nonfinite", "chunk", CHUNK_CHECKS["nonfinite"], "hold")
        env.chunk["bounds"] = r.response(chunk, "bounds", "chunk", CHUNK_CHECKS["bounds"], "clamp")

    if kind == "arm":
        sec = r.section(doc, "gripper")
        r.known(sec, "gripper", {"response"})
        if not profile.gripper:
            raise r.err("gripper", "the profile has no gripper", "remove the gripper section")
        sec = r.section(doc, "workspace")
        r.known(sec, "workspace", {"response", "enabled", "box_min_m", "box_max_m"})
        env.workspace_enabled = r.flag(sec, "enabled", "workspace", True)
        _box(r, env, sec, "workspace")
        sec = r.section(doc, "cbf")
        r.known(sec, "cbf", {"enabled", "alpha", "slack_weight", "margin_m"})
        env.cbf_enabled = r.flag(sec, "enabled", "cbf", True)
        env.cbf = {"alpha": r.number(sec, "alpha", "cbf", 5.0, positive=True),
                   "slack_weight": r.number(sec, "slack_weight", "cbf", 1e4, positive=True),
                   "margin_m": r.number(sec, "margin_m", "cbf", 0.0, min_value=0.0)}
        if np.any(env.box_max - env.box_min <= 2 * env.cbf["margin_m"]):
            raise r.err("cbf.margin_m", "margin leaves no room inside the workspace box",
                        "use a margin below half the smallest box side")

    if kind == "humanoid":
        sec = r.section(doc, "attitude")
        r.known(sec, "attitude", {"response", "max_roll_rad", "max_pitch_rad"})
        env.max_roll = r.number(sec, "max_roll_rad", "attitude", 0.6, positive=True)
        env.max_pitch = r.number(sec, "max_pitch_rad", "attitude", 0.6, positive=True)

    if kind == "quadrotor":
        raw = profile.raw
        try:
            m, kf, t2w = float(raw["mass_kg"]), float(raw["thrust_coefficient_kf_N_per_rpm2"]), float(raw["thrust_to_weight"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError("quadrotor profile lacks mass_kg, thrust_coefficient_kf_N_per_rpm2 or "
                              "thrust_to_weight", file=str(profile.path), field=str(exc),
                              fix="add the airframe figures to the profile") from exc
        env.mass_kg = m
        # Max collective thrust from thrust-to-weight; expressed through kf as a max rotor speed.
        rpm_max = math.sqrt(t2w * m * G / (4.0 * kf))
        env.thrust_max = 4.0 * kf * rpm_max ** 2
        sec = r.section(doc, "thrust")
        r.known(sec, "thrust", {"response", "min_fraction_of_max"})
        frac = r.number(sec, "min_fraction_of_max", "thrust", 0.05, min_value=0.0)
        if frac >= 1.0 / t2w:
            raise r.err("thrust.min_fraction_of_max", f"{frac} leaves no thrust below hover",
                        f"use a fraction below {1.0 / t2w:.3f}")
        env.thrust_min = frac * env.thrust_max
        sec = r.section(doc, "body_rate")
        r.known(sec, "body_rate", {"response", "max_rad_s"})
        env.max_body_rate = r.vector(sec, "max_rad_s", "body_rate", 3, [3.84, 3.84, 3.49], positive=True)
        sec = r.section(doc, "tilt")
        r.known(sec, "tilt", {"response", "max_rad", "level_gain"})
        env.max_tilt = r.number(sec, "max_rad", "tilt", 0.61, positive=True)
        if env.max_tilt >= math.pi / 2:
            raise r.err("tilt.max_rad", "a tilt of 90 degrees or more cannot hold altitude", "use a value below 1.57")
        env.level_gain = r.number(sec, "level_gain", "tilt", 4.0, positive=True)
        sec = r.section(doc, "geofence")
        r.known(sec, "geofence", {"response", "box_min_m", "box_max_m", "max_speed_m_s"})
        _box(r, env, sec, "geofence")
        env.max_speed = r.number(sec, "max_speed_m_s", "geofence", 2.0, positive=True)
        sec = r.section(doc, "cbf")
        r.known(sec, "cbf", {"enabled", "alpha1", "alpha2", "alpha_v", "slack_weight", "attitude_gain"})
        env.cbf_enabled = r.flag(sec, "enabled", "cbf", True)
        env.cbf = {k: r.number(sec, k, "cbf", d, positive=True) for k, d in
                   (("alpha1", 2.0), ("alpha2", 2.0), ("alpha_v", 2.0), ("slack_weight", 1e4),
                    ("attitude_gain", 6.0))}
        sec = r.section(doc, "land")
        r.known(sec, "land", {"descent_speed_m_s", "velocity_gain"})
        env.land = {"descent_speed_m_s": r.number(sec, "descent_speed_m_s", "land", 0.3, positive=True),
                    "velocity_gain": r.number(sec, "velocity_gain", "land", 2.0, positive=True)}

    sec = r.section(doc, "watchdog")
    r.known(sec, "watchdog", {"response", "state_timeout_s", "command_timeout_s", "auto_resume"})
    env.responses["watchdog"] = r.response(sec, "response", "watchdog", CHECKS["watchdog"], DEFAULT_WATCHDOG[kind])
    fallback_ok = {"arm": ("hold", "stop"), "humanoid": ("damping", "hold", "stop"), "quadrotor": ("land", "hold", "stop")}
    if env.responses["watchdog"] not in fallback_ok[kind]:
        raise r.err("watchdog.response", f"{env.responses['watchdog']!r} does not apply to a {kind}",
                    f"use one of {list(fallback_ok[kind])}")
    env.state_timeout_s = r.number(sec, "state_timeout_s", "watchdog", 0.2, positive=True)
    env.command_timeout_s = r.number(sec, "command_timeout_s", "watchdog", 0.5, positive=True)
    env.auto_resume = r.flag(sec, "auto_resume", "watchdog", True)
    sec = r.section(doc, "ramp_in")
    r.known(sec, "ramp_in", {"duration_s"})
    env.ramp_in_s = r.number(sec, "duration_s", "ramp_in", 1.0, min_value=0.0)
    return env


def _box(r: _Reader, env: Envelope, sec: dict, name: str):
    env.box_min = r.vector(sec, "box_min_m", name, 3)
    env.box_max = r.vector(sec, "box_max_m", name, 3)
    if np.any(env.box_min >= env.box_max):
        i = int(np.argmax(env.box_min - env.box_max))
        raise r.err(f"{name}.box_min_m[{i}]", "box_min_m is not below box_max_m", "swap or correct the bounds")

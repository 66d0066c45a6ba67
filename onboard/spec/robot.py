"""Robot profiles: joint names, limits, rates and interfaces, one YAML per robot.

A profile is the single description of a robot that the simulator, the
safety filter, the runtime's contract check and the ROS 2 nodes agree on.
Profiles live in ``config/robots/<name>.yaml``. The figures come from
``../shared/robots`` (public manufacturer / community figures).

This module imports only numpy and yaml.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import numpy as np

from onboard.config import ConfigError, field, float_list, load_yaml
from onboard.paths import robots_dir

KINDS = ("arm", "quadrotor", "humanoid")


@dataclass(frozen=True)
class JointLimits:
    position: np.ndarray        # (n, 2) [lower, upper] in rad (or m)
    velocity: np.ndarray        # (n,)
    acceleration: np.ndarray    # (n,)
    jerk: np.ndarray            # (n,)
    torque: np.ndarray | None   # (n,) or None


@dataclass(frozen=True)
class RobotProfile:
    name: str
    kind: str
    joint_names: tuple[str, ...]
    action_names: tuple[str, ...]
    limits: JointLimits | None
    default_pose: np.ndarray | None
    rates_hz: dict
    path: Path
    raw: dict = dc_field(repr=False)

    @property
    def hash(self) -> str:
        """Stable hash of the profile's content (not its path): recorded in every artifact."""
        canonical = json.dumps(self.raw, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    @property
    def gripper(self) -> dict | None:
        return self.raw.get("gripper")

    @property
    def control_dt_s(self) -> float:
        return 1.0 / float(self.rates_hz["control_hz"])

    def joint_index(self, names) -> list[int]:
        """Indices of ``names`` in this profile's joint order; unknown names raise ConfigError."""
        idx = []
        for n in names:
            if n not in self.joint_names:
                raise ConfigError(f"joint '{n}' is not a joint of robot '{self.name}'",
                                  file=str(self.path), field="joint_names",
                                  fix=f"use names from {list(self.joint_names)}")
            idx.append(self.joint_names.index(n))
        return idx


def _limits(doc: dict, n: int, path: Path) -> JointLimits:
    lim = field(doc, "limits", file=path, kind=dict)
    pos = field(lim, "position", file=path, kind=list, prefix="limits.")
    if len(pos) != n:
        raise ConfigError(f"expected {n} [lower, upper] pairs, got {len(pos)}", file=str(path),
                          field="limits.position", fix="one pair per joint, in joint_names order")
    pairs = []
    for i, pair in enumerate(pos):
        if not isinstance(pair, list) or len(pair) != 2:
            raise ConfigError(f"entry {i} is {pair!r}", file=str(path), field=f"limits.position[{i}]",
                              fix="write [lower, upper]")
        lo, hi = float_list({"p": pair}, "p", file=path, prefix=f"limits.position[{i}]")
        if not lo < hi:
            raise ConfigError(f"lower {lo} is not below upper {hi}", file=str(path),
                              field=f"limits.position[{i}]", fix="swap or correct the bounds")
        pairs.append((lo, hi))

    def vec(key, required=True):
        if not required and key not in lim:
            return None
        v = np.asarray(float_list(lim, key, file=path, length=n, prefix="limits."))
        if np.any(v <= 0):
            raise ConfigError("limits must be positive", file=str(path), field=f"limits.{key}",
                              fix="give positive magnitudes")
        return v

    return JointLimits(position=np.asarray(pairs, dtype=float), velocity=vec("velocity"),
                       acceleration=vec("acceleration"), jerk=vec("jerk"),
                       torque=vec("torque", required=False))


def load_robot(name_or_path: str | Path) -> RobotProfile:
    """Load a profile by name (``config/robots/<name>.yaml``) or by path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        path = p
    else:
        path = robots_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            known = sorted(q.stem for q in robots_dir().glob("*.yaml"))
            raise ConfigError(f"unknown robot '{name_or_path}'", field="robot",
                              fix=f"use one of {known} or a path to a profile YAML")
    doc = load_yaml(path, "robot profile")
    name = field(doc, "name", file=path, kind=str)
    kind = field(doc, "kind", file=path, kind=str)
    if kind not in KINDS:
        raise ConfigError(f"unknown kind '{kind}'", file=str(path), field="kind",
                          fix=f"use one of {list(KINDS)}")
    joint_names = tuple(field(doc, "joint_names", file=path, kind=list, default=[]))
    if len(set(joint_names)) != len(joint_names):
        raise ConfigError("duplicate joint names", file=str(path), field="joint_names",
                          fix="list each joint once")
    n = len(joint_names)
    limits = _limits(doc, n, path) if n else None
    default = doc.get("default_pose")
    default_pose = (np.asarray(float_list(doc, "default_pose", file=path, length=n))
                    if default is not None else None)
    if default_pose is not None and limits is not None:
        bad = (default_pose < limits.position[:, 0]) | (default_pose > limits.position[:, 1])
        if bad.any():
            raise ConfigError(f"default pose outside position limits at joints "
                              f"{[joint_names[i] for i in np.flatnonzero(bad)]}", file=str(path),
                              field="default_pose", fix="move the pose inside limits.position")
    rates = field(doc, "rates", file=path, kind=dict)
    field(rates, "control_hz", file=path, kind=(int, float), prefix="rates.")
    action_names = doc.get("action_names")
    if action_names is None:
        action_names = list(joint_names)
        if doc.get("gripper"):
            action_names.append("gripper_width")
    return RobotProfile(name=name, kind=kind, joint_names=joint_names,
                        action_names=tuple(action_names), limits=limits,
                        default_pose=default_pose, rates_hz=dict(rates), path=path, raw=doc)

"""The policy contract: the JSON that makes an ONNX artifact self-describing.

Export writes it into the ONNX ``metadata_props`` under ``CONTRACT_KEY``; the
runtime reads it back and refuses to run when it is malformed or does not
match the robot. One schema for every policy kind (diffusion, flow, VLA,
residual, PPO); sections a kind does not need stay empty.

Sections (DESIGN §1):
- ``robot``: name, profile hash, joint names in controller order.
- ``observation``: keys (name, shape, units) in concatenation order,
  ``obs_horizon``, per-key normalization stats.
- ``action``: type, names, dim, normalization, ``pred_horizon``,
  ``action_horizon``, ``control_rate_hz``.
- ``sampler``: kind, train steps, schedule constants, default and few-step counts.
- ``graphs``: graph names -> input/output names and shapes.
- ``safety_envelope``: the envelope the policy was evaluated with.
- ``provenance``: git SHA, config, DR ranges, evaluation result, calibration.

This module imports only the standard library and numpy.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from onboard.errors import ContractError

CONTRACT_KEY = "onboard.contract"
SCHEMA_VERSION = 1
POLICY_KINDS = ("diffusion", "flow", "vla", "residual", "ppo", "mlp")
ACTION_TYPES = ("joint_position_absolute", "joint_position_delta", "joint_pd_offset",
                "thrust_body_rates", "ee_delta")
NORM_KINDS = ("minmax", "meanstd", "identity")


@dataclass
class PolicyContract:
    policy_kind: str
    robot: dict
    observation: dict
    action: dict
    sampler: dict = field(default_factory=dict)
    graphs: dict = field(default_factory=dict)
    safety_envelope: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    # ---- derived quantities -------------------------------------------------
    @property
    def obs_keys(self) -> list[str]:
        return [k["name"] for k in self.observation["keys"]]

    @property
    def obs_dim(self) -> int:
        return int(sum(int(np.prod(k["shape"])) for k in self.observation["keys"]
                       if len(k["shape"]) == 1))

    @property
    def obs_horizon(self) -> int:
        return int(self.observation.get("obs_horizon", 1))

    @property
    def action_dim(self) -> int:
        return int(self.action["dim"])

    @property
    def pred_horizon(self) -> int:
        return int(self.action.get("pred_horizon", 1))

    @property
    def action_horizon(self) -> int:
        return int(self.action.get("action_horizon", 1))

    @property
    def control_rate_hz(self) -> float:
        return float(self.action["control_rate_hz"])

    # ---- serialization --------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False, default=_jsonable)

    @classmethod
    def from_json(cls, text: str, *, source: str = "<contract>") -> "PolicyContract":
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ContractError(f"contract is not valid JSON: {exc}", file=source,
                                field=CONTRACT_KEY, fix="re-export the artifact with `onboard export`")
        return cls.from_dict(doc, source=source)

    @classmethod
    def from_dict(cls, doc: Any, *, source: str = "<contract>") -> "PolicyContract":
        if not isinstance(doc, dict):
            raise ContractError("contract must be a JSON object", file=source, field=CONTRACT_KEY,
                                fix="re-export the artifact with `onboard export`")
        version = doc.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ContractError(f"schema_version {version!r} is not supported (this runtime reads "
                                f"{SCHEMA_VERSION})", file=source, field="schema_version",
                                fix="re-export with this version of onboard")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(doc) - known
        if unknown:
            raise ContractError(f"unknown sections {sorted(unknown)}", file=source,
                                field=sorted(unknown)[0], fix="re-export with this version of onboard")
        for req in ("policy_kind", "robot", "observation", "action"):
            if req not in doc:
                raise ContractError("required section is missing", file=source, field=req,
                                    fix="re-export the artifact with `onboard export`")
        c = cls(**doc)
        c.validate(source=source)
        return c

    # ---- validation -----------------------------------------------------------
    def validate(self, *, source: str = "<contract>") -> None:
        def err(fld, problem, fix="re-export the artifact with `onboard export`"):
            raise ContractError(problem, file=source, field=fld, fix=fix)

        if self.policy_kind not in POLICY_KINDS:
            err("policy_kind", f"unknown policy kind {self.policy_kind!r}; known {list(POLICY_KINDS)}")
        r = self.robot
        if not isinstance(r, dict) or not isinstance(r.get("name"), str):
            err("robot.name", "missing robot name")
        if not isinstance(r.get("joint_names"), list) or not all(isinstance(j, str) for j in r["joint_names"]):
            err("robot.joint_names", "joint_names must be a list of strings")
        o = self.observation
        if not isinstance(o, dict) or not isinstance(o.get("keys"), list) or not o["keys"]:
            err("observation.keys", "observation keys must be a non-empty list")
        seen = set()
        for i, k in enumerate(o["keys"]):
            if not isinstance(k, dict) or not isinstance(k.get("name"), str):
                err(f"observation.keys[{i}].name", "each key needs a name")
            shape = k.get("shape")
            if (not isinstance(shape, list) or not shape
                    or not all(isinstance(s, int) and s > 0 for s in shape)):
                err(f"observation.keys[{i}].shape", f"shape {shape!r} must be a list of positive ints")
            if k["name"] in seen:
                err(f"observation.keys[{i}].name", f"duplicate key {k['name']!r}")
            seen.add(k["name"])
        if int(o.get("obs_horizon", 1)) < 1:
            err("observation.obs_horizon", "must be >= 1")
        self._validate_norm(o.get("normalization", {}), "observation.normalization", err,
                            {k["name"]: int(np.prod(k["shape"])) for k in o["keys"]})
        a = self.action
        if not isinstance(a, dict):
            err("action", "must be an object")
        if a.get("type") not in ACTION_TYPES:
            err("action.type", f"unknown action type {a.get('type')!r}; known {list(ACTION_TYPES)}")
        dim = a.get("dim")
        if not isinstance(dim, int) or dim < 1:
            err("action.dim", f"dim {dim!r} must be a positive int")
        names = a.get("names")
        if not isinstance(names, list) or len(names) != dim:
            err("action.names", f"expected {dim} action names, got {names!r}")
        rate = a.get("control_rate_hz")
        if not isinstance(rate, (int, float)) or not (0 < rate < 10000):
            err("action.control_rate_hz", f"control rate {rate!r} must be in (0, 10000) Hz")
        ph, ah = int(a.get("pred_horizon", 1)), int(a.get("action_horizon", 1))
        if ph < 1 or ah < 1 or ah > ph:
            err("action.action_horizon", f"need 1 <= action_horizon ({ah}) <= pred_horizon ({ph})")
        if "normalization" in a:
            self._validate_norm({"action": a["normalization"]}, "action.normalization", err,
                                {"action": dim})
        s = self.sampler
        if self.policy_kind in ("diffusion", "flow", "vla"):
            if s.get("kind") not in ("ddim", "ddpm", "flow_euler"):
                err("sampler.kind", f"unknown sampler {s.get('kind')!r}")
            if s.get("kind") in ("ddim", "ddpm"):
                ac = s.get("alphas_cumprod")
                if not isinstance(ac, list) or len(ac) != int(s.get("train_timesteps", -1)):
                    err("sampler.alphas_cumprod", "must list train_timesteps values")
                arr = np.asarray(ac, dtype=float)
                if not np.all(np.isfinite(arr)) or np.any(arr <= 0) or np.any(arr > 1) or np.any(np.diff(arr) > 0):
                    err("sampler.alphas_cumprod", "must be finite, in (0, 1] and non-increasing")

    @staticmethod
    def _validate_norm(norm: dict, where: str, err, dims: dict[str, int]) -> None:
        if not isinstance(norm, dict):
            err(where, "normalization must be an object")
        for key, st in norm.items():
            if key not in dims:
                err(f"{where}.{key}", f"normalization for unknown key {key!r}")
            if not isinstance(st, dict) or st.get("kind", "minmax") not in NORM_KINDS:
                err(f"{where}.{key}.kind", f"unknown normalization kind; known {list(NORM_KINDS)}")
            for stat in ("min", "max", "mean", "std"):
                if stat in st:
                    v = st[stat]
                    if (not isinstance(v, list) or len(v) != dims[key]
                            or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)):
                        err(f"{where}.{key}.{stat}", f"expected {dims[key]} finite numbers")

    # ---- robot check -----------------------------------------------------------
    def check_robot(self, profile, *, source: str = "<contract>") -> list[str]:
        """Refuse a contract that does not fit ``profile``. Returns warnings (e.g. profile hash drift)."""
        warnings = []
        if self.robot["name"] != profile.name:
            raise ContractError(f"artifact was trained for robot '{self.robot['name']}', "
                                f"but the configured robot is '{profile.name}'", file=source,
                                field="robot.name",
                                fix=f"pass --robot {self.robot['name']} or use an artifact trained for {profile.name}")
        if list(self.robot["joint_names"]) != list(profile.joint_names):
            raise ContractError(f"artifact joint names {self.robot['joint_names']} do not match the robot's "
                                f"{list(profile.joint_names)} (from {profile.path})", file=source,
                                field="robot.joint_names",
                                fix="re-export against this robot profile, or fix config/robots/*.yaml")
        if self.action["type"].startswith("joint_position") and \
                list(self.action["names"]) != list(profile.action_names):
            raise ContractError(f"artifact action names {self.action['names']} (dim {self.action_dim}) do not "
                                f"match the robot's {list(profile.action_names)} (dim {len(profile.action_names)})",
                                file=source, field="action.names",
                                fix="re-export against this robot profile")
        ph = self.robot.get("profile_hash")
        if ph and ph != profile.hash:
            warnings.append(f"{source}: robot.profile_hash {ph} differs from {profile.path} ({profile.hash}): "
                            "the profile changed since export; limits in the profile win")
        return warnings


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON-serializable: {type(o).__name__}")

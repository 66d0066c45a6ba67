"""Export a PPO checkpoint (residual or scratch quadrotor policy) as one self-describing artifact.

``policies.export`` / ``policies.artifact`` are written for the diffusion
denoiser graph (``sample, timestep, obs_cond -> eps``); an MLP policy needs a
different graph, so it is exported here with the same contract schema
(``onboard.spec.contract``) and the same ``metadata_props`` key.

Graph ``policy`` (opset 20, dynamic batch):
- inputs: ``obs`` (B, obs_dim) float32, STANDARDIZED with the contract's
  ``observation.normalization`` (meanstd per key);
  ``base_action`` (B, 4) float32 (residual only): the baseline controller's
  normalized action on the same raw observation;
- output: ``action`` (B, 4) float32 in [-1, 1];
  residual: ``clip(base_action + scale * tanh(mu(obs)), -1, 1)``;
  scratch: ``tanh(mu(obs))``.
The contract's ``action.normalization`` (minmax over the physical range)
maps it to thrust [N] + body rates [rad/s]. The residual's baseline is named
in ``extra.residual`` (class, gains, nominal mass, max thrust, dt): a
runtime must run that controller (``sim.quad_controllers``, numpy only) on the
raw observation and feed ``base_action``.

Before anything is written in place, ONNX Runtime is compared with torch
(max abs diff <= 1e-5) and the contract is read back; files are written to a
temporary name and renamed. Imports torch (export time only).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from onboard.errors import OnboardError
from onboard.spec import CONTRACT_KEY, PolicyContract, load_robot
from policies.export import _safety_envelope, git_sha
from policies.ppo import checkpoint_has, load_checkpoint
from sim.quad_controllers import GeometricGains
from sim.quad_env import OBS_SPEC, action_spec

OPSET = 20
PARITY_TOLERANCE = 1e-5


class PolicyGraph(nn.Module):
    def __init__(self, actor: nn.Module, mode: str, scale: float):
        super().__init__()
        self.actor, self.mode, self.scale = actor, mode, float(scale)

    def forward(self, obs, base_action=None):
        mu = self.actor(obs)
        if self.mode == "residual":
            return torch.clamp(base_action + self.scale * torch.tanh(mu), -1.0, 1.0)
        return torch.tanh(mu)


def default_envelope(robot: str, task: str) -> str | None:
    """The envelope recorded for a quadrotor policy: tracking tasks fly at up to 1.8 m/s, where the
    robot's default indoor envelope (CBF alpha 2, 2.0 m/s) dominates tracking; they get the
    figure-8 evaluation envelope (docs/quadrotor.md, "Safety envelope"). Hover keeps the default."""
    from onboard.paths import config_dir
    if task == "track":
        p = config_dir() / "safety" / f"{robot}_figure8.yaml"
        if p.is_file():
            return str(p)
    return None


def is_ppo_checkpoint(path: str | Path) -> bool:
    """True for a checkpoint written by ``policies.ppo.save_checkpoint`` (vs a diffusion one)."""
    return checkpoint_has(path, "obs_mean", "residual_scale")


def build_contract(res, ck: dict, *, robot="crazyflie2x", onnx_name: str, safety=None, evaluation=None) -> PolicyContract:
    profile = load_robot(robot)
    cfg = res.config
    mean, std = np.asarray(ck["obs_mean"]), np.asarray(ck["obs_std"])
    norm, o = {}, 0
    for k in OBS_SPEC:
        d = k["shape"][0]
        norm[k["name"]] = {"kind": "meanstd", "mean": mean[o:o + d].tolist(), "std": std[o:o + d].tolist()}
        o += d
    meta = ck.get("env_meta") or {}
    max_thrust = float(meta.get("max_thrust_n", profile.raw["thrust_to_weight"] * profile.raw["mass_kg"] * 9.81))
    aspec = action_spec(max_thrust)
    inputs = {"obs": ["batch", len(mean)]}
    if cfg.mode == "residual":
        inputs["base_action"] = ["batch", 4]
    g = GeometricGains()
    extra = {"obs_clip": 10.0}
    if cfg.mode == "residual":
        extra["residual"] = {"scale": cfg.residual_scale, "baseline": "sim.quad_controllers.GeometricController",
                             "gains": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(g).items()},
                             "mass_kg": float(profile.raw["mass_kg"]), "max_thrust_n": max_thrust,
                             "dt_s": 1.0 / float(profile.rates_hz["control_hz"]),
                             "base_action_input": "baseline normalized action on the raw (unstandardized) observation"}
    return PolicyContract(
        policy_kind="residual" if cfg.mode == "residual" else "ppo",
        robot={"name": profile.name, "profile_hash": profile.hash, "joint_names": list(profile.joint_names)},
        observation={"keys": [{"name": k["name"], "shape": list(k["shape"]), "units": k["units"]} for k in OBS_SPEC],
                     "obs_horizon": 1, "normalization": norm},
        action={"type": "thrust_body_rates", "names": list(profile.action_names), "dim": 4,
                "normalization": {"kind": "minmax", "min": aspec["physical_min"], "max": aspec["physical_max"]},
                "pred_horizon": 1, "action_horizon": 1, "control_rate_hz": float(profile.rates_hz["control_hz"])},
        graphs={"policy": {"file": onnx_name, "opset": OPSET, "inputs": inputs,
                           "outputs": {"action": ["batch", 4]}}},
        safety_envelope=_safety_envelope(profile.name, safety or default_envelope(profile.name, cfg.task)),
        provenance={"git_sha": git_sha(), "train_config": asdict(cfg), "env_steps": ck.get("env_steps"),
                    "train_wall_s": ck.get("wall_s"), "dr_ranges": meta.get("dr_ranges"),
                    "evaluation": evaluation, "torch_version": torch.__version__,
                    "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S")},
        extra=extra,
    )


def export_ppo_checkpoint(checkpoint: str | Path, out: str | Path, *, safety=None, evaluation=None) -> PolicyContract:
    out = Path(out)
    if out.suffix != ".onnx":
        raise OnboardError(f"output must end in .onnx, got '{out.name}'", file=str(out), field="--out",
                           fix="e.g. --out quad_policy.onnx")
    res, ck = load_checkpoint(checkpoint)
    cfg = res.config
    contract = build_contract(res, ck, onnx_name=out.name, safety=safety, evaluation=evaluation)
    graph = PolicyGraph(res.model.actor, cfg.mode, cfg.residual_scale).eval()
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((2, len(ck["obs_mean"]))).astype(np.float32)
    base = rng.uniform(-1, 1, (2, 4)).astype(np.float32)
    names = ["obs", "base_action"] if cfg.mode == "residual" else ["obs"]
    example = (torch.from_numpy(obs), torch.from_numpy(base)) if cfg.mode == "residual" else (torch.from_numpy(obs),)
    batch = torch.export.Dim("batch", min=1, max=4096)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_path = Path(tmp) / out.name
        onnx_log = logging.getLogger("torch.onnx")
        level = onnx_log.level
        onnx_log.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, example, dynamo=True, opset_version=OPSET, input_names=names,
                                        output_names=["action"],
                                        dynamic_shapes={n: {0: batch} for n in names})
        onnx_log.setLevel(level)
        program.model.metadata_props[CONTRACT_KEY] = contract.to_json()
        program.save(str(tmp_path), external_data=False)
        from policies.artifact import load_artifact   # the runtime's reader: contract + graph checks
        art = load_artifact(tmp_path)
        with torch.no_grad():
            ref = graph(*example).numpy()
        got = art.policy(obs, base if cfg.mode == "residual" else None)
        diff = float(np.abs(ref - got).max())
        if diff > PARITY_TOLERANCE:
            raise OnboardError(f"ONNX Runtime differs from torch by {diff:.2e}", file=str(checkpoint),
                               field="parity", fix="check the exporter version; nothing was written")
        os.replace(tmp_path, out)
    return contract

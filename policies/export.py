"""Export a trained diffusion checkpoint as one self-describing artifact.

Writes ``policy.onnx`` (the denoiser graph, EMA weights) plus
``policy.onnx.data`` (the weights, external data), with the policy contract
JSON in the ONNX ``metadata_props`` under ``onboard.contract``. The graph is
exported with the torch dynamo exporter (opset 20) from a batch-2 example with
a dynamic batch axis. Before anything is written in place, the ONNX Runtime
output is compared with torch at batch 1 and 2 (max abs diff <= 1e-4) and the
contract is read back through the same loader the runtime uses; on any
failure nothing is written. Both files are built in a temporary folder next to
the target and renamed into place, so the relative ``.onnx.data`` reference
stays valid.

Imports torch (export time only); never imported by the runtime.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import json
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from onboard.errors import OnboardError
from onboard.paths import REPO_ROOT, config_dir
from onboard.spec import CONTRACT_KEY, PolicyContract, load_robot
from policies.diffusion.schedule import alphas_cumprod_for
from policies.diffusion.train import load_checkpoint, model_from_checkpoint

OPSET = 20
PARITY_TOLERANCE = 1e-4
DEFAULT_STEPS = 10
FEW_STEPS = 4
INPUTS = ("sample", "timestep", "obs_cond")
OUTPUTS = ("eps",)


@dataclass
class ExportResult:
    onnx_path: Path
    data_path: Path
    contract: PolicyContract
    parity_max_abs_diff: float
    seconds: float
    warnings: list = field(default_factory=list)


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _safety_envelope(robot: str, path: str | Path | None) -> dict:
    p = Path(path) if path else config_dir() / "safety" / f"{robot}.yaml"
    if not p.is_file():
        if path:
            raise OnboardError("safety envelope file not found", file=str(p), field="--safety",
                               fix="pass an existing config/safety/*.yaml or leave --safety out")
        return {}
    try:
        rel = str(p.resolve().relative_to(REPO_ROOT))
    except ValueError:
        rel = str(p)
    return {"name": p.stem, "path": rel, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()[:16]}


def build_contract(ckpt: dict, profile, *, onnx_name: str, safety_envelope: dict,
                   checkpoint_path: str) -> PolicyContract:
    cfg = ckpt["config"]
    spec = ckpt["obs_spec"]
    obs_dim = sum(int(np.prod(k["shape"])) for k in spec)
    action_dim = int(ckpt["unet"]["action_dim"])
    tp, to = int(cfg["pred_horizon"]), int(cfg["obs_horizon"])
    meta = dict(ckpt.get("meta") or {})
    history = ckpt.get("loss_history") or []
    provenance = {
        "git_sha": git_sha(), "train_config": cfg, "checkpoint": checkpoint_path,
        "train_step": int(ckpt["step"]), "final_loss": history[-1][1] if history else None,
        "num_parameters": ckpt.get("num_parameters"), "dataset": meta.get("dataset"),
        "task": meta.get("task"), "dr_ranges": meta.get("dr_ranges", meta.get("randomization", meta.get("dr"))),
        "dataset_info": {k: meta[k] for k in ("total_episodes", "total_frames") if k in meta},
        "calibration": meta.get("calibration", []),
        "torch_version": torch.__version__, "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return PolicyContract(
        policy_kind="diffusion",
        robot={"name": profile.name, "profile_hash": profile.hash, "joint_names": list(profile.joint_names)},
        observation={"keys": [{"name": k["name"], "shape": [int(s) for s in k["shape"]],
                               "units": k.get("units", "")} for k in spec],
                     "obs_horizon": to,
                     "normalization": ckpt["normalization"]["obs"]},
        action={"type": "joint_position_absolute", "names": list(profile.action_names), "dim": action_dim,
                "normalization": ckpt["normalization"]["action"], "pred_horizon": tp,
                "action_horizon": int(cfg["action_horizon"]),
                "control_rate_hz": float(ckpt.get("control_rate_hz") or profile.rates_hz["control_hz"])},
        sampler={"kind": "ddim", "prediction_type": "epsilon", "eta": 0.0,
                 "train_timesteps": int(cfg["num_train_timesteps"]), "beta_schedule": cfg["beta_schedule"],
                 "alphas_cumprod": alphas_cumprod_for(cfg["num_train_timesteps"], cfg["beta_schedule"]).tolist(),
                 "spacing": "leading", "clip_sample": 1.0,
                 "default_steps": DEFAULT_STEPS, "few_steps": FEW_STEPS},
        graphs={"denoiser": {"file": onnx_name, "opset": OPSET,
                             "inputs": {"sample": ["batch", tp, action_dim], "timestep": ["batch"],
                                        "obs_cond": ["batch", to * obs_dim]},
                             "dtypes": {"sample": "float32", "timestep": "int64", "obs_cond": "float32",
                                        "eps": "float32"},
                             "outputs": {"eps": ["batch", tp, action_dim]}}},
        safety_envelope=safety_envelope,
        provenance=provenance,
    )


def _example_inputs(batch: int, tp: int, da: int, cond: int, t_max: int, seed: int):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, tp, da)).astype(np.float32),
            rng.integers(0, t_max, size=batch).astype(np.int64),
            rng.uniform(-1, 1, size=(batch, cond)).astype(np.float32))


def torch_reference(model: torch.nn.Module, sample: np.ndarray, timestep: np.ndarray,
                    obs_cond: np.ndarray) -> np.ndarray:
    """The torch output the ONNX graph must match (a seam tests may perturb)."""
    with torch.no_grad():
        return model(torch.from_numpy(sample), torch.from_numpy(timestep), torch.from_numpy(obs_cond)).numpy()


def export_onnx(model: torch.nn.Module, path: Path, contract_json: str, tp: int, da: int, cond: int) -> None:
    example = tuple(torch.from_numpy(a) for a in _example_inputs(2, tp, da, cond, 100, seed=0))
    batch = torch.export.Dim("batch", min=1, max=4096)
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)          # "torchvision is not installed" notes are noise here
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, example, dynamo=True, opset_version=OPSET, input_names=list(INPUTS),
                                    output_names=list(OUTPUTS), verbose=False,
                                    dynamic_shapes={"sample": {0: batch}, "timestep": {0: batch},
                                                    "obs_cond": {0: batch}})
    onnx_log.setLevel(level)
    program.model.metadata_props[CONTRACT_KEY] = contract_json
    program.save(str(path), external_data=True)


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, robot: str | None = None,
                      safety: str | Path | None = None, tolerance: float = PARITY_TOLERANCE) -> ExportResult:
    t0 = time.perf_counter()
    checkpoint, out = Path(checkpoint), Path(out)
    if out.suffix != ".onnx":
        raise OnboardError(f"output must end in .onnx, got '{out.name}'", file=str(out), field="--out",
                           fix="e.g. --out policy.onnx")
    ckpt = load_checkpoint(checkpoint)
    robot_name = robot or ckpt.get("robot")
    if not robot_name:
        raise OnboardError("the checkpoint does not name a robot", file=str(checkpoint), field="robot",
                           fix="pass --robot franka_panda")
    profile = load_robot(robot_name)
    if list(ckpt["action_names"]) != list(profile.action_names) and len(ckpt["action_names"]) != len(profile.action_names):
        raise OnboardError(f"checkpoint actions {ckpt['action_names']} (dim {len(ckpt['action_names'])}) do not "
                           f"fit robot '{profile.name}' actions {list(profile.action_names)}",
                           file=str(checkpoint), field="action_names", fix="export for the robot the data came from")
    model = model_from_checkpoint(ckpt, ema=True)
    cfg = ckpt["config"]
    tp, da = int(cfg["pred_horizon"]), int(ckpt["unet"]["action_dim"])
    cond = int(ckpt["unet"]["obs_cond_dim"])
    contract = build_contract(ckpt, profile, onnx_name=out.name, safety_envelope=_safety_envelope(profile.name, safety),
                              checkpoint_path=str(checkpoint))
    contract.validate(source=str(checkpoint))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        tmp_onnx = tmp_dir / out.name
        tmp_data = tmp_dir / (out.name + ".data")
        contract.provenance["parity_tolerance"] = tolerance
        export_onnx(model, tmp_onnx, contract.to_json(), tp, da, cond)
        if not tmp_data.is_file():
            raise OnboardError("the exporter did not write external data next to the graph", file=str(tmp_onnx),
                               fix="report this; the torch ONNX exporter changed behaviour")
        from policies.artifact import load_artifact

        art = load_artifact(tmp_onnx, robot=profile)
        diffs = []
        for batch in (1, 2):
            for seed in (1, 2):
                x, t, c = _example_inputs(batch, tp, da, cond, int(cfg["num_train_timesteps"]), seed=100 * batch + seed)
                ref = torch_reference(model, x, t, c)
                got = art.denoise(x, t, c)
                if got.shape != ref.shape:
                    raise OnboardError(f"ONNX output shape {got.shape} differs from torch {ref.shape} at batch {batch}",
                                       file=str(out), field="parity", fix="report this exporter problem")
                diffs.append(float(np.max(np.abs(got - ref))))
        worst = max(diffs) if np.all(np.isfinite(diffs)) else float("inf")   # a NaN must not vanish in max()
        if not worst <= tolerance:
            raise OnboardError(f"ONNX Runtime output differs from torch by {worst:.3g} (> {tolerance:g}) "
                               "at batch 1/2; nothing was written", file=str(out), field="parity",
                               fix="check the model for ops the exporter does not support exactly")
        del art
        os.replace(tmp_data, out.parent / tmp_data.name)
        os.replace(tmp_onnx, out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return ExportResult(onnx_path=out, data_path=out.parent / (out.name + ".data"), contract=contract,
                        parity_max_abs_diff=worst, seconds=time.perf_counter() - t0)


def contract_summary(c: PolicyContract) -> str:
    return json.dumps({"robot": c.robot["name"], "obs_keys": c.obs_keys, "obs_dim": c.obs_dim,
                       "obs_horizon": c.obs_horizon, "action_dim": c.action_dim,
                       "pred_horizon": c.pred_horizon, "action_horizon": c.action_horizon,
                       "sampler": {k: c.sampler[k] for k in ("kind", "default_steps", "few_steps", "spacing")}})

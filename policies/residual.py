"""The residual policy over a frozen diffusion base: network, checkpoint and ONNX export.

The residual sees ``x = [obs_n ; base_n]``: the current observation normalized
as the base normalizes it, and the base's command for this step (popped from
its chunk queue) normalized with the base's action stats. It outputs a
correction in normalized action space,

    correction = scale * tanh(mu(x)),   scale <= 1 (default 0.1),

so ``|correction| <= scale`` on every axis for any input, and the last layer
of ``mu`` starts at zero: an untrained residual leaves the base unchanged,
bit for bit (``policies.residual_runtime`` adds a zero correction exactly).

Trainers (PPO, SAC with demonstrations) are in ``policies.residual_train``;
they score the pre-squash Gaussian sample ``u`` and apply the same squash.

Export writes one small graph ``residual`` (inputs ``obs``, ``base_action``;
output ``correction``), contract ``policy_kind: residual`` with
``extra.residual = {scale, base_sha256, base_artifact, base_num_steps}``. The
base stays its own artifact; ``ResidualRuntime`` composes the two and refuses a
base whose hash differs. ONNX Runtime is compared with torch before anything is
written in place (max |diff| <= 1e-5); files go to a temporary name first.

Imports torch (training/export only); never imported by the runtime.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from onboard.errors import OnboardError
from onboard.spec import CONTRACT_KEY, PolicyContract
from policies.checkpoint import checkpoint_kind, read_checkpoint, save_checkpoint_atomic

OPSET = 20
PARITY_TOLERANCE = 1e-5
DEFAULT_SCALE = 0.1
MAX_SCALE = 1.0
CHECKPOINT_KIND = "residual"


class ResidualActor(nn.Module):
    """MLP trunk + a zero-initialised mean head. ``forward(x)`` is the pre-squash mean ``mu``."""

    def __init__(self, in_dim: int, act_dim: int, hidden=(256, 256)):
        super().__init__()
        layers, d = [], in_dim
        for h in hidden:
            lin = nn.Linear(d, h)
            nn.init.orthogonal_(lin.weight, np.sqrt(2))
            nn.init.zeros_(lin.bias)
            layers += [lin, nn.Tanh()]
            d = h
        self.trunk = nn.Sequential(*layers)
        self.mu = nn.Linear(d, act_dim)
        nn.init.zeros_(self.mu.weight)     # initial behaviour == the base
        nn.init.zeros_(self.mu.bias)
        self.in_dim, self.act_dim, self.hidden = in_dim, act_dim, tuple(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mu(self.trunk(x))


def squash(u, scale: float):
    """Pre-squash sample/mean -> correction in normalized action units, |.| <= scale."""
    if isinstance(u, torch.Tensor):
        return scale * torch.tanh(u)
    return scale * np.tanh(u)


class ResidualGraph(nn.Module):
    """What is exported: (obs_n, base_n) -> scale * tanh(mu([obs_n ; base_n]))."""

    def __init__(self, actor: ResidualActor, scale: float):
        super().__init__()
        self.actor, self.scale = actor, float(scale)

    def forward(self, obs: torch.Tensor, base_action: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.tanh(self.actor(torch.cat([obs, base_action], dim=-1)))


def check_scale(scale: float) -> float:
    scale = float(scale)
    if not 0.0 < scale <= MAX_SCALE:
        raise OnboardError(f"residual scale {scale} outside (0, {MAX_SCALE}]", field="--residual-scale",
                           fix="keep the residual small (default 0.1 in normalized action units)")
    return scale


# ---------------------------------------------------------------- checkpoint
def save_checkpoint(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint_atomic(path, {"kind": CHECKPOINT_KIND, **payload})
    return path


def load_checkpoint(path: str | Path) -> dict:
    return read_checkpoint(path, kind=CHECKPOINT_KIND, what="residual", command="onboard train --policy residual")


def is_residual_checkpoint(path: str | Path) -> bool:
    return checkpoint_kind(path) == CHECKPOINT_KIND


def actor_from_checkpoint(ck: dict) -> ResidualActor:
    a = ck["actor"]
    actor = ResidualActor(int(a["in_dim"]), int(a["act_dim"]), tuple(a["hidden"]))
    actor.load_state_dict(ck["actor_state"])
    return actor.eval()


# ---------------------------------------------------------------- export
def build_contract(ck: dict, base_contract: PolicyContract, *, onnx_name: str, base_rel: str) -> PolicyContract:
    b = base_contract
    obs_dim, act_dim = b.obs_dim, b.action_dim
    observation = {"keys": b.observation["keys"], "obs_horizon": 1,
                   "normalization": b.observation.get("normalization", {})}
    action = dict(b.action)
    return PolicyContract(
        policy_kind="residual",
        robot=dict(b.robot),
        observation=observation,
        action=action,
        graphs={"residual": {"file": onnx_name, "opset": OPSET,
                             "inputs": {"obs": ["batch", obs_dim], "base_action": ["batch", act_dim]},
                             "dtypes": {"obs": "float32", "base_action": "float32", "correction": "float32"},
                             "outputs": {"correction": ["batch", act_dim]}}},
        safety_envelope=dict(b.safety_envelope),
        provenance={"algo": ck.get("algo"), "train_config": ck.get("config"), "env_steps": ck.get("env_steps"),
                    "train_wall_s": ck.get("wall_s"), "task": ck.get("task"), "dr": ck.get("dr"),
                    "history_tail": (ck.get("history") or [])[-3:], "torch_version": torch.__version__,
                    "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S")},
        extra={"residual": {
            "scale": float(ck["scale"]), "base_sha256": ck["base_sha256"], "base_artifact": base_rel,
            "base_num_steps": ck.get("base_num_steps"), "base_policy_kind": b.policy_kind,
            "inputs": "obs: current observation normalized with the base's stats (base key order); "
                      "base_action: the base command executed this step, normalized with the base's action stats",
            "output": "correction in normalized action units, added to base_action; |correction| <= scale"}},
    )


def export_residual(checkpoint: str | Path, out: str | Path, *, base: str | Path | None = None) -> PolicyContract:
    """Export a residual checkpoint to ``out`` (.onnx, weights inline); returns the contract."""
    from policies.artifact import open_session, read_contract
    from policies.residual_runtime import artifact_sha256, read_residual_contract

    out = Path(out)
    if out.suffix != ".onnx":
        raise OnboardError(f"output must end in .onnx, got '{out.name}'", file=str(out), field="--out",
                           fix="e.g. --out residual.onnx")
    ck = load_checkpoint(checkpoint)
    base = Path(base or ck["base_artifact"])
    if artifact_sha256(base) != ck["base_sha256"]:
        raise OnboardError("the base artifact changed since training (sha256 differs)", file=str(base),
                           field="base_sha256", fix="export against the base the residual was trained on")
    base_contract = read_contract(open_session(base), source=str(base))
    actor = actor_from_checkpoint(ck)
    graph = ResidualGraph(actor, float(ck["scale"])).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    base_rel = os.path.relpath(base.resolve(), out.parent.resolve())
    contract = build_contract(ck, base_contract, onnx_name=out.name, base_rel=base_rel)
    contract.validate(source=str(checkpoint))
    rng = np.random.default_rng(0)
    o = rng.uniform(-1, 1, (2, base_contract.obs_dim)).astype(np.float32)
    a = rng.uniform(-1, 1, (2, base_contract.action_dim)).astype(np.float32)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as tmp:
        tmp_path = Path(tmp) / out.name
        onnx_log = logging.getLogger("torch.onnx")
        level = onnx_log.level
        onnx_log.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, (torch.from_numpy(o), torch.from_numpy(a)), dynamo=True,
                                        opset_version=OPSET, input_names=["obs", "base_action"],
                                        output_names=["correction"],
                                        dynamic_shapes={"obs": {0: batch}, "base_action": {0: batch}})
        onnx_log.setLevel(level)
        program.model.metadata_props[CONTRACT_KEY] = contract.to_json()
        program.save(str(tmp_path), external_data=False)
        session, _ = read_residual_contract(tmp_path)
        for n in (1, 2):
            with torch.no_grad():
                ref = graph(torch.from_numpy(o[:n]), torch.from_numpy(a[:n])).numpy()
            got = session.run(["correction"], {"obs": o[:n], "base_action": a[:n]})[0]
            diff = float(np.abs(ref - got).max())
            if not diff <= PARITY_TOLERANCE:
                raise OnboardError(f"ONNX Runtime differs from torch by {diff:.2e}; nothing was written",
                                   file=str(checkpoint), field="parity", fix="check the exporter version")
        del session
        os.replace(tmp_path, out)
    return contract

"""Export a VLA checkpoint as three ONNX graphs with one contract.

Files written into the artifact folder (each graph with its weights in
``<graph>.onnx.data``):

- ``text_encoder.onnx``: ``token_ids`` (B, L) int64, ``token_mask`` (B, L)
  int64 -> ``lang_tokens`` (B, L, d). Run once per instruction.
- ``obs_encoder.onnx``: ``lang_tokens``, ``token_mask``, ``image_<cam>``
  (B, H, W, 3) uint8 per camera, ``state`` (B, S) normalized ->
  ``context`` (B, C). Run once per chunk (per control step at most).
- ``policy.onnx`` (the entry file): the action head, ``sample`` (B, Tp, Da),
  ``timestep`` (B,) float32 flow time in [0, 1], ``context`` ->
  ``velocity``. Run K times per chunk by the numpy Euler loop.

The entry graph carries the full contract (policy_kind ``vla``, sampler
``flow_euler`` with default and few-step counts, state/action normalization,
image size, the tokenizer in ``extra.vla.tokenizer`` and the sibling graph
files with the sha256 of each ``.onnx`` and ``.onnx.data`` in
``extra.vla.graphs``). The siblings carry the same contract without those
hashes (a file cannot hold its own hash), plus their role.

Each graph is exported with the torch dynamo exporter (opset 20) from a
batch-2 example with a dynamic batch axis; ONNX Runtime is compared with
torch per graph at batch 1 and 2 (max abs diff <= 1e-4), and the whole chunk
(numpy Euler over the head graph vs ``VLAPolicy.sample``) once more. All
files are built in a temporary folder and renamed into place only when every
check passed; on failure nothing is written.

Imports torch (export time only); never imported by the runtime.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from onboard.errors import OnboardError
from onboard.spec import CONTRACT_KEY, PolicyContract, load_robot
from policies.export import _safety_envelope, git_sha
from policies.vla.runtime import ROLE_KEY, VLAGraphs, euler_sample, sha256_file
from policies.vla.train import load_checkpoint, model_from_checkpoint

OPSET = 20
PARITY_TOLERANCE = 1e-4
DEFAULT_STEPS = 10
FEW_STEPS = 3
ENTRY_NAME = "policy.onnx"
TEXT_NAME = "text_encoder.onnx"
OBS_NAME = "obs_encoder.onnx"
MAX_UNKNOWN_FRACTION = 0.5
OUTPUTS = {"text_encoder": "lang_tokens", "obs_encoder": "context", "action_head": "velocity"}


@dataclass
class VLAExportResult:
    out_dir: Path
    entry: Path
    contract: PolicyContract
    parity: dict            # graph -> max abs diff (and "chunk")
    seconds: float


# ---- wrappers with flat, named inputs ------------------------------------------------------------
class _TextGraph(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.text = model.text

    def forward(self, token_ids, token_mask):
        return self.text(token_ids, token_mask)


class _ObsGraph(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.obs = model.obs
        self.n_cams = len(model.cfg.cameras)

    def forward(self, lang_tokens, token_mask, *rest):
        images, state = list(rest[: self.n_cams]), rest[self.n_cams]
        return self.obs(lang_tokens, token_mask, images, state)


class _HeadGraph(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.head = model.head

    def forward(self, sample, timestep, context):
        return self.head(sample, timestep, context)


def graph_specs(mcfg: dict) -> dict:
    """Input/output names, shapes and dtypes of the three graphs (``batch`` is dynamic)."""
    L, d, S = int(mcfg["max_len"]), int(mcfg["d_model"]), int(mcfg["state_dim"])
    H, W = (int(x) for x in mcfg["image_size"])
    Tp, Da, C = int(mcfg["pred_horizon"]), int(mcfg["action_dim"]), int(mcfg["n_readout"]) * d
    obs_in = {"lang_tokens": ["batch", L, d], "token_mask": ["batch", L],
              **{f"image_{c}": ["batch", H, W, 3] for c in mcfg["cameras"]}, "state": ["batch", S]}
    return {
        "text_encoder": {"file": TEXT_NAME, "opset": OPSET,
                         "inputs": {"token_ids": ["batch", L], "token_mask": ["batch", L]},
                         "outputs": {"lang_tokens": ["batch", L, d]},
                         "dtypes": {"token_ids": "int64", "token_mask": "int64", "lang_tokens": "float32"}},
        "obs_encoder": {"file": OBS_NAME, "opset": OPSET, "inputs": obs_in, "outputs": {"context": ["batch", C]},
                        "dtypes": {"lang_tokens": "float32", "token_mask": "int64", "state": "float32",
                                   **{f"image_{c}": "uint8" for c in mcfg["cameras"]}, "context": "float32"}},
        "action_head": {"file": ENTRY_NAME, "opset": OPSET,
                        "inputs": {"sample": ["batch", Tp, Da], "timestep": ["batch"], "context": ["batch", C]},
                        "outputs": {"velocity": ["batch", Tp, Da]},
                        "dtypes": {"sample": "float32", "timestep": "float32", "context": "float32",
                                   "velocity": "float32"}},
    }


def example_inputs(graph: str, mcfg: dict, batch: int, seed: int) -> dict[str, np.ndarray]:
    spec = graph_specs(mcfg)[graph]
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in spec["inputs"].items():
        shp = [batch] + [int(s) for s in shape[1:]]
        dt = spec["dtypes"][name]
        if name == "token_ids":
            x = rng.integers(4, int(mcfg["vocab_size"]), size=shp)
            x[:, 0] = 2
            x[:, -2:] = 0
            out[name] = x.astype(np.int64)
        elif name == "token_mask":
            m = np.ones(shp, np.int64)
            m[:, -2:] = 0                           # padding at the end, as the tokenizer makes it
            out[name] = m
        elif dt == "uint8":
            out[name] = rng.integers(0, 256, size=shp).astype(np.uint8)
        elif name == "timestep":
            out[name] = rng.uniform(0, 1, size=shp).astype(np.float32)
        else:
            out[name] = rng.standard_normal(shp).astype(np.float32)
    return out


def _export_graph(module: torch.nn.Module, example: dict, output: str, path: Path, metadata: dict) -> None:
    names = list(example)
    args = tuple(torch.from_numpy(example[n]) for n in names)
    batch = torch.export.Dim("batch", min=1, max=1024)
    if isinstance(module, _ObsGraph):       # forward(lang_tokens, token_mask, *rest): images..., state
        dyn = {"lang_tokens": {0: batch}, "token_mask": {0: batch},
               "rest": tuple({0: batch} for _ in names[2:])}
    else:
        dyn = tuple({0: batch} for _ in names)
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, dynamo=True, opset_version=OPSET, input_names=names,
                                        output_names=[output], verbose=False, dynamic_shapes=dyn)
    finally:
        onnx_log.setLevel(level)
    for k, v in metadata.items():
        program.model.metadata_props[k] = v
    program.save(str(path), external_data=True)
    if not path.with_name(path.name + ".data").is_file():
        raise OnboardError("the exporter did not write external data next to the graph", file=str(path),
                           fix="report this; the torch ONNX exporter changed behaviour")


def _torch_out(module, feed: dict) -> np.ndarray:
    with torch.no_grad():
        return module(*(torch.from_numpy(v) for v in feed.values())).numpy()


def build_contract(ckpt: dict, profile, *, safety_envelope: dict, checkpoint_path: str) -> PolicyContract:
    cfg, mcfg = ckpt["config"], ckpt["model_config"]
    H, W = (int(x) for x in mcfg["image_size"])
    history = ckpt.get("loss_history") or []
    meta = dict(ckpt.get("meta") or {})
    keys = [{"name": k["name"], "shape": [int(s) for s in k["shape"]], "units": k.get("units", "")}
            for k in ckpt["state_spec"]]
    keys += [{"name": f"image.{c}", "shape": [H, W, 3], "units": "uint8 RGB"} for c in mcfg["cameras"]]
    provenance = {
        "git_sha": git_sha(), "train_config": cfg, "checkpoint": checkpoint_path, "train_step": int(ckpt["step"]),
        "train_seconds": ckpt.get("train_seconds"), "final_loss": history[-1][1] if history else None,
        "num_parameters": ckpt.get("num_parameters"), "dataset": meta.get("dataset"), "task": meta.get("task"),
        "dataset_info": {k: meta[k] for k in ("total_episodes", "total_frames", "instructions") if k in meta},
        "dr_ranges": meta.get("dr_ranges", meta.get("randomization", meta.get("dr"))),
        "torch_version": torch.__version__, "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "parity_tolerance": PARITY_TOLERANCE,
    }
    specs = graph_specs(mcfg)
    return PolicyContract(
        policy_kind="vla",
        robot={"name": profile.name, "profile_hash": profile.hash, "joint_names": list(profile.joint_names)},
        observation={"keys": keys, "obs_horizon": 1, "normalization": ckpt["normalization"]["state"],
                     "cameras": list(mcfg["cameras"]), "image_size": [H, W],
                     "state_keys": [k["name"] for k in ckpt["state_spec"]]},
        action={"type": "joint_position_absolute", "names": list(profile.action_names),
                "dim": int(mcfg["action_dim"]), "normalization": ckpt["normalization"]["action"],
                "pred_horizon": int(mcfg["pred_horizon"]), "action_horizon": int(cfg["action_horizon"]),
                "control_rate_hz": float(ckpt.get("control_rate_hz") or profile.rates_hz["control_hz"])},
        sampler={"kind": "flow_euler", "time": "t=0 noise -> t=1 actions", "clip_sample": 1.0,
                 "default_steps": DEFAULT_STEPS, "few_steps": FEW_STEPS},
        graphs={"action_head": specs["action_head"], "text_encoder": specs["text_encoder"],
                "obs_encoder": specs["obs_encoder"]},
        safety_envelope=safety_envelope,
        provenance=provenance,
        extra={"vla": {"tokenizer": ckpt["tokenizer"], "max_len": int(mcfg["max_len"]),
                       "max_unknown_fraction": MAX_UNKNOWN_FRACTION,
                       "graphs": {"text_encoder": {"file": TEXT_NAME}, "obs_encoder": {"file": OBS_NAME},
                                  "action_head": {"file": ENTRY_NAME}},
                       "context_dim": int(mcfg["n_readout"]) * int(mcfg["d_model"]),
                       "pretrained_text_encoder": mcfg.get("pretrained_text_encoder")}},
    )


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, robot: str | None = None,
                      safety: str | Path | None = None, tolerance: float = PARITY_TOLERANCE) -> VLAExportResult:
    """``out``: the artifact folder (``policy.onnx`` inside), or a path ending in ``.onnx`` for the entry."""
    t0 = time.perf_counter()
    checkpoint, out = Path(checkpoint), Path(out)
    out_dir, entry_name = (out.parent, out.name) if out.suffix == ".onnx" else (out, ENTRY_NAME)
    if entry_name in (TEXT_NAME, OBS_NAME):
        raise OnboardError(f"the entry graph cannot be named {entry_name}", file=str(out), field="--out",
                           fix="use --out FOLDER or --out FOLDER/policy.onnx")
    ckpt = load_checkpoint(checkpoint)
    profile = load_robot(robot or ckpt.get("robot") or "franka_panda")
    if len(ckpt["action_names"]) != len(profile.action_names):
        raise OnboardError(f"checkpoint has {len(ckpt['action_names'])} actions, robot '{profile.name}' has "
                           f"{len(profile.action_names)}", file=str(checkpoint), field="action_names",
                           fix="export for the robot the data came from")
    model = model_from_checkpoint(ckpt, ema=True)
    mcfg = ckpt["model_config"]
    contract = build_contract(ckpt, profile, safety_envelope=_safety_envelope(profile.name, safety),
                              checkpoint_path=str(checkpoint))
    contract.graphs["action_head"]["file"] = entry_name
    contract.extra["vla"]["graphs"]["action_head"]["file"] = entry_name
    contract.validate(source=str(checkpoint))
    modules = {"text_encoder": _TextGraph(model).eval(), "obs_encoder": _ObsGraph(model).eval(),
               "action_head": _HeadGraph(model).eval()}
    files = {"text_encoder": TEXT_NAME, "obs_encoder": OBS_NAME, "action_head": entry_name}

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".export-vla-", dir=out_dir))
    try:
        sibling_json = contract.to_json()
        for role in ("text_encoder", "obs_encoder"):
            _export_graph(modules[role], example_inputs(role, mcfg, 2, seed=0), OUTPUTS[role], tmp_dir / files[role],
                          {CONTRACT_KEY: sibling_json, ROLE_KEY: role})
            p = tmp_dir / files[role]
            contract.extra["vla"]["graphs"][role].update(
                {"sha256": sha256_file(p), "data_sha256": sha256_file(p.with_name(p.name + ".data"))})
        _export_graph(modules["action_head"], example_inputs("action_head", mcfg, 2, seed=0), OUTPUTS["action_head"],
                      tmp_dir / entry_name, {CONTRACT_KEY: contract.to_json(), ROLE_KEY: "action_head"})

        graphs = VLAGraphs.open(tmp_dir / entry_name, robot=profile)
        parity = {}
        for role, run in (("text_encoder", graphs.text), ("obs_encoder", graphs.obs), ("action_head", graphs.head)):
            diffs = []
            for batch in (1, 2):
                feed = example_inputs(role, mcfg, batch, seed=100 + batch)
                ref, got = _torch_out(modules[role], feed), run(feed)
                if got.shape != ref.shape:
                    raise OnboardError(f"{role}: ONNX output shape {got.shape} differs from torch {ref.shape}",
                                       file=str(out), field="parity", fix="report this exporter problem")
                diffs.append(float(np.max(np.abs(got - ref))))
            parity[role] = max(diffs) if np.all(np.isfinite(diffs)) else float("inf")
        # The whole chunk: numpy Euler over the ONNX head vs the torch sampler, from the same noise.
        ctx = example_inputs("action_head", mcfg, 1, seed=7)["context"]
        noise = np.random.default_rng(8).standard_normal((1, int(mcfg["pred_horizon"]),
                                                          int(mcfg["action_dim"]))).astype(np.float32)
        ref = model.sample(torch.from_numpy(ctx), torch.from_numpy(noise), DEFAULT_STEPS).numpy()
        got = euler_sample(graphs.velocity, noise, ctx, DEFAULT_STEPS)
        parity["chunk"] = float(np.max(np.abs(got - ref))) if np.all(np.isfinite(got)) else float("inf")
        bad = {k: v for k, v in parity.items() if not v <= tolerance}
        if bad:
            raise OnboardError(f"ONNX Runtime output differs from torch by "
                               f"{', '.join(f'{k} {v:.3g}' for k, v in bad.items())} (> {tolerance:g}); nothing "
                               "was written", file=str(out), field="parity",
                               fix="check the model for ops the exporter does not support exactly")
        del graphs
        for name in (TEXT_NAME, OBS_NAME, entry_name):
            os.replace(tmp_dir / (name + ".data"), out_dir / (name + ".data"))
            os.replace(tmp_dir / name, out_dir / name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return VLAExportResult(out_dir=out_dir, entry=out_dir / entry_name, contract=contract, parity=parity,
                           seconds=time.perf_counter() - t0)


def contract_summary(c: PolicyContract) -> str:
    v = c.extra["vla"]
    return json.dumps({"robot": c.robot["name"], "policy_kind": c.policy_kind, "cameras": c.observation["cameras"],
                       "image_size": c.observation["image_size"], "state_keys": c.observation["state_keys"],
                       "pred_horizon": c.pred_horizon, "action_horizon": c.action_horizon,
                       "sampler": {k: c.sampler[k] for k in ("kind", "default_steps", "few_steps")},
                       "vocab_size": len(v["tokenizer"]["vocab"]), "max_len": v["max_len"],
                       "graphs": {k: g["file"] for k, g in v["graphs"].items()}})

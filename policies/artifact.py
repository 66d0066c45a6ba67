"""The one artifact reader: open ``policy.onnx`` with ONNX Runtime and check its contract.

Everything that runs a policy (sim evaluation, sim-to-sim, the ROS 2 policy
node, export's own read-back) opens artifacts here, so a bad artifact fails
the same way everywhere: a corrupt or truncated graph, a missing
``.onnx.data``, a missing or malformed contract, graph inputs that disagree
with the contract, or a contract that does not fit the robot raise
``ContractError``/``OnboardError`` naming the file and the field (exit 2 in
the CLI).

Imports numpy, onnxruntime and onboard.spec only. Never torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onboard.errors import ContractError, OnboardError
from onboard.spec.contract import CONTRACT_KEY, PolicyContract
from onboard.spec.robot import RobotProfile, load_robot

# Measured in bench/bench_runtime.py: at batch 1 the denoiser is too small for a second thread
# to pay for its synchronization, and one thread leaves the other core to the control loop.
DEFAULT_INTRA_OP_THREADS = 1
DENOISER_INPUTS = ("sample", "timestep", "obs_cond")
# Single-step MLP policies (PPO, residual over a baseline controller): graph ``policy``,
# inputs ``obs`` (+ ``base_action`` for a residual), output ``action`` (policies.export_mlp).
MLP_KINDS = ("ppo", "residual", "mlp")


def is_mlp_contract(contract: PolicyContract) -> bool:
    """An MLP policy (graph ``policy``). A ``residual`` over a diffusion base (graph ``residual``,
    ``policies.residual_runtime``) is not one."""
    return contract.policy_kind in ("ppo", "mlp") or (contract.policy_kind == "residual"
                                                       and "residual" not in contract.graphs)


@dataclass
class Artifact:
    path: Path
    contract: PolicyContract
    session: object                       # onnxruntime.InferenceSession
    profile: RobotProfile | None
    warnings: list = field(default_factory=list)

    def denoise(self, sample: np.ndarray, timestep: np.ndarray, obs_cond: np.ndarray) -> np.ndarray:
        """One denoiser call: eps for a batch (the callable the numpy sampler takes)."""
        return self.session.run(["eps"], {"sample": np.ascontiguousarray(sample, dtype=np.float32),
                                          "timestep": np.ascontiguousarray(timestep, dtype=np.int64),
                                          "obs_cond": np.ascontiguousarray(obs_cond, dtype=np.float32)})[0]

    def policy(self, obs: np.ndarray, base_action: np.ndarray | None = None) -> np.ndarray:
        """One MLP policy call: normalized action (B, action_dim) for standardized observations (B, obs_dim)."""
        feed = {"obs": np.ascontiguousarray(obs, dtype=np.float32)}
        if base_action is not None:
            feed["base_action"] = np.ascontiguousarray(base_action, dtype=np.float32)
        return self.session.run(["action"], feed)[0]


def open_session(path: str | Path, *, intra_op_num_threads: int = DEFAULT_INTRA_OP_THREADS):
    """An ONNX Runtime CPU session, or OnboardError naming the file and why it cannot be read."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise OnboardError("policy artifact not found", file=str(path),
                           fix="pass the policy.onnx written by `onboard export`")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(intra_op_num_threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
        data = path.with_name(path.name + ".data")
        msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        if not data.exists() and ("data" in msg.lower() or "external" in msg.lower() or "exist" in msg.lower()):
            raise OnboardError(f"the external weights file '{data.name}' is missing ({msg})", file=str(data),
                               field="external_data",
                               fix=f"keep {data.name} next to {path.name} (copy both files together)") from exc
        raise OnboardError(f"not a loadable ONNX model (corrupt or truncated?): {msg}", file=str(path),
                           field="onnx", fix="re-export with `onboard export` or copy the file again") from exc


def read_contract(session, *, source: str) -> PolicyContract:
    meta = session.get_modelmeta().custom_metadata_map
    if CONTRACT_KEY not in meta:
        raise ContractError("the artifact has no policy contract in its metadata", file=source,
                            field=f"metadata_props[{CONTRACT_KEY}]",
                            fix="export with `onboard export`, which embeds the contract")
    return PolicyContract.from_json(meta[CONTRACT_KEY], source=source)


def check_graph(session, contract: PolicyContract, *, source: str) -> None:
    """The graph's inputs and outputs must be the ones the contract describes."""
    if is_mlp_contract(contract):
        _check_mlp_graph(session, contract, source=source)
        return
    if contract.policy_kind not in ("diffusion",):
        return
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    missing = [n for n in DENOISER_INPUTS if n not in inputs]
    if missing or "eps" not in outputs:
        raise ContractError(f"denoiser graph has inputs {sorted(inputs)} and outputs {sorted(outputs)}; "
                            f"expected inputs {list(DENOISER_INPUTS)} and output 'eps'", file=source,
                            field="graphs.denoiser", fix="re-export with `onboard export`")
    want = {"sample": [contract.pred_horizon, contract.action_dim],
            "obs_cond": [contract.obs_horizon * contract.obs_dim]}
    for name, tail in want.items():
        shape = list(inputs[name].shape)
        if shape[1:] != tail:
            raise ContractError(f"graph input '{name}' has shape {shape}, the contract implies [batch, "
                                f"{', '.join(map(str, tail))}]", file=source, field=f"graphs.denoiser.inputs.{name}",
                                fix="re-export; the contract and the graph disagree")


def _check_mlp_graph(session, contract: PolicyContract, *, source: str) -> None:
    g = contract.graphs.get("policy")
    if not isinstance(g, dict) or not isinstance(g.get("inputs"), dict):
        raise ContractError("the contract has no 'policy' graph", file=source, field="graphs.policy",
                            fix="export the checkpoint with `onboard export` (policies.export_mlp)")
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if set(inputs) != set(g["inputs"]) or "action" not in outputs:
        raise ContractError(f"policy graph has inputs {sorted(inputs)} and outputs {sorted(outputs)}; the "
                            f"contract says inputs {sorted(g['inputs'])} and output 'action'", file=source,
                            field="graphs.policy.inputs", fix="re-export with `onboard export`")
    residual = contract.extra.get("residual")
    if ("base_action" in inputs) != (residual is not None):
        raise ContractError("a residual graph needs both a 'base_action' input and extra.residual (the baseline)",
                            file=source, field="extra.residual", fix="re-export with `onboard export`")
    if list(inputs["obs"].shape)[1:] != [contract.obs_dim]:
        raise ContractError(f"graph input 'obs' has shape {list(inputs['obs'].shape)}, the contract implies "
                            f"[batch, {contract.obs_dim}]", file=source, field="graphs.policy.inputs.obs",
                            fix="re-export; the contract and the graph disagree")


def load_artifact(path: str | Path, *, robot: str | RobotProfile | None = None,
                  intra_op_num_threads: int = DEFAULT_INTRA_OP_THREADS) -> Artifact:
    """Open, read the contract, check graph and robot. ``robot=None`` uses the contract's robot."""
    path = Path(path)
    session = open_session(path, intra_op_num_threads=intra_op_num_threads)
    contract = read_contract(session, source=str(path))
    check_graph(session, contract, source=str(path))
    if isinstance(robot, RobotProfile):
        profile = robot
    else:
        profile = load_robot(robot or contract.robot["name"])
    warnings = contract.check_robot(profile, source=str(path))
    return Artifact(path=path, contract=contract, session=session, profile=profile, warnings=warnings)

"""Runs an exported quadrotor MLP artifact (``policies.export_mlp``): raw observation in, command out.

What the main ``policies.runtime.PolicyRuntime`` (diffusion-only today)
needs to run these artifacts: read ``graphs.policy`` instead of the
denoiser, standardize the observation with the contract stats (clip at
``extra.obs_clip``), and for ``policy_kind == "residual"`` run the baseline
named in ``extra.residual`` on the raw observation and feed it as
``base_action``; then unnormalize ``action`` with ``action.normalization``
and pass it through the safety filter. This class does exactly that, so the
sim evaluation and a ROS node can use it until the main runtime grows an
MLP path.

Imports numpy, onnxruntime (via ``policies.artifact``), onboard.spec and
the numpy baseline controller. Never torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from onboard.errors import ContractError
from onboard.spec.normalize import normalize, unnormalize
from policies.artifact import open_session, read_contract


class MLPArtifact:
    def __init__(self, path: str | Path, intra_op_num_threads: int = 1, safety=None):
        self.path = Path(path)
        self.session = open_session(self.path, intra_op_num_threads=intra_op_num_threads)
        self.contract = read_contract(self.session, source=str(self.path))
        c = self.contract
        if "policy" not in c.graphs:
            raise ContractError("the contract has no 'policy' graph", file=str(self.path), field="graphs.policy",
                                fix="export the checkpoint with policies.export_mlp")
        names = {i.name for i in self.session.get_inputs()}
        want = set(c.graphs["policy"]["inputs"])
        if names != want:
            raise ContractError(f"graph inputs {sorted(names)} differ from the contract's {sorted(want)}",
                                file=str(self.path), field="graphs.policy.inputs", fix="re-export the artifact")
        self.residual = c.extra.get("residual")
        self.obs_clip = float(c.extra.get("obs_clip", 10.0))
        self.safety = safety
        self.baseline = None

    def run_normalized(self, obs_std: np.ndarray, base_action: np.ndarray | None = None) -> np.ndarray:
        feed = {"obs": np.ascontiguousarray(obs_std, dtype=np.float32)}
        if self.residual is not None:
            feed["base_action"] = np.ascontiguousarray(base_action, dtype=np.float32)
        return self.session.run(["action"], feed)[0]

    def standardize(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Raw observation dict (batched (n, d) values) -> standardized (n, obs_dim)."""
        parts = []
        for k in self.contract.observation["keys"]:
            v = np.asarray(obs[k["name"]], dtype=np.float32)
            v = v.reshape(-1, int(np.prod(k["shape"])))
            parts.append(normalize(v, self.contract.observation["normalization"][k["name"]]))
        return np.clip(np.concatenate(parts, axis=1), -self.obs_clip, self.obs_clip)

    def reset(self, num_envs: int = 1, idx=None) -> None:
        if self.residual is None:
            return
        if self.baseline is None or self.baseline.integral.shape[0] != num_envs:
            from sim.quad_controllers import GeometricController, GeometricGains
            r = self.residual
            gains = GeometricGains(**{k: (np.asarray(v) if isinstance(v, list) else v) for k, v in r["gains"].items()})
            self.baseline = GeometricController(r["mass_kg"], r["max_thrust_n"], r["dt_s"], num_envs, gains)
        self.baseline.reset(idx)

    def act_normalized(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        n = np.asarray(obs["pos_error_m"]).reshape(-1, 3).shape[0]
        base = None
        if self.residual is not None:
            if self.baseline is None or self.baseline.integral.shape[0] != n:
                self.reset(n)
            base = self.baseline.act({k: np.asarray(v, dtype=float).reshape(n, -1) for k, v in obs.items()})
        return self.run_normalized(self.standardize(obs), base)

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Physical command(s) (n, 4): thrust [N], body rates [rad/s]."""
        return unnormalize(self.act_normalized(obs), self.contract.action["normalization"])

"""Runs a residual artifact on top of its frozen diffusion base: base + bounded correction, then safety.

Two graphs, composed here (``policies.residual`` trains and exports the second):

- the base: a diffusion artifact, run by the one ``policies.runtime.PolicyRuntime``
  (observation history, numpy DDIM, receding-horizon chunk queue);
- the residual: ``policy_kind == "residual"``, graph ``residual`` with inputs
  ``obs`` (B, obs_dim), the current observation normalized exactly as the base
  normalizes it, and ``base_action`` (B, action_dim), the base command executed
  at this step (from its chunk queue) normalized with the base's action stats;
  output ``correction`` (B, action_dim) = ``scale * tanh(.)``, in normalized
  action space, so ``|correction| <= scale`` for any input.

The contract's ``extra.residual`` records ``scale``, ``base_sha256`` (the base
artifact's hash, graph + external weights) and ``base_artifact`` (its file
name, relative to the residual). A residual whose recorded hash differs from
the base it is given is refused (``ContractError`` naming
``extra.residual.base_sha256``): a residual only means something on the base it
was trained against.

Order of operations per control step (``observe`` + ``compose`` = ``act``):
1. the base runtime plans when its queue is empty; the safety filter's chunk
   check runs on the base chunk (``filter_chunk``), as in ``PolicyRuntime``;
2. base command ``b`` (physical) is popped; ``x = [obs_n ; normalize(b)]``;
3. ``c = residual(x)``, capped at ``max_residual_share * scale`` (a runtime
   safety parameter: 0 turns the residual off, 1 allows the trained bound);
4. ``cmd = b + c * span/2`` (the linear part of un-normalization, so a zero
   correction returns ``b`` bit for bit);
5. the per-command safety filter runs on the SUM.
A non-finite observation makes the base hold (through the filter) and the
residual is skipped for that step.

The residual magnitude (max |c| over action axes, normalized units) of the
last step is ``last_residual_magnitude``; ``residual_summary()`` aggregates
it since the last ``reset`` (for evaluation reports and node diagnostics).

Imports numpy, onnxruntime (through ``policies.artifact``), onboard.spec and
``policies.runtime``. Never torch.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from onboard.errors import ContractError, OnboardError
from onboard.spec.contract import PolicyContract
from onboard.spec.normalize import normalize
from policies.artifact import DEFAULT_INTRA_OP_THREADS, open_session, read_contract
from policies.runtime import PolicyRuntime

RESIDUAL_INPUTS = ("obs", "base_action")
RESIDUAL_OUTPUT = "correction"


def artifact_sha256(path: str | Path) -> str:
    """sha256 over the graph file and, when present, its external weights (``<file>.data``)."""
    path = Path(path)
    if not path.is_file():
        raise OnboardError("artifact not found", file=str(path), fix="pass an exported policy.onnx")
    h = hashlib.sha256()
    for p in (path, path.with_name(path.name + ".data")):
        if p.is_file():
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def delta_unnormalize(d: np.ndarray, stats: dict) -> np.ndarray:
    """The linear part of ``unnormalize``: a change in normalized units -> the change in physical units."""
    kind = stats.get("kind", "minmax")
    d = np.asarray(d, dtype=np.float64)
    if kind == "identity":
        return d
    if kind == "minmax":
        return d * 0.5 * (np.asarray(stats["max"], np.float64) - np.asarray(stats["min"], np.float64))
    if kind == "meanstd":
        return d * np.asarray(stats["std"], np.float64)
    raise ValueError(f"unknown normalization kind {kind!r}")


class ChunkOnlySafety:
    """Hands the base runtime the chunk check (and holds) of a safety filter, but defers the per-command
    filter: it must run on base + residual, not on the base alone. Without a filter it passes through."""

    def __init__(self, safety):
        self.safety = safety

    def reset(self, state, t):
        if self.safety is not None and hasattr(self.safety, "reset"):
            self.safety.reset(state, t)

    def filter_chunk(self, chunk, state, t):
        if self.safety is None or not hasattr(self.safety, "filter_chunk"):
            return np.asarray(chunk, dtype=np.float64)
        return self.safety.filter_chunk(chunk, state, t)

    def filter(self, cmd, t, state=None):
        if cmd is None:            # a hold (non-finite observation): the real filter decides
            return self.safety.filter(None, t, state)
        return np.asarray(cmd, dtype=np.float64)


def read_residual_contract(path: str | Path, intra_op_num_threads: int = DEFAULT_INTRA_OP_THREADS):
    """(session, contract) of a residual artifact; refuses anything else by field."""
    session = open_session(path, intra_op_num_threads=intra_op_num_threads)
    c = read_contract(session, source=str(path))
    if c.policy_kind != "residual":
        raise ContractError(f"policy_kind is '{c.policy_kind}', expected 'residual'", file=str(path),
                            field="policy_kind", fix="pass a residual artifact (`onboard export` of a residual checkpoint)")
    r = c.extra.get("residual")
    if not isinstance(r, dict):
        raise ContractError("the contract has no residual section", file=str(path), field="extra.residual",
                            fix="re-export the residual checkpoint")
    for key in ("scale", "base_sha256", "base_artifact"):
        if key not in r:
            raise ContractError(f"'{key}' is missing", file=str(path), field=f"extra.residual.{key}",
                                fix="re-export the residual checkpoint")
    if not (isinstance(r["scale"], (int, float)) and 0 < float(r["scale"]) <= 1.0):
        raise ContractError(f"scale {r['scale']!r} must be in (0, 1]", file=str(path), field="extra.residual.scale",
                            fix="re-export the residual checkpoint")
    g = c.graphs.get("residual")
    names = {i.name for i in session.get_inputs()}
    outs = {o.name for o in session.get_outputs()}
    if g is None or names != set(RESIDUAL_INPUTS) or RESIDUAL_OUTPUT not in outs:
        raise ContractError(f"residual graph has inputs {sorted(names)}, outputs {sorted(outs)}; expected "
                            f"{list(RESIDUAL_INPUTS)} -> '{RESIDUAL_OUTPUT}'", file=str(path), field="graphs.residual",
                            fix="re-export the residual checkpoint")
    return session, c


def is_residual_artifact(path: str | Path) -> bool:
    """Whether ``path`` is a residual over a diffusion base (this module's kind): ``policy_kind: residual``
    with a ``residual`` graph. Quadrotor residual MLPs (graph ``policy``, a controller baseline named in
    the contract) are not: ``PolicyRuntime`` runs those by itself."""
    c = read_contract(open_session(path), source=str(path))
    return c.policy_kind == "residual" and "residual" in c.graphs


class ResidualRuntime:
    """Frozen diffusion base + residual correction + safety filter; the same calls as ``PolicyRuntime``.

    ``residual`` is a residual artifact path, or a callable ``x (B, obs_dim + action_dim) -> correction``
    (the trainer passes its torch network here, so training rolls out through this very code);
    ``None`` runs the base alone (correction 0)."""

    def __init__(self, base: str | Path, residual: str | Path | Callable | None = None, *, robot=None,
                 safety=None, num_steps: int | None = None, seed: int = 0, max_residual_share: float = 1.0,
                 scale: float | None = None, intra_op_num_threads: int = DEFAULT_INTRA_OP_THREADS,
                 check_base_hash: bool = True):
        self.residual_contract: PolicyContract | None = None
        self._session = None
        self._fn = None
        self.base_path = Path(base) if base is not None else None
        info = {}
        if isinstance(residual, (str, Path)):
            self._session, self.residual_contract = read_residual_contract(residual, intra_op_num_threads)
            info = self.residual_contract.extra["residual"]
            if self.base_path is None:
                self.base_path = Path(residual).parent / info["base_artifact"]
            if check_base_hash:
                got = artifact_sha256(self.base_path)
                if got != info["base_sha256"]:
                    raise ContractError(f"the residual was trained against base sha256 {info['base_sha256'][:16]}..., "
                                        f"but base '{self.base_path}' has sha256 {got[:16]}...", file=str(residual),
                                        field="extra.residual.base_sha256",
                                        fix="run the residual with the base artifact it was trained on")
            if num_steps is None:
                num_steps = info.get("base_num_steps")
        elif callable(residual):
            self._fn = residual
        if self.base_path is None:
            raise OnboardError("no base artifact given", field="base", fix="pass the diffusion policy.onnx")
        self.scale = float(scale if scale is not None else info.get("scale", 0.1))
        if not 0.0 <= float(max_residual_share) <= 1.0:
            raise OnboardError(f"max_residual_share {max_residual_share} outside [0, 1]", field="max_residual_share",
                               fix="0 turns the residual off, 1 allows the trained bound")
        self.max_residual_share = float(max_residual_share)
        self.base = PolicyRuntime(self.base_path, robot=robot, num_steps=num_steps, seed=seed,
                                  intra_op_num_threads=intra_op_num_threads)
        if self.base.temporal_ensemble is not None:
            raise OnboardError("temporal ensembling is not supported under a residual", field="temporal_ensemble",
                               fix="leave it off")
        self.contract = self.base.contract
        self.warnings = list(self.base.warnings)
        if self.residual_contract is not None:
            rc = self.residual_contract
            if rc.obs_keys != self.contract.obs_keys or rc.action_dim != self.contract.action_dim:
                raise ContractError(f"residual expects obs keys {rc.obs_keys} / action dim {rc.action_dim}, the base has "
                                    f"{self.contract.obs_keys} / {self.contract.action_dim}", file=str(residual),
                                    field="observation.keys", fix="pair the residual with its own base")
        self._act_norm = self.contract.action.get("normalization", {"kind": "identity"})
        self._safety = None
        self.safety = safety
        self.last_residual = np.zeros(self.action_dim)
        self.last_residual_magnitude = 0.0
        self._magnitudes: list[float] = []
        self._x: np.ndarray | None = None
        self._base_cmd: np.ndarray | None = None
        self._hold = False

    # ---- what callers read (mirrors PolicyRuntime) ----------------------------------------------
    @property
    def safety(self):
        return self._safety

    @safety.setter
    def safety(self, f) -> None:
        self._safety = f
        self.base.safety = ChunkOnlySafety(f) if f is not None else None

    @property
    def action_dim(self) -> int:
        return self.contract.action_dim

    @property
    def obs_keys(self) -> list[str]:
        return self.contract.obs_keys

    @property
    def num_steps(self) -> int:
        return self.base.num_steps

    @property
    def stats(self) -> dict:
        return self.base.stats

    @property
    def _plan(self):
        return self.base._plan       # the policy node previews the upcoming (base) commands

    @property
    def input_dim(self) -> int:
        return self.contract.obs_dim + self.action_dim

    # ---- episode ---------------------------------------------------------------------------------
    def reset(self, state: Mapping | None = None, t: float = 0.0, seed: int | None = None) -> None:
        self.base.reset(state=state, t=t, seed=seed)
        self.last_residual = np.zeros(self.action_dim)
        self.last_residual_magnitude = 0.0
        self._magnitudes = []
        self._x, self._base_cmd, self._hold = None, None, False

    # ---- the two halves of a step ----------------------------------------------------------------
    def observe(self, obs: Mapping[str, np.ndarray], t: float | None = None, state: Mapping | None = None) -> np.ndarray:
        """Advance the base one step; return the residual's input ``[obs_n ; base_action_n]`` (float32)."""
        holds = self.base.stats["holds"]
        self._t = self.base._step * self.base._dt_s if t is None else float(t)
        self._state = state
        self._base_cmd = np.asarray(self.base.act(obs, t=self._t, state=state), dtype=np.float64)
        self._hold = self.base.stats["holds"] > holds
        if self._hold:
            self._x = np.zeros(self.input_dim, np.float32)
        else:
            self._x = np.concatenate([self.base.obs_vector(obs), normalize(self._base_cmd, self._act_norm)]).astype(np.float32)
        return self._x

    def compose(self, correction: np.ndarray | None) -> np.ndarray:
        """Base command + (capped) correction, through the per-command safety filter."""
        if self._base_cmd is None:
            raise RuntimeError("compose() before observe()")
        if self._hold:        # the base already held through the filter; no residual on a blind step
            self.last_residual = np.zeros(self.action_dim)
            self.last_residual_magnitude = 0.0
            self._magnitudes.append(0.0)
            return self._base_cmd.copy()
        c = np.zeros(self.action_dim) if correction is None else np.asarray(correction, np.float64).reshape(-1)
        if c.shape != (self.action_dim,) or not np.all(np.isfinite(c)):
            c = np.zeros(self.action_dim)     # a broken residual must never move the robot: fall back to the base
        cap = self.max_residual_share * self.scale
        c = np.clip(c, -cap, cap)
        self.last_residual = c
        self.last_residual_magnitude = float(np.max(np.abs(c))) if c.size else 0.0
        self._magnitudes.append(self.last_residual_magnitude)
        cmd = self._base_cmd + delta_unnormalize(c, self._act_norm) if np.any(c) else self._base_cmd.copy()
        if self._safety is not None:
            cmd = np.asarray(self._safety.filter(cmd, self._t, self._state), dtype=np.float64)
        return cmd

    def correction_toward(self, target: np.ndarray) -> np.ndarray:
        """The correction (normalized units, clipped to +-scale) that moves this step's base command toward
        ``target`` (physical units): ``clip((target - base) / (span/2), +-scale)``, the inverse of what
        ``compose`` adds. Zero on a step where the base holds, and on an axis with zero span (the
        residual cannot move it). Used to relabel demonstrations as residual actions."""
        c = np.zeros(self.action_dim)
        if self._base_cmd is None or self._hold:
            return c
        half = delta_unnormalize(np.ones(self.action_dim), self._act_norm)
        d = np.asarray(target, np.float64).reshape(-1) - self._base_cmd
        np.divide(d, half, out=c, where=half > 0)
        return np.clip(c, -self.scale, self.scale)

    def residual(self, x: np.ndarray) -> np.ndarray:
        """The residual graph on a batch ``x (B, obs_dim + action_dim)`` -> correction (B, action_dim)."""
        x = np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32)
        if self._session is not None:
            o = self.contract.obs_dim
            return self._session.run([RESIDUAL_OUTPUT], {"obs": x[:, :o], "base_action": x[:, o:]})[0]
        if self._fn is not None:
            return np.asarray(self._fn(x), dtype=np.float64)
        return np.zeros((len(x), self.action_dim))

    def act(self, obs: Mapping[str, np.ndarray], t: float | None = None, state: Mapping | None = None) -> np.ndarray:
        x = self.observe(obs, t=t, state=state)
        corr = None if self._hold or self.max_residual_share == 0.0 else self.residual(x)[0]
        return self.compose(corr)

    # ---- diagnostics -----------------------------------------------------------------------------
    def residual_summary(self) -> dict:
        m = np.asarray(self._magnitudes, dtype=float)
        out = {"steps": int(m.size), "scale": self.scale, "max_residual_share": self.max_residual_share}
        if m.size:
            out.update({"residual_abs_mean": float(m.mean()), "residual_abs_max": float(m.max()),
                        "residual_share_mean": float(m.mean() / self.scale) if self.scale else 0.0})
        return out

    def timing_summary(self) -> dict:
        return self.base.timing_summary()

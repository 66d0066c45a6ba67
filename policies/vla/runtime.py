"""The VLA runtime: instruction + camera images + proprioception in, safe joint commands out.

``VLARuntime`` opens the three graphs of a VLA artifact (``policies.vla.export``)
with ONNX Runtime, checks the siblings against the hashes in the entry
contract, and runs them at their own rates:

- ``set_instruction(text)``: tokenize (``policies.vla.tokenizer``), run the
  text graph ONCE per distinct instruction and cache the language tokens. An
  empty instruction, or one with more than ``extra.vla.max_unknown_fraction``
  of its words outside the vocabulary (or none inside it), raises
  ``InstructionError`` naming the unknown words; the runtime then holds (no
  instruction, no motion) until a valid instruction arrives.
- ``act(obs)``: every ``action_horizon`` steps, the observation graph turns
  [language tokens, images, normalized state] into a context and the numpy
  Euler loop integrates the flow of the action head graph over K calls
  (``num_steps``; the contract's default 10, or its few-step count). The
  chunk is unnormalized, its executed part checked by the safety filter
  (``filter_chunk``) and every command filtered (``filter``), exactly as
  ``policies.runtime.PolicyRuntime`` does for diffusion. A new instruction
  takes effect at the next chunk; the commands already planned run out first.
  A non-finite observation never reaches a graph: the plan is dropped and the
  command is a hold.

Imports numpy, onnxruntime (through ``policies.artifact``) and onboard only. Never torch.
"""
from __future__ import annotations

import hashlib
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from onboard.errors import ContractError, OnboardError
from onboard.spec.contract import CONTRACT_KEY, PolicyContract
from onboard.spec.normalize import normalize, unnormalize
from policies.artifact import DEFAULT_INTRA_OP_THREADS, Artifact, load_artifact, open_session
from policies.vla.tokenizer import WordTokenizer, words

_TIMINGS_KEPT = 4096
ROLE_KEY = "onboard.vla.role"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class InstructionError(OnboardError):
    """An instruction the policy cannot follow: empty, or mostly words it has never seen."""

    def __init__(self, problem: str, *, unknown_words: list[str] | None = None, fix: str | None = None):
        self.unknown_words = list(unknown_words or [])
        super().__init__(problem, field="instruction", fix=fix)


def euler_sample(velocity: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray], noise: np.ndarray,
                 context: np.ndarray, num_steps: int, clip_sample: float = 1.0) -> np.ndarray:
    """Integrate dx/dt = v(x, t, context) from t = 0 (``noise``) to t = 1 with ``num_steps`` Euler steps."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    x = np.asarray(noise, dtype=np.float32).copy()
    ctx = np.asarray(context, dtype=np.float32)
    dt = 1.0 / num_steps
    for k in range(num_steps):
        t = np.full((x.shape[0],), k * dt, dtype=np.float32)
        x = (x + np.asarray(velocity(x, t, ctx), dtype=np.float32) * np.float32(dt)).astype(np.float32)
    return np.clip(x, -clip_sample, clip_sample) if clip_sample else x


@dataclass
class VLAGraphs:
    """The three ONNX Runtime sessions of a VLA artifact and its contract."""
    artifact: Artifact            # the entry (action head), opened by the one artifact reader
    text_session: object
    obs_session: object

    @property
    def contract(self) -> PolicyContract:
        return self.artifact.contract

    @classmethod
    def open(cls, entry: str | Path, *, robot=None,
             intra_op_num_threads: int = DEFAULT_INTRA_OP_THREADS) -> "VLAGraphs":
        entry = Path(entry)
        art = load_artifact(entry, robot=robot, intra_op_num_threads=intra_op_num_threads)
        c = art.contract
        if c.policy_kind != "vla":
            raise ContractError(f"not a VLA artifact (policy_kind '{c.policy_kind}')", file=str(entry),
                                field="policy_kind", fix="pass the policy.onnx written by exporting a VLA checkpoint")
        v = c.extra.get("vla")
        if not isinstance(v, dict) or not isinstance(v.get("graphs"), dict) or "tokenizer" not in v:
            raise ContractError("the contract lacks extra.vla (tokenizer and graphs)", file=str(entry),
                                field="extra.vla", fix="re-export with `onboard export`")
        sessions = {}
        for role in ("text_encoder", "obs_encoder"):
            g = v["graphs"].get(role) or {}
            path = entry.parent / str(g.get("file", ""))
            if not g.get("file") or not path.is_file():
                raise OnboardError(f"the {role} graph '{g.get('file')}' is missing", file=str(path),
                                   field=f"extra.vla.graphs.{role}",
                                   fix=f"keep every file of the artifact folder together ({entry.parent})")
            for key, p in (("sha256", path), ("data_sha256", path.with_name(path.name + ".data"))):
                if key in g and (not p.is_file() or sha256_file(p) != g[key]):
                    raise ContractError(f"{p.name} does not match the sha256 the contract records "
                                        "(a file from another export?)", file=str(p),
                                        field=f"extra.vla.graphs.{role}.{key}",
                                        fix="copy all graphs of one export together, or re-export")
            sess = open_session(path, intra_op_num_threads=intra_op_num_threads)
            meta = sess.get_modelmeta().custom_metadata_map
            if meta.get(ROLE_KEY) != role or CONTRACT_KEY not in meta:
                raise ContractError(f"{path.name} is not a {role} graph (role {meta.get(ROLE_KEY)!r})",
                                    file=str(path), field=ROLE_KEY, fix="re-export with `onboard export`")
            want = set(c.graphs[role]["inputs"])
            have = {i.name for i in sess.get_inputs()}
            if want != have:
                raise ContractError(f"{role} graph has inputs {sorted(have)}, the contract says {sorted(want)}",
                                    file=str(path), field=f"graphs.{role}.inputs", fix="re-export")
            sessions[role] = sess
        have = {i.name for i in art.session.get_inputs()}
        if have != {"sample", "timestep", "context"}:
            raise ContractError(f"action head has inputs {sorted(have)}; expected sample, timestep, context",
                                file=str(entry), field="graphs.action_head", fix="re-export")
        return cls(artifact=art, text_session=sessions["text_encoder"], obs_session=sessions["obs_encoder"])

    def text(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.text_session.run(["lang_tokens"], dict(feed))[0]

    def obs(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.obs_session.run(["context"], dict(feed))[0]

    def head(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.artifact.session.run(["velocity"], dict(feed))[0]

    def velocity(self, sample: np.ndarray, timestep: np.ndarray, context: np.ndarray) -> np.ndarray:
        return self.head({"sample": np.ascontiguousarray(sample, dtype=np.float32),
                          "timestep": np.ascontiguousarray(timestep, dtype=np.float32),
                          "context": np.ascontiguousarray(context, dtype=np.float32)})


class VLARuntime:
    def __init__(self, artifact: str | Path, robot=None, safety=None, num_steps: int | None = None,
                 seed: int = 0, intra_op_num_threads: int = DEFAULT_INTRA_OP_THREADS):
        self.graphs = VLAGraphs.open(artifact, robot=robot, intra_op_num_threads=intra_op_num_threads)
        self.artifact = self.graphs.artifact
        self.contract: PolicyContract = self.graphs.contract
        self.warnings = list(self.artifact.warnings)
        c, v = self.contract, self.contract.extra["vla"]
        self.safety = safety
        self.seed = seed
        self.kind = "vla"
        self.tokenizer = WordTokenizer.from_dict(v["tokenizer"], source=str(artifact))
        self.max_len = int(v["max_len"])
        self.max_unknown_fraction = float(v.get("max_unknown_fraction", 0.5))
        self.cameras = list(c.observation["cameras"])
        self.image_size = tuple(int(x) for x in c.observation["image_size"])
        self.state_keys = list(c.observation["state_keys"])
        self._state_shapes = {k["name"]: int(np.prod(k["shape"])) for k in c.observation["keys"]}
        self._obs_norm = c.observation.get("normalization", {})
        self._act_norm = c.action.get("normalization", {"kind": "identity"})
        self._dt_s = 1.0 / c.control_rate_hz
        self.num_steps = int(num_steps if num_steps is not None else c.sampler.get("default_steps", 10))
        if not 1 <= self.num_steps <= 1000:
            raise OnboardError(f"num_steps {self.num_steps} outside 1..1000", field="num_steps",
                               fix="pick a flow step count such as 10 (default) or 3 (few-step)")
        self.clip_sample = float(c.sampler.get("clip_sample", 1.0))
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.instruction: str | None = None
        self._lang: tuple[np.ndarray, np.ndarray] | None = None
        self.stats = {"chunks": 0, "commands": 0, "nonfinite_obs": 0, "holds": 0, "no_instruction": 0,
                      "text_encoder_runs": 0, "instruction_errors": 0, "chunk_ms": deque(maxlen=_TIMINGS_KEPT)}
        self._rng = np.random.default_rng(seed)
        self.reset()

    # ---- properties the callers read -------------------------------------------------------------
    @property
    def action_dim(self) -> int:
        return self.contract.action_dim

    @property
    def obs_keys(self) -> list[str]:
        return self.contract.obs_keys

    # ---- language ---------------------------------------------------------------------------------
    def check_instruction(self, text) -> list[str]:
        """Raise ``InstructionError`` for text the policy cannot follow; return its unknown words."""
        if not isinstance(text, str) or not words(text):
            raise InstructionError("the instruction is empty", fix="send an instruction such as "
                                   "'push the red cube to the pad'")
        ws = words(text)
        unknown = self.tokenizer.unknown_words(text)
        n_unknown = sum(w in unknown for w in ws)
        if n_unknown == len(ws) or n_unknown / len(ws) > self.max_unknown_fraction:
            raise InstructionError(f"{n_unknown} of {len(ws)} words are outside the policy's vocabulary: "
                                   f"{', '.join(unknown)}", unknown_words=unknown,
                                   fix="use words from the training instructions (the vocabulary is in the "
                                       "artifact contract, extra.vla.tokenizer)")
        return unknown

    def set_instruction(self, text: str) -> list[str]:
        """Make ``text`` the instruction from the next chunk on; returns its unknown words (kept as <unk>).
        On ``InstructionError`` the runtime drops the current plan and holds until a valid instruction."""
        try:
            unknown = self.check_instruction(text)
        except InstructionError:
            self.stats["instruction_errors"] += 1
            self.instruction, self._lang = None, None
            self._plan.clear()
            raise
        key = " ".join(words(text))
        if key not in self._cache:
            ids, mask = self.tokenizer.encode(text, self.max_len)
            ids, mask = ids[None, :], mask[None, :].astype(np.int64)
            tokens = self.graphs.text({"token_ids": ids, "token_mask": mask})
            self.stats["text_encoder_runs"] += 1
            self._cache[key] = (np.asarray(tokens, dtype=np.float32), mask)
        self.instruction, self._lang = text, self._cache[key]
        return unknown

    # ---- observations --------------------------------------------------------------------------
    def _get(self, obs: Mapping, name: str):
        v = obs.get(name, obs.get(f"observation.{name}")) if isinstance(obs, Mapping) else None
        if v is None and name.startswith("image."):
            v = obs.get(f"observation.images.{name[len('image.'):]}")
        if v is None:
            raise OnboardError(f"observation '{name}' is missing (got {sorted(obs) if isinstance(obs, Mapping) else type(obs).__name__})",
                               field=f"observation.{name}", fix="feed every key the contract lists")
        return v

    def state_vector(self, obs: Mapping) -> np.ndarray:
        parts = []
        for name in self.state_keys:
            v = np.asarray(self._get(obs, name), dtype=np.float32).reshape(-1)
            if v.size != self._state_shapes[name]:
                raise OnboardError(f"observation '{name}' has {v.size} values, the contract says "
                                   f"{self._state_shapes[name]}", field=f"observation.{name}",
                                   fix="check the observation builder")
            st = self._obs_norm.get(name)
            parts.append(normalize(v, st) if st else v)
        return np.concatenate(parts).astype(np.float32)

    def images(self, obs: Mapping) -> dict[str, np.ndarray]:
        out = {}
        h, w = self.image_size
        for cam in self.cameras:
            img = np.asarray(self._get(obs, f"image.{cam}"))
            if img.shape != (h, w, 3):
                raise OnboardError(f"image '{cam}' has shape {img.shape}, the policy was trained on ({h}, {w}, 3)",
                                   field=f"observation.image.{cam}",
                                   fix=f"render or resize the camera to {w}x{h} RGB")
            out[f"image_{cam}"] = np.ascontiguousarray(img, dtype=np.uint8)[None]
        return out

    # ---- chunks ---------------------------------------------------------------------------------
    def _sample_chunk(self, state_vec: np.ndarray, images: dict) -> np.ndarray:
        c = self.contract
        tokens, mask = self._lang
        noise = self._rng.standard_normal((1, c.pred_horizon, c.action_dim)).astype(np.float32)
        t0 = time.perf_counter()
        ctx = self.graphs.obs({"lang_tokens": tokens, "token_mask": mask, **images, "state": state_vec[None]})
        x = euler_sample(self.graphs.velocity, noise, ctx, self.num_steps, self.clip_sample)
        self.stats["chunk_ms"].append((time.perf_counter() - t0) * 1e3)
        self.stats["chunks"] += 1
        return unnormalize(x[0], self._act_norm)

    def predict_chunk(self, obs: Mapping, instruction: str | None = None) -> np.ndarray:
        """Raw (pred_horizon, action_dim) chunk for one observation, unfiltered (benchmarks, checks).
        ``instruction`` (when given) becomes the runtime's instruction."""
        if instruction is not None:
            self.set_instruction(instruction)
        if self._lang is None:
            raise InstructionError("no instruction has been set", fix="call set_instruction(text) first")
        vec = self.state_vector(obs)
        if not np.all(np.isfinite(vec)):
            raise OnboardError("non-finite observation", field="obs", fix="feed finite observations")
        return self._sample_chunk(vec, self.images(obs))

    # ---- closed loop ----------------------------------------------------------------------------
    def reset(self, state: Mapping | None = None, t: float = 0.0, seed: int | None = None,
              instruction: str | None = None) -> None:
        """Start an episode: clear the plan; ramp the safety filter in from ``state``; optionally set the
        instruction (the instruction cache is kept across episodes)."""
        self._plan: deque = deque()
        self._step = 0
        self._last_cmd: np.ndarray | None = None
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        if self.safety is not None and state is not None and hasattr(self.safety, "reset"):
            self.safety.reset(state, t)
        if instruction is not None:
            self.set_instruction(instruction)

    def _hold_command(self, obs: Mapping, state) -> np.ndarray:
        if self._last_cmd is not None:
            return self._last_cmd.copy()
        if state is not None and "q" in state:
            return np.asarray(state["q"], dtype=np.float64).reshape(-1)[: self.action_dim].copy()
        try:
            q = np.concatenate([np.asarray(self._get(obs, "joint_pos"), float).reshape(-1),
                                np.asarray(self._get(obs, "gripper_width"), float).reshape(-1)])
        except OnboardError:
            q = np.full(self.action_dim, np.nan)
        return q[: self.action_dim] if q.size >= self.action_dim else np.full(self.action_dim, np.nan)

    def _hold(self, obs, t, state) -> np.ndarray:
        self.stats["holds"] += 1
        self._plan.clear()          # the plan was made for a world (or instruction) we no longer have
        if self.safety is not None:
            return self._emit(np.asarray(self.safety.filter(None, t, state), dtype=np.float64))
        cmd = self._hold_command(obs, state)
        if not np.all(np.isfinite(cmd)):
            raise OnboardError("cannot hold: no command yet and no finite joint state", field="obs",
                               fix="pass state={'q': ...} or a safety filter")
        return self._emit(cmd)

    def act(self, obs: Mapping, t: float | None = None, state: Mapping | None = None) -> np.ndarray:
        """The next command (action_dim,), filtered by the safety object when one is set."""
        t = self._step * self._dt_s if t is None else float(t)
        if self._lang is None:
            self.stats["no_instruction"] += 1
            return self._hold(obs, t, state)
        vec = self.state_vector(obs)
        images = self.images(obs) if not self._plan else None
        if not np.all(np.isfinite(vec)):
            self.stats["nonfinite_obs"] += 1
            return self._hold(obs, t, state)
        if not self._plan:
            c = self.contract
            part = self._sample_chunk(vec, images)[: c.action_horizon]      # obs_horizon 1: index 0 is now
            if self.safety is not None and hasattr(self.safety, "filter_chunk"):
                part = np.asarray(self.safety.filter_chunk(part, state, t), dtype=np.float64)
            self._plan.extend(part)
        cmd = np.asarray(self._plan.popleft(), dtype=np.float64)
        if self.safety is not None:
            cmd = np.asarray(self.safety.filter(cmd, t, state), dtype=np.float64)
        return self._emit(cmd)

    def _emit(self, cmd: np.ndarray) -> np.ndarray:
        self._step += 1
        self.stats["commands"] += 1
        if np.all(np.isfinite(cmd)):
            self._last_cmd = cmd.copy()
        return cmd

    def planned(self) -> list[np.ndarray]:
        """Commands still queued from the current chunk (chunk-checked, not yet step-filtered)."""
        return [np.asarray(c, dtype=np.float64) for c in self._plan]

    def timing_summary(self) -> dict:
        ms = np.asarray(self.stats["chunk_ms"], dtype=float)
        out = {k: self.stats[k] for k in ("chunks", "commands", "nonfinite_obs", "holds", "no_instruction",
                                         "text_encoder_runs", "instruction_errors")}
        out["num_steps"] = self.num_steps
        if ms.size:
            out.update({"chunk_ms_mean": float(ms.mean()), "chunk_ms_p50": float(np.percentile(ms, 50)),
                        "chunk_ms_p99": float(np.percentile(ms, 99)), "chunk_ms_max": float(ms.max())})
        return out

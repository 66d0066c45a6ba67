"""Domain randomization for the arm: per-episode physics, latency, noise and visuals.

Owns the DR config (``config/randomization/<robot>_<task>.yaml``, ranges as
plain numbers) and the randomizers. Each randomizer is a short function of
``(model, rng, cfg, ctx)`` in the MuJoCo Playground style: it resets the
fields it touches to their nominal values times a draw, so episodes never
compound. Draws come from the env's per-episode generator, so the same seed
gives the same draws and the same trajectory.

Action latency is a true delay: the env keeps a FIFO of ``action_delay_steps``
commands (see ``sim.arm_env.ArmEnv.step``), never a low-pass filter.

Imports: numpy, mujoco, onboard (config loader). Never imports policies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import mujoco
import numpy as np

from onboard.config import load_yaml
from onboard.errors import ConfigError
from onboard.paths import config_dir

# section -> {key: kind}; the kinds are RANGE_KINDS (below).
SCHEMA = {
    "object": {"mass_scale": "nonneg", "friction": "nonneg", "size_scale": "nonneg"},
    "joints": {"damping_scale": "nonneg", "armature_scale": "nonneg", "frictionloss": "nonneg"},
    "actuator": {"kp_scale": "nonneg"},
    "latency": {"action_delay_steps": "int_range"},
    "observation_noise": {"joint_pos": "std", "joint_vel": "std", "gripper_width": "std",
                          "ee_pos": "std", "object_pos": "std"},
    "camera": {"pos_jitter_m": "std", "rot_jitter_rad": "std"},
    "lighting": {"diffuse_scale": "nonneg"},
    "colors": {"rgba_jitter": "std"},
}


@dataclass
class DRConfig:
    """Validated DR ranges. ``sections[section][key]`` is (low, high) or a std."""
    sections: dict
    path: str | None = None

    def get(self, section: str, key: str, default=None):
        return self.sections.get(section, {}).get(key, default)


def default_dr_path(robot: str, task: str) -> Path:
    return config_dir() / "randomization" / f"{robot}_{task}.yaml"


RANGE_KINDS = {
    "std": "one number >= 0 (a Gaussian std)",
    "range": "[low, high], any sign",
    "nonneg": "[low, high] with low >= 0 (friction, delays, speeds, scales that may reach 0)",
    "scale": "[low, high] with low > 0 (multiplicative scales, time constants, intervals)",
    "int_range": "[low, high] whole numbers >= 0 (control steps)",
}


def load_dr_sections(path, schema: dict, *, what: str = "randomization config") -> DRConfig:
    """The one DR-YAML validator for every robot: ``schema[section][key]`` is a kind of ``RANGE_KINDS``.

    Every error names the file and the ``section.key`` field and says how to fix it.
    """
    path = Path(path)
    doc = load_yaml(path, what)
    sections = {}
    for sec, body in doc.items():
        if sec not in schema:
            raise ConfigError(f"unknown section '{sec}'", file=str(path), field=sec,
                              fix=f"use sections from {sorted(schema)}")
        if not isinstance(body, dict):
            raise ConfigError(f"expected a mapping, got {type(body).__name__}", file=str(path),
                              field=sec, fix="write 'key: value' lines under the section")
        out = {}
        for key, value in body.items():
            kind = schema[sec].get(key)
            name = f"{sec}.{key}"
            if kind is None:
                raise ConfigError(f"unknown key '{key}'", file=str(path), field=name,
                                  fix=f"use keys from {sorted(schema[sec])}")
            if kind == "std":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                        or value < 0:
                    raise ConfigError(f"{value!r} is not a non-negative number", file=str(path), field=name,
                                      fix="give a standard deviation >= 0")
                out[key] = float(value)
                continue
            if (not isinstance(value, list) or len(value) != 2
                    or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in value)):
                raise ConfigError(f"expected [low, high], got {value!r}", file=str(path), field=name,
                                  fix="write two numbers, e.g. [0.8, 1.2]")
            lo, hi = value
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise ConfigError(f"low {lo} is above high {hi} (or not finite)", file=str(path),
                                  field=name, fix="write [low, high] with low <= high")
            if kind == "int_range" and not (float(lo).is_integer() and float(hi).is_integer() and lo >= 0):
                raise ConfigError(f"expected whole non-negative control steps, got {value!r}",
                                  file=str(path), field=name, fix="write e.g. [0, 2]")
            if (kind == "scale" and lo <= 0) or (kind in ("nonneg", "int_range") and lo < 0):
                raise ConfigError(f"low {lo} is not allowed for a '{kind}' range", file=str(path), field=name,
                                  fix=f"write {RANGE_KINDS[kind]}")
            out[key] = (int(lo), int(hi)) if kind == "int_range" else (float(lo), float(hi))
        sections[sec] = out
    return DRConfig(sections=sections, path=str(path))


def load_dr_config(path=None, *, robot: str = "franka_panda", task: str = "push") -> DRConfig:
    """Read and validate an arm DR YAML; every error names the file and the field."""
    return load_dr_sections(Path(path) if path is not None else default_dr_path(robot, task), SCHEMA)


# ------------------------------------------------------------------ randomizers
@dataclass
class Nominal:
    """Nominal model values, copied once; every randomizer scales from these."""
    body_mass: np.ndarray
    body_inertia: np.ndarray
    geom_size: np.ndarray
    geom_friction: np.ndarray
    geom_rbound: np.ndarray
    geom_aabb: np.ndarray
    geom_rgba: np.ndarray
    dof_damping: np.ndarray
    dof_armature: np.ndarray
    dof_frictionloss: np.ndarray
    gainprm: np.ndarray
    biasprm: np.ndarray
    cam_pos: np.ndarray
    cam_quat: np.ndarray
    light_diffuse: np.ndarray

    @classmethod
    def of(cls, m: mujoco.MjModel) -> "Nominal":
        return cls(m.body_mass.copy(), m.body_inertia.copy(), m.geom_size.copy(), m.geom_friction.copy(),
                   m.geom_rbound.copy(), m.geom_aabb.copy(), m.geom_rgba.copy(), m.dof_damping.copy(),
                   m.dof_armature.copy(), m.dof_frictionloss.copy(), m.actuator_gainprm.copy(),
                   m.actuator_biasprm.copy(), m.cam_pos.copy(), m.cam_quat.copy(), m.light_diffuse.copy())

    def restore(self, m: mujoco.MjModel) -> None:
        m.body_mass[:] = self.body_mass
        m.body_inertia[:] = self.body_inertia
        m.geom_size[:] = self.geom_size
        m.geom_friction[:] = self.geom_friction
        m.geom_rbound[:] = self.geom_rbound
        m.geom_aabb[:] = self.geom_aabb
        m.geom_rgba[:] = self.geom_rgba
        m.dof_damping[:] = self.dof_damping
        m.dof_armature[:] = self.dof_armature
        m.dof_frictionloss[:] = self.dof_frictionloss
        m.actuator_gainprm[:] = self.gainprm
        m.actuator_biasprm[:] = self.biasprm
        m.cam_pos[:] = self.cam_pos
        m.cam_quat[:] = self.cam_quat
        m.light_diffuse[:] = self.light_diffuse


@dataclass
class Context:
    """Ids a randomizer touches (from ``sim.panda_model.SceneIndex``) and the nominal values."""
    object_body: int
    object_geom: int
    arm_dofs: np.ndarray
    arm_actuators: np.ndarray
    visual_geoms: np.ndarray
    nominal: Nominal


def _u(rng, r):
    return float(rng.uniform(r[0], r[1]))


def randomize_object_mass(m, rng, cfg: DRConfig, ctx: Context):
    r = cfg.get("object", "mass_scale")
    if r:
        s = _u(rng, r)
        m.body_mass[ctx.object_body] = ctx.nominal.body_mass[ctx.object_body] * s
        m.body_inertia[ctx.object_body] = ctx.nominal.body_inertia[ctx.object_body] * s


def randomize_object_friction(m, rng, cfg, ctx):
    r = cfg.get("object", "friction")
    if r:
        m.geom_friction[ctx.object_geom, 0] = _u(rng, r)


def randomize_object_size(m, rng, cfg, ctx):
    r = cfg.get("object", "size_scale")
    if r:
        s = _u(rng, r)
        g = ctx.object_geom
        m.geom_size[g] = ctx.nominal.geom_size[g] * s
        m.geom_rbound[g] = ctx.nominal.geom_rbound[g] * s
        m.geom_aabb[g] = ctx.nominal.geom_aabb[g] * s


def randomize_joint_dynamics(m, rng, cfg, ctx):
    dofs = ctx.arm_dofs
    r = cfg.get("joints", "damping_scale")
    if r:
        m.dof_damping[dofs] = ctx.nominal.dof_damping[dofs] * rng.uniform(r[0], r[1], len(dofs))
    r = cfg.get("joints", "armature_scale")
    if r:
        m.dof_armature[dofs] = ctx.nominal.dof_armature[dofs] * rng.uniform(r[0], r[1], len(dofs))
    r = cfg.get("joints", "frictionloss")
    if r:
        m.dof_frictionloss[dofs] = rng.uniform(r[0], r[1], len(dofs))


def randomize_actuator_gain(m, rng, cfg, ctx):
    r = cfg.get("actuator", "kp_scale")
    if r:
        a = ctx.arm_actuators
        s = rng.uniform(r[0], r[1], len(a))
        m.actuator_gainprm[a, 0] = ctx.nominal.gainprm[a, 0] * s
        m.actuator_biasprm[a, 1] = ctx.nominal.biasprm[a, 1] * s   # position servo: bias = -kp q


def randomize_camera(m, rng, cfg, ctx):
    pos_std = cfg.get("camera", "pos_jitter_m", 0.0)
    rot_std = cfg.get("camera", "rot_jitter_rad", 0.0)
    for c in range(m.ncam):
        m.cam_pos[c] = ctx.nominal.cam_pos[c] + rng.normal(0, pos_std, 3)
        axis_angle = rng.normal(0, rot_std, 3)
        dq = np.zeros(4)
        mujoco.mju_axisAngle2Quat(dq, axis_angle / (np.linalg.norm(axis_angle) + 1e-12),
                                  float(np.linalg.norm(axis_angle)))
        q = np.zeros(4)
        mujoco.mju_mulQuat(q, dq, ctx.nominal.cam_quat[c])
        m.cam_quat[c] = q


def randomize_lighting(m, rng, cfg, ctx):
    r = cfg.get("lighting", "diffuse_scale")
    if r:
        m.light_diffuse[:] = np.clip(ctx.nominal.light_diffuse * rng.uniform(r[0], r[1], (m.nlight, 1)), 0, 1)


def randomize_colors(m, rng, cfg, ctx):
    std = cfg.get("colors", "rgba_jitter", 0.0)
    g = ctx.visual_geoms
    m.geom_rgba[g, :3] = np.clip(ctx.nominal.geom_rgba[g, :3] + rng.normal(0, std, (len(g), 3)), 0, 1)


PHYSICS_RANDOMIZERS = (randomize_object_mass, randomize_object_friction, randomize_object_size,
                       randomize_joint_dynamics, randomize_actuator_gain)
VISUAL_RANDOMIZERS = (randomize_camera, randomize_lighting, randomize_colors)


@dataclass
class EpisodeDraw:
    """What one episode drew: the env reads the delay and applies the observation noise."""
    action_delay_steps: int
    obs_noise_std: dict = dc_field(default_factory=dict)

    def add_obs_noise(self, obs: dict, rng: np.random.Generator) -> None:
        for key, std in self.obs_noise_std.items():
            if std > 0 and key in obs:
                obs[key] = (obs[key] + rng.normal(0, std, obs[key].shape)).astype(np.float32)


class DomainRandomizer:
    """Applies a ``DRConfig`` to an ``ArmEnv``'s model once per episode."""

    def __init__(self, cfg: DRConfig, env):
        self.cfg = cfg
        m, ix = env.model, env.ix
        visual = [ix.object_geom_id, ix.table_geom_id, ix.target_geom_id]
        self.ctx = Context(object_body=ix.object_body_id, object_geom=ix.object_geom_id,
                           arm_dofs=ix.arm_dof_adr, arm_actuators=ix.arm_actuator_ids,
                           visual_geoms=np.array(visual), nominal=Nominal.of(m))
        self.visuals = bool(env.cameras)

    def new_episode(self, m: mujoco.MjModel, rng: np.random.Generator) -> EpisodeDraw:
        self.ctx.nominal.restore(m)
        for fn in PHYSICS_RANDOMIZERS:
            fn(m, rng, self.cfg, self.ctx)
        if self.visuals:
            for fn in VISUAL_RANDOMIZERS:
                fn(m, rng, self.cfg, self.ctx)
        lo, hi = self.cfg.get("latency", "action_delay_steps", (0, 0))
        delay = int(rng.integers(lo, hi + 1))
        return EpisodeDraw(action_delay_steps=delay,
                           obs_noise_std=dict(self.cfg.sections.get("observation_noise", {})))

"""``LangArmEnv``: language-conditioned Franka Panda tasks with rendered images, for the VLA.

Owns the language tasks: the instruction set (``config/vla/instructions.yaml``:
colours, slots, templates per task, held-out colour x slot combinations), the
evaluation splits, the episode generator (which cube where, which instruction),
success, and the visual + physics domain randomization of the scene
(``config/randomization/franka_panda_lang.yaml``).

The scene (``sim.lang_scene``): three cubes of distinct palette colours stand
in three lanes (``slots``: left / center / right, 27 cm apart, with jitter), a
white pad lies between two lanes near the robot. Tasks:

- ``push``: push the named cube along its lane toward the robot, to x = 0.42 m
  (success: cube centre within 3.5 cm of that point, resting on the table);
- ``pick_place``: pick the named cube up and put it on the pad (success: within
  3 cm of the pad centre, resting, gripper open and above it).

The lanes are far enough apart that pushing or carrying one cube never
touches another, and the start gripper width is the same for both tasks, so
only the instruction says what to do and with which cube.

Splits (``SPLITS``): ``train`` and ``seen`` draw the same training templates
and colour x slot arrangements (``seen`` uses other seeds: the split salts the
seed); ``paraphrase`` uses sentences never used in training; ``unseen_combo``
puts the named cube at a held-out colour x slot combination, which train, seen
and paraphrase scenes never contain (for any cube).

Action ``(8,)``: 7 absolute joint targets [rad] + gripper width [m], 10 Hz
over 500 Hz physics, with a true FIFO action delay from DR (as ``ArmEnv``).
Observation: ``joint_pos`` (7), ``joint_vel`` (7), ``gripper_width`` (1),
``ee_pos`` (3) float32 and ``image.<camera>`` (H, W, 3) uint8. No object poses:
the policy has to see. Experts read privileged state through ``object_pose()``,
``target_pos`` and ``ix`` (a ``SceneIndex`` whose object is the named cube).

Imports: numpy, mujoco, gymnasium, onboard, sim. The DR-YAML validator of
``sim2real.randomization`` is resolved lazily (sim2real sits above sim), as in
``sim.arm_env``. Never imports policies.
"""
from __future__ import annotations

import collections
import itertools
import math
import re
import string
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np

from onboard.config import float_list, load_yaml
from onboard.errors import ConfigError, OnboardError
from onboard.paths import config_dir
from onboard.spec.robot import load_robot
from sim.arm_env import PandaEnvBase, yaw_of_quat
from sim.lang_scene import CUBE_HALF_SIZE_M, LANG_CAMERAS, TABLE_RGBA, build_lang_scene

SPLITS = ("train", "seen", "paraphrase", "unseen_combo")
LANG_TASKS = ("push", "pick_place")
N_CUBES = 3

# Geometry of the episodes [m, rad]. Cubes start far from the robot, one per lane.
CUBE_X_RANGE = (0.57, 0.61)
CUBE_Y_JITTER = 0.015
CUBE_YAW_RANGE = 0.3
PUSH_TARGET_X = 0.42
PAD_X = 0.40
PAD_GAP_Y = 0.135                 # the pad lies between the center lane and a side lane
PAD_JITTER = 0.01
JOINT_NOISE_RAD = 0.02
START_WIDTH_M = 0.04              # the same for both tasks: the start state never tells the task
PUSH_TOL_M = 0.035
PICK_TOL_M = 0.03
TIME_LIMIT_S = {"push": 12.0, "pick_place": 13.0}   # the expert needs <= 10.0 s and <= 11.5 s

DEFAULT_INSTRUCTIONS = "vla/instructions.yaml"


def default_instructions_path() -> Path:
    return config_dir() / DEFAULT_INSTRUCTIONS


# ------------------------------------------------------------------ instructions
@dataclass(frozen=True)
class InstructionSet:
    """The validated ``config/vla/instructions.yaml``."""
    colours: dict                 # name -> (r, g, b) in [0, 1]
    slots: dict                   # name -> lateral position y [m], in lane order
    train_templates: dict         # task -> tuple of templates with "{colour}"
    paraphrase_templates: dict    # task -> tuple
    held_out: tuple               # ((colour, slot), ...)
    path: str = ""

    def templates(self, split: str, task: str) -> tuple:
        return self.paraphrase_templates[task] if split == "paraphrase" else self.train_templates[task]

    def sentences(self, split: str, task: str | None = None) -> list[str]:
        """Every instruction sentence the split can draw (all its templates x all colours)."""
        tasks = [task] if task else list(self.train_templates)
        return [t.format(colour=c) for k in tasks for t in self.templates(split, k) for c in self.colours]


def load_instructions(path=None) -> InstructionSet:
    """Read and validate the instruction YAML; every error names the file, the field and the fix."""
    path = Path(path) if path is not None else default_instructions_path()
    doc = load_yaml(path, "instruction set")
    f = str(path)

    def need(key, kind, what):
        if key not in doc or doc[key] is None:
            raise ConfigError("required field is missing", file=f, field=key, fix=f"add '{key}:' ({what})")
        if not isinstance(doc[key], kind):
            raise ConfigError(f"expected {what}, got {type(doc[key]).__name__}", file=f, field=key,
                              fix=f"write '{key}:' as {what}")
        return doc[key]

    unknown = sorted(set(doc) - {"colours", "slots", "templates", "held_out"})
    if unknown:
        raise ConfigError(f"unknown field '{unknown[0]}'", file=f, field=unknown[0],
                          fix="use colours, slots, templates, held_out")
    colours = {}
    for name, rgb in need("colours", dict, "a mapping name: [r, g, b]").items():
        if not isinstance(name, str) or not re.fullmatch(r"[a-z]+", name):
            raise ConfigError(f"colour name {name!r} is not one lower-case word", file=f, field=f"colours.{name}",
                              fix="name colours with one lower-case word, e.g. red")
        vals = float_list({name: rgb}, name, file=f, length=3, prefix="colours.")
        if not all(0.0 <= v <= 1.0 for v in vals):
            raise ConfigError(f"RGB {vals} is outside [0, 1]", file=f, field=f"colours.{name}",
                              fix="write three numbers in [0, 1]")
        colours[name] = tuple(vals)
    slots = {}
    for name, y in need("slots", dict, "a mapping slot: y [m]").items():
        if isinstance(y, bool) or not isinstance(y, (int, float)) or not abs(y) <= 0.35:
            raise ConfigError(f"slot position {y!r} is not a number within +-0.35 m", file=f,
                              field=f"slots.{name}", fix="give the lane's y position in metres")
        slots[str(name)] = float(y)
    if len(slots) != N_CUBES:
        raise ConfigError(f"expected {N_CUBES} slots, got {len(slots)}", file=f, field="slots",
                          fix=f"list {N_CUBES} lanes (left, center, right)")
    if len(colours) < N_CUBES + 1:
        raise ConfigError(f"expected at least {N_CUBES + 1} colours, got {len(colours)}", file=f,
                          field="colours", fix="a scene shows 3 cubes; give at least 4 colours")
    templates = need("templates", dict, "a mapping task: {train: [...], paraphrase: [...]}")
    train, para = {}, {}
    for task in LANG_TASKS:
        body = templates.get(task)
        if not isinstance(body, dict):
            raise ConfigError(f"templates for task '{task}' are missing", file=f, field=f"templates.{task}",
                              fix="give train: and paraphrase: lists of sentences")
        for kind, out in (("train", train), ("paraphrase", para)):
            items = body.get(kind)
            name = f"templates.{task}.{kind}"
            if not isinstance(items, list) or not items:
                raise ConfigError("expected a non-empty list of sentences", file=f, field=name,
                                  fix="write one '- \"... {colour} ...\"' line per template")
            for i, t in enumerate(items):
                if not isinstance(t, str) or t.count("{colour}") != 1 or _has_other_fields(t):
                    raise ConfigError(f"template {t!r} must contain '{{colour}}' exactly once and no other "
                                      "braces", file=f, field=f"{name}[{i}]", fix="write e.g. 'push the {colour} cube'")
            out[task] = tuple(items)
    extra = sorted(set(templates) - set(LANG_TASKS))
    if extra:
        raise ConfigError(f"unknown task '{extra[0]}'", file=f, field=f"templates.{extra[0]}",
                          fix=f"use tasks {list(LANG_TASKS)}")
    n_train = sum(len(v) for v in train.values())
    if n_train < 6:
        raise ConfigError(f"only {n_train} training templates", file=f, field="templates",
                          fix="give at least 6 training templates across push and pick_place")
    seen = {t for v in train.values() for t in v}
    overlap = [t for v in para.values() for t in v if t in seen]
    if overlap:
        raise ConfigError(f"paraphrase {overlap[0]!r} is also a training template", file=f,
                          field="templates", fix="paraphrases must never appear in training")
    held = []
    for i, item in enumerate(doc.get("held_out") or []):
        if not isinstance(item, dict) or item.get("colour") not in colours or item.get("slot") not in slots:
            raise ConfigError(f"held-out combination {item!r} names an unknown colour or slot", file=f,
                              field=f"held_out[{i}]", fix=f"write {{colour: one of {sorted(colours)}, "
                                                          f"slot: one of {sorted(slots)}}}")
        held.append((item["colour"], item["slot"]))
    if not held:
        raise ConfigError("no held-out colour x slot combinations", file=f, field="held_out",
                          fix="hold out at least one {colour, slot} pair for the unseen_combo split")
    return InstructionSet(colours=colours, slots=slots, train_templates=train, paraphrase_templates=para,
                          held_out=tuple(held), path=f)


def _has_other_fields(template: str) -> bool:
    names = [n for _, n, _, _ in string.Formatter().parse(template) if n is not None]
    return any(n != "colour" for n in names)


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split()


def training_corpus(instructions: InstructionSet | None = None) -> list[str]:
    """Every training instruction sentence (all training templates x all colours); builds the tokenizer."""
    return (instructions or load_instructions()).sentences("train")


def parse_instruction(text: str, instructions: InstructionSet | None = None) -> tuple[str, str]:
    """(task, colour) meant by an instruction: a template match, else keywords. OnboardError if unclear."""
    inst = instructions or load_instructions()
    if not isinstance(text, str) or not text.strip():
        raise OnboardError("the instruction is empty", field="instruction", fix="say e.g. 'push the red cube'")
    words = _words(text)
    colours = [w for w in words if w in inst.colours]
    if len(set(colours)) != 1:
        raise OnboardError(f"instruction {text!r} names {len(set(colours))} palette colours", field="instruction",
                           fix=f"name exactly one of {sorted(inst.colours)}")
    colour = colours[0]
    for task in LANG_TASKS:
        for split in ("train", "paraphrase"):
            if any(_words(t.format(colour=colour)) == words for t in inst.templates(split, task)):
                return task, colour
    place_words = {"pad", "place", "put", "pick", "onto", "on", "grab", "lift"}
    return ("pick_place" if place_words & set(words) else "push"), colour


TRAIN_TEMPLATES = load_instructions().train_templates
PARAPHRASE_TEMPLATES = load_instructions().paraphrase_templates


# ------------------------------------------------------------------ domain randomization
LANG_DR_SCHEMA = {
    "object": {"mass_scale": "nonneg", "friction": "nonneg"},
    "joints": {"damping_scale": "nonneg", "armature_scale": "nonneg", "frictionloss": "nonneg"},
    "actuator": {"kp_scale": "nonneg"},
    "latency": {"action_delay_steps": "int_range"},
    "observation_noise": {"joint_pos": "std", "joint_vel": "std", "gripper_width": "std", "ee_pos": "std"},
    "camera": {"pos_jitter_m": "std", "rot_jitter_rad": "std"},
    "lighting": {"diffuse_scale": "nonneg", "dir_jitter_rad": "std", "ambient": "nonneg"},
    "colors": {"object_rgb_jitter": "std", "object_brightness": "nonneg", "table_rgb_jitter": "std"},
}


def default_lang_dr_path(robot: str = "franka_panda") -> Path:
    return config_dir() / "randomization" / f"{robot}_lang.yaml"


def load_lang_dr(path=None, robot: str = "franka_panda"):
    """Validate the language-task DR YAML (``LANG_DR_SCHEMA``) -> ``sim2real.randomization.DRConfig``."""
    import importlib   # sim2real sits above sim: resolved only when DR is asked for
    rnd = importlib.import_module("sim2real.randomization")
    return rnd.load_dr_sections(Path(path) if path is not None else default_lang_dr_path(robot), LANG_DR_SCHEMA,
                                what="language-task randomization config")


@dataclass
class LangDraw:
    """What one episode drew: delay, obs noise and the per-cube colour draws (applied once colours are known)."""
    action_delay_steps: int
    obs_noise_std: dict
    cube_rgb_jitter: np.ndarray   # (N_CUBES, 3) added to the palette RGB
    cube_brightness: np.ndarray   # (N_CUBES,) multiplies the palette RGB


class _Nominal:
    def __init__(self, m: mujoco.MjModel):
        self.fields = {k: getattr(m, k).copy() for k in (
            "body_mass", "body_inertia", "geom_friction", "geom_rgba", "dof_damping", "dof_armature",
            "dof_frictionloss", "actuator_gainprm", "actuator_biasprm", "cam_pos", "cam_quat",
            "light_diffuse", "light_dir")}
        self.headlight_ambient = m.vis.headlight.ambient.copy()

    def restore(self, m: mujoco.MjModel) -> None:
        for k, v in self.fields.items():
            getattr(m, k)[:] = v
        m.vis.headlight.ambient[:] = self.headlight_ambient


def _u(rng, r, n=None):
    return rng.uniform(r[0], r[1], n) if n is not None else float(rng.uniform(r[0], r[1]))


def _randomize(m: mujoco.MjModel, lix, nominal: _Nominal, cfg, rng: np.random.Generator) -> LangDraw:
    """One episode's draws, each range reset from nominal first so episodes never compound."""
    nominal.restore(m)
    g = cfg.get
    cubes, geoms = lix.cube_body_ids, lix.cube_geom_ids
    if r := g("object", "mass_scale"):
        s = _u(rng, r, len(cubes))
        m.body_mass[cubes] = nominal.fields["body_mass"][cubes] * s
        m.body_inertia[cubes] = nominal.fields["body_inertia"][cubes] * s[:, None]
    if r := g("object", "friction"):
        m.geom_friction[geoms, 0] = _u(rng, r, len(geoms))
    dofs, acts = lix.arm.arm_dof_adr, lix.arm.arm_actuator_ids
    if r := g("joints", "damping_scale"):
        m.dof_damping[dofs] = nominal.fields["dof_damping"][dofs] * _u(rng, r, len(dofs))
    if r := g("joints", "armature_scale"):
        m.dof_armature[dofs] = nominal.fields["dof_armature"][dofs] * _u(rng, r, len(dofs))
    if r := g("joints", "frictionloss"):
        m.dof_frictionloss[dofs] = _u(rng, r, len(dofs))
    if r := g("actuator", "kp_scale"):
        s = _u(rng, r, len(acts))
        m.actuator_gainprm[acts, 0] = nominal.fields["actuator_gainprm"][acts, 0] * s
        m.actuator_biasprm[acts, 1] = nominal.fields["actuator_biasprm"][acts, 1] * s
    lo, hi = g("latency", "action_delay_steps", (0, 0))
    delay = int(rng.integers(lo, hi + 1))
    # Visuals: camera pose, lights, table and cube colours.
    pos_std, rot_std = g("camera", "pos_jitter_m", 0.0), g("camera", "rot_jitter_rad", 0.0)
    for c in range(m.ncam):
        m.cam_pos[c] = nominal.fields["cam_pos"][c] + rng.normal(0, pos_std, 3)
        m.cam_quat[c] = _turn(nominal.fields["cam_quat"][c], rng.normal(0, rot_std, 3))
    if r := g("lighting", "diffuse_scale"):
        m.light_diffuse[:] = np.clip(nominal.fields["light_diffuse"] * _u(rng, r, (m.nlight, 1)), 0, 1)
    if std := g("lighting", "dir_jitter_rad", 0.0):
        d = nominal.fields["light_dir"] + rng.normal(0, std, (m.nlight, 3))
        m.light_dir[:] = d / np.linalg.norm(d, axis=1, keepdims=True)
    if r := g("lighting", "ambient"):
        m.vis.headlight.ambient[:] = _u(rng, r)
    table = lix.table_geom_id
    m.geom_rgba[table, :3] = np.clip(np.asarray(TABLE_RGBA[:3]) + rng.normal(0, g("colors", "table_rgb_jitter", 0.0), 3),
                                     0, 1)
    jitter = rng.normal(0, g("colors", "object_rgb_jitter", 0.0), (len(geoms), 3))
    bright = _u(rng, g("colors", "object_brightness", (1.0, 1.0)), len(geoms))
    return LangDraw(delay, dict(cfg.sections.get("observation_noise", {})),
                    jitter, bright)


def _turn(quat, axis_angle) -> np.ndarray:
    angle = float(np.linalg.norm(axis_angle))
    dq = np.zeros(4)
    mujoco.mju_axisAngle2Quat(dq, axis_angle / (angle + 1e-12), angle)
    out = np.zeros(4)
    mujoco.mju_mulQuat(out, dq, quat)
    return out


# ------------------------------------------------------------------ the env
class LangArmEnv(PandaEnvBase):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, split: str = "train", dr=True, seed: int | None = 0, cameras=LANG_CAMERAS,
                 image_size=(96, 96), tasks=LANG_TASKS, control_hz: float | None = None,
                 robot: str = "franka_panda", instructions=None):
        if split not in SPLITS:
            raise ConfigError(f"unknown split '{split}'", field="split", fix=f"use one of {list(SPLITS)}")
        tasks = tuple(tasks)
        if not tasks or any(t not in LANG_TASKS for t in tasks):
            raise ConfigError(f"unknown tasks {list(tasks)}", field="tasks", fix=f"use a subset of {list(LANG_TASKS)}")
        self.split = split
        self.tasks = tasks
        self.instructions = instructions if isinstance(instructions, InstructionSet) else load_instructions(instructions)
        self.profile = load_robot(robot)
        self.cameras = tuple(cameras)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        if not all(16 <= s <= 512 for s in self.image_size):
            raise ConfigError(f"image size {self.image_size} is out of range", field="image_size",
                              fix="use 96-128 px")
        self.model, self.lix = build_lang_scene(self.profile, N_CUBES, cameras=tuple(dict.fromkeys(
            (*self.cameras, *LANG_CAMERAS))))
        self.ix = self.lix.index_for_cube(0)
        self.data = mujoco.MjData(self.model)
        self.control_hz = float(control_hz or self.profile.rates_hz["control_hz"])
        if not 5.0 <= self.control_hz <= 50.0:
            raise ConfigError(f"control rate {self.control_hz} Hz is out of range", field="control_hz",
                              fix="use 10-20 Hz")
        self.n_substeps = int(round(1.0 / (self.control_hz * self.model.opt.timestep)))
        self.max_steps_by_task = {t: int(round(TIME_LIMIT_S[t] * self.control_hz)) for t in LANG_TASKS}
        self.max_steps = max(self.max_steps_by_task[t] for t in self.tasks)
        self.ready_pose = np.asarray(self.profile.default_pose, dtype=float)
        self.max_width = float(self.profile.gripper.get("max_width_m", 0.08))
        lim = self.profile.limits.position
        low = np.concatenate([lim[:, 0], [0.0]]).astype(np.float32)
        high = np.concatenate([lim[:, 1], [self.max_width]]).astype(np.float32)
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
        self._ctrl_low, self._ctrl_high = low.astype(float), high.astype(float)
        self.obs_spec = [
            {"name": "joint_pos", "shape": [7], "units": "rad"},
            {"name": "joint_vel", "shape": [7], "units": "rad/s"},
            {"name": "gripper_width", "shape": [1], "units": "m"},
            {"name": "ee_pos", "shape": [3], "units": "m (TCP, world frame)"},
        ]
        spaces = {s["name"]: gym.spaces.Box(-np.inf, np.inf, shape=tuple(s["shape"]), dtype=np.float32)
                  for s in self.obs_spec}
        for cam in self.cameras:
            spaces[f"image.{cam}"] = gym.spaces.Box(0, 255, shape=(*self.image_size, 3), dtype=np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)

        self.dr_config = None
        if dr is not False and dr is not None:
            self.dr_config = dr if hasattr(dr, "sections") else load_lang_dr(None if dr is True else dr,
                                                                              robot=self.profile.name)
        self._nominal = _Nominal(self.model)
        inst = self.instructions
        self.slot_names = list(inst.slots)
        self._held = {(c, self.slot_names.index(s)) for c, s in inst.held_out}
        every = list(itertools.permutations(inst.colours, N_CUBES))
        self.train_arrangements = [a for a in every if not any((c, i) in self._held for i, c in enumerate(a))]
        self._every_arrangement = every
        self._split_salt = SPLITS.index(split)
        self._seed_rng = self._make_seed_rng(seed)
        self._renderer = None
        self._queue: collections.deque = collections.deque()
        self.draw = None
        self.t = 0
        self.episode_seed = None
        self.instruction = ""
        self.task_kind = self.tasks[0]
        self.colour = ""
        self.goal_cube = 0
        self.arrangement = ()
        self.target_pos = np.zeros(3)
        self.target_yaw = 0.0
        self.pad_pos = np.zeros(3)

    def _make_seed_rng(self, seed):
        # The split salts the seed: `seen` episodes differ from `train` episodes of the same seed.
        return np.random.default_rng(None if seed is None else [int(seed), self._split_salt])

    # ---------------------------------------------------------------- goals
    def _draw_goal(self, rng: np.random.Generator, options: dict) -> tuple[str, str, int, tuple, str]:
        """(task, colour, goal cube index, arrangement (colour per slot), instruction)."""
        inst = self.instructions
        forced_text = options.get("instruction")
        task, colour = options.get("task"), options.get("colour")
        if forced_text is not None:
            task, colour = parse_instruction(forced_text, inst)
        if task is not None and task not in self.tasks:
            raise OnboardError(f"task '{task}' is not one of this env's tasks {list(self.tasks)}", field="task",
                               fix=f"use one of {list(self.tasks)}")
        if colour is not None and colour not in inst.colours:
            raise OnboardError(f"unknown colour '{colour}'", field="colour", fix=f"use one of {sorted(inst.colours)}")
        task = task or self.tasks[int(rng.integers(len(self.tasks)))]
        if self.split == "unseen_combo":
            combos = sorted(c for c in self._held if colour is None or c[0] == colour)
            if not combos:
                raise OnboardError(f"colour '{colour}' has no held-out slot", field="colour",
                                   fix=f"use one of {sorted({c for c, _ in self._held})} in the unseen_combo split")
            colour, slot = combos[int(rng.integers(len(combos)))]
            # Other cubes avoid held-out combinations where possible, so only the named cube is new.
            cands = [a for a in self._every_arrangement if a[slot] == colour
                     and not any((c, i) in self._held for i, c in enumerate(a) if i != slot)]
            cands = cands or [a for a in self._every_arrangement if a[slot] == colour]
            arrangement = cands[int(rng.integers(len(cands)))]
        else:
            cands = [a for a in self.train_arrangements if colour is None or colour in a]
            arrangement = cands[int(rng.integers(len(cands)))]
            slot = arrangement.index(colour) if colour is not None else int(rng.integers(N_CUBES))
            colour = arrangement[slot]
        templates = inst.templates(self.split, task)
        template = templates[int(rng.integers(len(templates)))]
        text = forced_text if forced_text is not None else template.format(colour=colour)
        return task, colour, slot, arrangement, text

    # ---------------------------------------------------------------- episode
    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        options = dict(options or {})
        if seed is not None:
            self._seed_rng = self._make_seed_rng(seed)
        self.episode_seed = int(self._seed_rng.integers(2**63 - 1))
        goal_rng, init_rng, dr_rng, self._noise_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(self.episode_seed).spawn(4))
        m, d, lix = self.model, self.data, self.lix
        mujoco.mj_resetData(m, d)
        self.draw = _randomize(m, lix, self._nominal, self.dr_config, dr_rng) if self.dr_config else None

        task, colour, slot, arrangement, text = self._draw_goal(goal_rng, options)
        self.task_kind, self.colour, self.goal_cube, self.arrangement, self.instruction = (
            task, colour, slot, tuple(arrangement), text)
        self.max_steps = self.max_steps_by_task[task]
        self.ix = lix.index_for_cube(slot)
        inst = self.instructions
        for i, c in enumerate(arrangement):
            rgb = np.asarray(inst.colours[c])
            if self.draw is not None:
                rgb = rgb * self.draw.cube_brightness[i] + self.draw.cube_rgb_jitter[i]
            m.geom_rgba[lix.cube_geom_ids[i], :3] = np.clip(rgb, 0, 1)

        q0 = np.clip(self.ready_pose + init_rng.uniform(-JOINT_NOISE_RAD, JOINT_NOISE_RAD, 7),
                     self._ctrl_low[:7], self._ctrl_high[:7])
        d.qpos[self.ix.arm_qpos_adr] = q0
        d.qpos[self.ix.finger_qpos_adr] = START_WIDTH_M / 2
        h = CUBE_HALF_SIZE_M
        lane_y = np.array(list(inst.slots.values()))
        for i in range(N_CUBES):
            x = init_rng.uniform(*CUBE_X_RANGE)
            y = lane_y[i] + init_rng.uniform(-CUBE_Y_JITTER, CUBE_Y_JITTER)
            yaw = init_rng.uniform(-CUBE_YAW_RANGE, CUBE_YAW_RANGE)
            a = lix.cube_qpos_adr[i]
            d.qpos[a:a + 3] = [x, y, h]
            d.qpos[a + 3:a + 7] = [math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]
        pad_side = 1.0 if init_rng.random() < 0.5 else -1.0
        self.pad_pos = np.array([PAD_X + init_rng.uniform(-PAD_JITTER, PAD_JITTER),
                                 pad_side * PAD_GAP_Y + init_rng.uniform(-PAD_JITTER, PAD_JITTER), 0.0])
        d.mocap_pos[lix.pad_mocap_id] = self.pad_pos
        cube_pos, _ = self.object_pose()
        if task == "push":
            self.target_pos = np.array([PUSH_TARGET_X, cube_pos[1], h])
        else:
            self.target_pos = np.array([self.pad_pos[0], self.pad_pos[1], h])
        hold = np.concatenate([q0, [START_WIDTH_M]])
        d.ctrl[self.ix.arm_actuator_ids] = q0
        d.ctrl[self.ix.gripper_actuator_id] = START_WIDTH_M
        mujoco.mj_forward(m, d)

        delay = self.draw.action_delay_steps if self.draw else 0
        self._queue = collections.deque([hold.copy() for _ in range(delay)])
        self.t = 0
        return self._obs(), {"success": False, "episode_seed": self.episode_seed, "instruction": text,
                             "task": task, "colour": colour, "slot": self.slot_names[slot], "split": self.split,
                             "action_delay_steps": delay}

    # ---------------------------------------------------------------- state (privileged: experts, tests)
    def object_pose(self, cube: int | None = None) -> tuple[np.ndarray, float]:
        """Position and yaw of a cube (default: the one the instruction names)."""
        a = self.lix.cube_qpos_adr[self.goal_cube if cube is None else cube]
        q = self.data.qpos
        return q[a:a + 3].copy(), yaw_of_quat(q[a + 3:a + 7])

    def cube_positions(self) -> np.ndarray:
        return np.stack([self.object_pose(i)[0] for i in range(N_CUBES)])

    def _success(self) -> bool:
        pos, _ = self.object_pose()
        if abs(pos[2] - CUBE_HALF_SIZE_M) > 0.01:     # resting on the table, not held above it
            return False
        dist = float(np.linalg.norm(pos[:2] - self.target_pos[:2]))
        if self.task_kind == "push":
            return dist < PUSH_TOL_M
        return dist < PICK_TOL_M and self.gripper_width() > 0.055 and self.ee_pos()[2] > pos[2] + 0.03

    def _reward(self) -> float:
        pos, _ = self.object_pose()
        return -float(np.linalg.norm(pos[:2] - self.target_pos[:2]) + 0.2 * np.linalg.norm(self.ee_pos() - pos))

    def _obs(self) -> dict:
        d, ix = self.data, self.ix
        obs = {
            "joint_pos": d.qpos[ix.arm_qpos_adr].astype(np.float32),
            "joint_vel": d.qvel[ix.arm_dof_adr].astype(np.float32),
            "gripper_width": np.array([d.qpos[ix.finger_qpos_adr].sum()], dtype=np.float32),
            "ee_pos": d.site_xpos[ix.tcp_site_id].astype(np.float32),
        }
        if self.draw is not None:
            for key, std in self.draw.obs_noise_std.items():
                if std > 0 and key in obs:
                    obs[key] = (obs[key] + self._noise_rng.normal(0, std, obs[key].shape)).astype(np.float32)
        for cam in self.cameras:
            obs[f"image.{cam}"] = self.render_camera(cam)
        return obs


"""The Unitree G1 12-DoF legs in MuJoCo, written from the public figures with ``MjSpec``.

Owns the robot description as data (``G1Description``, read from
``config/robots/descriptions/g1_12dof.yaml``: the body tree of
../shared/robots/g1_12dof.yaml copied verbatim) and the MuJoCo world built
from it: a floor and ``n`` independent robots in one ``MjModel`` (robots
collide with the floor only, never with each other), so that one ``mj_step``
advances a whole batch. ``sim.g1_urdf`` writes the same description as URDF
for PyBullet: one description, two simulators.

Per robot: a free-floating pelvis (upper body rigid on it), 12 hinges with the
given axes, ranges and joint defaults (damping, armature, frictionloss),
explicit inertials (mass, CoM, principal inertia + frame quaternion), the
pelvis' primitive cylinders and the four 5 mm contact spheres per foot, leg
collision hulls (``LEG_HULLS``, assumed sizes) so the legs cannot cross, and
12 torque actuators whose ``ctrlrange`` is the torque limit. The joint PD runs
in numpy at every 2 ms physics step (``pd_torque``), so that gain scales,
zero offsets and delays can be randomized per robot; the policy runs at 50 Hz
on top (``sim.humanoid_env``).

Imports numpy, mujoco and onboard (config loader). Never sim2real or policies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import mujoco
import numpy as np

from onboard.config import load_yaml
from onboard.errors import ConfigError
from onboard.paths import robots_dir

PHYSICS_DT_S = 0.002          # 500 Hz physics and PD
POLICY_DT_S = 0.02            # 50 Hz policy
FLOOR_FRICTION = (1.0, 0.005, 0.0001)
JOINT_KEYS = ("hip_pitch", "hip_roll", "hip_yaw", "knee", "ankle_pitch", "ankle_roll")
SPACING_M = 3.0               # robots of a batch stand on a grid (cosmetic: they never touch)
# Leg collision hulls, so that the two legs cannot pass through each other (the description gives contact
# geometry for the feet only: without hulls, pushed policies put one foot through the other leg, which the robot
# cannot). Sizes are ASSUMED, not from the description: thigh and shank capsules from joint to joint, a sole box
# under each ankle roll link spanning the contact spheres. Hulls touch only the other leg's hulls, never the floor
# (the foot-floor contact stays the four spheres) nor their own leg. Contact bits: floor 1, contact spheres 2,
# left hulls 4, right hulls 8.
LEG_HULLS = {"hip_yaw_link": ("capsule", 0.04), "knee_link": ("capsule", 0.035),
             "ankle_roll_link": ("box", (0.09, 0.035, 0.012), (0.035, 0.0, -0.02))}


def leg_hull(link_name: str):
    """The ``LEG_HULLS`` entry of a link (by the name's ending), or None when the link has no hull."""
    return next((v for k, v in LEG_HULLS.items() if link_name.endswith(k)), None)


def description_path() -> Path:
    return robots_dir() / "descriptions" / "g1_12dof.yaml"


@dataclass(frozen=True)
class Body:
    name: str
    parent: str
    pos: np.ndarray
    quat: np.ndarray
    mass_kg: float
    com_m: np.ndarray
    inertia: np.ndarray          # principal moments
    iquat: np.ndarray            # inertia frame, w x y z
    joint: str | None            # hinge name (None: the free-floating pelvis)
    axis: np.ndarray | None
    range_rad: tuple | None
    torque_limit_nm: float | None
    geoms: tuple                 # ({"type", "size", "pos"}, ...)


@dataclass(frozen=True)
class G1Description:
    bodies: tuple                # in tree order (parents before children)
    joint_names: tuple           # 12 hinges in tree order = the profile's order
    default_pose: np.ndarray     # (12,) rad
    kp: np.ndarray               # (12,)
    kd: np.ndarray               # (12,)
    torque_limit: np.ndarray     # (12,)
    joint_range: np.ndarray      # (12, 2)
    damping: float
    armature: float
    frictionloss: float
    base_height_m: float

    @property
    def total_mass_kg(self) -> float:
        return float(sum(b.mass_kg for b in self.bodies))


def _joint_key(joint_name: str) -> str:
    for k in JOINT_KEYS:
        if k + "_joint" in joint_name:
            return k
    raise ConfigError(f"joint '{joint_name}' matches none of {JOINT_KEYS}", file=str(description_path()),
                      field="bodies.joint.name", fix="name joints <side>_<hip_pitch|...|ankle_roll>_joint")


@lru_cache(maxsize=4)
def load_description(path: str | None = None) -> G1Description:
    p = Path(path) if path else description_path()
    doc = load_yaml(p, "robot description")
    try:
        bodies = []
        for b in doc["bodies"]:
            j = b.get("joint") or {}
            hinge = j.get("type") == "hinge"
            bodies.append(Body(
                name=b["body"], parent=b["parent"], pos=np.asarray(b["pos_in_parent_m"], float),
                quat=np.asarray(b.get("quat_in_parent_wxyz", [1, 0, 0, 0]), float),
                mass_kg=float(b["mass_kg"]), com_m=np.asarray(b["com_m"], float),
                inertia=np.asarray(b["inertia_principal_kgm2"], float),
                iquat=np.asarray(b["inertia_frame_quat_wxyz"], float),
                joint=j["name"] if hinge else None, axis=np.asarray(j["axis"], float) if hinge else None,
                range_rad=tuple(j["range_rad"]) if hinge else None,
                torque_limit_nm=float(j["torque_limit_nm"]) if hinge else None,
                geoms=tuple(b.get("primitive_geoms", []))))
        names = tuple(b.joint for b in bodies if b.joint)
        keys = [_joint_key(n) for n in names]
        pose = np.array([doc["default_joint_angles_rad"][k] for k in keys], float)
        kp = np.array([doc["pd_gains"]["kp"][k] for k in keys], float)
        kd = np.array([doc["pd_gains"]["kd"][k] for k in keys], float)
        jd = doc["default_joint_defaults"]
        hinges = [b for b in bodies if b.joint]
        return G1Description(
            bodies=tuple(bodies), joint_names=names, default_pose=pose, kp=kp, kd=kd,
            torque_limit=np.array([b.torque_limit_nm for b in hinges]),
            joint_range=np.array([b.range_rad for b in hinges]),
            damping=float(jd["damping"]), armature=float(jd["armature"]), frictionloss=float(jd["frictionloss"]),
            base_height_m=float(bodies[0].pos[2]))
    except (KeyError, TypeError, IndexError) as e:
        raise ConfigError(f"malformed robot description: {e!r}", file=str(p), field="bodies",
                          fix="keep the layout of ../shared/robots/g1_12dof.yaml") from e


_GEOM = {"sphere": mujoco.mjtGeom.mjGEOM_SPHERE, "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
         "box": mujoco.mjtGeom.mjGEOM_BOX, "capsule": mujoco.mjtGeom.mjGEOM_CAPSULE}


def _add_hull(body, desc: G1Description, b, prefix: str) -> None:
    """The collision hull of leg link ``b`` (``LEG_HULLS``), if it has one."""
    kind = leg_hull(b.name)
    if kind is None:
        return
    left = b.name.startswith("left_")
    bits = dict(contype=4 if left else 8, conaffinity=8 if left else 4, condim=3, density=0, mass=0, group=3,
                rgba=[0.9, 0.5, 0.2, 0.3])
    if kind[0] == "capsule":
        child = next(c for c in desc.bodies if c.parent == b.name)
        body.add_geom(name=f"{prefix}{b.name}_hull", type=mujoco.mjtGeom.mjGEOM_CAPSULE, size=[kind[1], 0, 0],
                      fromto=[0, 0, 0, *child.pos.tolist()], **bits)
    else:
        body.add_geom(name=f"{prefix}{b.name}_hull", type=mujoco.mjtGeom.mjGEOM_BOX, size=list(kind[1]),
                      pos=list(kind[2]), **bits)


def _add_robot(spec: mujoco.MjSpec, desc: G1Description, prefix: str, xy, leg_hulls: bool = True) -> None:
    made = {"world": spec.worldbody}
    for b in desc.bodies:
        parent = made[b.parent]
        pos = b.pos.copy()
        if b.joint is None:
            pos[:2] += xy
        body = parent.add_body(name=prefix + b.name, pos=pos.tolist(), quat=b.quat.tolist())
        body.explicitinertial = True
        body.mass = b.mass_kg
        body.ipos = b.com_m.tolist()
        body.inertia = b.inertia.tolist()
        body.iquat = b.iquat.tolist()
        if b.joint is None:
            body.add_freejoint(name=prefix + "floating_base_joint")
        else:
            body.add_joint(name=prefix + b.joint, type=mujoco.mjtJoint.mjJNT_HINGE, axis=b.axis.tolist(),
                           range=list(b.range_rad), limited=mujoco.mjtLimited.mjLIMITED_TRUE,
                           damping=desc.damping, armature=desc.armature, frictionloss=desc.frictionloss)
        foot = b.name.endswith("ankle_roll_link")
        for k, g in enumerate(b.geoms):
            size = list(g["size"]) + [0.0] * (3 - len(g["size"]))
            # contype/conaffinity: floor (1, 2), robots (2, 1): robot-floor pairs collide, robot-robot never.
            body.add_geom(name=f"{prefix}{b.name}_{'foot' if foot else 'geom'}{k}", type=_GEOM[g["type"]],
                          size=size, pos=list(g["pos"]), contype=2, conaffinity=1, density=0, mass=0,
                          condim=3, rgba=[0.2, 0.2, 0.2, 1] if foot else [0.7, 0.7, 0.75, 1])
        if leg_hulls:
            _add_hull(body, desc, b, prefix)
        made[b.name] = body
    for b in desc.bodies:   # visual links from each body to its children (no mass, no contact)
        for c in desc.bodies:
            if c.parent == b.name and np.linalg.norm(c.pos) > 1e-3:
                made[b.name].add_geom(type=mujoco.mjtGeom.mjGEOM_CAPSULE, size=[0.025, 0, 0],
                                      fromto=[0, 0, 0, *c.pos.tolist()], contype=0, conaffinity=0,
                                      density=0, mass=0, group=1, rgba=[0.6, 0.6, 0.65, 0.6])
    for name, lim in zip(desc.joint_names, desc.torque_limit):
        act = spec.add_actuator(name=prefix + name, target=prefix + name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.ctrlrange = [-lim, lim]
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.gear = [1, 0, 0, 0, 0, 0]


def build_model(n: int = 1, desc: G1Description | None = None, leg_hulls: bool = True) -> mujoco.MjModel:
    """A floor and ``n`` G1 leg robots (prefixes ``r0_``, ``r1_``, ...) in one model. ``leg_hulls=False``:
    the legs may pass through each other (the model before 2026-11-22, for comparisons)."""
    desc = desc or load_description()
    spec = mujoco.MjSpec()
    spec.compiler.degree = False      # ranges are radians (MjSpec's default unit is degrees)
    spec.option.timestep = PHYSICS_DT_S
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.worldbody.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0, 0, 0.1],
                            contype=1, conaffinity=2, condim=3, friction=list(FLOOR_FRICTION),
                            rgba=[0.85, 0.85, 0.85, 1])
    spec.worldbody.add_light(pos=[0, 0, 4], dir=[0, 0, -1])
    cols = max(1, int(math.ceil(math.sqrt(n))))
    for i in range(n):
        _add_robot(spec, desc, f"r{i}_", np.array([(i % cols) * SPACING_M, (i // cols) * SPACING_M]), leg_hulls)
    return spec.compile()


@dataclass(frozen=True)
class RobotIndex:
    """Addresses of every robot's state in the batched model, as (n, k) index arrays."""
    n: int
    qpos_base: np.ndarray        # (n, 7) free joint: pos (3) + quat wxyz (4)
    qvel_base: np.ndarray        # (n, 6) lin vel world (3) + ang vel body (3)
    qpos_joint: np.ndarray       # (n, 12)
    qvel_joint: np.ndarray       # (n, 12)
    actuator: np.ndarray         # (n, 12)
    pelvis_body: np.ndarray      # (n,)
    body_ids: np.ndarray         # (n, 13) in description order
    foot_geoms: np.ndarray       # (n, 2, 4) left/right foot spheres
    foot_bodies: np.ndarray      # (n, 2)

    @classmethod
    def of(cls, m: mujoco.MjModel, n: int, desc: G1Description) -> "RobotIndex":
        def jid(name):
            return m.joint(name).id
        qb, vb, qj, vj, act, pel, bodies, feet, fb = [], [], [], [], [], [], [], [], []
        for i in range(n):
            p = f"r{i}_"
            fj = jid(p + "floating_base_joint")
            qb.append(m.jnt_qposadr[fj] + np.arange(7))
            vb.append(m.jnt_dofadr[fj] + np.arange(6))
            qj.append([m.jnt_qposadr[jid(p + j)] for j in desc.joint_names])
            vj.append([m.jnt_dofadr[jid(p + j)] for j in desc.joint_names])
            act.append([m.actuator(p + j).id for j in desc.joint_names])
            pel.append(m.body(p + "pelvis").id)
            bodies.append([m.body(p + b.name).id for b in desc.bodies])
            feet.append([[m.geom(f"{p}{side}_ankle_roll_link_foot{k}").id for k in range(4)]
                         for side in ("left", "right")])
            fb.append([m.body(f"{p}{side}_ankle_roll_link").id for side in ("left", "right")])
        a = np.asarray
        return cls(n, a(qb), a(vb), a(qj), a(vj), a(act), a(pel), a(bodies), a(feet), a(fb))


@lru_cache(maxsize=2)
def standing_height_m(desc: G1Description | None = None) -> float:
    """Pelvis height at which the lowest foot sphere just touches the floor, at the default pose."""
    desc = desc or load_description()
    m = build_model(1, desc)
    d = mujoco.MjData(m)
    ix = RobotIndex.of(m, 1, desc)
    d.qpos[ix.qpos_base[0]] = [0, 0, desc.base_height_m, 1, 0, 0, 0]
    d.qpos[ix.qpos_joint[0]] = desc.default_pose
    mujoco.mj_kinematics(m, d)
    g = ix.foot_geoms[0].ravel()
    lowest = float(np.min(d.geom_xpos[g, 2] - m.geom_size[g, 0]))
    return desc.base_height_m - lowest


def pd_torque(q_target, q, dq, kp, kd, torque_limit) -> np.ndarray:
    """Joint PD with the motor's torque limit: tau = clip(kp (q* - q) - kd dq, -limit, limit)."""
    return np.clip(kp * (q_target - q) - kd * dq, -torque_limit, torque_limit)


def quat_rotate_inverse(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """World vectors ``v`` (n, 3) into the frames of unit quaternions ``q`` (n, 4) wxyz."""
    w, xyz = q[:, :1], q[:, 1:]
    t = 2.0 * np.cross(xyz, v)
    return v - w * t + np.cross(xyz, t)


def rpy_from_quat(q: np.ndarray) -> np.ndarray:
    """(n, 4) wxyz -> (n, 3) roll, pitch, yaw (ZYX)."""
    w, x, y, z = q.T
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1.0, 1.0))
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.stack([roll, pitch, yaw], 1)

"""The Franka Panda MuJoCo scene: URDF from pybullet_data + actuators, table, object, target, cameras.

Owns the one place where the simulated arm is assembled. The robot comes from
``pybullet_data/franka_panda/panda.urdf`` (meshes are read from that folder,
never copied), loaded with ``mujoco.MjSpec.from_string`` after stripping the
``package://`` prefixes. ``MjSpec`` then adds what a URDF cannot say:

- position actuators on the 7 arm joints (gains tuned for 500 Hz physics) with
  torque limits from the robot profile, plus one gripper actuator on a fixed
  tendon whose length is the gripper width (finger1 + finger2, 0..0.08 m) with
  an equality constraint keeping both fingers symmetric;
- gravity compensation on the arm links, as the Franka controller does;
- a table (top at z = 0), a free object, a visual-only target marker (mocap),
  lights and cameras (``front``, ``top``) for offscreen rendering.

Joint limits come from the robot profile (``config/robots/franka_panda.yaml``).
Imports: numpy, mujoco, pybullet_data and onboard.spec only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import mujoco
import numpy as np

from onboard.errors import ConfigError
from onboard.spec.robot import RobotProfile, load_robot

PHYSICS_DT_S = 0.002                      # 500 Hz
# Position-actuator gains [N m/rad], [N m s/rad]: critically-damped-ish tracking with
# armature 0.1 and the URDF's 0.1 kg m^2 link inertias at 500 Hz (implicitfast).
ARM_KP = np.array([2000.0, 2000.0, 1500.0, 1500.0, 800.0, 600.0, 400.0])
ARM_KV = np.array([120.0, 120.0, 90.0, 90.0, 40.0, 30.0, 20.0])
ARM_ARMATURE = 0.1                        # kg m^2, reflected rotor inertia
GRIPPER_KP = 2000.0                       # N/m on the width tendon
GRIPPER_KV = 60.0
GRIPPER_FORCE_N = 70.0                    # Franka Hand continuous grasp force
TCP_OFFSET_FALLBACK_M = 0.1034

# Collision bits: robot geoms touch the scene but not each other (self-collision off keeps
# the step cheap; the safety filter and joint limits guard the arm); scene geoms touch all.
ROBOT_CONTYPE, ROBOT_CONAFFINITY = 2, 1
SCENE_CONTYPE, SCENE_CONAFFINITY = 1, 3
# Links that can never reach the table or the object; their collision geoms are dropped.
NO_COLLISION_LINKS = ("panda_link0", "panda_link1", "panda_link2", "panda_link3")

TABLE_HALF_SIZE = (0.45, 0.6, 0.02)
TABLE_CENTER_XY = (0.45, 0.0)


@dataclass(frozen=True)
class ObjectSpec:
    """The manipulated object: a box with half sizes [m], mass [kg], sliding friction."""
    half_size: tuple = (0.025, 0.025, 0.025)
    mass_kg: float = 0.1
    friction: float = 0.8
    rgba: tuple = (0.85, 0.25, 0.2, 1.0)


@dataclass(frozen=True)
class SceneIndex:
    """Ids and addresses the env needs, resolved once after compiling."""
    arm_qpos_adr: np.ndarray      # (7,)
    arm_dof_adr: np.ndarray       # (7,)
    finger_qpos_adr: np.ndarray   # (2,)
    finger_dof_adr: np.ndarray    # (2,)
    arm_joint_ids: np.ndarray     # (7,)
    finger_joint_ids: np.ndarray  # (2,)
    arm_actuator_ids: np.ndarray  # (7,)
    gripper_actuator_id: int
    tcp_site_id: int
    object_body_id: int
    object_geom_id: int
    object_qpos_adr: int          # 7 values: pos (3) + quat (4)
    object_dof_adr: int
    target_mocap_id: int
    target_geom_id: int
    table_geom_id: int
    robot_body_ids: np.ndarray
    finger_geom_ids: np.ndarray   # collision geoms of the two fingers


def panda_urdf_dir() -> str:
    import pybullet_data
    return os.path.join(pybullet_data.getDataPath(), "franka_panda")


def _load_urdf_spec() -> mujoco.MjSpec:
    folder = panda_urdf_dir()
    path = os.path.join(folder, "panda.urdf")
    if not os.path.isfile(path):
        raise ConfigError("Franka Panda URDF not found", file=path,
                          fix="pip install pybullet==3.2.7 (it ships pybullet_data/franka_panda)")
    with open(path) as f:
        text = f.read().replace("package://", "")
    # Keep the hand/finger bodies separate (no fusing) so the TCP site and finger ids exist.
    head = text.index(">", text.index("<robot")) + 1
    text = (text[:head] + '<mujoco><compiler fusestatic="false" discardvisual="false"/></mujoco>'
            + text[head:])
    spec = mujoco.MjSpec.from_string(text)
    spec.meshdir = folder
    return spec


def _check_joint_names(spec: mujoco.MjSpec, profile: RobotProfile) -> None:
    names = [j.name for j in spec.joints]
    wanted = list(profile.joint_names) + list((profile.gripper or {}).get("joint_names", []))
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ConfigError(f"joints {missing} are not in panda.urdf (it has {names})",
                          file=str(profile.path), field="joint_names",
                          fix="use the URDF's joint names in the profile")


def panda_arm_spec(profile: RobotProfile) -> mujoco.MjSpec:
    """The arm part of the scene as an ``MjSpec``: URDF, joint limits, actuators, gripper, TCP site.

    ``build_scene`` adds the table, object, target, lights and cameras; ``sim.lang_scene`` adds
    its own multi-object scene to the same arm.
    """
    spec = _load_urdf_spec()
    _check_joint_names(spec, profile)
    spec.option.timestep = PHYSICS_DT_S
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.visual.global_.offwidth = 640
    spec.visual.global_.offheight = 480

    lim = profile.limits
    for i, name in enumerate(profile.joint_names):
        j = spec.joint(name)
        j.range = lim.position[i]
        j.limited = mujoco.mjtLimited.mjLIMITED_TRUE
        j.armature = ARM_ARMATURE
        j.damping = [1.0, 0.0, 0.0]
        j.frictionloss = 0.0
    finger_names = list(profile.gripper["joint_names"])
    travel = float(profile.gripper.get("finger_travel_m", 0.04))
    for name in finger_names:
        j = spec.joint(name)
        j.range = [0.0, travel]
        j.armature = 0.01
        j.damping = [2.0, 0.0, 0.0]

    for body in spec.bodies:
        if body.name.startswith("panda_"):
            body.gravcomp = 1.0
    for g in spec.geoms:
        if g.contype == 0 and g.conaffinity == 0:      # URDF visual mesh
            g.group = 1
            continue
        body_name = g.parent.name
        if body_name in NO_COLLISION_LINKS:
            g.contype, g.conaffinity = 0, 0
        else:
            g.contype, g.conaffinity = ROBOT_CONTYPE, ROBOT_CONAFFINITY
            g.group = 3
        if "finger" in body_name:
            g.friction = [1.5, 0.01, 0.001]
            g.condim = 4                    # torsional friction: a grasped cube does not spin

    hand = spec.body("panda_hand")
    tcp_offset = float(profile.raw.get("kinematics", {}).get("tcp_offset_m", TCP_OFFSET_FALLBACK_M))
    hand.add_site(name="tcp", pos=[0, 0, tcp_offset], size=[0.006, 0, 0], rgba=[1, 1, 0, 0.6], group=2)

    # Actuators: absolute joint position targets and the gripper width.
    for i, name in enumerate(profile.joint_names):
        act = spec.add_actuator(name=f"act_{name}", target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=float(ARM_KP[i]), kv=float(ARM_KV[i]))
        act.ctrlrange = lim.position[i]
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        if lim.torque is not None:
            act.forcerange = [-lim.torque[i], lim.torque[i]]
            act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
    tendon = spec.add_tendon(name="gripper_width")
    for name in finger_names:
        tendon.wrap_joint(name, 1.0)
    spec.add_equality(type=mujoco.mjtEq.mjEQ_JOINT, name1=finger_names[0], name2=finger_names[1],
                      data=np.array([0, 1] + [0] * 10, dtype=float))
    grip = spec.add_actuator(name="act_gripper", target="gripper_width",
                             trntype=mujoco.mjtTrn.mjTRN_TENDON)
    grip.set_to_position(kp=GRIPPER_KP, kv=GRIPPER_KV)
    grip.ctrlrange = [0.0, float(profile.gripper.get("max_width_m", 2 * travel))]
    grip.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
    grip.forcerange = [-GRIPPER_FORCE_N, GRIPPER_FORCE_N]
    grip.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
    return spec


def build_scene(profile: RobotProfile | None = None, obj: ObjectSpec = ObjectSpec(),
                cameras: tuple = ("front", "top")) -> tuple[mujoco.MjModel, SceneIndex]:
    """Compile the arm scene. Returns the model and the resolved ids."""
    import warnings

    profile = profile or load_robot("franka_panda")
    spec = panda_arm_spec(profile)
    world = spec.worldbody
    tx, ty = TABLE_CENTER_XY
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=list(TABLE_HALF_SIZE),
                   pos=[tx, ty, -TABLE_HALF_SIZE[2]], rgba=[0.55, 0.45, 0.35, 1],
                   contype=SCENE_CONTYPE, conaffinity=SCENE_CONAFFINITY, friction=[0.5, 0.005, 0.0001])
    world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2, 2, 0.1], pos=[0, 0, -0.75],
                   rgba=[0.3, 0.3, 0.32, 1], contype=0, conaffinity=0)
    world.add_light(name="key", pos=[0.5, -0.5, 1.5], dir=[0, 0.3, -1], diffuse=[0.7, 0.7, 0.7],
                    castshadow=False)
    world.add_light(name="fill", pos=[1.2, 0.6, 1.2], dir=[-0.6, -0.3, -1], diffuse=[0.4, 0.4, 0.4],
                    castshadow=False)
    cam_poses = {
        "front": dict(pos=[1.35, 0.0, 0.65], xyaxes=[0, 1, 0, -0.42, 0, 0.9]),
        "top": dict(pos=[0.5, 0.0, 1.2], xyaxes=[0, 1, 0, -1, 0, 0]),
    }
    for cam in cameras:
        if cam not in cam_poses:
            raise ConfigError(f"unknown camera '{cam}'", field="cameras", fix=f"use {sorted(cam_poses)}")
        c = cam_poses[cam]
        camera = world.add_camera(name=cam, pos=c["pos"], fovy=45.0)
        camera.alt.type = mujoco.mjtOrientation.mjORIENTATION_XYAXES
        camera.alt.xyaxes = c["xyaxes"]

    body = world.add_body(name="object", pos=[0.5, 0.0, obj.half_size[2]])
    body.add_freejoint(name="object_free")
    body.add_geom(name="object_geom", type=mujoco.mjtGeom.mjGEOM_BOX, size=list(obj.half_size),
                  mass=obj.mass_kg, rgba=list(obj.rgba), friction=[obj.friction, 0.005, 0.0001],
                  contype=SCENE_CONTYPE, conaffinity=SCENE_CONAFFINITY, condim=4)
    target = world.add_body(name="target", mocap=True, pos=[0.5, 0.2, 0.0])
    target.add_geom(name="target_geom", type=mujoco.mjtGeom.mjGEOM_BOX,
                    size=[obj.half_size[0], obj.half_size[1], 0.001], rgba=[0.2, 0.8, 0.3, 0.45],
                    contype=0, conaffinity=0, group=2)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*texture coordinate.*")
        model = spec.compile()
    return model, _index(model, profile)


def _index(m: mujoco.MjModel, profile: RobotProfile) -> SceneIndex:
    def jid(n):
        return mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)
    arm = np.array([jid(n) for n in profile.joint_names])
    fingers = np.array([jid(n) for n in profile.gripper["joint_names"]])
    obj_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "object")
    obj_jnt = m.body_jntadr[obj_body]
    robot_bodies = np.array([i for i in range(m.nbody) if m.body(i).name.startswith("panda_")])
    finger_bodies = {mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, n)
                     for n in ("panda_leftfinger", "panda_rightfinger")}
    finger_geoms = np.array([g for g in range(m.ngeom)
                             if m.geom_bodyid[g] in finger_bodies and m.geom_contype[g]])
    return SceneIndex(
        arm_qpos_adr=m.jnt_qposadr[arm].copy(), arm_dof_adr=m.jnt_dofadr[arm].copy(),
        finger_qpos_adr=m.jnt_qposadr[fingers].copy(), finger_dof_adr=m.jnt_dofadr[fingers].copy(),
        arm_joint_ids=arm, finger_joint_ids=fingers,
        arm_actuator_ids=np.array([mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, f"act_{n}")
                                   for n in profile.joint_names]),
        gripper_actuator_id=mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, "act_gripper"),
        tcp_site_id=mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "tcp"),
        object_body_id=obj_body,
        object_geom_id=mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "object_geom"),
        object_qpos_adr=int(m.jnt_qposadr[obj_jnt]), object_dof_adr=int(m.jnt_dofadr[obj_jnt]),
        target_mocap_id=int(m.body_mocapid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "target")]),
        target_geom_id=mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "target_geom"),
        table_geom_id=mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "table"),
        robot_body_ids=robot_bodies, finger_geom_ids=finger_geoms)

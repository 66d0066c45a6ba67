"""The multi-object Franka Panda scene of the language tasks: the arm, a table, N cubes, a pad, 2 cameras.

Owns the geometry of ``sim.lang_env.LangArmEnv``'s world. The arm itself
(URDF, actuators, gripper, TCP site) comes from
``sim.panda_model.panda_arm_spec`` so both scenes share one robot. Added here:

- a table (top at z = 0) in a neutral grey, so saturated cube colours stand out;
- ``n_cubes`` free cubes (``cube0`` .. ``cubeN-1``), coloured per episode by the env;
- a thin white pad (a mocap body, visual only) that marks the pick-and-place target;
- a ``front`` camera above and in front of the table looking down at the
  workspace, and a ``wrist`` camera on ``panda_hand`` looking past the fingers;
- two lights without shadows (shadows cost render time and add clutter at 96 px).

``index_for_cube(i)`` returns a ``sim.panda_model.SceneIndex`` whose
``object_*`` fields point at cube ``i``, so the scripted experts of
``sim.experts`` can be driven at any cube unchanged.

Imports: numpy, mujoco, sim.panda_model, onboard.spec. Never imports sim2real or policies.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import mujoco
import numpy as np

from onboard.errors import ConfigError
from onboard.spec.robot import RobotProfile, load_robot
from sim.panda_model import (SCENE_CONAFFINITY, SCENE_CONTYPE, TABLE_CENTER_XY, TABLE_HALF_SIZE, SceneIndex,
                             panda_arm_spec)

CUBE_HALF_SIZE_M = 0.025
CUBE_MASS_KG = 0.1
CUBE_FRICTION = 0.8
PAD_HALF_SIZE_M = 0.04
TABLE_RGBA = (0.50, 0.50, 0.52, 1.0)
PAD_RGBA = (0.97, 0.97, 0.97, 1.0)

# Camera poses: position [m] and the camera's x/y axes in the world frame (MuJoCo looks along -z).
CAMERA_POSES = {
    # Above the robot's far side of the table, looking back and down at the three cube lanes.
    "front": dict(pos=[0.95, 0.0, 0.80], xyaxes=[0, 1, 0, -0.881, 0, 0.4735], fovy=50.0),
}
# On panda_hand (hand frame: z toward the fingers, x away from the robot when the gripper points
# down): on the robot side of the hand, looking along +z tilted forward, so the start view shows
# every cube and the pad, and a grasp shows the cube between the fingertips. (A cube being pushed
# toward the robot sits right under this camera and fills the view; the front camera shows the push.)
WRIST_CAMERA = dict(pos=[-0.08, 0.0, 0.03], fovy=75.0, tilt_rad=0.5)
LANG_CAMERAS = ("front", "wrist")


@dataclass(frozen=True)
class LangSceneIndex:
    """Ids of the language scene: the arm (``arm``, a SceneIndex for cube 0) plus every cube and the pad."""
    arm: SceneIndex
    cube_body_ids: np.ndarray
    cube_geom_ids: np.ndarray
    cube_qpos_adr: np.ndarray
    cube_dof_adr: np.ndarray
    pad_mocap_id: int
    pad_geom_id: int
    table_geom_id: int
    light_ids: np.ndarray
    camera_ids: dict

    def index_for_cube(self, i: int) -> SceneIndex:
        """A SceneIndex whose ``object_*`` fields are cube ``i`` (what sim.experts reads)."""
        return dataclasses.replace(
            self.arm, object_body_id=int(self.cube_body_ids[i]), object_geom_id=int(self.cube_geom_ids[i]),
            object_qpos_adr=int(self.cube_qpos_adr[i]), object_dof_adr=int(self.cube_dof_adr[i]))


def build_lang_scene(profile: RobotProfile | None = None, n_cubes: int = 3,
                     cameras: tuple = LANG_CAMERAS) -> tuple[mujoco.MjModel, LangSceneIndex]:
    """Compile the language scene. Returns the model and the resolved ids."""
    profile = profile or load_robot("franka_panda")
    spec = panda_arm_spec(profile)
    spec.site("tcp").rgba = [0, 0, 0, 0]          # the TCP marker must not show in the images
    spec.visual.headlight.ambient = [0.25, 0.25, 0.25]
    spec.visual.headlight.diffuse = [0.35, 0.35, 0.35]
    spec.visual.headlight.specular = [0.0, 0.0, 0.0]
    world = spec.worldbody
    tx, ty = TABLE_CENTER_XY
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=list(TABLE_HALF_SIZE),
                   pos=[tx, ty, -TABLE_HALF_SIZE[2]], rgba=list(TABLE_RGBA),
                   contype=SCENE_CONTYPE, conaffinity=SCENE_CONAFFINITY, friction=[0.5, 0.005, 0.0001])
    world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2, 2, 0.1], pos=[0, 0, -0.75],
                   rgba=[0.2, 0.2, 0.22, 1], contype=0, conaffinity=0)
    world.add_light(name="key", pos=[0.6, -0.4, 1.6], dir=[0, 0.25, -1], diffuse=[0.6, 0.6, 0.6],
                    specular=[0.1, 0.1, 0.1], castshadow=False)
    world.add_light(name="fill", pos=[1.2, 0.6, 1.2], dir=[-0.6, -0.3, -1], diffuse=[0.3, 0.3, 0.3],
                    specular=[0, 0, 0], castshadow=False)
    for cam in cameras:
        if cam == "wrist":
            c = WRIST_CAMERA
            hand = spec.body("panda_hand")
            # Look along the hand's +z (toward the fingers), tilted about the hand y axis toward +x.
            t = c["tilt_rad"]
            quat = np.zeros(4)
            mujoco.mju_axisAngle2Quat(quat, np.array([0.0, 1.0, 0.0]), np.pi + t)
            camera = hand.add_camera(name="wrist", pos=c["pos"], quat=quat.tolist(), fovy=c["fovy"])
            continue
        if cam not in CAMERA_POSES:
            raise ConfigError(f"unknown camera '{cam}'", field="cameras",
                              fix=f"use {sorted([*CAMERA_POSES, 'wrist'])}")
        c = CAMERA_POSES[cam]
        camera = world.add_camera(name=cam, pos=c["pos"], fovy=c["fovy"])
        camera.alt.type = mujoco.mjtOrientation.mjORIENTATION_XYAXES
        camera.alt.xyaxes = c["xyaxes"]

    h = CUBE_HALF_SIZE_M
    for i in range(n_cubes):
        body = world.add_body(name=f"cube{i}", pos=[0.6, 0.3 * (i - 1), h])
        body.add_freejoint(name=f"cube{i}_free")
        body.add_geom(name=f"cube{i}_geom", type=mujoco.mjtGeom.mjGEOM_BOX, size=[h, h, h], mass=CUBE_MASS_KG,
                      rgba=[0.5, 0.5, 0.5, 1], friction=[CUBE_FRICTION, 0.005, 0.0001],
                      contype=SCENE_CONTYPE, conaffinity=SCENE_CONAFFINITY, condim=4)
    pad = world.add_body(name="pad", mocap=True, pos=[0.4, 0.135, 0.0])
    pad.add_geom(name="pad_geom", type=mujoco.mjtGeom.mjGEOM_BOX,
                 size=[PAD_HALF_SIZE_M, PAD_HALF_SIZE_M, 0.0015], rgba=list(PAD_RGBA),
                 contype=0, conaffinity=0, group=0)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*texture coordinate.*")
        model = spec.compile()
    return model, _index(model, profile, n_cubes, cameras)


def _index(m: mujoco.MjModel, profile: RobotProfile, n_cubes: int, cameras) -> LangSceneIndex:
    def nid(kind, name):
        return mujoco.mj_name2id(m, kind, name)
    B, G, J = mujoco.mjtObj.mjOBJ_BODY, mujoco.mjtObj.mjOBJ_GEOM, mujoco.mjtObj.mjOBJ_JOINT
    arm = np.array([nid(J, n) for n in profile.joint_names])
    fingers = np.array([nid(J, n) for n in profile.gripper["joint_names"]])
    finger_bodies = {nid(B, n) for n in ("panda_leftfinger", "panda_rightfinger")}
    cube_bodies = np.array([nid(B, f"cube{i}") for i in range(n_cubes)])
    cube_geoms = np.array([nid(G, f"cube{i}_geom") for i in range(n_cubes)])
    cube_jnts = m.body_jntadr[cube_bodies]
    pad_body = nid(B, "pad")
    arm_ix = SceneIndex(
        arm_qpos_adr=m.jnt_qposadr[arm].copy(), arm_dof_adr=m.jnt_dofadr[arm].copy(),
        finger_qpos_adr=m.jnt_qposadr[fingers].copy(), finger_dof_adr=m.jnt_dofadr[fingers].copy(),
        arm_joint_ids=arm, finger_joint_ids=fingers,
        arm_actuator_ids=np.array([nid(mujoco.mjtObj.mjOBJ_ACTUATOR, f"act_{n}") for n in profile.joint_names]),
        gripper_actuator_id=nid(mujoco.mjtObj.mjOBJ_ACTUATOR, "act_gripper"),
        tcp_site_id=nid(mujoco.mjtObj.mjOBJ_SITE, "tcp"),
        object_body_id=int(cube_bodies[0]), object_geom_id=int(cube_geoms[0]),
        object_qpos_adr=int(m.jnt_qposadr[cube_jnts[0]]), object_dof_adr=int(m.jnt_dofadr[cube_jnts[0]]),
        target_mocap_id=int(m.body_mocapid[pad_body]), target_geom_id=nid(G, "pad_geom"),
        table_geom_id=nid(G, "table"),
        robot_body_ids=np.array([i for i in range(m.nbody) if m.body(i).name.startswith("panda_")]),
        finger_geom_ids=np.array([g for g in range(m.ngeom)
                                  if m.geom_bodyid[g] in finger_bodies and m.geom_contype[g]]))
    return LangSceneIndex(
        arm=arm_ix, cube_body_ids=cube_bodies, cube_geom_ids=cube_geoms,
        cube_qpos_adr=m.jnt_qposadr[cube_jnts].copy(), cube_dof_adr=m.jnt_dofadr[cube_jnts].copy(),
        pad_mocap_id=int(m.body_mocapid[pad_body]), pad_geom_id=nid(G, "pad_geom"),
        table_geom_id=nid(G, "table"), light_ids=np.arange(m.nlight),
        camera_ids={c: nid(mujoco.mjtObj.mjOBJ_CAMERA, c) for c in cameras})

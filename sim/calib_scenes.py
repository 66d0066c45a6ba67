"""Ground truth for calibration: a ChArUco board rendered by MuJoCo from a known camera.

Owns the calibration scenes: a textured board on a mocap body, a camera whose
pose and field of view are set per frame, and offscreen rendering. Everything
the calibration code must recover (intrinsics, board and camera poses) is
known exactly here, so tests compare estimates with truth.

Conventions, checked in tests/test_calibration_camera.py by projecting known
3-D points: the ideal pinhole of a MuJoCo camera with vertical field of view
``fovy`` at W x H pixels has ``fx = fy = (H / 2) / tan(fovy / 2)`` and principal
point ``((W - 1) / 2, (H - 1) / 2)`` in OpenCV pixel coordinates (pixel centres
at integers). A MuJoCo camera looks along its -z axis with y up; the OpenCV
camera frame is the same frame rotated by pi about x.

Imports mujoco, numpy, cv2 and ``calibration``; never a policy or ROS.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

from calibration.board import BoardSpec
from calibration.transforms import make_T, quat_wxyz_from_R

os.environ.setdefault("MUJOCO_GL", "egl")

MJ_FROM_CV = np.diag([1.0, -1.0, -1.0])   # R_world_mjcam = R_world_cvcam @ MJ_FROM_CV


def intrinsics_from_fovy(fovy_deg: float, width: int, height: int) -> np.ndarray:
    """3x3 camera matrix of a MuJoCo camera (square pixels, centred principal point)."""
    f = (height / 2.0) / math.tan(math.radians(fovy_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


class BoardScene:
    """A board on a mocap body, a free camera and a light; render from any camera pose.

    Poses are 4x4 transforms in the world frame; ``T_world_cam`` uses the
    OpenCV camera convention (z forward, y down). The board frame is the
    OpenCV board frame of ``BoardSpec`` (z into the board's face).
    """

    def __init__(self, board: BoardSpec, *, width: int = 640, height: int = 480, fovy_deg: float = 50.0,
                 px_per_square: int = 120):
        import mujoco

        self.board, self.width, self.height, self.fovy_deg = board, width, height, fovy_deg
        margin = px_per_square // 2                      # white quiet zone around the pattern
        img = board.image(px_per_square, margin_px=margin)
        self._margin_m = margin / px_per_square * board.square_m
        bw, bh = board.size_m
        half = (bw / 2 + self._margin_m, bh / 2 + self._margin_m)

        spec = mujoco.MjSpec()
        spec.visual.global_.offwidth = max(width, 640)
        spec.visual.global_.offheight = max(height, 480)
        spec.visual.headlight.ambient = [0.9, 0.9, 0.9]
        spec.visual.headlight.diffuse = [0.1, 0.1, 0.1]
        spec.visual.headlight.specular = [0.0, 0.0, 0.0]
        with tempfile.TemporaryDirectory() as tmp:
            import cv2
            png = Path(tmp) / "board.png"
            cv2.imwrite(str(png), cv2.cvtColor(img, cv2.COLOR_GRAY2RGB))
            tex = spec.add_texture(name="board", type=mujoco.mjtTexture.mjTEXTURE_2D, file=str(png))
            spec.add_material(name="board", textures=["", "board"], texrepeat=[1, 1], texuniform=False,
                              specular=0.0, shininess=0.0, reflectance=0.0)
            del tex
            body = spec.worldbody.add_body(name="board", mocap=True)
            # The plane's texture spans its full extent; its +z normal faces the camera, i.e. the
            # board frame's -z. The body frame is the board frame; the geom sits at the centre.
            body.add_geom(name="board", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[half[0], half[1], 0.01],
                          pos=[bw / 2, bh / 2, 0.0], quat=[0, 1, 0, 0], material="board",
                          contype=0, conaffinity=0)
            spec.worldbody.add_camera(name="cam", pos=[0, 0, 1], fovy=fovy_deg)
            self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        self._mj = mujoco
        self._renderer = mujoco.Renderer(self.model, height=height, width=width)
        self.K = intrinsics_from_fovy(fovy_deg, width, height)
        self.dist = np.zeros(5)

    def render(self, T_world_cam: np.ndarray, T_world_board: np.ndarray | None = None) -> np.ndarray:
        """RGB uint8 (H, W, 3) image seen from ``T_world_cam`` (OpenCV camera frame)."""
        mj = self._mj
        T_world_cam = np.asarray(T_world_cam, dtype=np.float64)
        if T_world_board is None:
            T_world_board = np.eye(4)
        self.data.mocap_pos[0] = T_world_board[:3, 3]
        self.data.mocap_quat[0] = quat_wxyz_from_R(T_world_board[:3, :3])
        self.model.cam_pos[0] = T_world_cam[:3, 3]
        self.model.cam_quat[0] = quat_wxyz_from_R(T_world_cam[:3, :3] @ MJ_FROM_CV)
        mj.mj_forward(self.model, self.data)
        self._renderer.update_scene(self.data, camera="cam")
        return self._renderer.render().copy()

    def close(self) -> None:
        self._renderer.close()


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, -1.0, 0.0),
            roll_rad: float = 0.0) -> np.ndarray:
    """T_world_cam (OpenCV convention) for a camera at ``eye`` looking at ``target``."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(-up, z) if abs(np.dot(z, up)) < 0.99 * np.linalg.norm(up) else np.cross([0, 0, 1.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z], axis=1)
    c, s = math.cos(roll_rad), math.sin(roll_rad)
    R = R @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    return make_T(R, eye)


def random_views(board: BoardSpec, n: int, rng: np.random.Generator, *, distance_m=(0.35, 0.6),
                 max_tilt_deg: float = 40.0, max_roll_deg: float = 25.0) -> list[np.ndarray]:
    """``n`` camera poses (T_board_cam) looking at the board centre from varied tilts and distances."""
    bw, bh = board.size_m
    centre = np.array([bw / 2, bh / 2, 0.0])
    out = []
    for _ in range(n):
        tilt = math.radians(rng.uniform(5.0, max_tilt_deg))
        az = rng.uniform(0, 2 * math.pi)
        d = rng.uniform(*distance_m)
        # The camera sits on the -z side of the board (the printed face looks along -z).
        eye = centre + d * np.array([math.sin(tilt) * math.cos(az), math.sin(tilt) * math.sin(az), -math.cos(tilt)])
        aim = centre + np.array([rng.uniform(-0.2, 0.2) * bw, rng.uniform(-0.2, 0.2) * bh, 0.0])
        out.append(look_at(eye, aim, roll_rad=math.radians(rng.uniform(-max_roll_deg, max_roll_deg))))
    return out


def render_calibration_set(board: BoardSpec, n_views: int = 24, *, seed: int = 0, width: int = 640,
                           height: int = 480, fovy_deg: float = 50.0, pixel_noise_std: float = 1.0):
    """Images of the board from ``n_views`` random poses, plus the truth.

    Returns ``(images, T_cam_board list, K_true)``. Pixel noise (Gaussian, in
    grey levels) stands in for sensor noise.
    """
    rng = np.random.default_rng(seed)
    scene = BoardScene(board, width=width, height=height, fovy_deg=fovy_deg)
    try:
        images, poses = [], []
        for T_board_cam in random_views(board, n_views, rng):
            img = scene.render(T_board_cam)   # board frame == world frame here
            images.append(add_pixel_noise(img, pixel_noise_std, rng))
            poses.append(np.linalg.inv(T_board_cam))
        return images, poses, scene.K.copy()
    finally:
        scene.close()


def add_pixel_noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    if std <= 0:
        return image
    noisy = image.astype(np.float32) + rng.normal(0.0, std, image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


# ---- hand-eye ground truth -----------------------------------------------------------------------
def panda_chain():
    """DHChain of the Franka Panda from its robot profile."""
    from calibration.kinematics import DHChain
    from onboard.spec.robot import load_robot
    profile = load_robot("franka_panda")
    return DHChain(profile.raw["kinematics"]["dh_modified"]), np.asarray(profile.default_pose, dtype=np.float64), \
        np.asarray(profile.limits.position, dtype=np.float64)


def true_mounts(board: BoardSpec) -> dict:
    """Ground-truth transforms of the two set-ups (metres, radians)."""
    from calibration.transforms import rotvec_to_R
    bw, bh = board.size_m
    return {
        # eye-in-hand: camera 6 cm off the flange axis, looking roughly along the flange z axis.
        "T_gripper_cam": make_T(rotvec_to_R([0.06, -0.09, 0.7]), [0.055, -0.035, 0.045]),
        # The board lies face up on the table in front of the robot (board z points down).
        "T_base_target": make_T(np.diag([1.0, -1.0, -1.0]), [0.33 - bw / 2, bh / 2, 0.02]),
        # eye-to-hand: an overhead camera 1.1 m above the table, tilted towards the robot.
        "T_base_cam": look_at([0.75, 0.25, 1.05], [0.35, 0.0, 0.45], up=(-1.0, 0.0, 0.0)),
        # The board is held on a bracket at the flange, its printed face looking along the flange's -z axis
        # (up, towards the overhead camera, when the gripper points down). Robot links are not rendered.
        "T_gripper_target": make_T(rotvec_to_R([0.0, 0.0, 0.3]),
                                   -rotvec_to_R([0.0, 0.0, 0.3]) @ [bw / 2, bh / 2, 0.0] + [0.0, 0.0, 0.012]),
    }


def simulate_handeye(setup: str = "eye_in_hand", n_stations: int = 20, *, seed: int = 0,
                     board: BoardSpec | None = None, joint_noise_rad: float = 1e-4, pixel_noise_std: float = 2.0,
                     spread_rad: float = 0.35, width: int = 640, height: int = 480, fovy_deg: float = 55.0,
                     min_corners: int = 12, max_tries: int = 400) -> dict:
    """Render board views at random Panda stations and estimate board poses by PnP.

    Returns a dict: ``q`` (n, 7) measured joints (with encoder noise),
    ``T_base_gripper`` (FK of the measured joints), ``T_cam_target`` (PnP on
    the detections), ``images``, ``K``, ``truth`` (``true_mounts`` plus ``X``,
    the transform hand-eye must recover).
    """
    from calibration.board import BoardDetector
    from calibration.camera import board_pose

    board = board or BoardSpec(squares_x=7, squares_y=5, square_m=0.035, marker_m=0.026)
    rng = np.random.default_rng(seed)
    chain, q0, qlim = panda_chain()
    truth = true_mounts(board)
    if setup == "eye_to_hand":
        q0 = q0 + np.array([0.0, 0.15, 0.0, 0.25, 0.0, -0.1, 0.0])
    scene = BoardScene(board, width=width, height=height, fovy_deg=fovy_deg)
    det = BoardDetector(board, min_corners=min_corners)
    out = {"q": [], "T_base_gripper": [], "T_cam_target": [], "images": [], "K": scene.K.copy(),
           "dist": np.zeros(5), "truth": truth, "board": board, "setup": setup}
    try:
        for _ in range(max_tries):
            if len(out["q"]) >= n_stations:
                break
            scale = np.array([0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.2]) * spread_rad
            q = np.clip(q0 + rng.uniform(-1, 1, 7) * scale, qlim[:, 0], qlim[:, 1])
            G = chain.fk(q)
            if setup == "eye_in_hand":
                T_world_cam, T_world_board = G @ truth["T_gripper_cam"], truth["T_base_target"]
            else:
                T_world_cam, T_world_board = truth["T_base_cam"], G @ truth["T_gripper_target"]
            T_cam_board = np.linalg.inv(T_world_cam) @ T_world_board
            if T_cam_board[2, 3] < 0.15 or T_cam_board[2, 2] < 0.3:   # behind the camera or seen edge-on
                continue
            img = add_pixel_noise(scene.render(T_world_cam, T_world_board), pixel_noise_std, rng)
            d = det.detect(img)
            if d is None:
                continue
            T = board_pose(board, d, scene.K, out["dist"])
            if T is None:
                continue
            q_meas = q + rng.normal(0.0, joint_noise_rad, 7)
            out["q"].append(q_meas)
            out["T_base_gripper"].append(chain.fk(q_meas))
            out["T_cam_target"].append(T)
            out["images"].append(img)
    finally:
        scene.close()
    if len(out["q"]) < n_stations:
        raise RuntimeError(f"only {len(out['q'])} of {n_stations} stations saw the board")
    out["q"] = np.asarray(out["q"])
    truth["X"] = truth["T_gripper_cam"] if setup == "eye_in_hand" else truth["T_base_cam"]
    return out


# ---- IMU and latency ground truth ----------------------------------------------------------------
def static_imu_clean_readings() -> tuple[np.ndarray, np.ndarray]:
    """Noise-free (accel, gyro) of an IMU resting level on a table, from MuJoCo's sensors."""
    import mujoco
    spec = mujoco.MjSpec()
    spec.worldbody.add_geom(type=mujoco.mjtGeom.mjGEOM_PLANE, size=[1, 1, 0.1])
    body = spec.worldbody.add_body(name="imu", pos=[0, 0, 0.02])
    body.add_freejoint()
    body.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.02, 0.02, 0.02], mass=0.05)
    site = body.add_site(name="imu")
    spec.add_sensor(type=mujoco.mjtSensor.mjSENS_ACCELEROMETER, objtype=mujoco.mjtObj.mjOBJ_SITE, objname="imu")
    spec.add_sensor(type=mujoco.mjtSensor.mjSENS_GYRO, objtype=mujoco.mjtObj.mjOBJ_SITE, objname="imu")
    del site
    model = spec.compile()
    data = mujoco.MjData(model)
    for _ in range(500):   # let it settle on the table
        mujoco.mj_step(model, data)
    return data.sensordata[0:3].copy(), data.sensordata[3:6].copy()


def simulate_static_imu(duration_s: float, rate_hz: float, *, gyro_noise_density: float, gyro_random_walk: float,
                        accel_noise_density: float, accel_random_walk: float, gyro_bias=(0.0, 0.0, 0.0),
                        accel_bias=(0.0, 0.0, 0.0), seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t, accel, gyro) of a resting IMU: MuJoCo's clean readings plus Kalibr-model noise and bias."""
    from calibration.imu import simulate_noise
    rng = np.random.default_rng(seed)
    n = int(duration_s * rate_hz)
    acc0, gyr0 = static_imu_clean_readings()
    t = np.arange(n) / rate_hz
    gyro = gyr0 + np.asarray(gyro_bias) + simulate_noise(n, rate_hz, gyro_noise_density, gyro_random_walk, rng)
    accel = acc0 + np.asarray(accel_bias) + simulate_noise(n, rate_hz, accel_noise_density, accel_random_walk, rng)
    return t, accel, gyro


def simulate_servo_log(delay_steps: int, *, duration_s: float = 20.0, log_hz: float = 100.0, physics_hz: float = 500.0,
                       kp: float = 4000.0, seed: int = 0, noise_std_rad: float = 2e-4) -> dict:
    """A MuJoCo position servo driven by random step commands that reach it ``delay_steps`` log samples late.

    Returns ``t``, ``command`` (as logged when sent) and ``state`` (measured
    joint position, with encoder noise), all at ``log_hz``.
    """
    import mujoco
    spec = mujoco.MjSpec()
    spec.option.timestep = 1.0 / physics_hz
    body = spec.worldbody.add_body(name="link")
    body.add_joint(name="j", type=mujoco.mjtJoint.mjJNT_HINGE, axis=[0, 0, 1], armature=0.01)
    body.add_geom(type=mujoco.mjtGeom.mjGEOM_CAPSULE, fromto=[0, 0, 0, 0.3, 0, 0], size=[0.03, 0, 0], mass=1.0)
    inertia = 0.01 + 1.0 * 0.3 ** 2 / 3
    act = spec.add_actuator(name="servo", target="j", trntype=mujoco.mjtTrn.mjTRN_JOINT)
    act.set_to_position(kp=kp, kv=2.0 * np.sqrt(kp * inertia))   # critically damped
    model = spec.compile()
    data = mujoco.MjData(model)
    rng = np.random.default_rng(seed)
    n = int(duration_s * log_hz)
    per_log = int(round(physics_hz / log_hz))
    # Random steps held for 2-30 samples: a broadband command, as in a system-identification run.
    cmd = np.zeros(n)
    k = 0
    level = 0.0
    while k < n:
        hold = int(rng.integers(2, 30))
        level = float(np.clip(level + rng.normal(0, 0.3), -1.5, 1.5))
        cmd[k:k + hold] = level
        k += hold
    state = np.zeros(n)
    for i in range(n):
        data.ctrl[0] = cmd[i - delay_steps] if i >= delay_steps else 0.0
        for _ in range(per_log):
            mujoco.mj_step(model, data)
        state[i] = data.qpos[0]
    state += rng.normal(0.0, noise_std_rad, n)
    return {"t": np.arange(n) / log_hz, "command": cmd, "state": state}

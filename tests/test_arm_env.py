"""ArmEnv: spaces, observation spec, control loop and the action-latency FIFO."""
import numpy as np
import pytest

from onboard.spec import load_robot
from sim.arm_env import TASKS, ArmEnv
from sim.panda_model import build_scene


def test_panda_urdf_joint_names_match_the_robot_profile():
    profile = load_robot("franka_panda")
    model, ix = build_scene(profile)
    names = [model.joint(int(j)).name for j in ix.arm_joint_ids]
    assert names == list(profile.joint_names)
    np.testing.assert_allclose(model.jnt_range[ix.arm_joint_ids], profile.limits.position)
    assert model.nu == 8 and model.opt.timestep == pytest.approx(0.002)


@pytest.mark.parametrize("task", TASKS)
def test_env_spaces_and_obs_spec_agree_for_every_task(task):
    env = ArmEnv(task, dr=False, seed=0)
    obs, info = env.reset(seed=1)
    assert env.action_space.shape == (8,)
    assert [s["name"] for s in env.obs_spec] == list(obs)
    for s in env.obs_spec:
        assert obs[s["name"]].shape == tuple(s["shape"]) and obs[s["name"]].dtype == np.float32
        assert s["units"]
    assert env.observation_space.contains(obs)
    assert {"joint_pos", "joint_vel", "gripper_width", "ee_pos", "target_pos"} <= set(obs)
    assert info["success"] is False
    assert env.n_substeps == 50 and env.control_hz == 10


def test_reset_starts_near_the_ready_pose_and_holding_it_keeps_the_arm_still():
    env = ArmEnv("push", dr=False, seed=3)
    obs, _ = env.reset()
    ready = load_robot("franka_panda").default_pose
    assert np.max(np.abs(obs["joint_pos"] - ready)) <= 0.021
    hold = np.concatenate([obs["joint_pos"], obs["gripper_width"]])
    for _ in range(5):
        obs, *_ = env.step(hold)
    assert np.max(np.abs(obs["joint_pos"] - hold[:7])) < 2e-3
    assert np.max(np.abs(obs["joint_vel"])) < 0.05


def test_position_actuators_track_a_joint_step_within_one_second():
    env = ArmEnv("reach", dr=False, seed=0)
    obs, _ = env.reset(seed=0)
    goal = np.concatenate([obs["joint_pos"] + 0.1, [0.02]])
    for _ in range(10):
        obs, *_ = env.step(goal)
    assert np.max(np.abs(obs["joint_pos"] - goal[:7])) < 0.01
    assert abs(obs["gripper_width"][0] - 0.02) < 2e-3


def test_episode_truncates_at_the_time_limit():
    env = ArmEnv("reach", dr=False, seed=0, control_hz=20)
    obs, _ = env.reset(seed=0)
    hold = np.concatenate([obs["joint_pos"], obs["gripper_width"]])
    n = 0
    while True:
        *_, terminated, truncated, info = env.step(hold)
        n += 1
        if terminated or truncated:
            break
    assert truncated and not info["success"] and n == env.max_steps == 120


def test_camera_image_is_rendered_when_asked(tmp_path):
    pytest.importorskip("mujoco")
    try:
        env = ArmEnv("push", dr=True, seed=0, cameras=("front",), image_size=(48, 64))
        obs, _ = env.reset(seed=0)
    except Exception as exc:   # no offscreen GL on this machine
        pytest.skip(f"offscreen rendering unavailable: {exc}")
    img = obs["image.front"]
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8 and img.std() > 5
    rgb = img.astype(int)
    assert np.any(rgb[..., 0] > rgb[..., 1] + 60), "the red block is in view of the front camera"
    env.close()


def test_unknown_task_is_a_config_error():
    from onboard.errors import ConfigError
    with pytest.raises(ConfigError, match="task"):
        ArmEnv("juggle")

"""Teleoperation end to end over real DDS: sim_node + teleop_node + recorder_node from launch/teleop_sim.launch.yaml.

This test process is the scripted input: it publishes geometry_msgs/Twist (a
spacemouse) and sensor_msgs/Joy (its buttons), and calls the recorder's Trigger
services. It records episodes, discards one, then kills the recorder with
SIGKILL in the middle of an episode. The dataset must validate, load, and
train the diffusion policy with no conversion step.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from onboard.paths import REPO_ROOT  # noqa: E402
from ros_fixtures import group_alive, spin_until  # noqa: E402

pytestmark = pytest.mark.ros


def _call(ex, client, timeout_s=10.0):
    from std_srvs.srv import Trigger
    fut = client.call_async(Trigger.Request())
    spin_until(ex, fut.done, timeout_s)
    assert fut.done(), f"{client.srv_name} did not answer"
    return fut.result()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    import rclpy
    from geometry_msgs.msg import Twist
    from sensor_msgs.msg import JointState, Joy
    from std_msgs.msg import Float64MultiArray, String
    from std_srvs.srv import Trigger

    from ros_nodes.common import make_executor, sensor_qos

    out = tmp_path_factory.mktemp("teleop") / "dataset"
    env = dict(os.environ, MUJOCO_GL="egl", ORT_DISABLE_TELEMETRY="1")
    runner = subprocess.Popen(
        [sys.executable, "-m", "onboard.cli", "launch", "launch/teleop_sim.launch.yaml",
         "input:=spacemouse", f"output:={out}", "task:=push", "dr:=false", "fps:=10.0",
         "camera_width:=160", "camera_height:=120", "camera_rate:=10.0", "image_width:=64", "image_height:=48",
         "--no-ros2"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: [lines.append(x) for x in runner.stdout], daemon=True)
    reader.start()

    rclpy.init()
    node = rclpy.create_node("teleop_script")
    seen = {"q": [], "cmd": [], "reports": []}
    node.create_subscription(JointState, "/joint_states", lambda m: seen["q"].append(m), sensor_qos(5))
    node.create_subscription(Float64MultiArray, "/forward_position_controller/commands",
                             lambda m: seen["cmd"].append(np.array(m.data)), 50)
    node.create_subscription(String, "/recorder_node/episode_report",
                             lambda m: seen["reports"].append(json.loads(m.data)), 10)
    pub_twist = node.create_publisher(Twist, "/spacenav/twist", sensor_qos(10))
    pub_joy = node.create_publisher(Joy, "/joy", sensor_qos(10))
    start, stop, discard = (node.create_client(Trigger, f"/recorder_node/{s}") for s in ("start", "stop", "discard"))
    ex = make_executor("events")
    ex.add_node(node)

    def drive(vx, vy, seconds, press=None):
        """Publish the twist at 30 Hz; ``press`` = a Joy button held for the first 4 messages, then released
        (one rising edge, as a finger makes; held so that one lost best-effort message cannot drop the press)."""
        end = time.monotonic() + seconds
        k = 0
        while time.monotonic() < end:
            tw = Twist()
            tw.linear.x, tw.linear.y = vx, vy
            pub_twist.publish(tw)
            buttons = [0] * 11
            if press is not None and k < 4:
                buttons[press] = 1
            pub_joy.publish(Joy(axes=[0.0] * 8, buttons=buttons))
            k += 1
            spin_until(ex, lambda: False, 1 / 30)

    result = {"lines": lines, "root": out}
    try:
        assert spin_until(ex, lambda: (len(seen["q"]) > 0 and start.service_is_ready())
                          or runner.poll() is not None, 60)
        assert runner.poll() is None, "".join(lines[-40:])
        # the recorder needs /task_state, images and commands before an episode can start
        deadline = time.monotonic() + 30
        while True:
            res = _call(ex, start)
            if res.success or time.monotonic() > deadline:
                break
            spin_until(ex, lambda: False, 0.3)
        assert res.success, res.message + "".join(lines[-40:])
        # best-effort twists sent before the teleop node has matched the publisher are lost (a CI run lost all
        # of episode 0's): wait until both input topics have their subscriber
        assert spin_until(ex, lambda: pub_twist.get_subscription_count() > 0 and pub_joy.get_subscription_count() > 0,
                          30), "teleop_node never subscribed /spacenav/twist and /joy"
        drive(0.1, 0.0, 1.5)                          # episode 0: +x, started and stopped by service
        assert _call(ex, stop).success
        def press_until(button, done, tries=5):
            """Joy presses ride best-effort DDS: press again (a new rising edge) until the effect shows."""
            for _ in range(tries):
                drive(0.0, 0.0, 0.3, press=button)
                if spin_until(ex, done, 2.0):
                    return True
            return False

        log = lambda: "".join(lines)                  # noqa: E731 - the launch's output so far
        assert press_until(7, lambda: "recording attempt 2" in log()), log()[-3000:]   # episode 1: Joy Start
        drive(0.0, 0.1, 1.5)                          # +y
        assert press_until(3, lambda: len(seen["reports"]) >= 2), log()[-3000:]        # Joy Y: stop and save
        assert _call(ex, start).success               # an attempt thrown away with Joy Back
        drive(-0.1, 0.0, 0.5)
        assert press_until(6, lambda: "discarded" in log()), log()[-3000:]
        assert _call(ex, start).success               # an episode that never ends: the recorder dies
        drive(0.1, 0.0, 0.8)
        rec_pid = int(re.search(r"started \[recorder_node\] pid (\d+)", "".join(lines)).group(1))
        os.killpg(rec_pid, signal.SIGKILL)
        result["reports"] = list(seen["reports"])
        result["cmd"] = np.array(seen["cmd"])
    except BaseException:
        # A failure above: stop the launch cleanly (SIGINT) so that its error, not a wait timeout, is reported.
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGINT)
        raise
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown()
        try:
            runner.wait(timeout=30)             # a dead recorder stops the launch (exit 1) within 5 s
        except subprocess.TimeoutExpired:
            pass                                # reported below, after the cleanup
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
            result["launch_hung"] = True
        reader.join(5)
    assert not result.get("launch_hung"), "the launch did not stop within 30 s of the recorder's death:\n" + \
        "".join(lines[-40:])
    text = "".join(lines)
    pids = [int(p) for p in re.findall(r"started \[\w+\] pid (\d+)", text)]
    assert not [p for p in pids if group_alive(p)], "orphaned processes after shutdown"
    result["text"] = text
    return result


def test_scripted_twist_and_joy_input_records_episodes_over_dds_and_the_kill_leaves_them_valid(recorded):
    from policies.dataset import load_dataset
    from policies.dataset_tools import validate_dataset
    from onboard.spec.robot import load_robot

    root = recorded["root"]
    problems = [p for p in validate_dataset(root) if p.severity == "error"]
    assert problems == [], problems
    ds = load_dataset(root)
    assert ds.num_episodes == 2, recorded["text"][-3000:]         # the discarded and the killed ones are not there
    for r in recorded["reports"]:
        assert r["late_rows"] <= 2 and r["dropped_frames.front"] == 0
        assert 10 <= r["frames"] <= 60                   # 30 at most, plus a re-pressed button's 2.3 s
    ee = ds.column("observation.ee_pos")
    s0, s1 = ds.episode_slice(0), ds.episode_slice(1)
    assert ee[s0.stop - 1, 0] - ee[s0.start, 0] > 0.05            # episode 0 moved along +x
    assert ee[s1.stop - 1, 1] - ee[s1.start, 1] > 0.05            # episode 1 along +y
    assert abs(ee[s1.stop - 1, 0] - ee[s1.start, 0]) < 0.03
    # every recorded (and every published) command passed the filter: inside the soft joint limits
    lo, hi = load_robot("franka_panda").limits.position.T
    act = ds.column("action")
    assert np.all(act[:, :7] >= lo) and np.all(act[:, :7] <= hi)
    assert np.all(recorded["cmd"] >= lo) and np.all(recorded["cmd"] <= hi)
    assert ds.column("action.raw").shape == act.shape
    assert ds.column("observation.images.front").shape == (ds.num_frames, 48, 64, 3)
    assert [s["name"] for s in ds.obs_spec][:4] == ["joint_pos", "joint_vel", "gripper_width", "ee_pos"]
    assert ds.info["onboard"]["task"] == "push"


def test_a_teleop_dataset_trains_the_diffusion_policy_with_no_conversion(recorded, tmp_path):
    from policies.dataset import load_dataset
    from policies.diffusion.train import TrainConfig, data_from_dataset, train

    data = data_from_dataset(load_dataset(recorded["root"]), None)
    assert data.control_rate_hz == 10.0 and data.actions.shape[1] == 8
    assert [k["name"] for k in data.obs_spec] == ["joint_pos", "gripper_width", "ee_pos", "object_pos",
                                                  "object_yaw_sincos", "target_pos"]
    cfg = TrainConfig(steps=3, batch_size=8, warmup_steps=1, checkpoint_every=3, log_every=1, num_threads=1)
    train(cfg, data, tmp_path / "run")
    assert any((tmp_path / "run").iterdir())

"""Recorder benchmark: two 640x480 rgb8 cameras at 30 Hz + /joint_states at 500 Hz into recorder_node.

A publisher process plays the robot (joint states 500 Hz, task state 50 Hz,
commands 50 Hz) and two cameras (30 Hz, stamped, content changing every
frame). recorder_node records one episode at 30 fps with full-resolution
video (streamed into two ffmpeg encoders on worker threads), over Fast DDS
with onboard's large shared-memory profile (config/fastdds/large_shm.xml).

Reported: frames recorded vs expected, dropped frames (encoder-queue overflow)
and camera gaps (camera messages that never arrived, from the stamps) per
camera (target 0), late rows, and the recorder's CPU use (its process plus
its ffmpeg children) as a fraction of one core, next to the publisher's CPU
as the baseline of the same run.

Run: .venv/bin/python bench/bench_recorder.py [--duration 60] [--no-write]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
PROFILE = ROOT / "config" / "fastdds" / "large_shm.xml"
W, H, CAM_HZ, STATE_HZ = 640, 480, 30.0, 500.0


def _cpu_s(pid: int) -> float:
    """utime + stime of a process plus its waited-for children (ffmpeg encoders), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def run_publisher(duration_s: float) -> None:
    import rclpy
    from rclpy.clock import Clock, ClockType
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from onboard.spec.robot import load_robot
    from ros_nodes.common import (array_to_image, command_qos, labeled_array, make_executor, s_to_stamp,
                                  sensor_qos)
    from sensor_msgs.msg import Image

    prof = load_robot("franka_panda")
    rclpy.init()
    node = rclpy.create_node("bench_robot")
    pub_js = node.create_publisher(JointState, "/joint_states", 10)
    pub_task = node.create_publisher(Float64MultiArray, "/task_state", 10)
    pub_cmd = node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", command_qos())
    pub_grip = node.create_publisher(Float64MultiArray, "/gripper/commands", command_qos())
    pub_cams = [node.create_publisher(Image, f"/cam{i}/image_raw", sensor_qos(5)) for i in range(2)]
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(H, W + 64, 3), dtype=np.uint8)
    js = JointState(name=list(prof.joint_names) + ["panda_finger_joint1", "panda_finger_joint2"])
    q0 = prof.default_pose[:7]
    counts = {"js": 0, "cam": 0}
    t0 = time.monotonic()
    steady = Clock(clock_type=ClockType.STEADY_TIME)

    def now():
        return node.get_clock().now().nanoseconds * 1e-9

    def on_state():
        t = time.monotonic() - t0
        s_to_stamp(now(), js.header.stamp)
        js.position = list(q0 + 0.1 * np.sin(t)) + [0.02, 0.02]
        js.velocity = [0.0] * 9
        pub_js.publish(js)
        counts["js"] += 1
        if counts["js"] % 10 == 0:
            pub_task.publish(labeled_array({"ee_pos": [0.4, 0.0, 0.3], "target_pos": [0.5, 0.1, 0.1]}))
            pub_cmd.publish(Float64MultiArray(data=list(q0)))
            pub_grip.publish(Float64MultiArray(data=[0.04]))

    def on_camera():
        k = counts["cam"]
        stamp = now()
        for i, pub in enumerate(pub_cams):
            shift = (k * 2 + 32 * i) % 64
            pub.publish(array_to_image(base[:, shift:shift + W], stamp, frame_id=f"cam{i}"))
        counts["cam"] += 1

    node.create_timer(1.0 / STATE_HZ, on_state, clock=steady)
    node.create_timer(1.0 / CAM_HZ, on_camera, clock=steady)
    ex = make_executor("events")
    ex.add_node(node)
    try:
        while time.monotonic() - t0 < duration_s and rclpy.ok():
            ex.spin_once(timeout_sec=0.01)
    except KeyboardInterrupt:
        pass
    wall = time.monotonic() - t0
    print(json.dumps({"js_hz": counts["js"] / wall, "cam_hz": counts["cam"] / wall, "cpu_s": _cpu_s(os.getpid()),
                      "wall_s": wall}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="recorded seconds (default 60)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not append to docs/benchmarks.md")
    ap.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.publisher:
        run_publisher(args.duration)
        return 0

    import rclpy
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    env = dict(os.environ, FASTRTPS_DEFAULT_PROFILES_FILE=str(PROFILE), PYTHONPATH=str(ROOT),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_DOMAIN_ID=os.environ.get("ROS_DOMAIN_ID", str(150 + os.getpid() % 50)))
    os.environ.update({k: env[k] for k in ("FASTRTPS_DEFAULT_PROFILES_FILE", "ROS_DOMAIN_ID",
                                           "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    out = Path(tempfile.mkdtemp(prefix="bench_recorder_")) / "dataset"
    rec = subprocess.Popen([sys.executable, "-m", "ros_nodes.recorder_node", "--ros-args",
                            "-p", f"output:={out}", "-p", "fps:=30.0", "-p", "image_width:=0", "-p", "image_height:=0",
                            "-p", "camera_topics:=[/cam0, /cam1]", "-p", "camera_names:=[cam0, cam1]",
                            "-p", "raw_action_topic:=''"], cwd=ROOT, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=open(out.parent / "recorder.log", "w"))
    pub = subprocess.Popen([sys.executable, __file__, "--publisher", "--duration", str(args.duration + 8)],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    rclpy.init()
    node = rclpy.create_node("bench_recorder_ctl")
    reports = []
    node.create_subscription(String, "/recorder_node/episode_report", lambda m: reports.append(json.loads(m.data)), 10)
    start = node.create_client(Trigger, "/recorder_node/start")
    stop = node.create_client(Trigger, "/recorder_node/stop")

    def call(client, timeout_s=10.0):
        fut = client.call_async(Trigger.Request())
        end = time.monotonic() + timeout_s
        while not fut.done() and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        return fut.result()

    try:
        end = time.monotonic() + 60
        res = None
        while time.monotonic() < end:
            if start.service_is_ready():
                res = call(start)
                if res is not None and res.success:
                    break
            rclpy.spin_once(node, timeout_sec=0.2)
        if res is None or not res.success:
            raise SystemExit(f"recorder did not start: {res.message if res else 'no service'}")
        cpu0, t0 = _cpu_s(rec.pid), time.monotonic()
        while time.monotonic() - t0 < args.duration:
            rclpy.spin_once(node, timeout_sec=0.1)
        res = call(stop)
        t_stop = time.monotonic()
        end = time.monotonic() + 120
        while not reports and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        t_saved = time.monotonic()
        cpu1 = _cpu_s(rec.pid)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        os.killpg(rec.pid, signal.SIGINT)
        rec.wait(timeout=30)
        pub_out = pub.communicate(timeout=60)[0]
    if not reports:
        raise SystemExit("no episode report from the recorder")
    r = reports[0]
    pub_stats = json.loads(pub_out.strip().splitlines()[-1])
    rec_cpu = (cpu1 - cpu0) / args.duration
    pub_cpu = pub_stats["cpu_s"] / pub_stats["wall_s"]
    rows = []
    for cam in ("cam0", "cam1"):
        rows.append({"camera": cam, "frames recorded": r["frames"], "expected (30 fps x duration)":
                     int(round(args.duration * 30)), "dropped (encoder queue)": r[f"dropped_frames.{cam}"],
                     "camera gaps (never arrived)": r[f"camera_gaps.{cam}"], "late rows": r["late_rows"],
                     "stale rows": r[f"stale_rows.{cam}"]})
    notes = (f"Recorded {args.duration:g} s. Publisher sent joint states at {pub_stats['js_hz']:.0f} Hz and both "
             f"cameras at {pub_stats['cam_hz']:.1f} Hz. recorder_node CPU (process + ffmpeg children, "
             f"libx264 ultrafast yuv444p, full 640x480): {100 * rec_cpu:.0f}% of one core; the publisher "
             f"process (baseline in the same run): {100 * pub_cpu:.0f}%. Stop -> episode written: "
             f"{t_saved - t_stop:.1f} s (on the finalizer thread; callbacks keep running). Max row lateness "
             f"{r['max_lateness_ms']:.0f} ms.")
    from bench.record import record
    record("Recorder: 2 x 640x480 @ 30 Hz + joint states @ 500 Hz", rows,
           command=f".venv/bin/python bench/bench_recorder.py --duration {args.duration:g}", notes=notes,
           write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ROS 2 image delivery benchmark: 640x480 rgb8 at 30 Hz between two processes.

A publisher process sends N stamped frames (frame_id = sequence number); a
subscriber process counts the distinct frames it receives and their latency
(receive wall time - header stamp; same host clock). Run with Fast DDS
defaults (about 512 KiB shared-memory segment: a 921,600-byte frame does not
fit) and with onboard's profile ``config/fastdds/large_shm.xml`` (32 MiB
segment), for best-effort (sensor) and reliable QoS.

Run: .venv/bin/python bench/bench_ros_images.py [--frames 150] [--no-write]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
PROFILE = ROOT / "config" / "fastdds" / "large_shm.xml"
W, H, FPS = 640, 480, 30.0


def _qos(kind: str):
    from ros_nodes.common import command_qos, sensor_qos
    if kind == "best_effort":
        return sensor_qos(5)
    q = command_qos()
    q.depth = 5
    return q


def run_pub(frames: int, qos: str) -> None:
    import rclpy
    from sensor_msgs.msg import Image

    from ros_nodes.common import array_to_image, s_to_stamp

    rclpy.init()
    node = rclpy.create_node("bench_image_pub")
    pub = node.create_publisher(Image, "/bench/image_raw", _qos(qos))
    t_end = time.time() + 20
    while pub.get_subscription_count() == 0 and time.time() < t_end:
        time.sleep(0.05)
    time.sleep(0.5)   # let the reader finish matching all transports
    img = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    msg = array_to_image(img, time.time())
    t0 = time.perf_counter()
    for k in range(frames):
        while time.perf_counter() < t0 + k / FPS:
            time.sleep(0.0005)
        s_to_stamp(time.time(), msg.header.stamp)
        msg.header.frame_id = str(k)
        pub.publish(msg)
    time.sleep(1.0)   # let the last frames arrive before the participant goes away
    node.destroy_node()
    rclpy.shutdown()


def run_sub(frames: int, qos: str) -> None:
    import rclpy
    from rclpy.experimental import EventsExecutor
    from sensor_msgs.msg import Image

    from ros_nodes.common import stamp_to_s

    rclpy.init()
    node = rclpy.create_node("bench_image_sub")
    seen: dict[int, float] = {}

    def on_image(msg: Image) -> None:
        seen.setdefault(int(msg.header.frame_id), time.time() - stamp_to_s(msg.header.stamp))

    node.create_subscription(Image, "/bench/image_raw", on_image, _qos(qos))
    ex = EventsExecutor()
    ex.add_node(node)
    t_end = time.time() + frames / FPS + 15
    last = time.time()
    while time.time() < t_end:
        ex.spin_once(timeout_sec=0.1)
        if seen and max(seen) >= frames - 1 and time.time() - last > 0.5:
            break
        if seen:
            last = time.time() if len(seen) and max(seen) < frames - 1 else last
    print(json.dumps({"latency_s": list(seen.values())}), flush=True)
    ex.shutdown()
    node.destroy_node()
    rclpy.shutdown()


def measure(frames: int, qos: str, profile: bool) -> dict:
    env = dict(os.environ)
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    if profile:
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    sub = subprocess.Popen([sys.executable, __file__, "--role", "sub", "--frames", str(frames), "--qos", qos],
                           env=env, stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    pub = subprocess.Popen([sys.executable, __file__, "--role", "pub", "--frames", str(frames), "--qos", qos],
                           env=env)
    out, _ = sub.communicate(timeout=frames / FPS + 60)
    pub.wait(timeout=30)
    lat = np.asarray(json.loads(out.strip().splitlines()[-1])["latency_s"]) * 1e3
    return {
        "fastdds_profile": "large_shm.xml (32 MiB SHM)" if profile else "default",
        "qos": qos,
        "sent": frames,
        "delivered": int(len(lat)),
        "dropped": int(frames - len(lat)),
        "latency_p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "latency_p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=["main", "pub", "sub"], default="main")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--qos", choices=["best_effort", "reliable"], default="best_effort")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))   # children inherit main's
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOG_DIR", str(ROOT / "runs" / "ros_log"))
    if a.role == "pub":
        run_pub(a.frames, a.qos)
        return 0
    if a.role == "sub":
        run_sub(a.frames, a.qos)
        return 0
    rows = [measure(a.frames, qos, profile) for profile in (False, True) for qos in ("best_effort", "reliable")]
    from bench.record import record
    record("ROS 2 image delivery, 640x480 rgb8 at 30 Hz between processes", rows,
           command=f".venv/bin/python bench/bench_ros_images.py --frames {a.frames}",
           notes=("Fast DDS 2.14 (rmw_fastrtps_cpp, Jazzy). latency = receive wall time - header stamp. "
                  "The shipped profile config/fastdds/large_shm.xml is what launch/*.launch.yaml set via "
                  "FASTRTPS_DEFAULT_PROFILES_FILE."
                  f" 1-min load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
                  "(figures on a machine shared with other jobs are upper bounds)."),
           write=not a.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

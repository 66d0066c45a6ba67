"""Test-wide environment: no telemetry, offscreen GL, an isolated ROS 2 domain per test process."""
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("ROS_LOG_DIR", str(ROOT / "runs" / "ros_log"))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# A domain per test process, so parallel runs (and other sessions) never cross-talk.
os.environ["ROS_DOMAIN_ID"] = str(100 + os.getpid() % 100)

# Property tests draw the same examples on every run, so CI is reproducible; the example count is
# set per test. Explore more locally with HYPOTHESIS_PROFILE=explore.
from hypothesis import settings as _hsettings

_hsettings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
_hsettings.register_profile("explore", derandomize=False, deadline=None, print_blob=True)
_hsettings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

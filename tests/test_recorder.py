"""EpisodeRecorder (policies.recorder): fixed-rate rows, streamed video, counted losses, atomic episodes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from onboard.errors import OnboardError
from policies.dataset import load_dataset
from policies.recorder import RECORDING_DIR, EpisodeRecorder

FEATURES = {
    "observation.joint_pos": {"dtype": "float32", "shape": [2], "names": None, "units": "rad"},
    "observation.images.front": {"dtype": "video", "shape": [32, 48, 3], "names": None, "units": "uint8 RGB"},
    "action": {"dtype": "float32", "shape": [2], "names": ["a", "b"], "units": "rad"},
}


def _solid(value: int, h=48, w=64) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def _record(rec: EpisodeRecorder, t0: float, n_rows: int, fps: float = 10.0, value0: float = 0.0):
    """Feed fresh values and a frame before each row; frames encode the row number in their colour."""
    rec.set_value("observation.joint_pos", [value0, 0.0], t0)
    rec.set_value("action", [value0, 1.0], t0)
    rec.set_image("observation.images.front", _solid(0), t0)
    rec.start(t0)
    for k in range(n_rows):
        t = t0 + k / fps
        rec.set_value("observation.joint_pos", [value0 + k, 0.0], t)
        rec.set_value("action", [value0 + k, 1.0], t)
        rec.set_image("observation.images.front", _solid(min(20 * k, 255)), t)
        rec.tick(t + 0.001)
    return rec.stop(t0 + (n_rows - 1) / fps + 0.001)


def test_rows_are_taken_at_the_fixed_rate_and_the_video_has_one_frame_per_row(tmp_path):
    rec = EpisodeRecorder(tmp_path / "ds", 10.0, FEATURES, instruction="push the block")
    report = _record(rec, 100.0, 12)
    rec.close()
    assert report["frames"] == 12 and report["late_rows"] == 0 and report["dropped_frames.front"] == 0
    ds = load_dataset(tmp_path / "ds")
    assert ds.num_episodes == 1 and ds.num_frames == 12
    np.testing.assert_allclose(ds.column("timestamp"), np.arange(12) / 10.0, atol=1e-6)
    np.testing.assert_array_equal(ds.column("observation.joint_pos")[:, 0], np.arange(12))
    frames = ds.column("observation.images.front")
    assert frames.shape == (12, 32, 48, 3)             # resized on the encoder thread
    np.testing.assert_allclose(frames[:, 16, 24].mean(-1), np.minimum(20 * np.arange(12), 255), atol=4)
    assert ds.episodes[0]["recorder/frames"] == 12
    assert ds.tasks == ["push the block"]
    assert not (tmp_path / "ds" / RECORDING_DIR).exists()


def test_a_stalled_tick_emits_the_missed_rows_and_counts_them_late(tmp_path):
    rec = EpisodeRecorder(tmp_path / "ds", 10.0, FEATURES)
    rec.set_value("observation.joint_pos", [0, 0], 0.0)
    rec.set_value("action", [0, 0], 0.0)
    rec.set_image("observation.images.front", _solid(9), 0.0)
    rec.start(0.0)
    assert rec.tick(0.0) == 1
    assert rec.tick(0.5) == 5          # rows 1..5 were due; the process stalled for 0.5 s
    report = rec.stop(0.5)
    rec.close()
    assert report["frames"] == 6
    assert report["late_rows"] == 4    # rows 1..4 came more than half a period late
    assert report["max_lateness_ms"] == pytest.approx(400.0)
    assert report["stale_rows.joint_pos"] == 5      # rows 1..5 took values 0.5 s old (max_age_s 0.25 s)
    ds = load_dataset(tmp_path / "ds")
    assert ds.episodes[0]["recorder/late_rows"] == 4


def test_a_full_encoder_queue_repeats_frames_counts_them_dropped_and_never_blocks(tmp_path):
    # a queue smaller than one frame: every frame is dropped, the rows still get one video frame each
    rec = EpisodeRecorder(tmp_path / "ds", 10.0, FEATURES, max_queue_bytes=100)
    report = _record(rec, 0.0, 5)
    rec.close()
    assert report["dropped_frames.front"] == 5
    ds = load_dataset(tmp_path / "ds")
    assert ds.column("observation.images.front").shape[0] == 5
    assert ds.episodes[0]["recorder/dropped_frames.front"] == 5


def test_missing_camera_messages_are_counted_from_the_image_stamps(tmp_path):
    rec = EpisodeRecorder(tmp_path / "ds", 10.0, FEATURES)
    rec.set_value("observation.joint_pos", [0, 0], 0.0)
    rec.set_value("action", [0, 0], 0.0)
    for k in range(3):                                   # 30 Hz camera
        rec.set_image("observation.images.front", _solid(1), k / 30, stamp_s=k / 30)
    rec.start(0.1)
    for k in (3, 4, 8, 9):                               # frames 5, 6, 7 never arrive
        rec.set_image("observation.images.front", _solid(1), k / 30, stamp_s=k / 30)
    rec.tick(0.3)
    report = rec.stop(0.3)
    rec.close()
    assert report["camera_gaps.front"] == 3


def test_discard_and_start_rules(tmp_path):
    rec = EpisodeRecorder(tmp_path / "ds", 10.0, FEATURES)
    with pytest.raises(OnboardError, match="no data yet"):
        rec.start(0.0)
    _record(rec, 0.0, 3)
    rec.set_value("action", [0, 0], 1.0)
    rec.start(1.0)
    with pytest.raises(OnboardError, match="already"):
        rec.start(1.0)
    rec.tick(1.25)
    assert rec.discard() == 3
    with pytest.raises(OnboardError, match="no episode"):
        rec.stop(2.0)
    rec.close()
    ds = load_dataset(tmp_path / "ds")
    assert ds.num_episodes == 1 and ds.num_frames == 3


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_recorder import FEATURES, _record, _solid
    from policies.recorder import EpisodeRecorder
    rec = EpisodeRecorder({root!r}, 10.0, FEATURES)
    _record(rec, 0.0, 6)
    _record(rec, 10.0, 4, value0=100.0)
    assert rec.flush(60)
    rec.set_value("action", [0, 0], 20.0)
    rec.start(20.0)
    k = 0
    while True:                      # the third episode never ends: the test kills us
        t = 20.0 + 0.1 * k
        rec.set_image("observation.images.front", _solid(3), t)
        rec.tick(t)
        if k == 5:
            print("RECORDING", flush=True)
        k += 1
        time.sleep(0.01)
""")


def test_killing_the_recorder_mid_episode_keeps_every_earlier_episode_valid_and_loadable(tmp_path):
    from onboard.paths import REPO_ROOT
    from policies.dataset_tools import validate_dataset
    root = tmp_path / "ds"
    script = KILL_SCRIPT.format(tests=str(REPO_ROOT / "tests"), root=str(root))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    for line in proc.stdout:
        if "RECORDING" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ds = load_dataset(root)
    assert ds.num_episodes == 2 and ds.num_frames == 10
    np.testing.assert_array_equal(ds.column("observation.joint_pos")[6:, 0], 100 + np.arange(4))
    assert ds.column("observation.images.front").shape[0] == 10
    problems = validate_dataset(root)
    assert [p for p in problems if p.severity == "error"] == []
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 2

"""LeRobot v3 dataset: layout, round trip, stats, atomic episodes, validation, and `onboard collect`."""
import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from onboard.errors import OnboardError
from policies.dataset import LeRobotDatasetWriter, features_from_env, load_dataset

OBS_SPEC = [{"name": "joint_pos", "shape": [7], "units": "rad"},
            {"name": "gripper_width", "shape": [1], "units": "m"}]
ACTIONS = [f"panda_joint{i}" for i in range(1, 8)] + ["gripper_width"]


def _frames(n, seed):
    rng = np.random.default_rng(seed)
    return [{"observation.joint_pos": rng.normal(size=7).astype(np.float32),
             "observation.gripper_width": rng.uniform(0, 0.08, 1).astype(np.float32),
             "action": rng.normal(size=8).astype(np.float32)} for _ in range(n)]


def _write(root, episodes, cameras=(), **kw):
    feats = features_from_env(OBS_SPEC, ACTIONS, cameras, (32, 32))
    w = LeRobotDatasetWriter(root, fps=10, features=feats, **kw)
    for i, frames in enumerate(episodes):
        for f in frames:
            w.add_frame(f, task="push the block to the target")
        w.save_episode()
    return w


def test_round_trip_keeps_values_episodes_and_units(tmp_path):
    eps = [_frames(5, 0), _frames(7, 1)]
    _write(tmp_path, eps).close()
    ds = load_dataset(tmp_path)
    assert ds.num_episodes == 2 and ds.num_frames == 12
    np.testing.assert_array_equal(ds.column("action"), np.stack([f["action"] for e in eps for f in e]))
    np.testing.assert_array_equal(ds.column("observation.gripper_width"),
                                  np.stack([f["observation.gripper_width"] for e in eps for f in e]))
    np.testing.assert_array_equal(ds.episode_index, [0] * 5 + [1] * 7)
    np.testing.assert_array_equal(ds.column("frame_index"), list(range(5)) + list(range(7)))
    np.testing.assert_allclose(ds.column("timestamp")[:5], np.arange(5) / 10)
    assert ds.obs_spec == OBS_SPEC
    assert ds.tasks == ["push the block to the target"]


def test_layout_and_info_follow_lerobot_v3(tmp_path):
    _write(tmp_path, [_frames(4, 0)]).close()
    info = json.loads((tmp_path / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert info["total_episodes"] == 1 and info["total_frames"] == 4 and info["chunks_size"] == 1000
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["features"]["action"]["names"] == ACTIONS
    for rel in ("meta/stats.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet",
                "data/chunk-000/file-000.parquet"):
        assert (tmp_path / rel).is_file(), rel
    ep = pq.read_table(tmp_path / "meta/episodes/chunk-000/file-000.parquet").to_pylist()[0]
    assert ep["length"] == 4 and ep["dataset_from_index"] == 0 and ep["dataset_to_index"] == 4
    assert ep["tasks"] == ["push the block to the target"]


def test_stats_are_min_max_mean_std_count_per_feature(tmp_path):
    eps = [_frames(6, 2), _frames(3, 3)]
    _write(tmp_path, eps).close()
    stats = load_dataset(tmp_path).stats
    a = np.stack([f["action"] for e in eps for f in e]).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["mean"], a.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["std"], a.std(0), rtol=1e-5)
    np.testing.assert_allclose(stats["action"]["min"], a.min(0))
    np.testing.assert_allclose(stats["action"]["max"], a.max(0))
    assert stats["action"]["count"] == [9]


def test_a_crash_with_an_open_episode_leaves_saved_episodes_loadable(tmp_path):
    w = _write(tmp_path, [_frames(5, 0), _frames(4, 1)])
    for f in _frames(6, 2):
        w.add_frame(f, task="push the block to the target")
    del w                      # the process "dies": no save_episode(), no close()
    ds = load_dataset(tmp_path)
    assert ds.num_episodes == 2 and ds.num_frames == 9
    assert not list(tmp_path.rglob("*.tmp"))


def test_discarded_episode_is_not_written(tmp_path):
    w = _write(tmp_path, [_frames(3, 0)])
    for f in _frames(4, 1):
        w.add_frame(f, task="t")
    w.discard_episode()
    for f in _frames(2, 2):
        w.add_frame(f, task="t")
    w.save_episode()
    w.close()
    ds = load_dataset(tmp_path)
    assert ds.num_episodes == 2 and ds.num_frames == 5


def test_frames_with_a_wrong_shape_are_rejected_naming_the_feature(tmp_path):
    w = _write(tmp_path, [])
    bad = _frames(1, 0)[0]
    bad["action"] = np.zeros(7, dtype=np.float32)
    with pytest.raises(OnboardError, match="action"):
        w.add_frame(bad, task="t")


def test_bad_dataset_errors_name_the_file_and_field(tmp_path):
    with pytest.raises(OnboardError, match="info.json"):
        load_dataset(tmp_path)
    _write(tmp_path, [_frames(2, 0)]).close()
    info_path = tmp_path / "meta/info.json"
    info = json.loads(info_path.read_text())
    info["codebase_version"] = "v2.1"
    info_path.write_text(json.dumps(info))
    with pytest.raises(OnboardError) as err:
        load_dataset(tmp_path)
    assert "info.json" in str(err.value) and "codebase_version" in str(err.value)


def test_videos_round_trip_per_camera(tmp_path):
    rng = np.random.default_rng(0)
    frames = _frames(6, 0)
    imgs = [np.full((32, 32, 3), 40 * i, dtype=np.uint8) for i in range(6)]
    for f, img in zip(frames, imgs):
        f["observation.images.front"] = img
    _write(tmp_path, [frames], cameras=("front",)).close()
    assert (tmp_path / "videos/observation.images.front/chunk-000/file-000.mp4").is_file()
    ds = load_dataset(tmp_path)
    video = ds.column("observation.images.front")
    assert video.shape == (6, 32, 32, 3)
    assert np.abs(video.astype(int) - np.stack(imgs)).mean() < 3
    assert np.asarray(ds.stats["observation.images.front"]["mean"]).shape == (3, 1, 1)


def test_collect_cli_writes_a_push_dataset(tmp_path):
    from onboard.cli import main
    out = tmp_path / "push"
    assert main(["collect", "--task", "push", "--episodes", "2", "--out", str(out), "--seed", "1"]) == 0
    ds = load_dataset(out)
    assert ds.num_episodes == 2
    assert ds.column("action").shape[1] == 8
    assert {s["name"] for s in ds.obs_spec} >= {"joint_pos", "object_pos", "target_pos"}
    assert ds.info["robot_type"] == "franka_panda"


def test_collect_cli_unknown_task_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "onboard.cli", "collect", "--task", "juggle",
                           "--episodes", "1", "--out", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--task" in proc.stderr and "juggle" in proc.stderr

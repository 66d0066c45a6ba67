"""`onboard dataset info|plot|video|merge|split|validate`: validate finds every kind of corruption."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from onboard.cli import main
from policies.dataset import LeRobotDatasetWriter, load_dataset
from policies.dataset_tools import validate_dataset

FEATURES = {
    "observation.joint_pos": {"dtype": "float32", "shape": [2], "names": None, "units": "rad"},
    "observation.images.front": {"dtype": "video", "shape": [16, 16, 3], "names": None, "units": "uint8 RGB"},
    "action": {"dtype": "float32", "shape": [2], "names": ["a", "b"], "units": "rad"},
}


def _make(root, episodes=(5, 7, 4), offset=0.0):
    rng = np.random.default_rng(0)
    with LeRobotDatasetWriter(root, 10.0, FEATURES, robot_type="franka_panda") as w:
        for ep, n in enumerate(episodes):
            for k in range(n):
                w.add_frame({"observation.joint_pos": [offset + ep, k], "action": rng.normal(size=2),
                             "observation.images.front": np.full((16, 16, 3), 10 * k, np.uint8)},
                            task=f"task {ep % 2}")
            w.save_episode()
    return root


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return _make(tmp_path_factory.mktemp("ds") / "clean")


def _copy(clean, tmp_path):
    return shutil.copytree(clean, tmp_path / "copy")


def _errors(root):
    return [p for p in validate_dataset(root) if p.severity == "error"]


def test_a_clean_dataset_validates_and_the_cli_exits_zero(clean, capsys):
    assert _errors(clean) == []
    assert main(["dataset", "validate", str(clean)]) == 0
    assert "ok" in capsys.readouterr().out


def test_validate_finds_an_unreadable_parquet_file(clean, tmp_path):
    root = _copy(clean, tmp_path)
    data = root / "data" / "chunk-000" / "file-000.parquet"
    data.write_bytes(data.read_bytes()[:100])
    errs = _errors(root)
    assert errs and "parquet" in errs[0].message and "file-000.parquet" in errs[0].file
    assert main(["dataset", "validate", str(root)]) == 1


def test_validate_finds_a_missing_video_and_a_missing_meta_file(clean, tmp_path):
    root = _copy(clean, tmp_path)
    (root / "videos" / "observation.images.front" / "chunk-000" / "file-001.mp4").unlink()
    assert any("video file is missing" in p.message for p in _errors(root))
    (root / "meta" / "tasks.parquet").unlink()
    assert any("tasks.parquet" in p.file for p in _errors(root))
    (root / "meta" / "info.json").unlink()
    assert [p.message for p in _errors(root)] == ["missing"]


def test_validate_finds_stats_that_do_not_match_the_data(clean, tmp_path):
    root = _copy(clean, tmp_path)
    stats = json.loads((root / "meta" / "stats.json").read_text())
    stats["action"]["mean"][0] += 0.5
    (root / "meta" / "stats.json").write_text(json.dumps(stats))
    errs = _errors(root)
    assert len(errs) == 1 and errs[0].field == "action.mean"


def test_validate_finds_non_monotonic_timestamps_and_broken_frame_indices(clean, tmp_path):
    root = _copy(clean, tmp_path)
    path = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    ts = table.column("timestamp").to_numpy().copy()
    ts[2], ts[3] = ts[3], ts[2]
    table = table.set_column(table.column_names.index("timestamp"), "timestamp", [ts])
    pq.write_table(table, path)
    errs = _errors(root)
    assert any("not strictly increasing at frame 3" in p.message for p in errs)


def test_validate_finds_rows_missing_from_an_episode_and_totals_that_do_not_add_up(clean, tmp_path):
    root = _copy(clean, tmp_path)
    info = json.loads((root / "meta" / "info.json").read_text())
    info["total_frames"] += 1
    (root / "meta" / "info.json").write_text(json.dumps(info))
    path = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)
    msgs = [p.message for p in _errors(root)]
    assert any("the episodes add up to" in m for m in msgs)
    assert any("3 rows, meta/episodes says 4" in m for m in msgs)


def test_merge_and_split_round_trip_the_frames(clean, tmp_path):
    other = _make(tmp_path / "other", episodes=(3,), offset=100.0)
    assert main(["dataset", "merge", str(clean), str(other), "--out", str(tmp_path / "merged")]) == 0
    merged = load_dataset(tmp_path / "merged")
    assert merged.num_episodes == 4 and merged.num_frames == 19
    assert _errors(tmp_path / "merged") == []
    assert main(["dataset", "split", str(tmp_path / "merged"), "--episodes", "1,3",
                 "--out", str(tmp_path / "split")]) == 0
    split = load_dataset(tmp_path / "split")
    src = load_dataset(clean)
    np.testing.assert_array_equal(split.column("observation.joint_pos")[:7], src.column("observation.joint_pos")[5:12])
    np.testing.assert_array_equal(split.column("observation.joint_pos")[7:, 0], 100.0)
    np.testing.assert_array_equal(split.column("observation.images.front")[:7],
                                  src.column("observation.images.front")[5:12])
    assert _errors(tmp_path / "split") == []


def test_info_plot_and_video(clean, tmp_path, capsys):
    assert main(["dataset", "info", str(clean), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["episodes"] == 3 and s["frames"] == 16 and s["tasks"] == ["task 0", "task 1"]
    assert main(["dataset", "plot", str(clean), "--episodes", "0-1", "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert main(["dataset", "video", str(clean), "--episode", "1", "--out", str(tmp_path / "e1.mp4")]) == 0
    assert (tmp_path / "e1.mp4").stat().st_size > 0


def test_bad_input_exits_2_naming_the_field(clean, tmp_path):
    assert main(["dataset", "validate", str(tmp_path / "nowhere")]) == 2
    assert main(["dataset", "split", str(clean), "--episodes", "7", "--out", str(tmp_path / "x")]) == 2
    assert main(["dataset", "split", str(clean), "--episodes", "a-b", "--out", str(tmp_path / "x")]) == 2

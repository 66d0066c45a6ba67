"""Calibration results set the DR ranges of collection, and travel with the data into training."""
import json

import yaml

from onboard.cli import main


def _latency_yaml(path, delay_s=0.25):
    path.write_text(yaml.safe_dump({"calibration_kind": "latency", "command_to_state_delay_s": delay_s,
                                    "dt_s": 0.002, "state_noise_std": 0.0005}))
    return path


def test_measured_latency_sets_the_action_delay_range_and_is_recorded(tmp_path):
    cal = _latency_yaml(tmp_path / "latency.yaml")
    out = tmp_path / "data"
    assert main(["collect", "--task", "reach", "--episodes", "1", "--out", str(out),
                 "--calibration", str(cal)]) == 0
    info = json.loads((out / "meta" / "info.json").read_text())
    # 0.25 s +- one 2 ms log sample at 10 Hz control -> 2..3 whole control steps of true delay
    assert info["dr_ranges"]["latency"]["action_delay_steps"] == [2, 3]
    assert info["dr_ranges"]["observation_noise"]["joint_pos"] == 0.0005
    assert info["calibration"][0]["file"] == "latency.yaml" and len(info["calibration"][0]["sha256"]) == 64

    from policies.dataset import load_dataset
    from policies.diffusion.train import data_from_dataset

    meta = data_from_dataset(load_dataset(out), None, source=str(out)).meta
    assert meta["calibration"] == info["calibration"]


def test_calibration_with_dr_off_is_refused(tmp_path, capsys):
    cal = _latency_yaml(tmp_path / "latency.yaml")
    rc = main(["collect", "--task", "reach", "--episodes", "1", "--out", str(tmp_path / "d"), "--no-dr",
               "--calibration", str(cal)])
    assert rc == 2 and "--calibration" in capsys.readouterr().err


def test_a_non_calibration_file_is_refused_naming_it(tmp_path, capsys):
    bad = tmp_path / "notes.yaml"
    bad.write_text("hello: world\n")
    rc = main(["collect", "--task", "reach", "--episodes", "1", "--out", str(tmp_path / "d"),
               "--calibration", str(bad)])
    assert rc == 2 and "notes.yaml" in capsys.readouterr().err

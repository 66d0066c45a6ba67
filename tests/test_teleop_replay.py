"""`onboard replay DATASET --episode K`: a recorded episode drives the simulated arm through the safety filter."""
from __future__ import annotations

import re

import pytest

from onboard.cli import main


@pytest.fixture(scope="module")
def expert_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay") / "push"
    assert main(["collect", "--task", "push", "--episodes", "1", "--no-dr", "--out", str(root)]) == 0
    return root


def test_replaying_a_recorded_episode_in_sim_reproduces_its_joint_trajectory(expert_dataset, capsys):
    assert main(["replay", str(expert_dataset), "--episode", "0", "--task", "push"]) == 0
    out = capsys.readouterr().out
    mean, worst = map(float, re.search(r"after the ramp-in: mean ([\d.]+) rad, max ([\d.]+) rad", out).groups())
    assert mean < 0.02 and worst < 0.1, out
    assert "through the safety filter" in out and "task success True" in out


def test_replay_of_a_missing_episode_is_bad_input(expert_dataset):
    assert main(["replay", str(expert_dataset), "--episode", "5"]) == 2

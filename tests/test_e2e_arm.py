"""The whole arm pipeline, tiny: collect a few demos -> train a few steps -> export -> evaluate 2 episodes.

It proves the stages fit together through the same CLI verbs a user runs (and
`make demo` runs); the success figure of a few-step policy is not asserted,
everything the pipeline writes is.
"""
import json

import onnx
import pytest

from onboard.cli import main
from onboard.spec import CONTRACT_KEY, PolicyContract


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data, train, art = root / "data", root / "train", root / "policy.onnx"
    assert main(["collect", "--task", "push", "--episodes", "3", "--out", str(data), "--seed", "0"]) == 0
    assert main(["train", "--policy", "diffusion", "--dataset", str(data), "--out", str(train),
                 "--steps", "20", "--batch-size", "16"]) == 0
    assert main(["export", str(train / "checkpoint.pt"), "--out", str(art)]) == 0
    assert main(["eval", str(art), "--task", "push", "--episodes", "2", "--videos", "1",
                 "--out", str(root / "eval")]) == 0
    return root


def test_collect_writes_a_lerobot_v3_dataset(pipeline):
    info = json.loads((pipeline / "data" / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 3
    assert (pipeline / "data" / "meta" / "stats.json").is_file()
    assert list((pipeline / "data" / "data").rglob("*.parquet"))


def test_training_writes_a_checkpoint_and_a_curve(pipeline):
    assert (pipeline / "train" / "checkpoint.pt").is_file()
    assert list((pipeline / "train").glob("*.png"))


def test_export_embeds_a_contract_that_matches_the_panda(pipeline):
    model = onnx.load(str(pipeline / "policy.onnx"), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    c = PolicyContract.from_json(meta[CONTRACT_KEY])
    assert c.robot["name"] == "franka_panda" and c.action_dim == 8
    assert c.pred_horizon == 16 and c.obs_horizon == 2 and c.action_horizon == 8


def test_eval_reports_success_interventions_and_writes_video(pipeline):
    rep = json.loads((pipeline / "eval" / "eval_report.json").read_text())
    assert rep["episodes"] == 2 and len(rep["per_episode"]) == 2
    lo, hi = rep["ci95"]
    assert 0.0 <= lo <= rep["success_rate"] <= hi <= 1.0
    assert "total" in rep["interventions"]
    assert list((pipeline / "eval").glob("*.mp4"))
    assert (pipeline / "eval" / "eval_success.png").is_file()

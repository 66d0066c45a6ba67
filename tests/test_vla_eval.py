"""`onboard eval` on a VLA artifact: every split, a 95% interval, the grounding count, a report and a plot."""
from __future__ import annotations

import json

import pytest

from vla_tiny import session_vla_artifact


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return session_vla_artifact(tmp_path_factory)


def test_cli_eval_reports_every_split_with_an_interval_and_which_cube_was_moved(artifact, tmp_path, capsys):
    from onboard.cli import main

    out = tmp_path / "eval"
    assert main(["eval", str(artifact), "--episodes", "1", "--num-steps", "2", "--videos", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for split in ("seen", "paraphrase", "unseen_combo"):
        assert split in printed and (out / f"{split}_episode_000.mp4").is_file()
    rep = json.loads((out / "eval_report.json").read_text())
    assert [s["split"] for s in rep["splits"]] == ["seen", "paraphrase", "unseen_combo"]
    for s in rep["splits"]:
        lo, hi = s["ci95"]
        assert s["episodes"] == 1 and 0.0 <= lo <= s["success_rate"] <= hi <= 1.0
        ep = s["per_episode"][0]
        assert ep["instruction"] and ep["named_cube"] in (0, 1, 2)
        assert ep["right_cube"] is None or ep["right_cube"] == (ep["moved_cube"] == ep["named_cube"])
    assert (out / "eval_vla_splits.png").is_file() and rep["inference_ms"]["text_encoder_runs"] >= 1


def test_cli_eval_refuses_an_unknown_split(artifact, tmp_path):
    from onboard.cli import main

    assert main(["eval", str(artifact), "--split", "seen,bogus", "--episodes", "1", "--out", str(tmp_path)]) == 2

"""The CLI's exit codes and errors: 0 success, 2 bad input, with the file and field named."""
import subprocess
import sys

import pytest

from onboard.cli import main
from onboard.evaluation import wilson_interval


def test_no_verb_prints_help_and_exits_2(capsys):
    assert main([]) == 2


def test_unknown_verb_is_a_usage_error():
    with pytest.raises(SystemExit) as e:
        main(["fly-to-the-moon"])
    assert e.value.code == 2


def test_eval_of_a_missing_artifact_exits_2_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "nope.onnx"
    rc = main(["eval", str(missing), "--episodes", "1", "--out", str(tmp_path / "ev")])
    assert rc == 2
    assert "nope.onnx" in capsys.readouterr().err


def test_console_entry_point_is_installed():
    r = subprocess.run([sys.executable, "-m", "onboard.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "collect" in r.stdout and "eval" in r.stdout


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (8, 10), (80, 100)])
def test_wilson_interval_contains_the_estimate_and_stays_in_0_1(k, n):
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert hi - lo < 0.7


def test_wilson_interval_never_excludes_an_all_or_nothing_estimate():
    # 100/100 once gave hi = 0.9999999999999999 < 1.0: a negative error bar that crashed the eval plot
    for n in range(1, 501):
        for k in (0, n):
            lo, hi = wilson_interval(k, n)
            assert lo <= k / n <= hi, (k, n, lo, hi)

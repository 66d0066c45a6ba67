"""The YAML launch runner: parsing, substitutions, clear errors, and process supervision.

Processes here are small ``python -c`` executables; no ROS 2 needed.
"""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from onboard import launch_runner as lr
from onboard.errors import OnboardError
from onboard.paths import REPO_ROOT

PY = sys.executable


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_node_of_onboard_becomes_python_module_with_ros_args(tmp_path):
    params = write(tmp_path, "p.params.yaml", "/**:\n  ros__parameters:\n    rate_hz: 100\n")
    f = write(tmp_path, "a.launch.yaml", """
        launch:
          - arg: {name: robot, default: franka_panda}
          - group:
              children:
                - push-ros-namespace: {namespace: arm}
                - node:
                    pkg: onboard
                    exec: sim_node
                    name: sim
                    param:
                      - {name: robot, value: $(var robot)}
                      - {name: joints, value: [a, b]}
                      - from: $(dirname)/p.params.yaml
                    remap:
                      - {from: /joint_states, to: /arm/joint_states}
          - node: {pkg: onboard, exec: policy_node, name: policy}
        """)
    sim, policy = lr.load_launch(f, {"robot": "other"})
    assert sim.name == "arm.sim"
    assert sim.cmd[:3] == [PY, "-m", "ros_nodes.sim_node"]
    ros = sim.cmd[sim.cmd.index("--ros-args"):]
    assert ros == ["--ros-args", "-r", "__node:=sim", "-r", "__ns:=/arm", "-p", "robot:=other",
                   "-p", "joints:=[a, b]", "--params-file", str(params.resolve()),
                   "-r", "/joint_states:=/arm/joint_states"]
    # the group was scoped: the namespace does not leak to the next node
    assert "__ns:=/arm" not in " ".join(policy.cmd)
    assert policy.env["PYTHONPATH"].split(os.pathsep)[0] == str(REPO_ROOT)


def test_substitutions_env_let_include_and_conditions(tmp_path, monkeypatch):
    monkeypatch.setenv("ONBOARD_TEST_X", "from_env")
    monkeypatch.delenv("ONBOARD_TEST_UNSET", raising=False)
    write(tmp_path, "inner.launch.yaml", """
        launch:
          - arg: {name: word}
          - executable: {cmd: echo $(var word), name: inner}
        """)
    f = write(tmp_path, "outer.launch.yaml", """
        launch:
          - arg: {name: use_extra, default: "false"}
          - let: {name: greeting, value: "hi-$(env ONBOARD_TEST_X)"}
          - set_env: {name: FASTRTPS_DEFAULT_PROFILES_FILE, value: "$(find-pkg-share onboard)/config/fastdds/large_shm.xml"}
          - executable:
              cmd: echo $(var greeting) $(env ONBOARD_TEST_UNSET fallback)
              name: e1
              env: [{name: K, value: "$(var use_extra)"}]
          - executable: {cmd: echo extra, name: extra, if: $(var use_extra)}
          - executable: {cmd: echo plain, name: plain, unless: $(var use_extra)}
          - include:
              file: inner.launch.yaml
              arg: [{name: word, value: "$(var greeting)"}]
        """)
    specs = {s.name: s for s in lr.load_launch(f)}
    assert set(specs) == {"e1", "plain", "inner"}
    assert specs["e1"].cmd == ["echo", "hi-from_env", "fallback"]
    assert specs["e1"].env["K"] == "false"
    assert specs["e1"].env["FASTRTPS_DEFAULT_PROFILES_FILE"] == str(REPO_ROOT / "config/fastdds/large_shm.xml")
    assert specs["inner"].cmd == ["echo", "hi-from_env"]
    assert "extra" in {s.name for s in lr.load_launch(f, {"use_extra": "true"})}


@pytest.mark.parametrize("body, field", [
    ("launch:\n  - nod: {pkg: onboard, exec: sim_node}\n", "launch[0].nod"),
    ("launch:\n  - node: {exec: sim_node}\n", "launch[0].node.pkg"),
    ("launch:\n  - executable: {cmd: echo $(var nope)}\n", "launch[0].executable.cmd"),
    ("launch:\n  - node: {pkg: onboard, exec: sim_node, colour: red}\n", "launch[0].node.colour"),
    ("launch:\n  - node: {pkg: onboard, exec: no_such_node}\n", "launch[0].node.exec"),
    ("launch:\n  - arg: {name: needed}\n", "launch[0].arg.name"),
    ("launch:\n  - node: [pkg\n", "line"),
    ("nodes: []\n", "launch"),
])
def test_bad_launch_file_raises_onboard_error_naming_file_and_field(tmp_path, body, field):
    f = tmp_path / "bad.launch.yaml"
    f.write_text(body)
    with pytest.raises(OnboardError) as exc:
        lr.load_launch(f)
    assert exc.value.file == str(f)
    assert exc.value.field.startswith(field)
    assert exc.value.fix


def test_undeclared_command_line_argument_is_refused(tmp_path):
    f = write(tmp_path, "a.launch.yaml", "launch:\n  - arg: {name: a, default: x}\n  - executable: {cmd: echo}\n")
    with pytest.raises(OnboardError, match="not declared"):
        lr.load_launch(f, {"b": "1"})


def test_cli_exits_2_on_bad_file_and_bad_argument(tmp_path):
    f = tmp_path / "bad.launch.yaml"
    f.write_text("launch:\n  - bogus: {}\n")
    r = subprocess.run([PY, "-m", "onboard.cli", "launch", str(f), "--no-ros2"], capture_output=True, text=True,
                       cwd=REPO_ROOT, timeout=60)
    assert r.returncode == 2 and "unknown tag 'bogus'" in r.stderr and str(f) in r.stderr
    r = subprocess.run([PY, "-m", "onboard.cli", "launch", str(f), "oops"], capture_output=True, text=True,
                       cwd=REPO_ROOT, timeout=60)
    assert r.returncode == 2 and "name:=value" in r.stderr


def test_output_lines_are_prefixed_with_the_process_name(tmp_path):
    f = write(tmp_path, "a.launch.yaml", f"""
        launch:
          - executable: {{cmd: "{PY} -c 'print(\\"hello\\")'", name: talker}}
          - executable: {{cmd: "{PY} -c 'print(\\"world\\")'", name: other}}
        """)
    out = io.StringIO()
    assert lr.run_launch(f, out=out) == 0
    text = out.getvalue()
    assert "[talker] hello" in text and "[other] world" in text


def test_crashed_process_stops_the_launch_with_nonzero_exit(tmp_path):
    pidfile = tmp_path / "pid"
    f = write(tmp_path, "a.launch.yaml", f"""
        launch:
          - executable: {{cmd: "{PY} -c 'import os,time; open(\\"{pidfile}\\",\\"w\\").write(str(os.getpid())); time.sleep(60)'", name: sleeper}}
          - executable: {{cmd: "{PY} -c 'import time,sys; time.sleep(1); sys.exit(3)'", name: crasher}}
        """)
    out = io.StringIO()
    assert lr.run_launch(f, out=out) == 1
    assert "[crasher] died with exit code 3" in out.getvalue()
    assert not _alive(int(pidfile.read_text()))


def test_respawn_restarts_a_crashed_process(tmp_path):
    counter = tmp_path / "count"
    code = (f"import sys,pathlib; p=pathlib.Path('{counter}'); n=len(p.read_text()) if p.exists() else 0; "
            "p.write_text('x'*(n+1)); sys.exit(0 if n >= 2 else 1)")
    f = write(tmp_path, "a.launch.yaml", f"""
        launch:
          - executable: {{cmd: "{PY} -c \\"{code}\\"", name: flaky, respawn: "true", respawn_delay: "0.1"}}
        """)
    out = io.StringIO()
    sup = lr.Supervisor(lr.load_launch(f), out=out)
    import threading
    t = threading.Thread(target=sup.run)
    t.start()
    for _ in range(200):
        if counter.exists() and len(counter.read_text()) >= 3:
            break
        time.sleep(0.05)
    sup.request_stop("test done")
    t.join(10)
    assert len(counter.read_text()) >= 3
    assert "respawning" in out.getvalue()


def test_sigint_shuts_down_every_process_group_including_stubborn_ones(tmp_path):
    pids = tmp_path / "pids"
    stubborn = ("import os,signal,time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                f"open('{pids}','a').write(str(os.getpid())+'\\\\n'); time.sleep(60)")
    parent = (f"import os,subprocess,sys,time; c=subprocess.Popen(['sleep','60']); "
              f"open('{pids}','a').write(str(os.getpid())+'\\\\n'+str(c.pid)+'\\\\n'); time.sleep(60)")
    f = write(tmp_path, "a.launch.yaml", f"""
        launch:
          - executable: {{cmd: "{PY} -c \\"{stubborn}\\"", name: stubborn}}
          - executable: {{cmd: "{PY} -c \\"{parent}\\"", name: parent}}
        """)
    runner = subprocess.Popen([PY, "-m", "onboard.cli", "launch", str(f), "--no-ros2"], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(300):
        if pids.exists() and len(pids.read_text().split()) >= 3:
            break
        time.sleep(0.05)
    children = [int(x) for x in pids.read_text().split()]
    assert len(children) == 3 and all(_alive(p) for p in children)
    runner.send_signal(signal.SIGINT)
    out, _ = runner.communicate(timeout=15)
    assert runner.returncode == 0, out
    assert "escalating to SIGTERM" in out          # the stubborn one ignored SIGINT
    assert not any(_alive(p) for p in children)   # grandchild included: no orphans


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie reaped later by init is not a live process
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False

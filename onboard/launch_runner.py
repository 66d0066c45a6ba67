"""Run ROS 2 YAML launch files without ``ros2 launch``.

Owns: parsing the YAML launch format that ``ros2 launch`` reads (a top-level
``launch:`` list of tags) into a flat list of processes, and supervising
those processes. On a machine with ROS 2 the same files go to ``ros2
launch`` unchanged (see ``onboard/commands/launch.py``).

Supported tags: ``arg``, ``let``, ``set_env``/``unset_env``, ``node``
(pkg, exec, name, namespace, param, remap, env, output, respawn,
respawn_delay, args, ros_args), ``group`` (scoped, children), ``push-ros-namespace``,
``include`` (file, arg) and ``executable`` (cmd, args, name, cwd, env, output,
respawn). Every tag takes ``if``/``unless``. Substitutions: ``$(var NAME)``,
``$(env NAME [default])``, ``$(find-pkg-share PKG)``, ``$(dirname)``,
``$(filename)``.

Supervision: each process runs in its own process group; its output lines are
prefixed with ``[name]``. A process that exits non-zero stops the launch
(exit 1) unless it has ``respawn``. SIGINT/SIGTERM shut everything down within
5 s: SIGINT, then SIGTERM, then SIGKILL, always to the whole process group.

Imports only the standard library, yaml and onboard.errors/paths: it never
imports rclpy (it runs where ROS 2 is absent).
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from onboard.errors import OnboardError
from onboard.paths import REPO_ROOT

PACKAGE = "onboard"
# exec name -> python module, for nodes of this package (mirrors setup.cfg console_scripts).
ONBOARD_EXECUTABLES = {
    "policy_node": "ros_nodes.policy_node",
    "sim_node": "ros_nodes.sim_node",
    "teleop_node": "ros_nodes.teleop_node",
    "recorder_node": "ros_nodes.recorder_node",
    "quad_sim_node": "ros_nodes.quad_sim_node",
    "quad_policy_node": "ros_nodes.quad_policy_node",
    "humanoid_sim_node": "ros_nodes.humanoid_sim_node",
    "humanoid_policy_node": "ros_nodes.humanoid_policy_node",
    "px4_adapter": "ros_nodes.adapters.px4",
    "crazyswarm2_adapter": "ros_nodes.adapters.crazyswarm2",
}
SHUTDOWN_SIGINT_S = 2.5     # then SIGTERM
SHUTDOWN_SIGTERM_S = 1.5    # then SIGKILL; total stays under 5 s
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "")


@dataclass
class ProcessSpec:
    """One process the launch starts."""
    name: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)     # overrides on top of os.environ
    unset_env: list[str] = field(default_factory=list)
    cwd: str | None = None
    output: str = "screen"     # "screen" or "log"
    respawn: bool = False
    respawn_delay_s: float = 0.0


@dataclass
class _Context:
    """Launch configurations visible at one point of the file tree."""
    file: Path
    vars: dict[str, str]
    env: dict[str, str]
    unset_env: list[str]
    namespace: str = ""

    def child(self, file: Path | None = None) -> "_Context":
        return _Context(file or self.file, dict(self.vars), dict(self.env), list(self.unset_env),
                        self.namespace)


def _err(ctx_file, fld: str, problem: str, fix: str) -> OnboardError:
    return OnboardError(problem, file=str(ctx_file), field=fld, fix=fix)


# ---- substitutions -------------------------------------------------------------

def substitute(text, ctx: _Context, fld: str) -> str:
    """Expand every ``$(...)`` in ``text`` (nested ones included)."""
    if text is None:
        return ""
    if isinstance(text, bool):
        return "true" if text else "false"
    if not isinstance(text, str):
        return str(text)
    out, i = [], 0
    while i < len(text):
        j = text.find("$(", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        depth, k = 0, j + 1
        while k < len(text):
            if text[k] == "(":
                depth += 1
            elif text[k] == ")":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        if k >= len(text):
            raise _err(ctx.file, fld, f"unclosed substitution in {text!r}", "close it with ')'")
        inner = substitute(text[j + 2:k], ctx, fld)
        out.append(_resolve(inner, ctx, fld))
        i = k + 1
    return "".join(out)


def _resolve(expr: str, ctx: _Context, fld: str) -> str:
    parts = expr.split()
    if not parts:
        raise _err(ctx.file, fld, "empty substitution $()", "write $(var NAME) or $(env NAME)")
    kind, rest = parts[0], parts[1:]
    if kind == "var":
        if len(rest) != 1:
            raise _err(ctx.file, fld, f"$(var) takes one name, got {rest}", "write $(var NAME)")
        if rest[0] not in ctx.vars:
            raise _err(ctx.file, fld, f"undefined launch argument '{rest[0]}' in $(var {rest[0]})",
                       f"declare it with '- arg: {{name: {rest[0]}, default: ...}}' or pass {rest[0]}:=VALUE")
        return ctx.vars[rest[0]]
    if kind in ("env", "optenv"):
        if not rest:
            raise _err(ctx.file, fld, "$(env) needs a variable name", "write $(env NAME [default])")
        name = rest[0]
        value = ctx.env.get(name, os.environ.get(name))
        if name in ctx.unset_env:
            value = None
        if value is None:
            if len(rest) > 1:
                return " ".join(rest[1:])
            if kind == "optenv":
                return ""
            raise _err(ctx.file, fld, f"environment variable '{name}' is not set",
                       f"export {name}=... or give a default: $(env {name} DEFAULT)")
        return value
    if kind == "find-pkg-share":
        if len(rest) != 1:
            raise _err(ctx.file, fld, "$(find-pkg-share) takes one package", "write $(find-pkg-share onboard)")
        return str(find_pkg_share(rest[0], ctx.file, fld))
    if kind == "dirname":
        return str(ctx.file.resolve().parent)
    if kind == "filename":
        return str(ctx.file.resolve())
    raise _err(ctx.file, fld, f"unknown substitution $({kind} ...)",
               "use var, env, optenv, find-pkg-share, dirname or filename")


def find_pkg_share(pkg: str, file="<launch>", fld="find-pkg-share") -> Path:
    """The share directory of ``pkg``: this repository for onboard, else an ament prefix."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix and (Path(prefix) / "share" / pkg / "package.xml").is_file():
            if pkg != PACKAGE or (Path(prefix) / "share" / pkg / "launch").is_dir():
                return Path(prefix) / "share" / pkg
    if pkg == PACKAGE:
        return REPO_ROOT
    raise OnboardError(f"package '{pkg}' not found", file=str(file), field=fld,
                       fix="source the ROS 2 workspace that provides it (AMENT_PREFIX_PATH)")


def _truthy(value: str, ctx: _Context, fld: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise _err(ctx.file, fld, f"expected true/false, got {value!r}", "write true or false")


# ---- parsing -------------------------------------------------------------------

TAGS = ("arg", "let", "set_env", "unset_env", "node", "group", "push-ros-namespace",
        "push_ros_namespace", "include", "executable")


def load_launch(path: str | Path, args: dict[str, str] | None = None) -> list[ProcessSpec]:
    """Parse a YAML launch file (and its includes) into the processes it starts."""
    path = Path(path)
    ctx = _Context(path, {}, {}, [])
    procs: list[ProcessSpec] = []
    _run_file(path, ctx, dict(args or {}), procs, top=True, depth=0)
    names = [p.name for p in procs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise OnboardError(f"two processes are named {dup[0]!r}", file=str(path), field="name",
                           fix="give each node/executable a unique name (or namespace)")
    return procs


def read_launch_args(path: str | Path) -> list[dict]:
    """The ``arg`` declarations of a file: [{name, default, description}] (for --show-args)."""
    doc = _read_doc(Path(path))
    return [dict(entry["arg"]) for entry in doc if isinstance(entry, dict) and "arg" in entry
            and isinstance(entry["arg"], dict)]


def _read_doc(path: Path) -> list:
    if not path.is_file():
        raise OnboardError("launch file not found", file=str(path), field="file",
                           fix="check the path (shipped launch files live under launch/)")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(unknown position)"
        raise OnboardError(f"malformed YAML at {where}: {getattr(exc, 'problem', exc)}",
                           file=str(path), field=where, fix="correct the YAML syntax") from exc
    if not isinstance(doc, dict) or "launch" not in doc:
        raise OnboardError("a YAML launch file is a mapping with a top-level 'launch:' list",
                           file=str(path), field="launch", fix="start the file with 'launch:'")
    if len(doc) != 1:
        extra = sorted(k for k in doc if k != "launch")
        raise OnboardError(f"unexpected top-level keys {extra}", file=str(path), field=extra[0],
                           fix="put everything under 'launch:'")
    body = doc["launch"] or []
    if not isinstance(body, list):
        raise OnboardError("'launch' must be a list of tags", file=str(path), field="launch",
                           fix="write each tag as a list item: '- node: {...}'")
    return body


def _run_file(path: Path, ctx: _Context, given: dict, procs: list, top: bool, depth: int) -> None:
    if depth > 20:
        raise OnboardError("include nesting deeper than 20", file=str(path), field="include",
                           fix="remove the include cycle")
    body = _read_doc(path)
    ctx.file = path
    ctx.vars.update(given)   # include args / command-line args are visible before the 'arg' tags
    declared = set()
    for i, entry in enumerate(body):
        _run_tag(entry, ctx, procs, f"launch[{i}]", given, declared, depth)
    if top:
        unknown = sorted(set(given) - declared)
        if unknown:
            raise OnboardError(f"argument {unknown[0]!r} is not declared by this launch file",
                               file=str(path), field=unknown[0],
                               fix=f"use one of {sorted(declared)}")


def _run_tags(entries, ctx, procs, where, given, declared, depth):
    if entries is None:
        return
    if not isinstance(entries, list):
        raise _err(ctx.file, where, "expected a list of tags", "write each child as '- tag: {...}'")
    for i, entry in enumerate(entries):
        _run_tag(entry, ctx, procs, f"{where}[{i}]", given, declared, depth)


def _run_tag(entry, ctx: _Context, procs, where, given, declared, depth):
    if not isinstance(entry, dict) or len(entry) != 1:
        raise _err(ctx.file, where, f"each entry must be one tag ('- node: {{...}}'), got {entry!r}",
                   "write one tag per list item")
    tag, body = next(iter(entry.items()))
    fld = f"{where}.{tag}"
    if tag not in TAGS:
        raise _err(ctx.file, fld, f"unknown tag '{tag}'", f"use one of {list(TAGS)}")
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise _err(ctx.file, fld, f"tag body must be a mapping, got {type(body).__name__}",
                   f"write '- {tag}: {{key: value}}'")
    if "if" in body and not _truthy(substitute(body["if"], ctx, f"{fld}.if"), ctx, f"{fld}.if"):
        return
    if "unless" in body and _truthy(substitute(body["unless"], ctx, f"{fld}.unless"), ctx, f"{fld}.unless"):
        return

    def req(key):
        if key not in body or body[key] is None:
            raise _err(ctx.file, f"{fld}.{key}", f"'{tag}' needs '{key}'", f"add '{key}:' to the {tag}")
        return substitute(body[key], ctx, f"{fld}.{key}")

    def opt(key, default=""):
        return substitute(body[key], ctx, f"{fld}.{key}") if key in body else default

    _check_keys(body, tag, ctx, fld)
    if tag == "arg":
        name = req("name")
        declared.add(name)
        if name in given:
            ctx.vars[name] = given[name]
        elif "default" in body:
            ctx.vars[name] = opt("default")
        elif name not in ctx.vars:
            raise _err(ctx.file, f"{fld}.name", f"launch argument '{name}' is required "
                       f"({body.get('description', 'no description')})", f"pass {name}:=VALUE")
    elif tag == "let":
        ctx.vars[req("name")] = req("value")
    elif tag == "set_env":
        name = req("name")
        ctx.env[name] = req("value")
        if name in ctx.unset_env:
            ctx.unset_env.remove(name)
    elif tag == "unset_env":
        name = req("name")
        ctx.env.pop(name, None)
        ctx.unset_env.append(name)
    elif tag in ("push-ros-namespace", "push_ros_namespace"):
        ctx.namespace = _join_ns(ctx.namespace, req("namespace"))
    elif tag == "group":
        scoped = _truthy(opt("scoped", "true"), ctx, f"{fld}.scoped")
        inner = ctx.child() if scoped else ctx
        if "namespace" in body:
            inner.namespace = _join_ns(inner.namespace, opt("namespace"))
        _run_tags(body.get("children"), inner, procs, f"{fld}.children", given, declared, depth)
    elif tag == "include":
        file = req("file")
        target = Path(file)
        if not target.is_absolute():
            target = ctx.file.resolve().parent / target
        inc_args = {}
        for j, a in enumerate(_as_list(body.get("arg"), ctx, f"{fld}.arg")):
            if not isinstance(a, dict) or "name" not in a or "value" not in a:
                raise _err(ctx.file, f"{fld}.arg[{j}]", "each include arg needs name and value",
                           "write '- {name: x, value: y}'")
            inc_args[substitute(a["name"], ctx, f"{fld}.arg[{j}].name")] = \
                substitute(a["value"], ctx, f"{fld}.arg[{j}].value")
        inner = ctx.child(target)
        _run_file(target, inner, inc_args, procs, top=False, depth=depth + 1)
    elif tag == "executable":
        cmd = shlex.split(req("cmd"))
        if "args" in body:
            cmd += shlex.split(opt("args"))
        name = opt("name", Path(cmd[0]).name if cmd else "executable")
        procs.append(_spec(name, cmd, body, ctx, fld, cwd=opt("cwd", "") or None))
    elif tag == "node":
        procs.append(_node_spec(body, ctx, fld, req, opt))


_KEYS = {
    "arg": {"name", "default", "description", "choices"},
    "let": {"name", "value"},
    "set_env": {"name", "value"},
    "unset_env": {"name"},
    "push-ros-namespace": {"namespace"},
    "push_ros_namespace": {"namespace"},
    "group": {"scoped", "forwarding", "children", "namespace"},
    "include": {"file", "arg"},
    "executable": {"cmd", "args", "name", "cwd", "env", "output", "respawn", "respawn_delay",
                   "shell", "launch-prefix", "sigterm_timeout", "sigkill_timeout"},
    "node": {"pkg", "exec", "name", "namespace", "ros_namespace", "param", "remap", "env", "output",
             "respawn", "respawn_delay", "args", "ros_args", "launch-prefix", "exec_name"},
}


def _check_keys(body: dict, tag: str, ctx: _Context, fld: str) -> None:
    allowed = _KEYS[tag] | {"if", "unless"}
    for key in body:
        if key not in allowed:
            raise _err(ctx.file, f"{fld}.{key}", f"unknown attribute '{key}' for '{tag}'",
                       f"use one of {sorted(allowed)}")


def _as_list(value, ctx, fld) -> list:
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        raise _err(ctx.file, fld, f"expected a list, got {type(value).__name__}", "write a YAML list")
    return value


def _join_ns(base: str, ns: str) -> str:
    if not ns:
        return base
    if ns.startswith("/"):
        return ns.rstrip("/") or "/"
    return (base.rstrip("/") + "/" + ns.strip("/")) if base else "/" + ns.strip("/")


def _spec(name: str, cmd: list[str], body: dict, ctx: _Context, fld: str, cwd=None) -> ProcessSpec:
    if not cmd:
        raise _err(ctx.file, f"{fld}.cmd", "empty command", "give the program to run")
    env = dict(ctx.env)
    for j, e in enumerate(_as_list(body.get("env"), ctx, f"{fld}.env")):
        if not isinstance(e, dict) or "name" not in e or "value" not in e:
            raise _err(ctx.file, f"{fld}.env[{j}]", "each env entry needs name and value",
                       "write '- {name: X, value: Y}'")
        env[substitute(e["name"], ctx, f"{fld}.env[{j}].name")] = substitute(e["value"], ctx, f"{fld}.env[{j}].value")
    output = substitute(body.get("output", "screen"), ctx, f"{fld}.output")
    if output not in ("screen", "log", "both"):
        raise _err(ctx.file, f"{fld}.output", f"unknown output {output!r}", "use screen, log or both")
    respawn = _truthy(substitute(body.get("respawn", "false"), ctx, f"{fld}.respawn"), ctx, f"{fld}.respawn")
    delay_text = substitute(body.get("respawn_delay", "0"), ctx, f"{fld}.respawn_delay")
    try:
        delay = float(delay_text)
    except ValueError:
        raise _err(ctx.file, f"{fld}.respawn_delay", f"not a number: {delay_text!r}", "give seconds") from None
    return ProcessSpec(name=name, cmd=cmd, env=env, unset_env=list(ctx.unset_env), cwd=cwd,
                       output=output, respawn=respawn, respawn_delay_s=max(0.0, delay))


def _node_spec(body: dict, ctx: _Context, fld: str, req, opt) -> ProcessSpec:
    pkg, exe = req("pkg"), req("exec")
    name = opt("name", "")
    ns = _join_ns(ctx.namespace, opt("namespace", opt("ros_namespace", "")))
    cmd = _node_executable(pkg, exe, ctx, fld)
    if "args" in body:
        cmd += shlex.split(opt("args"))
    ros = ["--ros-args"]
    if name:
        ros += ["-r", f"__node:={name}"]
    if ns:
        ros += ["-r", f"__ns:={ns}"]
    for j, p in enumerate(_as_list(body.get("param"), ctx, f"{fld}.param")):
        pf = f"{fld}.param[{j}]"
        if not isinstance(p, dict):
            raise _err(ctx.file, pf, "each param is {name, value} or {from: FILE}", "fix the entry")
        if "from" in p:
            src = Path(substitute(p["from"], ctx, f"{pf}.from"))
            if not src.is_absolute():
                src = ctx.file.resolve().parent / src
            if not src.is_file():
                raise _err(ctx.file, f"{pf}.from", f"params file {src} not found",
                           "fix the path (shipped params live in config/ros/)")
            ros += ["--params-file", str(src)]
        elif "name" in p and "value" in p:
            pname = substitute(p["name"], ctx, f"{pf}.name")
            value = p["value"]
            if isinstance(value, (list, tuple)):
                text = "[" + ", ".join(substitute(v, ctx, f"{pf}.value") for v in value) + "]"
            else:
                text = substitute(value, ctx, f"{pf}.value")
            if text == "":
                text = "''"    # rcl cannot parse 'name:=' (empty); an empty YAML string is what ros2 launch passes
            ros += ["-p", f"{pname}:={text}"]
        else:
            raise _err(ctx.file, pf, "a param needs name and value, or from", "write '- {name: x, value: y}'")
    for j, r in enumerate(_as_list(body.get("remap"), ctx, f"{fld}.remap")):
        if not isinstance(r, dict) or "from" not in r or "to" not in r:
            raise _err(ctx.file, f"{fld}.remap[{j}]", "each remap needs from and to",
                       "write '- {from: /a, to: /b}'")
        ros += ["-r", f"{substitute(r['from'], ctx, fld)}:={substitute(r['to'], ctx, fld)}"]
    if "ros_args" in body:
        ros += shlex.split(opt("ros_args"))
    cmd += ros if len(ros) > 1 else []
    label = (ns.strip("/").replace("/", ".") + "." if ns.strip("/") else "") + (name or exe)
    spec = _spec(label, cmd, body, ctx, fld)
    if pkg == PACKAGE:
        # nodes of this package run from the source tree even without `pip install -e`
        pp = spec.env.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
        spec.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), pp) if p)
        spec.env.setdefault("PYTHONUNBUFFERED", "1")
    return spec


def _node_executable(pkg: str, exe: str, ctx: _Context, fld: str) -> list[str]:
    if pkg == PACKAGE:
        if exe not in ONBOARD_EXECUTABLES:
            raise _err(ctx.file, f"{fld}.exec", f"package onboard has no executable '{exe}'",
                       f"use one of {sorted(ONBOARD_EXECUTABLES)}")
        return [sys.executable, "-m", ONBOARD_EXECUTABLES[exe]]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        cand = Path(prefix) / "lib" / pkg / exe
        if prefix and cand.is_file() and os.access(cand, os.X_OK):
            return [str(cand)]
    raise _err(ctx.file, f"{fld}.pkg", f"executable '{exe}' of package '{pkg}' not found",
               "source the ROS 2 workspace that provides it, or use an 'executable' tag")


# ---- supervision ---------------------------------------------------------------

class Supervisor:
    """Start processes, prefix their output, stop them all together."""

    def __init__(self, specs: list[ProcessSpec], *, out=None, log_dir: Path | None = None):
        self.specs = specs
        self.out = out or sys.stdout
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stop_reason: str | None = None

    def say(self, text: str) -> None:
        with self._lock:
            self.out.write(text if text.endswith("\n") else text + "\n")
            self.out.flush()

    def _env(self, spec: ProcessSpec) -> dict:
        env = dict(os.environ)
        for k in spec.unset_env:
            env.pop(k, None)
        env.update(spec.env)
        return env

    def start(self, spec: ProcessSpec) -> None:
        try:
            proc = subprocess.Popen(spec.cmd, env=self._env(spec), cwd=spec.cwd, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)   # own process group: signals go to its children too
        except OSError as exc:
            raise OnboardError(f"cannot start {spec.cmd[0]!r}: {exc}", field=spec.name,
                               fix="check the command and PATH") from exc
        self.procs[spec.name] = proc
        self.say(f"[launch] started [{spec.name}] pid {proc.pid}: {shlex.join(spec.cmd)}")
        t = threading.Thread(target=self._pump, args=(spec, proc), daemon=True)
        t.start()
        self._threads.append(t)

    def _pump(self, spec: ProcessSpec, proc: subprocess.Popen) -> None:
        log = None
        if spec.output in ("log", "both") and self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = open(self.log_dir / f"{spec.name}.log", "a")
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            if spec.output in ("screen", "both") or log is None:
                self.say(f"[{spec.name}] {line}")
            if log is not None:
                log.write(line + "\n")
                log.flush()
        proc.stdout.close()
        if log is not None:
            log.close()

    def request_stop(self, reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason

    def run(self, poll_s: float = 0.05) -> int:
        """Run until every process ends, one crashes, or a stop is requested. Returns the exit code."""
        old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, lambda s, _f: self.request_stop(signal.Signals(s).name))
        code = 0
        try:
            for spec in self.specs:
                self.start(spec)
            pending_respawn: dict[str, float] = {}
            while self._stop_reason is None:
                running = 0
                for spec in self.specs:
                    if spec.name in pending_respawn:
                        if time.monotonic() >= pending_respawn[spec.name]:
                            del pending_respawn[spec.name]
                            self.start(spec)
                        running += 1
                        continue
                    rc = self.procs[spec.name].poll()
                    if rc is None:
                        running += 1
                        continue
                    if spec.respawn:
                        self.say(f"[launch] [{spec.name}] exited with code {rc}; respawning in "
                                 f"{spec.respawn_delay_s:g} s")
                        pending_respawn[spec.name] = time.monotonic() + spec.respawn_delay_s
                        running += 1
                    elif rc != 0:
                        self.say(f"[launch] [{spec.name}] died with exit code {rc}; shutting down the launch")
                        self.request_stop(f"{spec.name} died")
                        code = 1
                        break
                    elif not getattr(self.procs[spec.name], "_onboard_reported", False):
                        self.procs[spec.name]._onboard_reported = True
                        self.say(f"[launch] [{spec.name}] finished cleanly")
                if self._stop_reason is None and running == 0:
                    break
                time.sleep(poll_s)
            if self._stop_reason and code == 0:
                self.say(f"[launch] {self._stop_reason}: shutting down")
        finally:
            self.shutdown()
            for sig, h in old.items():
                signal.signal(sig, h)
        return code

    def shutdown(self) -> None:
        """SIGINT, then SIGTERM, then SIGKILL to every live process group; within 5 s."""
        for sig, wait_s in ((signal.SIGINT, SHUTDOWN_SIGINT_S), (signal.SIGTERM, SHUTDOWN_SIGTERM_S),
                            (signal.SIGKILL, 1.0)):
            live = [p for p in self.procs.values() if p.poll() is None or _group_alive(p.pid)]
            if not live:
                break
            if sig != signal.SIGINT:
                self.say(f"[launch] escalating to {sig.name} for pids {[p.pid for p in live]}")
            for p in live:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if all(p.poll() is not None and not _group_alive(p.pid) for p in live):
                    break
                time.sleep(0.02)
        for t in self._threads:
            t.join(timeout=0.5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def run_launch(path: str | Path, args: dict[str, str] | None = None, *, out=None) -> int:
    specs = load_launch(path, args)
    if not specs:
        raise OnboardError("the launch file starts no processes", file=str(path), field="launch",
                           fix="add a node or executable (check if/unless conditions)")
    log_dir = Path(os.environ.get("ROS_LOG_DIR", REPO_ROOT / "runs" / "ros_log")) / "launch"
    return Supervisor(specs, out=out, log_dir=log_dir).run()


def parse_cli_args(items: list[str]) -> dict[str, str]:
    """``name:=value`` pairs from the command line."""
    out = {}
    for item in items:
        if ":=" not in item:
            raise OnboardError(f"launch argument {item!r} is not name:=value", field=item,
                               fix="write arguments as name:=value")
        k, v = item.split(":=", 1)
        if not k:
            raise OnboardError(f"launch argument {item!r} has no name", field=item, fix="write name:=value")
        out[k] = v
    return out

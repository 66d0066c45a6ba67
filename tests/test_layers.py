"""The layer rules of DESIGN §2 hold in the source: imports go down, never up."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# onboard.errors / config / paths are the foundation every layer may use (stdlib + yaml only).
LAYER = {"onboard.errors": 0, "onboard.config": 0, "onboard.paths": 0, "calibration": 1, "onboard.spec": 2,
         "sim": 3, "sim2real": 4, "policies": 5, "ros_nodes": 6, "onboard": 7}


def _layer_of(module: str) -> int | None:
    best = None
    for prefix, layer in LAYER.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    return None if best is None else best[1]


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _sources():
    for pkg in ("calibration", "onboard", "sim", "sim2real", "policies", "ros_nodes"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            mod = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            yield f, mod


@pytest.mark.parametrize("path,module", list(_sources()), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_imports_only_go_down_the_layers(path, module):
    own = _layer_of(module)
    for imp in _imports(path):
        other = _layer_of(imp)
        if other is None:
            if imp.split(".")[0] == "rclpy" or imp.split(".")[0].endswith("_msgs") or imp.split(".")[0] == "std_srvs":
                assert own >= 6, f"{module} imports {imp}: only ros_nodes (and the CLI) may import rclpy"
            continue
        assert other <= own, f"{module} (layer {own}) imports {imp} (layer {other}): imports must go down"


def test_calibration_uses_only_numpy_and_cv2():
    allowed = {"numpy", "cv2", "yaml", "onboard", "calibration", "matplotlib", "__future__"}
    for f in (ROOT / "calibration").rglob("*.py"):
        for imp in _imports(f):
            top = imp.split(".")[0]
            if top in allowed or top in __import__("sys").stdlib_module_names:
                continue
            raise AssertionError(f"{f}: imports {imp}; calibration may use numpy and cv2 only")


def test_robot_path_never_imports_torch():
    for rel in ("policies/runtime.py", "policies/sampler.py", "policies/artifact.py", "sim2real/safety.py"):
        f = ROOT / rel
        if f.exists():
            assert not any(i.split(".")[0] == "torch" for i in _imports(f)), f"{rel} imports torch"

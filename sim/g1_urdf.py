"""URDF text of the G1 12-DoF legs, generated from the same description as the MuJoCo model.

Owns ``g1_urdf(desc) -> str`` and ``write_g1_urdf(path)``: one link per body
(inertial at the CoM with the full inertia tensor rotated out of the
principal frame, so that URDF's rpy-less form says exactly what MuJoCo's
``iquat`` says), one revolute joint per hinge (axis, range, torque limit;
velocity limits from the robot profile), the pelvis cylinders and the foot
contact spheres as collision + visual primitives, and optionally the leg
collision hulls of ``sim.g1_model.LEG_HULLS`` (``leg_hulls=True``). PyBullet loads it as a
floating-base robot; ``sim.g1_model`` builds the MuJoCo twin from the same
``G1Description``.

URDF has no joint armature (the reflected rotor inertia, 0.01 kg m^2 per joint
in the description). ``fold_armature=True`` adds it to each child link's inertia
about its joint axis (``armature * a a^T``), for simulators without armature
(PyBullet): the joint's own inertia then matches MuJoCo's exactly; only the
couplings between joints with parallel axes (hip pitch, knee, ankle pitch) are
over-counted, by at most the armature. Those tensors are written in their
principal frames; on the light links they break the rigid-body triangle
inequality, which a reflected rotor inertia may, and a loader that checks it
(PyBullet) needs them set again after loading (``sim.g1_pybullet``).

Imports numpy and sim.g1_model only. Never sim2real or policies.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from sim.g1_model import G1Description, leg_hull, load_description

# URDF <limit velocity>: the robot profile's figures (public G1 URDF), by joint kind.
VELOCITY_LIMIT_RAD_S = {"hip_pitch": 32.0, "hip_roll": 20.0, "hip_yaw": 32.0, "knee": 20.0,
                        "ankle_pitch": 37.0, "ankle_roll": 37.0}


def quat_to_matrix(q) -> np.ndarray:
    w, x, y, z = np.asarray(q, float) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def quat_to_rpy(q) -> np.ndarray:
    """wxyz -> URDF fixed-axis roll, pitch, yaw (R = Rz(yaw) Ry(pitch) Rx(roll))."""
    return matrix_to_rpy(quat_to_matrix(q))


def matrix_to_rpy(R) -> np.ndarray:
    """Rotation matrix -> URDF fixed-axis roll, pitch, yaw."""
    R = np.asarray(R, float)
    pitch = np.arcsin(-np.clip(R[2, 0], -1.0, 1.0))
    roll = np.arctan2(R[2, 1], R[2, 2])
    yaw = np.arctan2(R[1, 0], R[0, 0])
    return np.array([roll, pitch, yaw])


def _f(v) -> str:
    return " ".join(f"{float(x):.9g}" for x in np.atleast_1d(v))


def _geom_xml(g: dict) -> str:
    if g["type"] == "sphere":
        shape = f'<sphere radius="{_f(g["size"][0])}"/>'
    elif g["type"] == "cylinder":
        shape = f'<cylinder radius="{_f(g["size"][0])}" length="{_f(2 * g["size"][1])}"/>'
    elif g["type"] == "box":
        shape = f'<box size="{_f(2 * np.asarray(g["size"]))}"/>'
    else:
        raise ValueError(f"URDF has no primitive for {g['type']!r}")
    origin = f'<origin xyz="{_f(g["pos"])}" rpy="0 0 0"/>'
    return (f"    <visual>{origin}<geometry>{shape}</geometry></visual>\n"
            f"    <collision>{origin}<geometry>{shape}</geometry></collision>\n")


def _hull_xml(desc: G1Description, body) -> str:
    """The leg collision hull of ``body`` (``sim.g1_model.leg_hull``, same shapes and sizes as the MuJoCo
    twin) as a collision-only element, or "" when the link has none. A capsule runs from the link origin to
    its child's joint: URDF capsules lie along the z axis of their origin, ``length`` is the cylinder part."""
    kind = leg_hull(body.name)
    if kind is None:
        return ""
    if kind[0] == "capsule":
        d = next(c for c in desc.bodies if c.parent == body.name).pos
        z = d / np.linalg.norm(d)
        x = np.cross([0.0, 1.0, 0.0], z)
        x /= np.linalg.norm(x)
        R = np.column_stack([x, np.cross(z, x), z])
        origin = f'<origin xyz="{_f(d / 2)}" rpy="{_f(matrix_to_rpy(R))}"/>'
        shape = f'<capsule radius="{_f(kind[1])}" length="{_f(np.linalg.norm(d))}"/>'
    else:
        origin = f'<origin xyz="{_f(kind[2])}" rpy="0 0 0"/>'
        shape = f'<box size="{_f(2 * np.asarray(kind[1]))}"/>'
    return f"    <collision>{origin}<geometry>{shape}</geometry></collision>\n"


def link_inertia(desc: G1Description, body, fold_armature: bool = False) -> np.ndarray:
    """(3, 3) inertia tensor about the CoM in the link frame; plus ``armature * a a^T`` about the joint axis
    ``a`` (the joint frame is the child link's frame) with ``fold_armature``."""
    R = quat_to_matrix(body.iquat)
    inertia = R @ np.diag(body.inertia) @ R.T
    if fold_armature and body.joint is not None:
        a = np.asarray(body.axis, float) / np.linalg.norm(body.axis)
        inertia = inertia + desc.armature * np.outer(a, a)
    return inertia


def principal_axes(inertia) -> tuple[np.ndarray, np.ndarray]:
    """(R, moments): inertia = R diag(moments) R^T with R a proper rotation."""
    moments, R = np.linalg.eigh(np.asarray(inertia, float))
    if np.linalg.det(R) < 0:
        R[:, 2] = -R[:, 2]
    return R, moments


def g1_urdf(desc: G1Description | None = None, name: str = "g1_12dof", fold_armature: bool = False,
            leg_hulls: bool = False) -> str:
    """``leg_hulls``: add the leg collision hulls (collision only; a loader must keep them off the floor and
    their own leg, as ``sim.g1_pybullet.load_g1`` does)."""
    desc = desc or load_description()
    out = ['<?xml version="1.0"?>', f'<robot name="{name}">']
    for b in desc.bodies:
        inertia = link_inertia(desc, b, fold_armature)
        rpy = np.zeros(3)
        if fold_armature and b.joint is not None:
            # principal frame and moments, written diagonal: the folded moments break the rigid-body
            # triangle inequality on light links, and a diagonal tensor keeps the frame as written
            R, moments = principal_axes(inertia)
            rpy, inertia = matrix_to_rpy(R), np.diag(moments)
        out.append(f'  <link name="{b.name}">')
        out.append(f'    <inertial><origin xyz="{_f(b.com_m)}" rpy="{_f(rpy)}"/><mass value="{_f(b.mass_kg)}"/>'
                   f'<inertia ixx="{_f(inertia[0, 0])}" ixy="{_f(inertia[0, 1])}" ixz="{_f(inertia[0, 2])}" '
                   f'iyy="{_f(inertia[1, 1])}" iyz="{_f(inertia[1, 2])}" izz="{_f(inertia[2, 2])}"/></inertial>')
        out.append(("".join(_geom_xml(g) for g in b.geoms) + (_hull_xml(desc, b) if leg_hulls else "")).rstrip("\n"))
        out.append("  </link>")
        if b.joint is None:
            continue
        kind = next(k for k in VELOCITY_LIMIT_RAD_S if k + "_joint" in b.joint)
        out.append(f'  <joint name="{b.joint}" type="revolute">'
                   f'<origin xyz="{_f(b.pos)}" rpy="{_f(quat_to_rpy(b.quat))}"/>'
                   f'<parent link="{b.parent}"/><child link="{b.name}"/><axis xyz="{_f(b.axis)}"/>'
                   f'<limit lower="{_f(b.range_rad[0])}" upper="{_f(b.range_rad[1])}" '
                   f'effort="{_f(b.torque_limit_nm)}" velocity="{_f(VELOCITY_LIMIT_RAD_S[kind])}"/>'
                   f'<dynamics damping="{_f(desc.damping)}" friction="{_f(desc.frictionloss)}"/></joint>')
    out.append("</robot>")
    return "\n".join(line for line in out if line) + "\n"


def write_g1_urdf(path: str | Path, desc: G1Description | None = None, fold_armature: bool = False,
                  leg_hulls: bool = False) -> Path:
    """Write the URDF atomically (temp file + rename); ``fold_armature``: see the module docstring."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".urdf.tmp")
    with os.fdopen(fd, "w") as f:
        f.write(g1_urdf(desc, fold_armature=fold_armature, leg_hulls=leg_hulls))
    os.replace(tmp, path)
    return path

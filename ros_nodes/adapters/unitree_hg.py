"""unitree_hg adapter (Unitree G1): ``LowState`` -> the onboard humanoid state, ``LegCommand`` -> ``LowCmd``.

Mapping (plain functions, unit-tested without ROS or unitree_hg; messages are
duck-typed, so the tests use named fakes):

- Motor indices (G1 29-DoF, PR mode ``mode_pr = 0``): 0-5 left hip pitch, hip
  roll, hip yaw, knee, ankle pitch, ankle roll; 6-11 the right leg in the same
  order (= the ``g1_12dof`` profile's joint order); 12-14 waist; 15-28 arms;
  29-34 unused. The 12-DoF policy drives 0-11; every other used motor is
  held at ``upper_body_pose`` with ``upper_body_kp``/``kd`` (the model treats
  the upper body as rigid on the pelvis, so the robot must hold it stiff).
- ``LowCmd``: ``mode_machine`` is echoed from the latest ``LowState`` (the
  firmware drops frames whose value differs); ``motor_cmd[i].mode = 1``
  (enable) on every commanded motor; ``dq = tau = 0`` (pure PD).
- CRC: the unitree_sdk2 layout of ``hg LowCmd_`` as little-endian words:
  ``'<2B2x' + 'B3x5fI' * 35 + '5I'`` (1004 bytes = 251 words), CRC-32 with
  polynomial 0x04C11DB7, init 0xFFFFFFFF, MSB first per 32-bit word, no
  reflection, no final xor, over the first 250 words; the last word is the
  CRC itself (figures from the public unitree_sdk2 / unitree_sdk2_python).
- ``LowState``: ``motor_state[i].q``/``dq`` for i in 0-11, ``imu_state.rpy``,
  ``imu_state.gyroscope`` (body rad/s), ``imu_state.quaternion`` (w, x, y, z).

The ROS node that would publish/subscribe ``/lowcmd``/``/lowstate`` needs
``unitree_hg`` (not on PyPI); ``available()`` says whether it imports.
Imports numpy and the standard library only.
"""
from __future__ import annotations

import importlib.util
import struct

import numpy as np

N_MOTORS = 35
N_LEGS = 12
N_USED = 29
LOW_CMD_FORMAT = "<2B2x" + "B3x5fI" * N_MOTORS + "5I"
LOW_CMD_WORDS = struct.calcsize(LOW_CMD_FORMAT) // 4          # 251
CRC_POLYNOMIAL = 0x04C11DB7


def available() -> bool:
    return importlib.util.find_spec("unitree_hg") is not None


def crc32_words(words) -> int:
    """Unitree's crc32_core: MSB-first CRC-32 (0x04C11DB7, init 0xFFFFFFFF) over 32-bit words."""
    crc = 0xFFFFFFFF
    for w in words:
        w = int(w) & 0xFFFFFFFF
        for bit in range(31, -1, -1):
            feedback = ((crc >> 31) ^ (w >> bit)) & 1
            crc = (crc << 1) & 0xFFFFFFFF
            if feedback:
                crc ^= CRC_POLYNOMIAL
    return crc


def motor_commands(q_target, kp, kd, *, upper_body_pose=None, upper_body_kp: float = 100.0,
                   upper_body_kd: float = 2.0) -> np.ndarray:
    """(35, 6) rows of (mode, q, dq, tau, kp, kd): legs from the command, upper body held, rest off."""
    rows = np.zeros((N_MOTORS, 6))
    rows[:N_LEGS, 0] = 1.0
    rows[:N_LEGS, 1] = np.asarray(q_target, float)
    rows[:N_LEGS, 4] = np.asarray(kp, float)
    rows[:N_LEGS, 5] = np.asarray(kd, float)
    hold = np.zeros(N_USED - N_LEGS) if upper_body_pose is None else np.asarray(upper_body_pose, float)
    rows[N_LEGS:N_USED, 0] = 1.0
    rows[N_LEGS:N_USED, 1] = hold
    rows[N_LEGS:N_USED, 4] = upper_body_kp
    rows[N_LEGS:N_USED, 5] = upper_body_kd
    if not np.all(np.isfinite(rows)):
        raise ValueError("non-finite motor command: never put it on the wire")
    return rows


def pack_low_cmd(mode_pr: int, mode_machine: int, rows: np.ndarray, crc: int = 0) -> bytes:
    """The 1004-byte wire image of ``hg LowCmd_`` (reserve words zero)."""
    fields = [int(mode_pr), int(mode_machine)]
    for r in rows:
        fields += [int(r[0]), *(float(x) for x in r[1:6]), 0]
    fields += [0, 0, 0, 0, int(crc)]
    return struct.pack(LOW_CMD_FORMAT, *fields)


def low_cmd_crc(mode_pr: int, mode_machine: int, rows: np.ndarray) -> int:
    words = struct.unpack(f"<{LOW_CMD_WORDS}I", pack_low_cmd(mode_pr, mode_machine, rows))
    return crc32_words(words[:-1])


def fill_low_cmd(msg, leg_command, mode_machine: int, **hold) -> None:
    """Write a ``LegCommand`` (q_target, kp, kd) into a ``LowCmd`` message (duck-typed) with its CRC."""
    rows = motor_commands(leg_command.q_target, leg_command.kp, leg_command.kd, **hold)
    msg.mode_pr = 0
    msg.mode_machine = int(mode_machine)
    for i, r in enumerate(rows):
        m = msg.motor_cmd[i]
        m.mode, m.q, m.dq, m.tau, m.kp, m.kd = int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), \
            float(r[5])
    msg.crc = low_cmd_crc(0, mode_machine, rows)


def state_from_low_state(msg) -> dict:
    """``LowState`` (duck-typed) -> {"q", "dq", "rpy", "gyro", "quat"} for the supervisor / safety filter."""
    motors = msg.motor_state
    imu = msg.imu_state
    return {"q": np.array([motors[i].q for i in range(N_LEGS)], float),
            "dq": np.array([motors[i].dq for i in range(N_LEGS)], float),
            "rpy": np.asarray(imu.rpy, float), "gyro": np.asarray(imu.gyroscope, float),
            "quat": np.asarray(imu.quaternion, float), "mode_machine": int(msg.mode_machine)}

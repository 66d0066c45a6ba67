"""unitree_hg mapping as plain functions (FakeLowCmd / FakeLowState stand in for the vendor messages)."""
import struct
from types import SimpleNamespace

import numpy as np
import pytest

from ros_nodes.adapters.unitree_hg import (LOW_CMD_FORMAT, crc32_words, fill_low_cmd, low_cmd_crc, motor_commands,
                                           pack_low_cmd, state_from_low_state)
from sim2real.humanoid_supervisor import LegCommand


def _crc32_mpeg2_bytes(data: bytes) -> int:
    """Independent reference: textbook byte-wise CRC-32/MPEG-2."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
            crc &= 0xFFFFFFFF
    return crc


def test_reference_crc_has_the_published_check_value():
    assert _crc32_mpeg2_bytes(b"123456789") == 0x0376E6E7


def test_word_crc_equals_crc32_mpeg2_over_big_endian_words():
    rng = np.random.default_rng(0)
    for n in (1, 2, 17, 250):
        words = rng.integers(0, 2**32, n, dtype=np.uint64)
        be = b"".join(int(w).to_bytes(4, "big") for w in words)
        assert crc32_words(words) == _crc32_mpeg2_bytes(be)


def test_low_cmd_wire_image_is_1004_bytes_and_the_crc_covers_all_but_the_last_word():
    assert struct.calcsize(LOW_CMD_FORMAT) == 1004
    rows = motor_commands(np.full(12, 0.1), np.full(12, 100.0), np.full(12, 2.0))
    crc = low_cmd_crc(0, 7, rows)
    img = pack_low_cmd(0, 7, rows, crc)
    words = struct.unpack("<251I", img)
    assert words[-1] == crc and crc32_words(words[:-1]) == crc
    rows2 = rows.copy()
    rows2[3, 1] += 1e-3   # any change to a knee target changes the CRC
    assert low_cmd_crc(0, 7, rows2) != crc
    assert low_cmd_crc(0, 8, rows) != crc   # mode_machine is covered


def test_legs_map_to_motors_0_to_11_upper_body_held_and_unused_slots_off():
    q = np.arange(12) * 0.01
    rows = motor_commands(q, np.full(12, 40.0), np.full(12, 1.0), upper_body_kp=120.0, upper_body_kd=3.0)
    assert np.allclose(rows[:12, 1], q) and np.all(rows[:12, 0] == 1)
    assert np.all(rows[12:29, 4] == 120.0) and np.all(rows[12:29, 0] == 1) and np.allclose(rows[12:29, 1], 0)
    assert not rows[29:].any()
    assert not rows[:, 2:4].any()   # pure PD: dq = tau = 0
    with pytest.raises(ValueError):
        motor_commands(np.full(12, np.nan), np.ones(12), np.ones(12))


def test_fill_low_cmd_writes_every_field_and_a_valid_crc_into_a_fake_message():
    fake = SimpleNamespace(mode_pr=9, mode_machine=0, crc=0,
                           motor_cmd=[SimpleNamespace(mode=0, q=0.0, dq=0.0, tau=0.0, kp=0.0, kd=0.0) for _ in range(35)])
    cmd = LegCommand(np.full(12, 0.2), np.full(12, 100.0), np.full(12, 2.0), "ACTIVE")
    fill_low_cmd(fake, cmd, mode_machine=5)
    assert fake.mode_pr == 0 and fake.mode_machine == 5
    assert fake.motor_cmd[4].q == pytest.approx(0.2) and fake.motor_cmd[4].mode == 1
    rows = np.array([[m.mode, m.q, m.dq, m.tau, m.kp, m.kd] for m in fake.motor_cmd])
    assert fake.crc == low_cmd_crc(0, 5, rows)


def test_damping_command_goes_out_with_zero_kp():
    fake = SimpleNamespace(mode_pr=0, mode_machine=0, crc=0,
                           motor_cmd=[SimpleNamespace(mode=0, q=0.0, dq=0.0, tau=0.0, kp=0.0, kd=0.0) for _ in range(35)])
    fill_low_cmd(fake, LegCommand(np.zeros(12), np.zeros(12), np.full(12, 2.0), "DAMPING"), mode_machine=1)
    assert all(fake.motor_cmd[i].kp == 0.0 and fake.motor_cmd[i].kd == 2.0 for i in range(12))


def test_low_state_maps_to_the_supervisor_state():
    fake = SimpleNamespace(mode_machine=3,
                           motor_state=[SimpleNamespace(q=0.01 * i, dq=-0.01 * i) for i in range(35)],
                           imu_state=SimpleNamespace(rpy=[0.1, -0.2, 0.3], gyroscope=[0.0, 0.5, 0.0],
                                                     quaternion=[1.0, 0.0, 0.0, 0.0]))
    st = state_from_low_state(fake)
    assert st["q"].shape == (12,) and st["q"][11] == pytest.approx(0.11) and st["dq"][1] == pytest.approx(-0.01)
    assert np.allclose(st["rpy"], [0.1, -0.2, 0.3]) and st["mode_machine"] == 3

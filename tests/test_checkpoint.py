"""Checkpoint files: atomic writes, and reads that name the file and the command that writes the right one."""
from __future__ import annotations

import pytest

from onboard.errors import OnboardError
from policies.checkpoint import checkpoint_kind, read_checkpoint, save_checkpoint_atomic


def test_a_checkpoint_round_trips_and_declares_its_kind(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint_atomic(path, {"kind": "vla", "step": 3})
    assert read_checkpoint(path, kind="vla", what="VLA", command="onboard train --policy vla")["step"] == 3
    assert checkpoint_kind(path) == "vla" and not (tmp_path / "checkpoint.pt.tmp").exists()


@pytest.mark.parametrize("content", [None, b"\x00garbage" * 20, "foreign"])
def test_a_missing_corrupt_or_foreign_checkpoint_is_refused_naming_file_and_command(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    if content == "foreign":
        save_checkpoint_atomic(path, {"kind": "diffusion"})
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(OnboardError) as e:
        read_checkpoint(path, kind="vla", what="VLA", command="onboard train --policy vla")
    msg = str(e.value)
    assert str(path) in msg and "onboard train --policy vla" in msg
    assert checkpoint_kind(path) == ("diffusion" if content == "foreign" else None)

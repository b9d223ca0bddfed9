"""A file that is not a usable checkpoint gets one line in the user's words: the file, what it
is, and what was expected, never PyTorch's own paragraph cut mid-sentence."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from echoedge.cli import main as cli_main
from echoedge.errors import CheckpointError
from echoedge.model.checkpoint import EXPECTED, SHIPPED, read_payload

torch = pytest.importorskip("torch")


class NotPlain:  # any class outside torch's weights_only allow-list
    pass


def _one_line(path: Path) -> str:
    with pytest.raises(CheckpointError) as e:
        read_payload(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: not an echo-edge checkpoint (")
    assert msg.endswith(EXPECTED) and "miniz" not in msg and "weights_only" not in msg
    return msg


def test_truncated_checkpoint_says_truncated(tmp_path: Path):
    cut = tmp_path / "cut.pt"
    data = SHIPPED.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # a copy interrupted half-way
    assert f"(truncated or damaged zip archive, {len(data) // 2} bytes)" in _one_line(cut)


@pytest.mark.parametrize("name, content, kind", [
    ("random.pt", bytes(range(256)) * 8, "unrecognised content, 2048 bytes"),
    ("empty.pt", b"", "empty file"),
    ("object.pt", pickle.dumps({"x": NotPlain()}), "a pickle holding objects other than tensors"),
])
def test_foreign_files_say_what_they_are(tmp_path: Path, name: str, content: bytes, kind: str):
    (tmp_path / name).write_bytes(content)
    assert kind in _one_line(tmp_path / name)


def test_torch_files_of_other_programs_are_named_as_such(tmp_path: Path):
    torch.save({"v": torch.__version__}, tmp_path / "refused.pt")  # TorchVersion: refused on load
    assert "a PyTorch file holding objects other than tensors" in _one_line(tmp_path / "refused.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "foreign.pt")  # loads, but is not ours
    assert "without echo-edge's format marker" in _one_line(tmp_path / "foreign.pt")


def test_cli_prints_the_truncated_checkpoint_line(tmp_path: Path, synth_root: Path, capsys):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(SHIPPED.read_bytes()[:1000])
    rc = cli_main(["evaluate", "--checkpoint", str(cut), "--data", str(synth_root)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0] == (f"echo-edge: error: {cut}: not an echo-edge checkpoint (truncated or damaged zip "
                      f"archive, 1000 bytes); {EXPECTED}")

"""`echo-edge explore`: Model Explorer node-data overlays on real tiny artefacts.

The fragile 2D network of conftest.py (conv1 -> conv2 -> conv3; conv2 wrecked by int8 on purpose)
is converted to ExecuTorch int8 and TFLite int8, and swept by debug-quant's own sensitivity code;
its result is written as debug_quant.json, the file `echo-edge debug-quant` writes. The overlays
must be valid node data (the documented format, `model_explorer.node_data_builder`), keyed by
ids that Model Explorer's adapters produce for the same files, and carry debug-quant's figures.
With the optional package and chromium present, the view is served and rendered headless.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("executorch")

from echoedge.cli import main as cli_main  # noqa: E402
from echoedge.data.clipspec import ClipSpec  # noqa: E402
from echoedge.quantdebug.explore import explore  # noqa: E402
from echoedge.quantdebug.explore_nodes import read_graph  # noqa: E402

SPEC = ClipSpec(frames=4, height=16, width=16)
SHA = "a" * 64


@dataclass
class FakeCalibration:
    clips: np.ndarray
    id: str = "calib-explore-test"
    manifest: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def job(tmp_path_factory, synth_root, fragile_model):
    """The fragile network, its ExecuTorch int8 artefact and a debug-quant result folder."""
    from echoedge.convert.executorch import export_executorch
    from echoedge.quantdebug.output import SCHEMA, SCHEMA_VERSION, write_json
    from echoedge.quantdebug.sensitivity import sensitivity_sweep
    from echoedge.quantdebug.simulate import ef_per_video, load_videos

    root = tmp_path_factory.mktemp("explore")
    model = fragile_model()
    clips = np.random.default_rng(1).standard_normal((8, *SPEC.input_shape(1)[1:])).astype(np.float32)
    et = export_executorch(model, SPEC, root / "executorch-int8", "int8", FakeCalibration(clips), SHA,
                           progress=False)
    videos = load_videos(synth_root, SPEC, "VAL", videos=3, clips_per_video=1)
    res = sensitivity_sweep(model, videos, clips, "executorch", "int8", "all-but",
                            ef_reference=ef_per_video(model, videos))
    dq_dir = root / "dq"
    dq_dir.mkdir()
    # what quantdebug.parts.run_sensitivity puts in debug_quant.json
    dq = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "checkpoint": "", "checkpoint_sha256": SHA,
          "sensitivity": [{"family": "int8", "formats": ["executorch", "tflite"], **res.to_dict()}],
          "attribution": []}
    write_json(dq, dq_dir / "debug_quant.json")
    return {"root": root, "model": model, "clips": clips, "et": et, "dq": dq_dir, "sweep": res}


@pytest.fixture(scope="module")
def tflite_art(job):
    pytest.importorskip("onnx2tf")
    pytest.importorskip("ai_edge_litert")
    from echoedge.convert.tflite import export_tflite

    return export_tflite(job["model"], SPEC, job["root"] / "tflite-int8", "int8",
                         FakeCalibration(job["clips"]), SHA, progress=False)


def _valid_node_data(data: dict) -> None:
    """The documented ModelNodeData shape: graph id -> {name, results: {node id: {value, ...}}}."""
    assert data and all(isinstance(g, str) for g in data)
    for gd in data.values():
        assert isinstance(gd["name"], str) and gd["results"]
        for nid, r in gd["results"].items():
            assert isinstance(nid, str) and set(r) <= {"value", "bgColor", "textColor"}
            assert isinstance(r["value"], (int, float, str))
        for g in gd.get("gradient", []):
            assert 0 <= g["stop"] <= 1 and "bgColor" in g


def _adapter_ids(path: Path) -> set[tuple[str, str]]:
    """(graph id, node id) of every node Model Explorer's own adapter draws for `path`."""
    pytest.importorskip("model_explorer")
    from model_explorer.utils import convert_adapter_response

    if path.suffix == ".pte":
        pytest.importorskip("pte_adapter_model_explorer")
        from pte_adapter_model_explorer.main import PTEAdapter as Adapter
    else:
        from model_explorer.builtin_tflite_flatbuffer_adapter import BuiltinTfliteFlatbufferAdapter as Adapter
    resp = convert_adapter_response(Adapter().convert(str(path), {"const_element_count_limit": 16}))
    return {(g["id"], n["id"]) for gc in resp["graphCollections"] for g in gc["graphs"] for n in g["nodes"]}


def _check(res, art: Path, job: dict, fmt: str) -> dict:
    dtype = json.loads(res.files["dtype"].read_text())
    sens = json.loads(res.files["sensitivity"].read_text())
    _valid_node_data(dtype)
    _valid_node_data(sens)
    ids = _adapter_ids(art / ("model.pte" if fmt == "executorch" else "model.tflite"))
    for data in (dtype, sens):
        keys = {(g, n) for g, gd in data.items() for n in gd["results"]}
        assert keys <= ids, sorted(keys - ids)[:5]
    # Every swept layer found, each of its nodes carrying debug-quant's own figure for it.
    effects = {u.unit: u.effect for u in job["sweep"].units}
    assert sorted(res.summary["sensitivity"]["units_mapped"]) == ["conv1", "conv2", "conv3"]
    assert res.summary["sensitivity"]["conv_nodes_unmatched"] == 0
    values = sorted(r["value"] for gd in sens.values() for r in gd["results"].values())
    assert values == sorted(effects.values())
    # The fragile layer is the hottest node, and it is an int8 conv.
    g, gd = next((g, gd) for g, gd in sens.items() if any(r["value"] == effects["conv2"]
                                                         for r in gd["results"].values()))
    nid = next(n for n, r in gd["results"].items() if r["value"] == effects["conv2"])
    assert dtype[g]["results"][nid]["value"] == "int8"
    return dtype


def test_pte_overlays_attach_to_the_adapters_nodes(job, tmp_path):
    res = explore(job["et"], job["dq"], tmp_path / "out", deploy=job["model"], runs=3)
    _check(res, job["et"], job, "executorch")
    lat = json.loads(res.files["latency"].read_text())
    _valid_node_data(lat)
    keys = {(g, n) for g, gd in lat.items() for n in gd["results"]}
    assert keys <= _adapter_ids(job["et"] / "model.pte")
    # every top-level instruction timed, and the convs inside the XNNPACK delegate too
    assert any("::" in g for g, _ in keys) and all(r["value"] >= 0 for gd in lat.values()
                                                   for r in gd["results"].values())
    assert json.loads((tmp_path / "out" / "explore.json").read_text())["overlays"]["latency"]["nodes"] == len(keys)


def test_tflite_overlays_attach_to_the_adapters_nodes(job, tflite_art, tmp_path):
    res = explore(tflite_art, job["dq"], tmp_path / "out", deploy=job["model"])
    _check(res, tflite_art, job, "tflite")
    assert "latency" not in res.files and any("no op profiler" in n for n in res.notes)


def test_node_reader_sees_every_conv(job):
    g = read_graph(job["et"] / "model.pte", "executorch")
    assert sorted(n.conv_key for n in g.convs()) == [(8, 1, 3, 3), (16, 8, 3, 3), (16, 16, 3, 3)]


def test_bad_input_is_one_line(job, tmp_path, capsys):
    def err() -> list[str]:
        return [l for l in capsys.readouterr().err.splitlines() if l.strip()]

    assert cli_main(["explore", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    e = err()
    assert len(e) == 1 and "nothing" in e[0]
    other = tmp_path / "dq-other"
    other.mkdir()
    dq = json.loads((job["dq"] / "debug_quant.json").read_text())
    dq["checkpoint_sha256"] = "b" * 64
    (other / "debug_quant.json").write_text(json.dumps(dq))
    assert cli_main(["explore", str(job["et"]), "--debug-quant", str(other), "--no-latency",
                     "--out", str(tmp_path / "o")]) == 2
    e = err()
    assert len(e) == 1 and "dq-other" in e[0] and "checkpoint" in e[0]
    assert not (tmp_path / "o" / "dtype.json").exists()  # nothing written for a bad input


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make sysdeps)")
def test_view_renders_with_the_overlay_in_headless_chromium(job, tflite_art, tmp_path):
    """Served as `explore --serve` serves it; the page must show the overlay's own numbers."""
    pytest.importorskip("model_explorer")
    import threading
    import urllib.request

    from matplotlib.image import imread

    from echoedge.quantdebug.explore import serve, view_config

    sys.path.insert(0, str(Path(__file__).parent))
    from cdp import open_page, screenshot, wait_for_text

    res = explore(tflite_art, job["dq"], tmp_path / "out", deploy=job["model"], latency=False)
    port = _free_port()
    threading.Thread(target=serve, args=(res, "localhost", port, False), daemon=True).start()
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://localhost:{port}/check_health", timeout=2)
            break
        except OSError:
            assert time.time() < deadline, "Model Explorer did not start"
            time.sleep(1)
    url = f"http://localhost:{port}/?data={view_config(res).to_url_param_value()}"
    proc, page = open_page(CHROMIUM, url, tmp_path / "profile", _free_port())
    # The stats table prints the graph's largest value: the fragile layer's figure, as JS prints it.
    top = max(u.effect for u in job["sweep"].units)
    # JS prints a double as its shortest round-trip form, which is Python's repr: cut that
    # (rounding to 4 places would turn 0.265597... into 0.2656, which the page never shows).
    needle = repr(float(top))[:6]
    try:
        text = wait_for_text(page, ["sensitivity: |dEF| won back", "int8", needle])
        shot = screenshot(page, tmp_path / "explore.png")
    finally:
        proc.kill()
        proc.wait()
    assert "sensitivity: |dEF| won back" in text and "int8" in text and needle in text, text[:2000]
    img = imread(shot)
    assert img.shape[1] == 1400 and float(np.std(img[..., :3])) > 0.02

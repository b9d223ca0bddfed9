"""Training, checkpoints and evaluation end to end on the tiny config and the tiny synthetic set."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from echoedge.cli import main as cli_main
from echoedge.errors import CheckpointError, EchoEdgeError
from echoedge.model.checkpoint import load_checkpoint, read_payload
from echoedge.model.train import TrainConfig, train
from tests.data.fixtures import derive_dataset

REPO = Path(__file__).resolve().parents[2]


def _tc(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), config="tiny", epochs=2, batch_size=2, workers=0,
                val_clips=1, val_videos=2, max_train_videos=6, norm_videos=4, progress=False,
                cache_dir=str(out.parent / "frames"), lr=2e-3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def tiny_run(synth_root: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("train") / "run"
    return train(_tc(synth_root, out)), synth_root


def test_train_writes_checkpoints_logs_and_curves(tiny_run):
    res, _ = tiny_run
    assert res.best.is_file() and res.last.is_file()
    rows = list(csv.DictReader(open(res.out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(np.isfinite(float(r["val_mae"])) and np.isfinite(float(r["train_total"])) for r in rows)
    assert json.loads((res.out / "log.json").read_text())[-1]["epoch"] == 2
    assert (res.out / "curves.png").stat().st_size > 1000


def test_checkpoint_round_trip_loads_weights_only_and_matches(tiny_run):
    res, _ = tiny_run
    ck = load_checkpoint(res.best, expect_config="tiny")
    payload = torch.load(res.best, map_location="cpu", weights_only=True)
    assert payload["clip_spec"]["frames"] == ck.spec.frames and payload["data_fingerprint"]
    # The spec carries the TRAIN normalisation, not the defaults.
    assert ck.spec.mean != 32.5 and ck.spec.std > 0
    x = torch.randn(ck.spec.input_shape(2), generator=torch.Generator().manual_seed(0))
    a = ck.model(x)
    b = load_checkpoint(res.best).model(x)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert "train_state" not in read_payload(res.best) and "train_state" in read_payload(res.last)


def test_resume_continues_from_last(tiny_run, tmp_path: Path):
    res, data = tiny_run
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(res.last.read_bytes())
    res2 = train(_tc(data, out, resume=True))
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # history carried over, nothing re-run
    assert res2.epochs == 2
    res3 = train(_tc(data, out, resume=True, epochs=3))
    assert res3.epochs == 2  # the schedule of a resumed run is the saved one


def test_fresh_run_refuses_to_overwrite(tiny_run):
    res, data = tiny_run
    with pytest.raises(EchoEdgeError, match="--resume"):
        train(_tc(data, res.out))


def test_init_fine_tunes_from_a_checkpoint_with_its_normalisation(tiny_run, tmp_path: Path):
    res, data = tiny_run
    start = load_checkpoint(res.best)
    out = tmp_path / "ft"
    res2 = train(_tc(data, out, epochs=1, init=str(res.best), recipe="acquisition", lr=1e-5))
    ft = load_checkpoint(res2.last)
    # The input contract is the init checkpoint's, not recomputed on this data.
    assert (ft.spec.mean, ft.spec.std) == (start.spec.mean, start.spec.std)
    # Started from its weights: a tiny learning rate for one epoch moves them only a little.
    a, b = start.model.state_dict(), ft.model.state_dict()
    key = next(k for k, v in a.items() if v.is_floating_point() and v.ndim >= 2)
    assert not torch.equal(a[key], b[key])
    assert (a[key] - b[key]).abs().max() < 0.05 * a[key].abs().max()
    assert read_payload(res2.last)["meta"]["train_config"]["recipe"] == "acquisition"
    with pytest.raises(CheckpointError, match="config 'tiny'"):
        train(_tc(data, tmp_path / "ft2", init=str(res.best), config="paper"))
    with pytest.raises(EchoEdgeError, match="--init starts a new run"):
        train(_tc(data, out, init=str(res.best), resume=True))


def test_bad_checkpoints_give_one_line_errors(tiny_run, tmp_path: Path):
    res, _ = tiny_run
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_checkpoint(corrupt)
    with pytest.raises(CheckpointError, match="config 'tiny'"):
        load_checkpoint(res.best, expect_config="paper")
    # Same name, other widths: the weights must not be squeezed in silently.
    payload = read_payload(res.best)
    key = next(k for k, v in payload["state_dict"].items() if v.ndim >= 2)
    payload["state_dict"][key] = torch.zeros(3, 3)
    bad = tmp_path / "other.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_cli_evaluate_reports_metrics_and_baseline(tiny_run, tmp_path: Path, capsys):
    res, data = tiny_run
    out = tmp_path / "eval"
    rc = cli_main(["evaluate", "--checkpoint", str(res.best), "--data", str(data), "--split", "TEST",
                   "--clips", "2", "--out", str(out), "--cache-dir", str(tmp_path / "frames")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "EF MAE" in text and "baseline" in text
    result = json.loads((out / "results.json").read_text())
    preds = result["predictions"]
    assert result["n_videos"] == len(preds) > 0
    truth = np.array([p["ef_true"] for p in preds])
    pred = np.array([p["ef"] for p in preds])
    assert result["metrics"]["mae"] == pytest.approx(np.abs(pred - truth).mean())
    assert (out / "scatter.png").stat().st_size > 1000


def test_checkpoint_records_the_training_ef_mean(tiny_run):
    from echoedge.data.echonet import EchoNet

    res, data = tiny_run
    trained_on = EchoNet(data).records("TRAIN")[:6]  # max_train_videos=6
    want = float(np.mean([r.ef for r in trained_on]))
    for path in (res.best, res.last):
        assert read_payload(path)["train_ef"] == {"mean": pytest.approx(want), "videos": 6}
    ck = load_checkpoint(res.best)
    assert ck.train_ef_mean == pytest.approx(want) and ck.train_ef_videos == 6


def _evaluate(ck: Path, data: Path, out: Path, capsys) -> tuple[str, dict]:
    rc = cli_main(["evaluate", "--checkpoint", str(ck), "--data", str(data), "--clips", "1",
                   "--out", str(out), "--cache-dir", str(out.parent / "frames")])
    text = capsys.readouterr().out
    assert rc == 0, text
    return text, json.loads((out / "results.json").read_text())


def test_evaluate_names_where_the_baseline_came_from(tiny_run, tmp_path: Path, capsys):
    res, data = tiny_run
    ck = load_checkpoint(res.best)
    test_only = derive_dataset(data, tmp_path / "test-only", splits=("TEST",), untraced=None)
    text, result = _evaluate(res.best, test_only, tmp_path / "a", capsys)
    assert f"baseline: always {ck.train_ef_mean:.1f} % (training EF mean, from the checkpoint): MAE" in text
    truth = np.array([p["ef_true"] for p in result["predictions"]])
    assert result["baseline_mae"] == pytest.approx(np.abs(truth - ck.train_ef_mean).mean())
    # EF-only: EF and volumes measured, landmarks n/a (never a number)
    assert "landmarks n/a (no tracings)" in text and result["landmark_error_px"] is None
    assert result["n_traced"] == 0 and np.isfinite(result["metrics"]["mae"])

    # A checkpoint without the mean (like the shipped one): the dataset's TRAIN, else n/a.
    payload = read_payload(res.best)
    del payload["train_ef"]
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    assert load_checkpoint(old).train_ef_mean is None
    text, result = _evaluate(old, data, tmp_path / "b", capsys)
    from echoedge.data.echonet import EchoNet

    train_mean = float(np.mean([r.ef for r in EchoNet(data).records("TRAIN")]))
    assert f"baseline: always {train_mean:.1f} % (TRAIN split mean of this dataset;" in text
    assert result["train_mean_ef"] == pytest.approx(train_mean)
    text, result = _evaluate(old, test_only, tmp_path / "c", capsys)
    assert ("baseline: n/a (the checkpoint records no training EF mean and this dataset has no "
            "TRAIN videos)") in text
    assert result["baseline_mae"] is None and result["train_mean_ef"] is None


def test_training_keeps_untraced_videos_with_landmark_terms_masked(synth_root: Path, tmp_path: Path):
    from echoedge.data.echonet import EchoNet

    data = derive_dataset(synth_root, tmp_path / "partly-traced", untraced=range(0, 16, 2))
    recs = EchoNet(data).records("TRAIN")[:6]
    assert any(r.has_tracings for r in recs) and not all(r.has_tracings for r in recs)
    res = train(_tc(data, tmp_path / "run", epochs=1))
    rows = list(csv.DictReader(open(res.out / "log.csv")))
    assert np.isfinite(float(rows[0]["train_total"])) and np.isfinite(float(rows[0]["val_mae"]))
    assert np.isfinite(float(rows[0]["train_landmark"]))
    # EchoNet-Dynamic's rule trains on the traced videos only.
    strict = train(_tc(data, tmp_path / "strict", epochs=1, require_tracings=True))
    n_traced = sum(r.has_tracings for r in EchoNet(data).records("TRAIN"))
    assert load_checkpoint(strict.best).meta["n_train_videos"] == min(6, n_traced)


def test_cli_bad_checkpoint_exits_cleanly(tmp_path: Path, synth_root: Path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 10)
    rc = cli_main(["evaluate", "--checkpoint", str(bad), "--data", str(synth_root)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "bad.pt" in err[0] and "Traceback" not in err[0]


@pytest.mark.slow
def test_ddp_two_cpu_processes_train(synth_root: Path, tmp_path: Path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "echoedge.cli", "train", "--data", str(synth_root), "--out", str(out), "--config", "tiny",
           "--epochs", "1", "--batch-size", "2", "--workers", "0", "--val-clips", "1", "--val-videos", "2",
           "--max-train-videos", "8", "--device", "cpu", "--no-progress", "--cache-dir", str(tmp_path / "frames")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ck = read_payload(out / "best.pt")
    assert ck["meta"]["world_size"] == 2
    assert "epoch 1/1" in proc.stdout

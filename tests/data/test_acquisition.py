"""Acquisition settings: neutral = today's bytes, seeded draws, each setting moves the frames the way
its name says, Acquisition.csv round-trips and fails in one line, folders without it still read."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from echoedge.data import acquisition as A
from echoedge.data import synthetic as S
from echoedge.data import synthetic_heart as H
from echoedge.data import synthetic_render as R
from echoedge.data.landmarks import simpson_volume_rows
from echoedge.data.synthetic_probe import acquired_params, fit_to_heart
from echoedge.errors import DataError, EchoEdgeError

# Two 35-frame videos of seed 0 and the sha256 of their rendered frames, computed with the
# generator as it was before acquisitions existed (commit 6f5f797): the neutral look must not move.
SHORT = ((172, "0a59e1acde2fe635a2b4a3f335927ef865582dac14a3f5b8148aad084216d167"),
         (229, "652e023a9341f56b1c1b92b11bbd779bcfb6f2d472fdff9ce147fd311ca0f778"))


@pytest.mark.parametrize("index,sha", SHORT)
def test_neutral_frames_are_todays_bytes(index: int, sha: str) -> None:
    rng = H.video_rng(0, index)
    p = H.draw_params_from(rng, index)
    assert acquired_params(p, A.NEUTRAL) is p
    frames = R.render_video(p, rng, A.NEUTRAL)
    assert frames.shape == (35, 112, 112)
    assert hashlib.sha256(frames.tobytes()).hexdigest() == sha


def test_fixed_make_video_writes_the_neutral_frames(tmp_path: Path) -> None:
    from echoedge.data.video import write_video

    index = SHORT[0][0]
    rec = S.make_video(0, index, tmp_path, "fixed")
    assert rec.acquisition == A.NEUTRAL
    rng = H.video_rng(0, index)
    p = H.draw_params_from(rng, index)
    write_video(tmp_path / "direct.avi", R.render_video(p, rng), p.fps)
    assert (tmp_path / f"{p.name}.avi").read_bytes() == (tmp_path / "direct.avi").read_bytes()


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------


def test_draws_are_deterministic_and_per_video() -> None:
    assert A.draw_acquisition(4, 7) == A.draw_acquisition(4, 7)
    assert A.draw_acquisition(4, 7) != A.draw_acquisition(4, 8)
    assert A.draw_acquisition(4, 7) != A.draw_acquisition(5, 7)
    assert A.settings_for("fixed", 4, 7) is A.NEUTRAL
    assert A.settings_for("varied", 4, 7) == A.draw_acquisition(4, 7)
    with pytest.raises(ValueError, match="fixed, varied"):
        A.settings_for("wild", 0, 0)


def test_draw_distribution_within_ranges() -> None:
    draws = [A.draw_acquisition(2, i) for i in range(2000)]
    views = np.array([d.view for d in draws])
    bad = (views != "apical-4-chamber").mean()
    assert 0.03 < bad < 0.08 and (views == "foreshortened").any() and (views == "off-axis").any()
    for d in draws:
        for key, (low, high) in A.LIMITS.items():
            assert low <= getattr(d, key) <= high, (key, d)
        assert 13.0 <= d.depth_cm <= 19.0 and 66.0 <= d.sector_deg <= 90.0
        assert 45.0 <= d.dynamic_range_db <= 65.0 and abs(d.gain_db) <= 5.0
        assert (d.view == "apical-4-chamber") == (d.view_severity == 0.0)
        # The shadow stays inside the sector.
        assert abs(d.shadow_angle_deg) <= d.sector_deg / 2 - 6 + 1e-9
        assert d == A.AcquisitionSettings(**{k: (round(v, 3) if isinstance(v, float) else v)
                                             for k, v in dataclasses.asdict(d).items()})
    gains = np.array([d.gain_db for d in draws])
    assert abs(gains.mean()) < 0.3 and 1.5 < gains.std() < 2.5
    assert 0.2 < np.mean([d.shadow_strength > 0 for d in draws]) < 0.3
    assert 0.25 < np.mean([d.dropout > 0 for d in draws]) < 0.35


def test_neutral_depth_matches_generator_spacing() -> None:
    assert A.NEUTRAL_DEPTH_CM == pytest.approx(H.FRAME * H.PIXEL_SPACING_CM, abs=1e-9)
    assert A.NEUTRAL.pixel_spacing_cm == pytest.approx(H.PIXEL_SPACING_CM)


# --------------------------------------------------------------------------------------------
# Each setting moves the frames the way its name says (one short video, same heart and textures)
# --------------------------------------------------------------------------------------------

INDEX = SHORT[0][0]


@lru_cache(maxsize=None)
def _render(**changes: object) -> tuple[np.ndarray, H.VideoParams]:
    """The ED frame (float) and the shown parameters of video INDEX of seed 0 under NEUTRAL + changes."""
    acq = dataclasses.replace(A.NEUTRAL, **changes)
    rng = H.video_rng(0, INDEX)
    p = H.draw_params_from(rng, INDEX)
    shown = acquired_params(p, acq)
    frames = R.render_video(shown, rng, acq)
    return frames[p.ed_frame].astype(np.float64), shown


def _sector(**changes: object) -> np.ndarray:
    return R.sector_mask(_render(**changes)[1])


def _high_freq(img: np.ndarray, mask: np.ndarray) -> float:
    import cv2

    lap = cv2.Laplacian(img, cv2.CV_64F)
    inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    return float((lap[inner] ** 2).mean())


def _cavity(shown: H.VideoParams) -> np.ndarray:
    rows = H.tracing_rows(shown, 0.0)
    import cv2

    poly = np.concatenate([rows[1:, 0:2], rows[1:, 2:4][::-1]])
    mask = np.zeros((112, 112), np.uint8)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)


def test_gain_raises_the_mean() -> None:
    base, m = _render()[0], _sector()
    assert _render(gain_db=5.0)[0][m].mean() > base[m].mean() + 10
    assert _render(gain_db=-5.0)[0][m].mean() < base[m].mean() - 5


def test_tgc_brightens_depth_more_than_the_near_field() -> None:
    m = _sector()
    rows = np.arange(112)[:, None].repeat(112, axis=1)
    near, far = m & (rows < 40), m & (rows > 80)
    base, tgc = _render()[0], _render(tgc_db_per_cm=0.4)[0]
    assert (tgc[far].mean() - base[far].mean()) > 2 * (tgc[near].mean() - base[near].mean()) > 0


def test_lower_dynamic_range_raises_contrast() -> None:
    base = _render()[0]
    # Judge on the mid-tones, which neither end of the grey scale clips.
    mid = _sector() & (base > 60) & (base < 190)
    assert _render(dynamic_range_db=45.0)[0][mid].std() > 1.15 * base[mid].std()
    assert _render(dynamic_range_db=65.0)[0][mid].std() < 0.9 * base[mid].std()
    cavity = _cavity(_render()[1])
    assert _render(dynamic_range_db=45.0)[0][cavity].mean() < base[cavity].mean() - 5  # blacker


def test_blur_lowers_high_frequency_energy() -> None:
    m = _sector()
    base = _high_freq(_render()[0], m)
    assert _high_freq(_render(lateral_blur_deg=0.8)[0], m) < 0.7 * base
    assert _high_freq(_render(axial_blur_mm=0.8)[0], m) < 0.9 * base


def test_speckle_exponent_changes_texture() -> None:
    m = _sector()
    base = _high_freq(_render()[0], m)
    assert _high_freq(_render(speckle=1.3)[0], m) > base > _high_freq(_render(speckle=0.7)[0], m)


def test_depth_shrinks_the_heart_in_frames_and_tracings() -> None:
    near, deep = _render(depth_cm=13.0), _render(depth_cm=19.0)
    v_near, v_deep = (simpson_volume_rows(H.tracing_rows(s, 0.0)) for s in (near[1], deep[1]))
    assert v_deep / v_near == pytest.approx((13.0 / 19.0) ** 3, rel=1e-6)
    # The dark cavity the frame shows shrinks with the tracing: its border hugs the tracing.
    for frame, shown in (near, deep):
        cavity = _cavity(shown)
        assert frame[cavity].mean() < 40
    assert _cavity(deep[1]).sum() < 0.6 * _cavity(near[1]).sum()


def test_sector_width_narrows_the_wedge() -> None:
    assert _sector(sector_deg=66.0).sum() < 0.8 * _sector().sum()
    frame = _render(sector_deg=66.0)[0]
    assert frame[~_sector(sector_deg=66.0)].max() == 0


def test_rotation_swings_the_long_axis_and_tilt_shortens_it() -> None:
    base, rot = _render()[1], _render(rotation_deg=7.0)[1]
    assert math.degrees(rot.tilt - base.tilt) == pytest.approx(7.0)
    assert rot.apex[0] > base.apex[0]  # swung right about the vertex
    tilt = _render(tilt_deg=20.0)[1]
    assert tilt.length_ed == pytest.approx(base.length_ed * math.cos(math.radians(20.0)))


def test_noise_floor_brightens_the_cavity() -> None:
    cavity = _cavity(_render()[1])
    assert _render(noise_floor=2.0)[0][cavity].mean() > _render()[0][cavity].mean() + 4


def test_shadow_darkens_its_band_only() -> None:
    import cv2

    base, shadow = _render()[0], _render(shadow_strength=0.8, shadow_angle_deg=-25.0, shadow_width_deg=5.0)[0]
    p = _render()[1]
    yy, xx = np.mgrid[0:112, 0:112]
    angle = np.degrees(np.arctan2(xx - p.vertex[0], np.maximum(yy - p.vertex[1], 1e-6)))
    m = cv2.erode(_sector().astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    band, away = m & (np.abs(angle + 25) < 3) & (yy > 40), m & (np.abs(angle - 20) < 3) & (yy > 40)
    assert shadow[band].mean() < 0.6 * base[band].mean()
    assert shadow[away].mean() == pytest.approx(base[away].mean(), rel=0.02)


def test_dropout_darkens_the_lateral_wall() -> None:
    base, shown = _render()
    a, n = H.axes(shown.tilt)
    s = 0.55
    off = shown.width_ed * float(H.cavity_profile(np.array([s]), shown)[0]) + 0.5 * shown.wall
    cx, cy = np.asarray(shown.apex) + s * shown.length_ed * a + off * n
    yy, xx = np.mgrid[0:112, 0:112]
    spot = (xx - cx) ** 2 + (yy - cy) ** 2 < 4.0**2
    assert _render(dropout=0.8)[0][spot].mean() < 0.5 * base[spot].mean()


def test_bad_views_change_the_shape_not_the_ef() -> None:
    base = _render()[1]
    short = _render(view="foreshortened", view_severity=1.0)[1]
    narrow = _render(view="off-axis", view_severity=1.0)[1]
    assert short.length_ed == pytest.approx(0.7 * base.length_ed) and short.bluntness < base.bluntness
    assert narrow.width_ed == pytest.approx(0.75 * base.width_ed) and narrow.rv_scale > 1.0
    for shown in (short, narrow):
        ed, es = (simpson_volume_rows(H.tracing_rows(shown, c)) for c in (0.0, 1.0))
        assert 100 * (ed - es) / ed == pytest.approx(base.ef, abs=1e-6)


def test_narrow_sector_is_widened_to_hold_the_lv() -> None:
    def outside(p: H.VideoParams, acq: A.AcquisitionSettings) -> float:
        shown = acquired_params(p, acq)
        rows = H.tracing_rows(shown, 0.0)
        pts = np.round(np.concatenate([rows[:, 0:2], rows[:, 2:4]])).astype(int).clip(0, 111)
        return 1.0 - R.sector_mask(shown)[pts[:, 1], pts[:, 0]].mean()

    p = H.draw_params(0, 30)  # a heart the drawn 68 degree sector would cut
    drawn = A.draw_acquisition(0, 30)
    assert drawn.sector_deg < 70 and outside(p, drawn) > 0.1
    fitted = fit_to_heart(p, drawn)
    assert drawn.sector_deg < fitted.sector_deg <= 90 and outside(p, fitted) == 0
    assert dataclasses.replace(fitted, sector_deg=drawn.sector_deg) == drawn  # nothing else moves
    assert fit_to_heart(p, A.NEUTRAL) is A.NEUTRAL
    roomy = dataclasses.replace(A.NEUTRAL, sector_deg=80.0)
    assert fit_to_heart(H.draw_params(0, 0), roomy) is roomy


# --------------------------------------------------------------------------------------------
# Acquisition.csv
# --------------------------------------------------------------------------------------------


def test_acquisition_csv_round_trips(tmp_path: Path) -> None:
    rows = [(f"0X{i:04X}", A.draw_acquisition(9, i)) for i in range(40)] + [("0XNEUTRAL", A.NEUTRAL)]
    A.write_acquisition_csv(tmp_path / A.ACQUISITION_CSV, rows)
    back = A.read_acquisition(tmp_path)
    assert back == dict(rows)
    assert back["0XNEUTRAL"].is_neutral()
    assert (tmp_path / A.ACQUISITION_CSV).read_text().splitlines()[0] == ",".join(A.CSV_COLUMNS)
    assert [p.name for p in tmp_path.iterdir()] == [A.ACQUISITION_CSV]  # no temporary left


def test_folder_without_acquisition_csv_reads(synth_root: Path, tmp_path: Path) -> None:
    import shutil

    from echoedge.data.echonet import EchoNet

    assert A.read_acquisition(tmp_path) is None
    copy = tmp_path / "echonet"
    shutil.copytree(synth_root, copy)
    (copy / A.ACQUISITION_CSV).unlink()
    assert A.read_acquisition(copy) is None
    assert len(EchoNet(copy).records()) == len(EchoNet(synth_root).records())


def _write(tmp_path: Path, lines: list[str]) -> Path:
    (tmp_path / A.ACQUISITION_CSV).write_text("\n".join(lines) + "\n")
    return tmp_path / A.ACQUISITION_CSV


def _good_line(name: str = "0X01") -> str:
    return ",".join([name, "apical-4-chamber"] + [f"{getattr(A.NEUTRAL, k):.3f}" for k in A.NUMERIC_NAMES])


@pytest.mark.parametrize("bad,match", [
    (lambda l: l.replace("apical-4-chamber", "parasternal"), "line 3: view 'parasternal'"),
    (lambda l: l.replace(",55.000,", ",loud,"), "line 3: dynamic_range_db 'loud' is not a number"),
    (lambda l: l.replace(",55.000,", ",nan,"), "line 3: dynamic_range_db nan is outside"),
    (lambda l: l.replace(",90.000,", ",400,"), "line 3: sector_deg 400 is outside"),
    (lambda l: l + ",7", "line 3: expected 18 cells"),
    (lambda l: l.rsplit(",", 1)[0], "line 3: expected 18 cells"),
    (lambda l: l.replace("0X02", "0X01.avi"), "line 3: FileName 0X01 appears twice"),
    (lambda l: l.replace("0X02", ""), "line 3: empty FileName"),
])
def test_malformed_acquisition_csv_is_one_line(tmp_path: Path, bad, match: str) -> None:
    path = _write(tmp_path, [",".join(A.CSV_COLUMNS), _good_line("0X01"), bad(_good_line("0X02"))])
    with pytest.raises(DataError) as e:
        A.read_acquisition(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path)) and match in msg


def test_acquisition_csv_missing_column(tmp_path: Path) -> None:
    cols = [c for c in A.CSV_COLUMNS if c != "gain_db"]
    _write(tmp_path, [",".join(cols)])
    with pytest.raises(DataError, match="line 1: missing column.s. gain_db"):
        A.read_acquisition(tmp_path)


# --------------------------------------------------------------------------------------------
# Datasets and the cache key
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def varied3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("varied") / "echonet"
    S.generate_dataset(root, videos=3, seed=1, workers=1, progress=False, acquisition="varied")
    return root


def test_varied_set_records_its_settings_and_keeps_the_labels(varied3: Path, tmp_path: Path) -> None:
    from echoedge.data.echonet import EchoNet

    fixed = tmp_path / "fixed"
    S.generate_dataset(fixed, videos=3, seed=1, workers=1, progress=False, acquisition="fixed")
    assert (varied3 / "FileList.csv").read_bytes() == (fixed / "FileList.csv").read_bytes()
    assert (varied3 / "VolumeTracings.csv").read_bytes() != (fixed / "VolumeTracings.csv").read_bytes()
    acq = A.read_acquisition(varied3)
    reader = EchoNet(varied3)
    assert list(acq) == [r.file_name for r in reader.records()]
    for i, rec in enumerate(reader.records()):
        assert acq[rec.file_name] == fit_to_heart(H.draw_params(1, i), A.draw_acquisition(1, i))
        ef_tracing = 100 * (rec.ed_volume_px - rec.es_volume_px) / rec.ed_volume_px
        assert ef_tracing == pytest.approx(rec.ef, abs=0.5)  # every view keeps the true EF
        assert np.all((rec.ed_tracing > 0) & (rec.ed_tracing < 112))
    assert all(s.is_neutral() for s in A.read_acquisition(fixed).values())


def test_bad_acquisition_mode(tmp_path: Path) -> None:
    with pytest.raises(EchoEdgeError, match="--acquisition must be one of fixed, varied"):
        S.generate_dataset(tmp_path / "x", videos=1, seed=0, progress=False, acquisition="wild")
    assert not (tmp_path / "x").exists()


def test_cache_key_has_mode_and_format(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from echoedge.data import default as D

    monkeypatch.setenv("ECHOEDGE_CACHE", str(tmp_path))
    varied, fixed = D.default_dataset_root(), D.default_dataset_root(acquisition="fixed")
    assert fixed.parent == varied.parent == tmp_path and fixed != varied
    assert varied.name == f"synthetic-seed0-n300-varied-v{S.SYNTH_FORMAT}"
    assert D.DEFAULT_ACQUISITION == "varied"
    # An old-format cache folder (synthetic-seed0-n300) is never taken for the current one.
    assert varied.name != "synthetic-seed0-n300" and fixed.name != "synthetic-seed0-n300"


def test_cli_synth_varied(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from echoedge.cli import main

    assert main(["synth", str(tmp_path / "v"), "--videos", "1", "--seed", "2", "--workers", "1",
                 "--acquisition", "varied"]) == 0
    assert "acquisition varied" in capsys.readouterr().out
    assert list(A.read_acquisition(tmp_path / "v").values()) == [
        fit_to_heart(H.draw_params(2, 0), A.draw_acquisition(2, 0))]

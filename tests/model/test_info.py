"""model_info: the paper's compute budget and a stage table that adds up."""

from __future__ import annotations

import pytest

from echoedge.model.info import format_info, model_info

PAPER_GMACS = (7.25, 8.86)  # 8.05 G multiply-adds +- 10 %


@pytest.fixture(scope="module")
def paper_info():
    return model_info("paper")


def test_paper_mac_budget(paper_info):
    assert PAPER_GMACS[0] <= paper_info.macs / 1e9 <= PAPER_GMACS[1], paper_info.macs
    assert paper_info.flops == 2 * paper_info.macs
    assert 1.463e6 <= paper_info.params <= 1.617e6


def test_stage_rows_add_up_to_the_totals(paper_info):
    names = [r.name for r in paper_info.rows]
    assert names == ["stem", "cnn1", "cnn2", "hybrid1", "hybrid2", "hybrid3", "e2cbd", "e2fa"]
    assert sum(r.params for r in paper_info.rows) == paper_info.params
    assert sum(r.macs for r in paper_info.rows) == pytest.approx(paper_info.macs, abs=8)
    assert paper_info.rows[-2].output_shape.startswith("(1, 42, 2) (1, 42, 2)")
    assert paper_info.rows[-3].output_shape == "(1, 80, 2, 7, 7)"


def test_format_info_states_the_flop_convention(paper_info):
    text = format_info(paper_info)
    assert "1 MAC = 1 FLOP" in text and "2 FLOPs per MAC" in text
    assert "hybrid3" in text and f"{paper_info.params:,}" in text


def test_model_info_tiny_is_small():
    info = model_info("tiny")
    assert info.input_shape == (1, 1, 16, 64, 64)
    assert info.macs < 0.5e9 and info.params < 80_000

import numpy as np
import pytest

from echoedge.model.metrics import band_confusion, ef_band, ef_metrics


def test_ef_metrics_hand_computed():
    truth = np.array([30.0, 45.0, 60.0, 70.0])
    pred = np.array([32.0, 41.0, 60.0, 73.0])
    m = ef_metrics(truth, pred)
    # errors +2, -4, 0, +3
    assert m.n == 4
    assert m.mae == pytest.approx(9 / 4)
    assert m.rmse == pytest.approx(np.sqrt((4 + 16 + 0 + 9) / 4))
    assert m.bias == pytest.approx(1 / 4)
    ss_tot = ((truth - truth.mean()) ** 2).sum()
    assert m.r2 == pytest.approx(1 - 29 / ss_tot)
    assert m.band_agreement == 1.0
    assert m.band_confusion == [[1, 0, 0], [0, 1, 0], [0, 0, 2]]


def test_ef_bands_edges_and_confusion():
    assert ef_band(np.array([39.99, 40.0, 49.99, 50.0])).tolist() == [0, 1, 1, 2]
    conf = band_confusion(np.array([35.0, 45.0, 55.0, 55.0]), np.array([41.0, 45.0, 49.0, 80.0]))
    assert conf.tolist() == [[0, 1, 0], [0, 1, 0], [0, 1, 1]]


def test_ef_metrics_rejects_mismatched_input():
    with pytest.raises(ValueError):
        ef_metrics(np.array([1.0, 2.0]), np.array([1.0]))
    with pytest.raises(ValueError):
        ef_metrics(np.array([]), np.array([]))

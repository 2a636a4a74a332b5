import numpy as np

from service.schemas import Prediction


def test_top_k_softmax_is_stable_and_ordered():
    logits = np.array([1000.0, 1001.0, -1000.0, 999.0], dtype=np.float32)
    predictions = Prediction.top_k(logits, ["a", "b", "c", "d"], 3)
    assert [p.label for p in predictions] == ["b", "a", "d"]
    e = np.exp([0.0, -1.0, -2.0])
    expected = e / (e.sum() + np.exp(-2001.0))
    np.testing.assert_allclose([p.probability for p in predictions], expected, rtol=1e-6)


def test_top_k_clamps_to_the_number_of_classes():
    assert len(Prediction.top_k(np.zeros(3, np.float32), ["a", "b", "c"], 10)) == 3

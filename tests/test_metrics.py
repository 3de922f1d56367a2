"""Metrics against values computed by hand."""

import pytest

from cl_bench import metrics

# After each of 3 experiences, accuracy on every test experience (rows: trained, cols: tested).
FORGETTING_MATRIX = [
    [0.9, 0.1, 0.0],
    [0.6, 0.8, 0.2],
    [0.3, 0.7, 0.9],
]
# Experience 0 improves after experience 1 (0.5 -> 0.9), then drops to 0.7: BWT is positive
# (0.7 > 0.5) while forgetting is positive too (0.9 -> 0.7), so forgetting != -BWT.
REBOUND_MATRIX = [
    [0.5, 0.0, 0.0],
    [0.9, 0.6, 0.0],
    [0.7, 0.6, 0.8],
]


def test_three_by_three_with_negative_bwt():
    assert metrics.average_accuracy(FORGETTING_MATRIX) == pytest.approx((0.3 + 0.7 + 0.9) / 3)
    # ((0.3 - 0.9) + (0.7 - 0.8)) / 2
    assert metrics.backward_transfer(FORGETTING_MATRIX) == pytest.approx(-0.35)
    # j=0: max(0.9, 0.6) - 0.3 = 0.6 ; j=1: 0.8 - 0.7 = 0.1
    assert metrics.forgetting(FORGETTING_MATRIX) == pytest.approx(0.35)
    assert metrics.learning_accuracy(FORGETTING_MATRIX) == pytest.approx((0.9 + 0.8 + 0.9) / 3)
    # j=1: 0.1 - 0.1 ; j=2: 0.2 - 0.1
    assert metrics.forward_transfer(FORGETTING_MATRIX, [0.1, 0.1, 0.1]) == pytest.approx(0.05)


def test_forgetting_differs_from_negative_bwt():
    # bwt: ((0.7 - 0.5) + (0.6 - 0.6)) / 2 = +0.1
    assert metrics.backward_transfer(REBOUND_MATRIX) == pytest.approx(0.1)
    # forgetting: j=0: max(0.5, 0.9) - 0.7 = 0.2 ; j=1: 0.6 - 0.6 = 0 -> 0.1
    assert metrics.forgetting(REBOUND_MATRIX) == pytest.approx(0.1)
    assert metrics.forgetting(REBOUND_MATRIX) != pytest.approx(-metrics.backward_transfer(REBOUND_MATRIX))


def test_single_experience_and_missing_reference():
    single = [[0.75]]
    assert metrics.all_metrics(single) == {
        "acc": 0.75,
        "bwt": 0.0,
        "forgetting": 0.0,
        "fwt": None,
        "learning_acc": 0.75,
    }
    assert metrics.forward_transfer(FORGETTING_MATRIX, None) is None


def test_seen_average_curve():
    assert metrics.seen_average_curve(FORGETTING_MATRIX) == pytest.approx([0.9, 0.7, (0.3 + 0.7 + 0.9) / 3])


def test_rejects_non_square_matrix():
    with pytest.raises(ValueError):
        metrics.average_accuracy([[0.1, 0.2]])


def test_row_metric_effect_pairs_an_attacks_rows_at_the_target_and_at_the_end():
    from cl_bench.metrics import row_metric_effect

    clean = [{"asr": 0.1}, {"asr": 0.0}, {"asr": 0.05}]
    attacked = [{"asr": 0.1}, {"asr": 0.9}, {"asr": 0.3}]
    effect = row_metric_effect(clean, attacked, target=1)
    assert effect["asr_at_target"] == {"clean": 0.0, "attacked": 0.9, "difference": 0.9}
    assert effect["asr_final"]["clean"] == 0.05 and effect["asr_final"]["attacked"] == 0.3
    assert effect["asr_final"]["difference"] == pytest.approx(0.25)
    assert row_metric_effect([], [], target=0) == {}

"""spinnray.experiments.train: the validation-selected epoch."""

import pytest


def test_val_selection_takes_the_earliest_best_validation_epoch():
    from spinnray.experiments.train import val_selection

    hist = [{"epoch": e + 1, "val_accuracy": v, "test_accuracy": t, "test_loss": 1.0 - t}
            for e, (v, t) in enumerate([(0.5, 0.52), (0.7, 0.71), (0.7, 0.74), (0.6, 0.8)])]
    sel = val_selection(hist)
    assert sel == {"val_selected_epoch": 2, "val_accuracy": 0.7, "val_selected_test_accuracy": 0.71,
                   "val_selected_test_loss": pytest.approx(0.29)}
    assert val_selection([{"epoch": 1, "test_accuracy": 0.5, "test_loss": 1.0}]) == {}

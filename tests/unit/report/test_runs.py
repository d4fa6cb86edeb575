"""spinnray.report without a run: the raster file format and its refusals, missing or corrupt metrics."""

import logging

import numpy as np
import pytest

from spinnray.errors import DataError
from spinnray import report
from spinnray.report import runs


def test_raster_round_trip_and_format(tmp_path):
    rng = np.random.default_rng(3)
    spikes = {"a": rng.random((30, 2, 7)) < 0.2, "b": rng.random((30, 2, 4)) < 0.3}
    path = report.save_raster(tmp_path, spikes, 0.5, sample=1)
    with np.load(path) as z:                            # the documented layout, read without the loader
        assert int(z["format_version"]) == runs.RASTER_VERSION and float(z["dt_ms"]) == 0.5
        assert int(z["steps"]) == 30 and int(z["sample"]) == 1
        assert list(z["populations"]) == ["a", "b"] and list(z["sizes"]) == [7, 4]
        for i, name in enumerate(["a", "b"]):
            dense = np.zeros((30, spikes[name].shape[2]), bool)
            dense[z[f"step_{i}"], z[f"neuron_{i}"]] = True
            assert np.array_equal(dense, spikes[name][:, 1, :])
            assert len(z[f"step_{i}"]) == spikes[name][:, 1, :].sum()
    r = report.load_raster(path)
    assert r.sizes == {"a": 7, "b": 4} and r.dt_ms == 0.5
    t, n = r.spikes["b"]
    assert sorted(zip(t.tolist(), n.tolist())) == sorted(zip(*np.nonzero(spikes["b"][:, 1, :])))


@pytest.mark.parametrize("kwargs, message", [
    (dict(spikes={"a": np.zeros((5, 3), bool)}, dt_ms=0.0), "dt_ms = 0.0"),
    (dict(spikes={"a": np.zeros((5, 3), bool), "b": np.zeros((6, 3), bool)}, dt_ms=1.0), "'b' has 6 steps"),
    (dict(spikes={"a": np.zeros((5, 2, 3), bool)}, dt_ms=1.0, sample=2), "sample = 2 but 'a' has batch 2"),
    (dict(spikes={"a": np.zeros(5, bool)}, dt_ms=1.0), "shape (5,)"),
])
def test_bad_rasters_are_refused(tmp_path, kwargs, message):
    spikes = kwargs.pop("spikes")
    with pytest.raises(DataError) as e:
        report.save_raster(tmp_path, spikes, **kwargs)
    assert message in str(e.value)


def test_missing_or_corrupt_metrics_name_the_path(tmp_path, caplog):
    with pytest.raises(DataError) as e:
        report.build_report(tmp_path)
    assert str(tmp_path / "metrics.json") in str(e.value) and "no such file" in str(e.value)
    bad = tmp_path / "metrics.json"
    for text, message in (('{"schema_version": 1, "traffic": ', "not valid JSON"),
                          ("[1, 2]", "holds a JSON list"),
                          ('{"traffic": {}, "memory": {}}', "no integer schema_version")):
        bad.write_text(text)
        with pytest.raises(DataError) as e:
            report.build_report(tmp_path)
        assert str(bad) in str(e.value) and message in str(e.value)
    with caplog.at_level(logging.ERROR, logger="spinnray"):
        assert report.main([str(tmp_path)]) == 2
    assert str(bad) in caplog.text
    with caplog.at_level(logging.ERROR, logger="spinnray"):
        report.report_after_run(tmp_path)                        # logged, not raised
    assert "the report of" in caplog.text
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no such file"):
        report.build_report(empty)

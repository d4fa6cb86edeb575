"""spinnray.data.base: rows read in place from an .npz archive (NpzRows), splits that read or build
their mini-batches on demand (ArraySplit over NpzRows, EventSplit), bad indices refused."""

import zipfile

import numpy as np
import pytest

from spinnray.data.base import ArraySplit, EventSplit, NpzRows
from spinnray.errors import DataError


@pytest.mark.parametrize("dtype", [np.float32, ">f8", np.int16])
def test_rows_read_in_place_equal_the_array(tmp_path, dtype):
    x = (np.random.default_rng(0).normal(size=(700, 3, 5)) * 100).astype(dtype)
    np.savez(tmp_path / "a.npz", labels=np.arange(700), x=x, after=np.ones(3))
    rows = NpzRows(tmp_path / "a.npz", "x")
    assert rows.shape == x.shape and rows.dtype == x.dtype and len(rows) == 700
    idx = np.array([699, 0, 5, 5, 300])
    np.testing.assert_array_equal(rows[idx], x[idx])
    np.testing.assert_array_equal(np.concatenate(list(rows.blocks(256))), x)
    head = rows.head(10)
    assert head.shape == (10, 3, 5) and len(list(head.blocks(4))) == 3
    with pytest.raises(DataError, match=r"rows .*in \[0, 10\)"):
        head[np.array([10])]
    np.testing.assert_array_equal(NpzRows(tmp_path / "a.npz", "labels")[np.array([3])], [3])


def test_rows_are_refused_unless_stored_plainly(tmp_path):
    x = np.zeros((4, 2, 2), np.float32)
    np.savez_compressed(tmp_path / "c.npz", x=x)
    with pytest.raises(DataError, match="c.npz: x is compressed"):
        NpzRows(tmp_path / "c.npz", "x")
    np.savez(tmp_path / "a.npz", x=x)
    with pytest.raises(DataError, match="a.npz: no array 'y'"):
        NpzRows(tmp_path / "a.npz", "y")
    np.savez(tmp_path / "f.npz", x=np.asfortranarray(np.zeros((4, 2, 3))))
    with pytest.raises(DataError, match="Fortran"):
        NpzRows(tmp_path / "f.npz", "x")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz: not a readable .npz archive"):
        NpzRows(tmp_path / "bad.npz", "x")
    # an archive whose member is shorter than its header says (a stored member cut and re-zipped)
    with zipfile.ZipFile(tmp_path / "a.npz") as z:
        member = z.read("x.npy")
    with zipfile.ZipFile(tmp_path / "short.npz", "w") as z:
        z.writestr("x.npy", member[:-8])
    with pytest.raises(DataError, match="short.npz: x: .* bytes stored"):
        NpzRows(tmp_path / "short.npz", "x")


def test_a_rows_split_divides_and_casts_each_batch_as_the_whole_array_would(tmp_path):
    x = np.random.default_rng(1).normal(size=(9, 4, 3))
    np.savez(tmp_path / "a.npz", x=x)
    divisor = np.array([2.0, 3.0, 7.0], np.float32)
    streamed = ArraySplit(NpzRows(tmp_path / "a.npz", "x"), np.zeros(9), divisor=divisor, dtype=np.float32)
    whole = x.astype(np.float32) / divisor
    got = streamed.batch([8, 1, 1])
    assert got.dtype == np.float32 and got.shape == (4, 3, 3)
    np.testing.assert_array_equal(got, whole[[8, 1, 1]].transpose(1, 0, 2))
    held = ArraySplit(x.astype(np.float32), np.zeros(9), divisor=divisor)
    np.testing.assert_array_equal(held.batch([8, 1, 1]), got)


def test_events_become_the_raster_of_each_batch():
    rng = np.random.default_rng(2)
    n, steps, channels = 6, 11, 4
    raster = rng.random((steps, n, channels)) < 0.2
    t, s, c = np.nonzero(raster)
    perm = rng.permutation(len(s))                                   # events in any order, some twice
    s, t, c = np.r_[s[perm], s[:3]], np.r_[t[perm], t[:3]], np.r_[c[perm], c[:3]]
    split = EventSplit(s, t, c, np.arange(n), steps, channels)
    for idx in ([0, 1, 2, 3, 4, 5], [5, 5, 0], [], [3]):
        got = split.batch(np.asarray(idx, np.int64))
        assert got.dtype == bool
        np.testing.assert_array_equal(got, raster[:, np.asarray(idx, np.int64)])
    with pytest.raises(DataError, match=r"samples .*in \[0, 6\)"):
        split.batch([6])
    assert split.keys.nbytes == 4 * len(s)                           # one int32 key per event
    np.testing.assert_array_equal(split.events_per_sample(), np.bincount(s, minlength=n))
    sub = split.subset([4, 1, 4])
    np.testing.assert_array_equal(sub.labels, [4, 1, 4])
    np.testing.assert_array_equal(sub.batch([0, 1, 2]), raster[:, [4, 1, 4]])
    with pytest.raises(DataError, match="exceeds .* bytes as a raster"):
        split.batch(np.zeros(EventSplit.MAX_BATCH_BYTES // (steps * channels) + 1, np.int64))


def test_a_data_directory_that_cannot_be_made_is_named(tmp_path):
    """A broken symbolic link or a file where a data directory must go: a DataError naming it."""
    from spinnray.data.base import make_dir
    from spinnray.errors import DataError

    link = tmp_path / "cache"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(DataError, match=r"data.root: cannot create the directory .*cache.* broken symbolic link to"):
        make_dir(link / "keywords", "data.root")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file, not a directory"):
        make_dir(tmp_path / "file" / "sub", "data.root")
    make_dir(tmp_path / "new" / "dir", "data.root")
    assert (tmp_path / "new" / "dir").is_dir()

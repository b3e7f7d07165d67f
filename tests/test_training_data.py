"""get_batch and the token-file checks, on token files the tests write themselves."""

import numpy as np
import pytest
import torch

from lm.errors import LMError
from lm.training import get_batch
from lm.training.data import check_tokens, open_tokens


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "train.npy"
    np.save(path, np.arange(1000, dtype=np.uint16) % 97)
    return path


def test_get_batch_windows_and_targets(token_file):
    data = open_tokens(token_file)
    assert isinstance(data, np.memmap)
    x, y = get_batch(
        data, batch_size=8, context_length=16, device="cpu", rng=np.random.default_rng(0)
    )
    assert x.shape == y.shape == (8, 16)
    assert x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    full = np.asarray(data, dtype=np.int64)
    for row_x, row_y in zip(x.numpy(), y.numpy(), strict=True):
        # every row is a real window of the file, and y is x shifted by one
        starts = [s for s in range(len(full) - 16) if (full[s : s + 16] == row_x).all()]
        assert starts and (full[starts[0] + 1 : starts[0] + 17] == row_y).all()


def test_get_batch_is_reproducible_with_a_generator_and_covers_all_starts():
    data = np.arange(20, dtype=np.uint16)
    a = get_batch(data, 4, 5, "cpu", rng=np.random.default_rng(7))
    b = get_batch(data, 4, 5, "cpu", rng=np.random.default_rng(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    x, _ = get_batch(data, 2000, 5, "cpu", rng=np.random.default_rng(0))
    starts = set(x[:, 0].tolist())
    assert starts == set(range(0, 15))  # every start 0..len-ctx-1, none past the end


def test_get_batch_without_generator_uses_numpy_global_state():
    data = np.arange(100)
    np.random.seed(3)
    a, _ = get_batch(data, 4, 8, "cpu")
    np.random.seed(3)
    b, _ = get_batch(data, 4, 8, "cpu")
    assert torch.equal(a, b)


def test_context_longer_than_split_is_a_clear_error():
    with pytest.raises(LMError, match="fewer than context_length"):
        get_batch(np.arange(10), 2, 10, "cpu")


def test_check_tokens_max_id_scanned_in_chunks(tmp_path):
    ids = np.zeros(10_000, dtype=np.uint16)
    ids[7_777] = 500
    np.save(tmp_path / "t.npy", ids)
    data = open_tokens(tmp_path / "t.npy")
    assert check_tokens(data, 501, chunk=1000) == 500
    with pytest.raises(LMError, match=r"token id 500 .*vocab_size is 500"):
        check_tokens(data, 500, name="t.npy", chunk=1000)


def test_check_tokens_dtype_too_small_for_vocab(tmp_path):
    np.save(tmp_path / "t.npy", np.zeros(10, dtype=np.uint16))
    with pytest.raises(LMError, match=r"dtype uint16 .*vocab_size is 100000"):
        check_tokens(open_tokens(tmp_path / "t.npy"), 100_000)


@pytest.mark.parametrize(
    "array,match",
    [
        (np.zeros((3, 4), dtype=np.uint16), "1-D"),
        (np.zeros(5, dtype=np.float32), "dtype float32"),
    ],
)
def test_open_tokens_rejects_bad_files(tmp_path, array, match):
    np.save(tmp_path / "t.npy", array)
    with pytest.raises(LMError, match=match):
        open_tokens(tmp_path / "t.npy")


def test_open_tokens_missing_file(tmp_path):
    with pytest.raises(LMError, match="does not exist"):
        open_tokens(tmp_path / "nope.npy")

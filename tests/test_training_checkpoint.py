"""save_checkpoint / load_checkpoint: round trip, RNG states, shape mismatch."""

import io

import numpy as np
import pytest
import torch

from lm.errors import LMError
from lm.training import AdamW, load_checkpoint, save_checkpoint


def _model(hidden=8):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2)
    )


def _step(model, opt):
    opt.zero_grad()
    model(torch.ones(3, 4)).sum().backward()
    opt.step()


def test_round_trip_restores_model_optimizer_iteration_and_rngs(tmp_path):
    model = _model()
    opt = AdamW(model.parameters(), lr=1e-2)
    _step(model, opt)
    batch_rng = np.random.default_rng(5)
    batch_rng.integers(0, 10, 3)
    path = tmp_path / "ck" / "step.pt"
    save_checkpoint(model, opt, 17, path, config={"name": "x"}, batch_rng=batch_rng)
    assert path.is_file() and not list(path.parent.glob(".*tmp"))  # written atomically
    expected = (torch.rand(2), batch_rng.integers(0, 1000, 4))

    model2 = _model(8)
    torch.nn.init.zeros_(model2[0].weight)
    opt2 = AdamW(model2.parameters(), lr=1e-2)
    rng2 = np.random.default_rng(0)
    assert load_checkpoint(path, model2, opt2, batch_rng=rng2, restore_rng=True) == 17
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(torch.rand(2), expected[0])
    assert (rng2.integers(0, 1000, 4) == expected[1]).all()
    _step(model, opt)
    _step(model2, opt2)
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_rng_left_alone_by_default(tmp_path):
    model = _model()
    save_checkpoint(model, AdamW(model.parameters()), 1, tmp_path / "c.pt")
    target = _model()  # (seeds torch itself)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_checkpoint(tmp_path / "c.pt", target)
    assert torch.equal(torch.rand(3), expected)


def test_file_object_round_trip():
    model = _model()
    opt = AdamW(model.parameters())
    buf = io.BytesIO()
    save_checkpoint(model, opt, 3, buf)
    buf.seek(0)
    assert load_checkpoint(buf, _model(), AdamW(_model().parameters())) == 3


def test_checkpoint_from_other_shape_names_the_tensor(tmp_path):
    model = _model(8)
    save_checkpoint(model, AdamW(model.parameters()), 1, tmp_path / "c.pt")
    other = _model(16)
    with pytest.raises(
        LMError, match=r"tensor '0\.weight' has shape \(8, 4\) in the checkpoint but \(16, 4\)"
    ):
        load_checkpoint(tmp_path / "c.pt", other, AdamW(other.parameters()))


def test_missing_and_corrupt_checkpoints(tmp_path):
    model = _model()
    with pytest.raises(LMError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt", model)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LMError, match="cannot be read"):
        load_checkpoint(tmp_path / "bad.pt", model)

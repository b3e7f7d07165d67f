"""lm.envvars.seconds: the one parser of the waits' environment variables."""

from __future__ import annotations

import pytest

from lm.envvars import seconds
from lm.errors import LMError


def test_unset_or_empty_gives_the_default(monkeypatch):
    monkeypatch.delenv("LM_TEST_WAIT", raising=False)
    assert seconds("LM_TEST_WAIT", 7.5) == 7.5
    monkeypatch.setenv("LM_TEST_WAIT", "")
    assert seconds("LM_TEST_WAIT", 7.5) == 7.5


def test_a_number_is_read(monkeypatch):
    monkeypatch.setenv("LM_TEST_WAIT", "0.25")
    assert seconds("LM_TEST_WAIT", 7.5) == 0.25


@pytest.mark.parametrize("raw", ["soon", "-1", "0", "nan"])
def test_a_bad_value_is_named_with_what_to_give(monkeypatch, raw):
    monkeypatch.setenv("LM_TEST_WAIT", raw)
    with pytest.raises(LMError, match=r"LM_TEST_WAIT=.*give a number of seconds above 0"):
        seconds("LM_TEST_WAIT", 7.5)


def test_zero_where_zero_means_do_not_wait(monkeypatch):
    monkeypatch.setenv("LM_TEST_WAIT", "0")
    assert seconds("LM_TEST_WAIT", 7.5, zero_ok=True) == 0.0
    monkeypatch.setenv("LM_TEST_WAIT", "-2")
    with pytest.raises(LMError, match="0 or more"):
        seconds("LM_TEST_WAIT", 7.5, zero_ok=True)

"""Relay passwords at rest."""

from __future__ import annotations

import pytest

from services.common.secrets import Secrets, new_key


def test_sealed_value_opens_and_hides_the_secret() -> None:
    """A sealed password is not readable in storage and opens to the original."""
    s = Secrets([new_key()])
    stored = s.seal("hunter2")
    assert stored.startswith("fernet:") and "hunter2" not in stored
    assert s.open(stored) == "hunter2"
    assert s.seal(None) is None and s.open(None) is None


def test_keys_rotate_by_prepending() -> None:
    """A value sealed under the old key still opens once a new key is put first; new values use the new key."""
    old, new = new_key(), new_key()
    stored = Secrets([old]).seal("pw")
    rotated = Secrets([new, old])
    assert rotated.open(stored) == "pw"
    assert Secrets([new]).open(rotated.seal("pw2")) == "pw2"


def test_plain_values_pass_through_and_missing_keys_are_a_clear_error() -> None:
    """Values stored without a key read back as they are; an encrypted value without its key is an error."""
    assert Secrets([]).seal("pw") == "pw" and Secrets([new_key()]).open("pw") == "pw"
    with pytest.raises(RuntimeError, match="SENDSTREAM_SECRET_KEYS is not set"):
        Secrets([]).open(Secrets([new_key()]).seal("pw"))
    with pytest.raises(RuntimeError, match="cannot be decrypted"):
        Secrets([new_key()]).open(Secrets([new_key()]).seal("pw"))

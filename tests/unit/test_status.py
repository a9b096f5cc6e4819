"""A message's status is one type (schemas/status.py): every dialect shows each of its values, every
value has a rank, and the database refuses any other."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from schemas.api import inboxes, mailboxes
from schemas.status import MESSAGE_STATUSES, STATUS_RANK, MailboxHealth

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("dialect", [inboxes, mailboxes], ids=lambda m: m.__name__)
def test_every_dialect_shows_every_status(dialect) -> None:
    assert set(dialect.SEED_STATUS) == set(MESSAGE_STATUSES)


def test_every_status_has_a_rank_and_the_database_knows_the_same_ones() -> None:
    assert set(STATUS_RANK) == set(MESSAGE_STATUSES)
    setting = [p.read_text() for p in sorted((ROOT / "services/common/sql").glob("*.sql"))]
    sql = [text for text in setting if "messages_status_known CHECK" in text][-1]  # the latest to set the check
    checked = sql.split("messages_status_known CHECK", 1)[1].split(";", 1)[0]
    assert set(re.findall(r"'(\w+)'", checked)) == set(MESSAGE_STATUSES)


def test_the_database_knows_the_same_mailbox_healths() -> None:
    sql = (ROOT / "services/common/sql/001_init.sql").read_text()
    checked = re.search(r"health\s+text[^\n]*CHECK \(health IN \(([^)]*)\)\)", sql)
    assert checked is not None
    assert set(re.findall(r"'(\w+)'", checked.group(1))) == set(get_args(MailboxHealth))

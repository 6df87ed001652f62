"""Every custom SQLSTATE raised in service/sql/ has its named constant in service/db/sqlstate.py."""

from __future__ import annotations

import re
from pathlib import Path

from service.db import sqlstate
from service.sql import APPLY_ORDER

SQL_DIR = Path(__file__).resolve().parents[2] / "service" / "sql"


def test_every_raised_sqlstate_has_a_constant() -> None:
    raised = {
        code
        for name in APPLY_ORDER
        for code in re.findall(r"errcode\s*=\s*'([0-9A-Z]{5})'", (SQL_DIR / name).read_text(encoding="utf-8"))
    }
    named = {value for key, value in vars(sqlstate).items() if key.isupper() and isinstance(value, str)}
    assert raised, "no errcode found: the pattern no longer matches the SQL"
    assert raised - named == set()

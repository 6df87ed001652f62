"""The `webhooks` commands: create prints the secret once, alone on the last line; list, deliveries,
disable; a URL the allow-list refuses exits 2 naming the field."""

from __future__ import annotations

import re

from tests.support.cli import run

ALLOW = {"BILLING_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}


async def test_create_list_disable(db_url: str) -> None:
    made = await run("webhooks", "create", "http://127.0.0.1:9/hook", "--event-type", "balance_alert",
                     database_url=db_url, **ALLOW)  # fmt: skip
    assert made.code == 0, made.err
    lines = made.out.splitlines()
    secret = lines[-1]
    assert re.fullmatch(r"whsec_[A-Za-z0-9_-]{43}", secret)
    assert secret not in "\n".join(lines[:-1]) and secret not in made.err
    endpoint_id = lines[0].split()[1].rstrip(":")
    listed = await run("webhooks", "list", database_url=db_url, **ALLOW)
    assert listed.code == 0 and endpoint_id in listed.out and "enabled" in listed.out
    assert secret not in listed.out
    off = await run("webhooks", "disable", endpoint_id, database_url=db_url, **ALLOW)
    assert off.code == 0 and "disabled" in off.out
    deliveries = await run("webhooks", "deliveries", "--state", "failed", database_url=db_url, **ALLOW)
    assert deliveries.code == 0 and deliveries.out == ""


async def test_a_refused_url_exits_2_naming_it(db_url: str) -> None:
    refused = await run("webhooks", "create", "http://10.0.0.1/hook", database_url=db_url, **ALLOW)
    assert refused.code == 2 and "url" in refused.err and "does not allow" in refused.err

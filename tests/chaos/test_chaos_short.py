"""The fault harness's short form (bench/chaos.py), so that a regression in crash safety fails CI: real
server processes SIGKILLed and restarted, Postgres stopped in immediate mode, backends terminated and
responses lost, then the checker. `python3 dev.py run python bench/chaos.py --quick` is the longer run."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench.chaos import QUICK, run

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

SHORT_FAULTS = ("server_sigkill", "postgres_immediate_stop", "terminate_backends", "lost_response")


async def test_a_short_run_under_faults_loses_and_duplicates_nothing() -> None:
    options = replace(
        QUICK,
        duration_s=20.0,
        clients=6,
        cold_wallets=40,
        recharging_wallets=4,
        faults=SHORT_FAULTS,
        fault_every_s=4.0,
        verbose=False,
    )
    report = await run(options)
    verdict = report.verdict
    assert set(report.faults) == set(SHORT_FAULTS), report.faults
    assert verdict.acknowledged > 100, report.table()
    assert verdict.replays_checked == verdict.acknowledged + verdict.unknown_resolved, report.table()
    assert (verdict.lost, verdict.duplicated, verdict.violations) == (0, 0, []), report.table()

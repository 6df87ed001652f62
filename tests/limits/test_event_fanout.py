"""Event streams fed by one reader per process: the cost of a notification does not grow with streams."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import asyncpg
import grpc
from consofta.billing.v1 import wallet_events_pb2, wallet_service_pb2, wallet_service_pb2_grpc

from service.app.event_reader import EventNotifier
from tests.conftest import Stubs
from tests.limits.conftest import emit, serving
from tests.support.rpc import rich_error
from tests.wallet.conftest import add_card

# Every wait is bounded: a hang fails the test instead of stalling the suite.
WAIT_S = 60.0


async def until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Reader:
    """One WatchWalletEvents call read by its own task into `events`, until cancelled or ended."""

    def __init__(
        self,
        stub: wallet_service_pb2_grpc.WalletServiceAsyncStub,
        request: wallet_service_pb2.WatchWalletEventsRequest,
    ) -> None:
        self.call = stub.WatchWalletEvents(request)
        self.events: list[wallet_events_pb2.WalletEvent] = []
        self.error: grpc.aio.AioRpcError | None = None
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for reply in self.call:
                self.events.append(reply.event)
        except grpc.aio.AioRpcError as exc:
            self.error = exc

    async def close(self) -> None:
        self.call.cancel()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def all_have(readers: list[Reader], count: int) -> Callable[[], bool]:
    return lambda: all(len(r.events) == count for r in readers)


def company_request(company: str, cursor: str = "") -> wallet_service_pb2.WatchWalletEventsRequest:
    return wallet_service_pb2.WatchWalletEventsRequest(company_id=company, cursor=cursor)


def all_request(cursor: str = "") -> wallet_service_pb2.WatchWalletEventsRequest:
    return wallet_service_pb2.WatchWalletEventsRequest(all_companies=True, cursor=cursor)


async def close_all(readers: list[Reader], notifier: EventNotifier) -> None:
    await asyncio.gather(*(r.close() for r in readers))
    await until(lambda: notifier.stream_count == 0, "the server to end every stream", 30)


async def test_a_thousand_streams_cost_a_few_queries_per_notification(
    db_url: str, pool: asyncpg.Pool
) -> None:
    async with serving(db_url, watch_streams_per_caller=2000, grpc_max_concurrent_streams=2000) as (
        app,
        stubs,
    ):
        assert app.events is not None
        notifier = app.events
        company = await stubs.new_company()
        await add_card(pool, company)
        # 500 streams of the company and 500 of every company, all on one connection.
        readers = [Reader(stubs.wallet, company_request(company)) for _ in range(500)]
        readers += [Reader(stubs.wallet, all_request()) for _ in range(500)]
        try:
            await until(lambda: notifier.stream_count == 1000, "1,000 streams to join the shared reader")
            before, rounds_before, started = notifier.count.queries, notifier.rounds, time.monotonic()
            notifications = 5
            for _ in range(notifications):
                await emit(pool, company, 1)
                total = await pool.fetchval("select count(*) from wallet_events")
                await until(all_have(readers, total), "every stream to get it")
            spent, rounds = notifier.count.queries - before, notifier.rounds - rounds_before
            elapsed_s = time.monotonic() - started
            print(f"{spent} queries in {rounds} rounds for {notifications} notifications, {elapsed_s:.2f} s")
            # A round is one read of the company's new events and the all-companies reader's horizon,
            # order check, batch and "caught up" reads, for all 1,000 streams at once. Rounds come from
            # the notifications and from the re-check of held-back events (every 0.1 s while another
            # transaction holds the horizon back). A reader per stream would spend >= 1,000 per notification.
            # (One more round's worth: a round may straddle the `before` snapshot.)
            assert spent <= 6 * (rounds + 1), f"{spent} queries in {rounds} rounds"
            assert rounds <= notifications + elapsed_s / 0.1 + 2, f"{rounds} rounds in {elapsed_s:.2f} s"
            assert spent < 200
            assert all(r.error is None for r in readers)
            sequences = [e.sequence for e in readers[0].events]
            assert sequences == list(range(1, len(sequences) + 1))
            reference = readers[500].events
            assert all(
                [e.event_id for e in r.events] == [e.event_id for e in reference] for r in readers[500:]
            )
            # The events that came after every stream had joined were handed out by the one reader: each
            # stream got the very same cursors. (History read while catching up may be cut into batches
            # differently by each stream, every cut as good as any for resuming.)
            live = [e.cursor for e in reference[-notifications:]]
            assert all([e.cursor for e in r.events[-notifications:]] == live for r in readers[500:])
        finally:
            await close_all(readers, notifier)


async def test_a_stream_that_falls_behind_is_ended_with_its_cursor_and_the_others_keep_up(
    db_url: str, pool: asyncpg.Pool
) -> None:
    async with serving(db_url, watch_stream_buffer_events=500) as (app, stubs):
        assert app.events is not None
        notifier = app.events
        company = await stubs.new_company()
        await add_card(pool, company)
        fast = [Reader(stubs.wallet, company_request(company)), Reader(stubs.wallet, all_request())]
        # The slow consumer has its own connection, without BDP probing, so that the 64 KiB HTTP/2
        # window fills soon and the server's writes to it stop.
        slow_channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{app.port}", options=[("grpc.http2.bdp_probe", 0)]
        )
        slow_call = wallet_service_pb2_grpc.WalletServiceStub(slow_channel).WatchWalletEvents(
            company_request(company)
        )
        try:
            await until(lambda: notifier.stream_count == 3, "three streams to join")

            def slow_overflowed() -> bool:
                return any(s.overflowed for s in notifier._company_streams.get(company, ()))

            emitted = 0
            while not slow_overflowed():
                assert emitted < 20_000, "the slow stream never fell behind"
                await emit(pool, company, 50)
                emitted += 50
                total = await pool.fetchval(
                    "select count(*) from wallet_events where company_id = $1", company
                )
                # The others get every event while the slow one reads nothing.
                await until(all_have(fast, total), "the fast streams to keep up")
            got: list[wallet_events_pb2.WalletEvent] = []
            try:
                async with asyncio.timeout(WAIT_S):
                    async for reply in slow_call:
                        got.append(reply.event)
                raise AssertionError("the slow stream was not ended")
            except grpc.aio.AioRpcError as exc:
                error = rich_error(exc)
            assert error.code is grpc.StatusCode.ABORTED
            assert error.reason == "EVENT_STREAM_FELL_BEHIND"
            assert [e.sequence for e in got] == list(range(1, len(got) + 1))
            assert got and error.metadata["cursor"] == got[-1].cursor
            # Resuming with the cursor gives the rest, exactly once.
            resumed = Reader(stubs.wallet, company_request(company, error.metadata["cursor"]))
            try:
                await until(lambda: len(got) + len(resumed.events) == total, "the resumed stream to catch up")
                assert [e.sequence for e in got + resumed.events] == list(range(1, total + 1))
            finally:
                await resumed.close()
            assert all(r.error is None for r in fast)
        finally:
            slow_call.cancel()
            await slow_channel.close()
            await close_all(fast, notifier)


async def test_streams_joining_while_events_flow_get_every_event_exactly_once(
    db_url: str, pool: asyncpg.Pool, stubs: Stubs
) -> None:
    async with serving(db_url) as (app, stubs):
        assert app.events is not None
        notifier = app.events
        a, b = await stubs.new_company(), await stubs.new_company()
        for company in (a, b):
            await add_card(pool, company)
        await emit(pool, a, 5)
        early = [e.cursor for e in await _first(stubs, a, 3)]

        async def produce() -> None:
            for i in range(120):
                await emit(pool, a if i % 2 else b, 1 + i % 3)
                await asyncio.sleep(0.005)

        producer = asyncio.create_task(produce())
        readers: list[Reader] = []
        while not producer.done() and len(readers) < 90:
            readers.append(Reader(stubs.wallet, all_request()))
            readers.append(Reader(stubs.wallet, company_request(a)))
            readers.append(Reader(stubs.wallet, company_request(a, early[1])))
            await asyncio.sleep(0.03)
        await producer
        try:
            all_ids = [
                r["event_id"]
                for r in await pool.fetch("select event_id from wallet_events order by event_id")
            ]
            a_count = await pool.fetchval("select count(*) from wallet_events where company_id = $1", a)
            expected = {0: len(all_ids), 1: a_count, 2: a_count - 2}
            try:
                await until(
                    lambda: all(len(r.events) >= expected[i % 3] for i, r in enumerate(readers)),
                    "every stream to catch up",
                    20,
                )
            except AssertionError:
                lag = [
                    (i % 3, len(r.events), expected[i % 3], r.error)
                    for i, r in enumerate(readers)
                    if len(r.events) < expected[i % 3]
                ]
                raise AssertionError(
                    f"{len(lag)} of {len(readers)} behind: {lag[:5]} streams={notifier.stream_count}"
                ) from None
            await asyncio.sleep(0.2)  # anything delivered twice would have arrived by now
            for i, reader in enumerate(readers):
                assert reader.error is None
                if i % 3 == 0:
                    ids = [e.event_id for e in reader.events]
                    assert sorted(ids) == all_ids, "an all-companies stream missed or repeated an event"
                    for company in (a, b):
                        seqs = [e.sequence for e in reader.events if e.company_id == company]
                        assert seqs == sorted(seqs)
                else:
                    first = 1 if i % 3 == 1 else 3
                    assert [e.sequence for e in reader.events] == list(range(first, a_count + 1))
        finally:
            await close_all(readers, notifier)


async def _first(stubs: Stubs, company: str, count: int) -> list[wallet_events_pb2.WalletEvent]:
    reader = Reader(stubs.wallet, company_request(company))
    try:
        await until(lambda: len(reader.events) >= count, "the first events")
        return reader.events[:count]
    finally:
        await reader.close()

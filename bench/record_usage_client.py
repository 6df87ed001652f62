"""The load of bench/record_usage.py, run in client processes of their own.

One process's event loop (gRPC's aio stack in Python) costs about as much CPU per call as the server's,
so a single client process can be what limits a phase. Each phase is split over `processes` worker
processes (spawned once per bench run), which start together at a given wall-clock moment and each keep
`in_flight / processes` calls in flight; the phase's rate is all their calls over the longest worker's
time. Each worker reports its calls, its time, each call's latency and the CPU seconds it used.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from consofta.billing.v1 import usage_pb2, usage_service_pb2, usage_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


@dataclass(frozen=True)
class PhaseSpec:
    """What one phase sends: `kind` is check, unary or batch."""

    kind: str
    target: str
    in_flight: int
    seconds: float
    max_calls: int
    channels: int = 8
    # unary and batch: the company is prefix + (n % wallets); batch: items per call.
    prefix: str = ""
    wallets: int = 1
    size: int = 1
    tag: str = ""


@dataclass
class WorkerResult:
    calls: int
    seconds: float
    latencies_ms: list[float]
    cpu_s: float


async def run_calls(
    call: Callable[[int], Awaitable[object]],
    in_flight: int,
    max_calls: int,
    max_seconds: float,
    first: int = 0,
    step: int = 1,
) -> tuple[int, float, list[float]]:
    """Keep `in_flight` calls going until `max_calls` (numbered first, first + step, ...) or the time."""
    latencies: list[float] = []
    issued = 0
    started = time.perf_counter()
    deadline = started + max_seconds

    async def worker() -> None:
        nonlocal issued
        while issued < max_calls and time.perf_counter() < deadline:
            n = first + issued * step
            issued += 1
            t0 = time.perf_counter()
            await call(n)
            latencies.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return len(latencies), time.perf_counter() - started, latencies


def phase_call(spec: PhaseSpec, chans: list[grpc.aio.Channel]) -> Callable[[int], Awaitable[object]]:
    channels = len(chans)
    if spec.kind == "check":
        health = [health_pb2_grpc.HealthStub(c) for c in chans]
        check = health_pb2.HealthCheckRequest()
        return lambda n: health[n % channels].Check(check)
    usage = [usage_service_pb2_grpc.UsageServiceStub(c) for c in chans]
    email = usage_pb2.Usage(email=usage_pb2.EmailUsage(count=1))
    if spec.kind == "unary":

        def unary(n: int) -> Awaitable[object]:
            return usage[n % channels].RecordUsage(
                usage_service_pb2.RecordUsageRequest(
                    company_id=f"{spec.prefix}{n % spec.wallets}",
                    idempotency_key=f"{spec.tag}-{n}",
                    usage=email,
                )
            )

        return unary

    async def batch(n: int) -> object:
        company = f"{spec.prefix}{n % spec.wallets}"
        request = usage_service_pb2.RecordUsageBatchRequest(
            items=[
                usage_service_pb2.RecordUsageRequest(
                    company_id=company, idempotency_key=f"{spec.tag}-{n}-{i}", usage=email
                )
                for i in range(spec.size)
            ]
        )
        reply = await usage[n % channels].RecordUsageBatch(request, timeout=60)
        failed = [r.error for r in reply.results if r.WhichOneof("result") != "recorded"]
        assert not failed, failed[0]
        return reply

    return batch


_channels: dict[str, list[grpc.aio.Channel]] = {}


async def _worker(spec: PhaseSpec, index: int, processes: int, start_at: float) -> WorkerResult:
    chans = _channels.get(spec.target)
    if chans is None:
        # One TCP connection per channel (gRPC shares them between channels by default), so the load
        # spreads over the workers of `serve --workers N`, which the kernel assigns per connection.
        chans = [
            grpc.aio.insecure_channel(spec.target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(spec.channels)
        ]
        _channels[spec.target] = chans
    call = phase_call(spec, chans)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu0 = time.process_time()
    in_flight = max(1, spec.in_flight // processes + (1 if index < spec.in_flight % processes else 0))
    max_calls = spec.max_calls // processes + (1 if index < spec.max_calls % processes else 0)
    calls, seconds, latencies = await run_calls(
        call, in_flight, max_calls, spec.seconds, first=index, step=processes
    )
    return WorkerResult(calls, seconds, latencies, time.process_time() - cpu0)


_loop: asyncio.AbstractEventLoop | None = None


def run_worker(spec: PhaseSpec, index: int, processes: int, start_at: float) -> WorkerResult:
    """The entry point in a worker process: one loop kept for the process, so channels stay open."""
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(_worker(spec, index, processes, start_at))

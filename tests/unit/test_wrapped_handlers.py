"""WrappedHandlers: one wrapped handler per method and inner handler."""

from __future__ import annotations

from typing import Any

import grpc

from service.api.wrapped_handlers import WrappedHandlers


async def _behaviour(request: Any, context: Any) -> Any:
    return request


def _handler() -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(_behaviour)


def test_each_method_is_wrapped_once_and_a_new_inner_handler_afresh() -> None:
    built: list[tuple[str, grpc.RpcMethodHandler[Any, Any]]] = []

    def wrap(method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        built.append((method, handler))
        return _handler()

    handlers = WrappedHandlers(wrap)
    inner, other = _handler(), _handler()
    first = handlers.get("/a.S/M", inner)
    assert handlers.get("/a.S/M", inner) is first
    assert built == [("/a.S/M", inner)]
    # Another method, and the same method with another inner handler (a servicer registered again).
    assert handlers.get("/a.S/N", inner) is not first
    again = handlers.get("/a.S/M", other)
    assert again is not first
    assert handlers.get("/a.S/M", other) is again
    assert built == [("/a.S/M", inner), ("/a.S/N", inner), ("/a.S/M", other)]

"""Each interceptor's wrapped handler, built once per method instead of once per call.

gRPC asks every interceptor for a method's handler on every call. The handler an interceptor is given for
a method is the same object each time (the servicer's, or the next interceptor's cached one), so what it
wraps around that handler can be built the first time and reused: no closures, no handler tuples, no
deserializer wrapper per call. A different inner handler for the same method (a servicer registered
again) is wrapped afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

if TYPE_CHECKING:  # the stubs' generic; at run time the class takes no parameters
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]


class WrappedHandlers:
    """`get(method, handler)` is `wrap(method, handler)`, computed once per (method, handler)."""

    __slots__ = ("_built", "_wrap")

    def __init__(self, wrap: Callable[[str, Handler], Handler]) -> None:
        self._wrap = wrap
        # Keyed by method path: only methods a servicer registered get here, so it stays small.
        self._built: dict[str, tuple[Handler, Handler]] = {}

    def get(self, method: str, handler: Handler) -> Handler:
        built = self._built.get(method)
        if built is not None and built[0] is handler:
            return built[1]
        wrapped = self._wrap(method, handler)
        self._built[method] = (handler, wrapped)
        return wrapped

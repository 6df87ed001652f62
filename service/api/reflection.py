"""Server reflection (grpcurl list / describe / JSON calls).

The stock servicer asks the descriptor pool for the file containing a symbol; the upb-based protobuf
runtime finds services and messages but not methods ("pkg.Service.Method"), so `grpcurl describe` of a
method failed. A method lives in the same file as its service, so on a miss we retry with the parent name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

SERVICE_NAME: str = reflection.SERVICE_NAME


class _MethodAwareReflectionServicer(ReflectionServicer):  # type: ignore[misc]
    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        try:
            self._pool.FindFileContainingSymbol(fully_qualified_name)
        except KeyError:
            parent, _, _ = fully_qualified_name.rpartition(".")
            if parent:
                try:
                    self._pool.FindServiceByName(parent)
                except KeyError:
                    pass
                else:
                    fully_qualified_name = parent
        return super()._file_containing_symbol(request, fully_qualified_name)


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        _MethodAwareReflectionServicer((*service_names, SERVICE_NAME)), server
    )

import os

# Set before grpc is first imported: the tests spawn subprocesses (Postgres, servers) and never fork
# without exec, so gRPC's fork handlers would only print warnings.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

"""The hardening tests read log lines and metrics as the operations tests do."""

from tests.ops.conftest import info_logs  # noqa: F401 - a fixture, used by name

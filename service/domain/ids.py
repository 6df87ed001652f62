"""The shapes of the ids callers choose, checked at every edge (gRPC and the command line)."""

from __future__ import annotations

import re

COMPANY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

"""Shared fixtures. The real-parts fixtures live in their own modules:
`fleet.py` (sshd hosts in network namespaces) and `pgserver.py` (a PostgreSQL server)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["fleet", "pgserver"]

"""Shared by the benchmarks: print the rows as JSON (after the table) and optionally write them."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, Optional


def emit(payload: Dict[str, Any], path: Optional[str]) -> None:
    """Print ``payload`` as indented JSON, with the command that made it; also write it to ``path`` when given."""
    payload = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), **payload}
    text = json.dumps(payload, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")

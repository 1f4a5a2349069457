from __future__ import annotations

import sys
from pathlib import Path

# tests/ is not a package; make its helper modules importable.
sys.path.insert(0, str(Path(__file__).parent))

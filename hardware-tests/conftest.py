"""Hardware tests import the contract from the main suite: make the repository importable."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sys
from pathlib import Path

# The project root holds `components/` and `offline/`; tests import both.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

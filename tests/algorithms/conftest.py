"""Algorithm tests reuse the small digits experiments of tests/core/helpers.py."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "core"))
sys.path.insert(0, os.path.dirname(__file__))

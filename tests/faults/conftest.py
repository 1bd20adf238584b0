import os
import sys

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "bench"))  # benchhelpers.cli
sys.path.insert(0, os.path.join(HERE, "..", "core"))  # processhelpers

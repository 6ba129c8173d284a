import sys
from pathlib import Path

# Test helper modules (real tokenizers, shared strategies) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

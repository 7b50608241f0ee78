"""Test-session set-up: nothing may download weights or data.

The hub/cache variables are set before any test module imports torch, timm, open_clip or
huggingface_hub (they read them at import time), and point at a private, empty cache so that
an accidental download attempt fails loudly instead of silently filling ~/.cache.
"""

import os
import tempfile

_CACHE = tempfile.mkdtemp(prefix="raygrid-test-cache-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = os.path.join(_CACHE, "hf")
os.environ["TORCH_HOME"] = os.path.join(_CACHE, "torch")
os.environ["XDG_CACHE_HOME"] = os.path.join(_CACHE, "xdg")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
os.environ.setdefault("RAYGRID_CACHE", os.path.join(_CACHE, "raygrid"))

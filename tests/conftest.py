"""Test-session set-up: nothing may download weights or data.

The hub/cache variables are set before any test module imports torch, timm, open_clip or
huggingface_hub (they read them at import time), and point at a private, empty cache so that
an accidental download attempt fails loudly instead of silently filling ~/.cache.
"""

import os
import tempfile

# Under pytest-xdist the workers of one run share the cache (the demo data and the demo's
# pretrained weights are built once per run, not once per worker: both builds are safe to race,
# they are made in a temporary folder and renamed into place).
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
if _RUN:
    _CACHE = os.path.join(tempfile.gettempdir(), f"raygrid-test-cache-{_RUN}")
    os.makedirs(_CACHE, exist_ok=True)
else:
    _CACHE = tempfile.mkdtemp(prefix="raygrid-test-cache-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = os.path.join(_CACHE, "hf")
os.environ["TORCH_HOME"] = os.path.join(_CACHE, "torch")
os.environ["XDG_CACHE_HOME"] = os.path.join(_CACHE, "xdg")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
os.environ.setdefault("RAYGRID_CACHE", os.path.join(_CACHE, "raygrid"))
# One intra-op thread per process: the tests' tensors are tiny, and on 2 shared cores torch's
# thread pool spends its time spin-waiting (the backbone/fidelity/discriminator tests took 140 s of
# CPU with 2 threads and 31 s with 1). Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")


import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

import pytest  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Backbones with random weights, built once per session
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def backbone():
    """backbone(name) -> that backbone with random weights (seed 0), in eval mode, built once per
    session: building timm/open_clip networks is the slow part of many tests. Shared, so a test
    must not train or modify it (build its own with create_backbone for that)."""
    cache = {}

    def get(name):
        if name not in cache:
            import torch

            from raygrid.nets.backbones import create_backbone

            torch.manual_seed(0)
            cache[name] = create_backbone(name).eval()
        return cache[name]

    return get


# ---------------------------------------------------------------------------------------------
# A real S3 API on loopback (moto_server), for tests of S3 storage and artifacts.
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server():
    """Start `moto_server` on 127.0.0.1; yields its endpoint URL. Credentials are dummies."""
    exe = shutil.which("moto_server") or [sys.executable, "-m", "moto.server"]
    port = _free_port()
    cmd = ([exe] if isinstance(exe, str) else exe) + ["-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"moto_server did not start on {url}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def s3_env(moto_server, monkeypatch):
    """AWS/MLflow environment pointing at the moto server."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": moto_server, "RAYGRID_S3_ENDPOINT_URL": moto_server,
    }.items():
        monkeypatch.setenv(key, value)
    return moto_server

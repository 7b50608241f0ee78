"""bench/gpu_step.py keeps working: its CPU quick run prints the step table (no timing asserted)."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("gpu_step", ROOT / "bench" / "gpu_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_step_bench_quick_runs_on_cpu(capsys):
    # --quick is the CPU path whatever the machine has; in this process (torch is imported
    # already), one timed step and no warm-up: the test checks the script's table, not its figures
    _bench().main(["--quick", "--steps", "1", "--warmup", "0"])
    out = capsys.readouterr().out
    for row in ("precision", "runtime", "step time", "images/s", "FLOPs/step", "achieved", "MFU", "report step",
                "peak memory", "host syncs", "LR on device"):
        assert re.search(rf"^\s+{row}\s", out, re.MULTILINE), f"no '{row}' row in:\n{out}"
    assert "SwinIR-tiny x4, fidelity vgg16, discriminator patch_resnet50" in out
    images_per_s = float(re.search(r"images/s\s+([\d.]+)", out).group(1))
    gflops = float(re.search(r"FLOPs/step\s+([\d.,]+) GFLOP", out).group(1).replace(",", ""))
    assert images_per_s > 0 and gflops > 0
    # on CPU the runtime's "auto" settings resolve to the plain path: fp32, unfused Adam, LR from the loader
    assert re.search(r"^\s+precision\s+fp32; TF32 matmul/conv off$", out, re.MULTILINE)
    assert "fused Adam off, LR made by the loader" in out

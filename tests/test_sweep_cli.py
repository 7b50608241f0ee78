"""The CLI's dry run: counts, JSON plan, one-line errors, no torch imported."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from raygrid.space import SPACES_DIR
from raygrid.sweep import build_parser, main


def test_dry_run_prints_every_stage_count_of_the_paper_grid(capsys, tmp_path):
    out_file = tmp_path / "plan.json"
    assert main(["--space", "paper", "--dry-run", "--plan-out", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert "[assess] trainable assess: 60 trials" in out
    assert "[optimize] trainable sr_gan: 666 trials = 222 per seed × 3 seeds" in out
    assert "[transfer] trainable iqa_finetune: 54 trials = 18 per seed × 3 seeds" in out
    assert "scheduler: ASHA on val/psnr_y (max), grace 10000 steps, reduction 3" in out
    assert "resources per trial: 1 worker(s) × (1 GPU, 8 CPU) = 1 GPU" in out
    assert "GPU-hours at full budget" in out
    plan = json.loads(out_file.read_text())
    assert [len(s["trial_list"]) for s in plan["stages"]] == [60, 666, 54]


def test_stages_option_restricts_the_plan(capsys):
    assert main(["--space", "paper", "--dry-run", "--stages", "transfer"]) == 0
    out = capsys.readouterr().out
    assert "[transfer]" in out and "[optimize]" not in out and "total: 54 trials" in out


def test_a_path_works_as_well_as_a_name(capsys):
    assert main(["--space", str(SPACES_DIR / "demo.yaml"), "--dry-run"]) == 0
    assert "total: 18 trials" in capsys.readouterr().out


def test_help_documents_every_option():
    text = build_parser().format_help()
    for action in build_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help"
            assert action.option_strings[0] in text


def _dry_run(*args: str) -> subprocess.CompletedProcess:
    code = ("import sys, runpy; sys.argv = ['raygrid.sweep', *sys.argv[1:]];"
            "rc = 0\n"
            "try:\n runpy.run_module('raygrid.sweep', run_name='__main__')\n"
            "except SystemExit as e:\n rc = e.code\n"
            "bad = [m for m in ('torch', 'ray', 'mlflow', 'timm') if m in sys.modules]\n"
            "print('IMPORTED', bad)\nsys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


def test_dry_run_imports_no_torch_ray_or_mlflow():
    proc = _dry_run("--space", "paper", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED []" in proc.stdout


def test_misspelt_key_and_unknown_backbone_exit_nonzero_with_one_line(tmp_path):
    raw = yaml.safe_load((SPACES_DIR / "demo.yaml").read_text())
    raw["stages"]["optimize"]["axes"]["fidelity.backbone"] = ["vgg16_r", "resnet51"]
    bad_name = tmp_path / "bad_backbone.yaml"
    bad_name.write_text(yaml.safe_dump(raw))
    raw = yaml.safe_load((SPACES_DIR / "demo.yaml").read_text())
    raw["stages"]["optimize"]["budgett"] = raw["stages"]["optimize"].pop("budget")
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text(yaml.safe_dump(raw))
    for path, key in ((bad_name, "stages.optimize.axes.fidelity.backbone[1]"), (bad_key, "stages.optimize.budgett")):
        proc = _dry_run("--space", str(path), "--dry-run")
        assert proc.returncode == 2
        err = proc.stderr.strip()
        assert len(err.splitlines()) == 1, err
        assert err.startswith(f"error: {path}: {key}: "), err
        assert "Traceback" not in proc.stderr

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
    assert "[optimize] trainable sr_gan: 774 trials = 258 per seed × 3 seeds" in out
    assert "[transfer] trainable iqa_finetune: 66 trials = 22 per seed × 3 seeds" in out
    assert "scheduler: none, every trial runs its whole budget (metric val/psnr_y, max)" in out
    assert "report: final values at step 100000; a trial that did not reach it is listed, not pooled" in out
    assert "resources per trial: 1 worker(s) × (1 GPU, 8 CPU) = 1 GPU" in out
    assert "GPU-hours at full budget" in out
    assert "per disc_init: imagenet 666 trials" in out
    plan = json.loads(out_file.read_text())
    assert [len(s["trial_list"]) for s in plan["stages"]] == [60, 774, 66]


def test_stages_option_restricts_the_plan(capsys):
    assert main(["--space", "paper", "--dry-run", "--stages", "transfer"]) == 0
    out = capsys.readouterr().out
    assert "[transfer]" in out and "[optimize]" not in out and "total: 66 trials" in out


def test_a_path_works_as_well_as_a_name(capsys):
    assert main(["--space", str(SPACES_DIR / "demo.yaml"), "--dry-run"]) == 0
    assert "total: 18 trials" in capsys.readouterr().out


def test_generators_dry_run_prints_trials_and_gpu_hours_per_generator(capsys):
    assert main(["--space", "generators", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[optimize] trainable sr_gan: 2322 trials = 774 per seed × 3 seeds" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("per generator.arch:"))
    parts = dict(p.strip().split(" ", 1) for p in line.split(":", 1)[1].split(";"))
    assert list(parts) == ["swinir", "rrdbnet", "hat"]
    hours = {}
    for arch, text in parts.items():
        trials, gpu = text.split(", ")
        assert trials == "774 trials"
        hours[arch] = float(gpu.removesuffix(" GPU-h").replace(",", ""))
    # equal budgets are equal steps and batches: the bigger networks cost more GPU-hours
    assert hours["swinir"] < hours["rrdbnet"] < hours["hat"]


def test_help_documents_every_option():
    text = build_parser().format_help()
    for action in build_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help"
            assert action.option_strings[0] in text


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m raygrid.sweep ARGS` in a subprocess that prints, last, which of torch, Ray,
    MLflow and timm it imported (`IMPORTED [...]` on stdout)."""
    code = ("import sys, runpy; sys.argv = ['raygrid.sweep', *sys.argv[1:]];"
            "rc = 0\n"
            "try:\n runpy.run_module('raygrid.sweep', run_name='__main__')\n"
            "except SystemExit as e:\n rc = e.code\n"
            "bad = [m for m in ('torch', 'ray', 'mlflow', 'timm') if m in sys.modules]\n"
            "print('IMPORTED', bad)\nsys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


def test_dry_run_imports_no_torch_ray_or_mlflow():
    proc = run_cli("--space", "paper", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED []" in proc.stdout


def test_protocol_violations_exit_2_with_one_line_naming_file_and_key(tmp_path, capsys):
    from raygrid.cli import main as cli_main

    raw = yaml.safe_load((SPACES_DIR / "demo.yaml").read_text())
    raw["stages"]["optimize"]["base"]["data"]["test"] = ["demo_sr_test", "demo_sr_val"]
    both = tmp_path / "val_and_test.yaml"
    both.write_text(yaml.safe_dump(raw))
    raw = yaml.safe_load((SPACES_DIR / "demo.yaml").read_text())
    raw["stages"]["optimize"]["base"]["adversarial"]["trunk_trainable"] = False
    frozen = tmp_path / "frozen_source.yaml"
    frozen.write_text(yaml.safe_dump(raw))
    cases = [(both, "stages.optimize.base.data.test[1]", "'demo_sr_val' is also a selection set"),
             (frozen, "stages.transfer.base.model.discriminator", "discriminator trunk was frozen")]
    for path, key, message in cases:
        for command in (["plan"], ["sweep", "--dry-run"]):
            assert cli_main([*command, "--space", str(path)]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1, err
            assert err.startswith(f"error: {path}: {key}: ") and message in err, err


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
        proc = run_cli("--space", str(path), "--dry-run")
        assert proc.returncode == 2
        err = proc.stderr.strip()
        assert len(err.splitlines()) == 1, err
        assert err.startswith(f"error: {path}: {key}: "), err
        assert "Traceback" not in proc.stderr

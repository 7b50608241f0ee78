"""A small MLflow store with known values, written through raygrid's own tracking code.

Runs are logged by `raygrid.run.tracking.TrialRunLogger` (the Tune callback the sweep uses) driven by
fake trial objects, under a sweep run made by `tracking.start_sweep_run` with the `plan.json` the
runner logs. Every number below is chosen so that the tables and statistics can be computed by
hand (tests/test_analysis.py does, in comments next to each expected value).

Backbones r = vgg16_r, v = vgg16, res = resnet50, c = convnext_tiny.

assess (uniform α/β), SRCC per benchmark (live, csiq, tid2013) → mean → IQA rank
    r .50 .40 .30 → .40 → 4      v .90 .85 .80 → .85 → 1
    res .80 .75 .70 → .75 → 2    c .70 .65 .60 → .65 → 3
  fitted on kadid10k: the same + .05, except vgg16_r/csiq (failed) and convnext/tid2013 (never ran).

optimize, panel at the final step (step 30); step 20 = psnr +0.3, fidelity distances +0.01 (the
best checkpoint by val/psnr_y); step 10 = psnr −1, ssim −.05, distances +.05.
    no adversarial loss: NOADV below (IQA and optimization rankings disagree).
    adversarial (d, w): ADV_BASE[b] + DISC[d] + WEIGHT[w] (backbone-independent offsets).
  (vgg16, vanilla_conv, 0.01) is stopped by the scheduler after step 20; (convnext_tiny,
  patch_resnet50, 0.01) fails after step 10; convnext_tiny runs have no meta.json in their
  checkpoints (best values come from the metric histories).

transfer (resnet50, FR protocol train kadid10k, test live/csiq), seeds 0-2, test SRCC at the
best step (20; step 30 = −.05): imagenet .90/.85, discriminator .82/.78, random .80/.74, each
+ .01·seed; random seed 2 fails.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import types
from pathlib import Path
from typing import Any

R, V, RES, C = "vgg16_r", "vgg16", "resnet50", "convnext_tiny"
BACKBONES = [R, V, RES, C]
BENCHES = ["live", "csiq", "tid2013"]
EVALUATORS = ["psnr_y", "ssim_y", f"fidelity_{R}", f"fidelity_{V}", f"fidelity_{RES}", f"fidelity_{C}"]
VAL_SET = "demo_sr_val"
EXPERIMENT = "fixture"
PARTIAL_EXPERIMENT = "fixture_partial"

IQA_UNIFORM = {
    R: [0.50, 0.40, 0.30],
    V: [0.90, 0.85, 0.80],
    RES: [0.80, 0.75, 0.70],
    C: [0.70, 0.65, 0.60],
}
FITTED_BONUS = 0.05
ASSESS_FAILED = (R, "csiq", "kadid10k")
ASSESS_NOT_RUN = (C, "tid2013", "kadid10k")

# evaluator order: psnr_y, ssim_y, fid_r, fid_v, fid_res, fid_c
NOADV = {
    R: [25.0, 0.80, 0.10, 0.12, 0.11, 0.13],
    V: [24.0, 0.76, 0.20, 0.05, 0.21, 0.23],
    RES: [24.5, 0.78, 0.15, 0.14, 0.06, 0.18],
    C: [23.5, 0.74, 0.25, 0.20, 0.22, 0.03],
}
ADV_BASE = {
    R: [24.0, 0.75, 0.08, 0.08, 0.08, 0.08],
    C: [23.6, 0.73, 0.10, 0.10, 0.10, 0.10],
    RES: [23.2, 0.71, 0.12, 0.12, 0.12, 0.12],
    V: [22.8, 0.69, 0.14, 0.14, 0.14, 0.14],
}
DISC = {
    "vanilla_conv": [-0.4, -0.02, 0.025, 0.025, 0.025, 0.025],
    "patch_resnet50": [0.4, 0.02, -0.02, -0.02, -0.02, -0.02],
}
WEIGHT = {0.01: [0.1, 0.01, -0.01, -0.01, -0.01, -0.01], 0.05: [-0.1, -0.01, 0.01, 0.01, 0.01, 0.01]}
STEP_OFFSET = {  # added to the final values at earlier steps
    10: [-1.0, -0.05, 0.05, 0.05, 0.05, 0.05],
    20: [0.3, 0.0, 0.01, 0.01, 0.01, 0.01],
    30: [0.0] * 6,
}
OPT_STOPPED = (V, "vanilla_conv", 0.01)
OPT_FAILED = (C, "patch_resnet50", 0.01)
NO_META_BACKBONE = C
# runs whose checkpoints carry SwinIR weights ("ema"); the other representative runs do not
WITH_GENERATOR = {(R, "none", 0.0), (R, "patch_resnet50", 0.01), (RES, "none", 0.0), (V, "none", 0.0),
                  (RES, "patch_resnet50", 0.01)}

TRANSFER = {
    "imagenet": {"live": 0.90, "csiq": 0.85},
    "discriminator": {"live": 0.82, "csiq": 0.78},
    "random": {"live": 0.80, "csiq": 0.74},
}
TRANSFER_FAILED = ("random", 2)


def space_dict(name: str = EXPERIMENT) -> dict[str, Any]:
    res = {"workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 1}
    return {
        "name": name,
        "stages": {
            "assess": {
                "trainable": "assess",
                "base": {"fidelity": {"weights": "random"}, "n_boot": 10},
                "axes": {"fidelity.backbone": BACKBONES, "benchmark": BENCHES, "fit_on": [None, "kadid10k"]},
                "budget": {"steps": 1, "eval_every": 1},
                "scheduler": {"kind": "none", "metric": "abs_srcc", "mode": "max"},
                "resources": res,
            },
            "optimize": {
                "trainable": "sr_gan",
                "base": {
                    "generator": {"preset": "tiny"},
                    "fidelity": {"weights": "random"},
                    "adversarial": {"weights": "random"},
                    "data": {"train": "demo_sr_train", "val": [VAL_SET], "hr_crop": 64, "batch_size": 2},
                    "eval": {"fidelity_backbones": BACKBONES, "weights": "random"},
                },
                "axes": {"fidelity.backbone": BACKBONES, "loss.adversarial_weight": [0, 0.01, 0.05],
                         "adversarial.discriminator": ["none", "vanilla_conv", "patch_resnet50"]},
                "conditions": [
                    {"if": {"loss.adversarial_weight": 0}, "then": {"adversarial.discriminator": "none"}},
                    {"if": {"loss.adversarial_weight": {"gt": 0}}, "then": {"adversarial.discriminator": {"ne": "none"}}},
                ],
                "budget": {"steps": 30, "eval_every": 10},
                "scheduler": {"kind": "asha", "metric": "val/psnr_y", "mode": "max", "grace_period": 10,
                              "reduction_factor": 2},
                "resources": res,
            },
            "transfer": {
                "trainable": "iqa_finetune",
                "base": {"model": {"weights": "random",
                                   "discriminator": {"head": "patch", "fidelity_backbone": V, "adversarial_weight": 0.05}},
                         "data": {"image_size": 64, "batch_size": 4}},
                "axes": {"model.backbone": [RES], "model.init": ["imagenet", "discriminator", "random"]},
                "linked": {"protocol": {"fr_kadid": {"model.kind": "fr", "data.train": "kadid10k",
                                                     "data.test": ["live", "csiq"]}}},
                "seeds": [0, 1, 2],
                "budget": {"steps": 30, "eval_every": 10},
                "scheduler": {"kind": "asha", "metric": "val/srcc", "mode": "max", "grace_period": 10,
                              "reduction_factor": 2},
                "resources": res,
            },
        },
    }


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------


def opt_final(backbone: str, disc: str, weight: float) -> list[float]:
    if disc == "none":
        return list(NOADV[backbone])
    return [a + d + w for a, d, w in zip(ADV_BASE[backbone], DISC[disc], WEIGHT[weight])]


def opt_at(backbone: str, disc: str, weight: float, step: int) -> dict[str, float]:
    final = opt_final(backbone, disc, weight)
    vals = [f + o for f, o in zip(final, STEP_OFFSET[step])]
    out = {}
    for e, v in zip(EVALUATORS, vals):
        out[f"val/{e}"] = v
        out[f"val/{VAL_SET}/{e}"] = v
    out.update({"loss/g_total": 1.0 / step, "loss/g_fidelity": 0.5 / step, "loss/g_adversarial": 0.1 * weight * step,
                "loss/g_pixel": 0.0, "loss/d": 0.7 - step / 100, "throughput/images_per_s": 12.0})
    return out


def transfer_at(init: str, seed: int, step: int) -> dict[str, float]:
    delta = {10: -0.1, 20: 0.0, 30: -0.05}[step]
    out = {"val/srcc": {10: 0.5, 20: 0.7, 30: 0.6}[step], "loss/train": 1.0 / step, "throughput/images_per_s": 30.0}
    out["val/plcc"] = out["val/srcc"] + 0.02
    for bench, v in TRANSFER[init].items():
        s = v + 0.01 * seed + delta
        out.update({f"test/{bench}/srcc": s, f"test/{bench}/srcc_lo": s - 0.04, f"test/{bench}/srcc_hi": s + 0.04,
                    f"test/{bench}/plcc": s + 0.03, f"test/{bench}/plcc_lo": s - 0.01, f"test/{bench}/plcc_hi": s + 0.07})
    return out


def assess_values(backbone: str, bench: str, fit_on: str | None) -> dict[str, float]:
    srcc = IQA_UNIFORM[backbone][BENCHES.index(bench)] + (FITTED_BONUS if fit_on else 0.0)
    return {"srcc": srcc, "srcc_lo": srcc - 0.05, "srcc_hi": srcc + 0.05, "plcc": srcc + 0.02,
            "plcc_lo": srcc - 0.03, "plcc_hi": srcc + 0.07, "plcc_logistic": srcc + 0.03, "krcc": srcc - 0.2,
            "krcc_lo": srcc - 0.25, "krcc_hi": srcc - 0.15, "abs_srcc": abs(srcc), "n": 100.0}


# ---------------------------------------------------------------------------------------------
# Logging through TrialRunLogger
# ---------------------------------------------------------------------------------------------


def _fake_trial(trial_id: str, trial, meta_extra: dict[str, Any] | None = None):
    # what Tune hands the callback: the trial's JSON form (Trial.to_json), as the runner builds it
    return types.SimpleNamespace(trial_id=trial_id, config={"spec": trial.to_json(**(meta_extra or {}))},
                                 status="RUNNING", error_file=None)


def _checkpoint(root: Path, trial_id: str, step: int, metrics: dict[str, float], state: dict[str, Any],
                with_meta: bool) -> str:
    import torch

    d = root / trial_id / f"checkpoint_{step:06d}"
    d.mkdir(parents=True, exist_ok=True)
    torch.save({**state, "step": step, "opt_g": {}, "rng": None}, d / "state.pt")
    if with_meta:
        (d / "meta.json").write_text(json.dumps({"step": step, "metrics": {"step": step, **metrics}}))
    return str(d)


_GENERATOR: dict[str, Any] = {}


def _generator_state(seed: int) -> dict[str, Any]:
    """A tiny SwinIR state dict, different per seed: one model is built (0.3 s) and its weights
    are perturbed, instead of building one per run."""
    import torch

    from raygrid.nets.generators import create_generator

    if "base" not in _GENERATOR:
        torch.manual_seed(0)
        _GENERATOR["base"] = create_generator("swinir", "tiny", scale=4).state_dict()
    g = torch.Generator().manual_seed(seed)
    return {k: (v + 0.02 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone())
            for k, v in _GENERATOR["base"].items()}


def build_store(root: Path, tracking_uri: str | None = None, partial: bool = False) -> dict[str, Any]:
    """Log the fixture sweep into `tracking_uri` (default: sqlite under root).

    partial=True logs the same plan but only the assess stage (a sweep that stopped after it).
    Returns {"tracking_uri", "experiment", "sweep_run_id", "run_ids": {(stage, point...): run_id}}.
    """
    from raygrid.run import tracking
    from raygrid.plan import make_plan, plan_to_json
    from raygrid.spec import mlflow as names
    from raygrid.space import parse_space

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or tracking.default_tracking_uri(str(root))
    name = PARTIAL_EXPERIMENT if partial else EXPERIMENT
    sweep = parse_space(space_dict(name), source=f"<{name}>")
    exp_id = tracking.ensure_experiment(uri, name, str(root / "mlartifacts"))
    sweep_run_id, _ = tracking.start_sweep_run(uri, exp_id, name, str(root / "ray"), resume=False)
    client = names.client(uri)
    (root / "plan.json").write_text(json.dumps(plan_to_json(make_plan(sweep), sweep), default=str))
    client.log_artifact(sweep_run_id, str(root / "plan.json"))

    ckpts = root / "ckpt"
    run_ids: dict[tuple, str] = {}

    def logger(stage: str):
        sched = sweep.stages[stage].spec.scheduler
        return tracking.TrialRunLogger(uri, exp_id, sweep_run_id, name, stage, sched.metric, sched.mode,
                                       sweep.stages[stage].spec.budget.steps, str(root / "ray"), telemetry=False)

    # -- assess -------------------------------------------------------------------------------
    cb = logger("assess")
    for t in sweep.stages["assess"].trials:
        b, bench, fit = t.config.fidelity.backbone, t.config.benchmark, t.config.fit_on
        if (b, bench, fit) == ASSESS_NOT_RUN:
            continue
        trial = _fake_trial(f"assess_{t.index:05d}", t)
        cb.on_trial_start(0, [trial], trial)
        if (b, bench, fit) == ASSESS_FAILED:
            trial.status = "ERROR"
            cb.on_trial_error(0, [trial], trial)
        else:
            cb.on_trial_result(0, [trial], trial, {"step": 1, **assess_values(b, bench, fit), "timestamp": 1})
            trial.status = "TERMINATED"
            cb.on_trial_complete(0, [trial], trial)
        run_ids[("assess", b, bench, fit)] = cb._trials[trial.trial_id]["run_id"]
    if partial:
        return {"tracking_uri": uri, "experiment": name, "sweep_run_id": sweep_run_id, "run_ids": run_ids}

    # -- optimize -----------------------------------------------------------------------------
    cb = logger("optimize")
    for t in sweep.stages["optimize"].trials:
        b = t.config.fidelity.backbone
        d, w = t.config.adversarial.discriminator, float(t.config.loss.adversarial_weight)
        cell = (b, d, w)
        trial = _fake_trial(f"optimize_{t.index:05d}", t)
        cb.on_trial_start(0, [trial], trial)
        steps = [10, 20] if cell == OPT_STOPPED else [10] if cell == OPT_FAILED else [10, 20, 30]
        gen = _generator_state(t.index) if cell in WITH_GENERATOR else None
        for step in steps:
            metrics = opt_at(b, d, w, step)
            state = {"discriminator_name": d}
            if gen is not None and step >= 20:
                state["ema"] = gen
            path = _checkpoint(ckpts, trial.trial_id, step, metrics, state, with_meta=b != NO_META_BACKBONE)
            result = {"step": step, **metrics, "checkpoint_path": path, "timestamp": step}
            if step == 10:
                result["progress/start_step"] = 0
            cb.on_trial_result(0, [trial], trial, result)
        if cell == OPT_FAILED:
            trial.status = "ERROR"
            cb.on_trial_error(0, [trial], trial)
        else:
            trial.status = "TERMINATED"
            cb.on_trial_complete(0, [trial], trial)
        run_ids[("optimize", b, d, w)] = cb._trials[trial.trial_id]["run_id"]

    # -- transfer -----------------------------------------------------------------------------
    cb = logger("transfer")
    source = run_ids[("optimize", V, "patch_resnet50", 0.05)]
    for t in sweep.stages["transfer"].trials:
        init, seed = t.config.model.init, t.config.seed
        extra = {"init_from_run": source} if init == "discriminator" else None
        trial = _fake_trial(f"transfer_{t.index:05d}", t, extra)
        cb.on_trial_start(0, [trial], trial)
        failed = (init, seed) == TRANSFER_FAILED
        for step in ([10] if failed else [10, 20, 30]):
            metrics = transfer_at(init, seed, step)
            path = _checkpoint(ckpts, trial.trial_id, step, metrics, {"model": {}}, with_meta=True)
            cb.on_trial_result(0, [trial], trial, {"step": step, **metrics, "checkpoint_path": path, "timestamp": step})
        trial.status = "ERROR" if failed else "TERMINATED"
        (cb.on_trial_error if failed else cb.on_trial_complete)(0, [trial], trial)
        run_ids[("transfer", init, seed)] = cb._trials[trial.trial_id]["run_id"]
    return {"tracking_uri": uri, "experiment": name, "sweep_run_id": sweep_run_id, "run_ids": run_ids}


# ---------------------------------------------------------------------------------------------
# One store per test session, shared by test_analysis and test_report
# ---------------------------------------------------------------------------------------------

_STORES: dict[str, dict[str, Any]] = {}


def _fast_dir(tmp_path_factory) -> Path:
    """sqlite commits fsync (about 10 ms each on a disk, hundreds per store): put the store on
    tmpfs when there is one, removed at exit; otherwise pytest's tmp dir."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        d = Path(tempfile.mkdtemp(prefix="raygrid-report-test-", dir=shm))
        atexit.register(shutil.rmtree, d, True)
        return d
    return tmp_path_factory.mktemp("mlflow-store")


def shared_store(tmp_path_factory, partial: bool = False) -> dict[str, Any]:
    """Build the store once per session (MLflow's first-time sqlite set-up costs seconds);
    both experiments live in the same sqlite file."""
    key = "partial" if partial else "full"
    if key not in _STORES:
        if "root" not in _STORES:
            _STORES["root"] = {"path": _fast_dir(tmp_path_factory)}
        root = _STORES["root"]["path"]
        uri = f"sqlite:///{root / 'mlflow.db'}"
        _STORES[key] = build_store(root / key, tracking_uri=uri, partial=partial)
    return _STORES[key]

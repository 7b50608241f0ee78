"""Small MLflow stores with known values, written through raygrid's own tracking code.

Runs are logged by `raygrid.run.tracking.TrialRunLogger` (the Tune callback the sweep uses) driven by
fake trial objects, under a sweep run made by `tracking.start_sweep_run` with the `plan.json` the
runner logs. Each reported checkpoint carries what the train loops hand the callback (the Wave B
contract): `scores.parquet` (the per-item table at that step) and, once, `evaluators.json` (the
evaluator record); a run's outcome comes from its last report (`outcome/collapsed_at`). Where the
callback of this checkout does not log those yet, `_as_the_callback_does` logs them under the
contract's names, so the reader is tested against the contract either way.

Every number is chosen so that the tables and statistics can be computed by hand
(tests/test_analysis.py does, in comments next to each expected value).
Backbones r = vgg16_r, v = vgg16, res = resnet50, c = convnext_tiny.

assess: per benchmark 5 distorted images of 4 references (A A B C D), human score 1..5; each
    measure's quality ranks the 5 images as a permutation with sum d² = 20(1 − SRCC), so
    SRCC per benchmark (live, csiq, tid2013) → mean → IQA rank
    r .5 .4 .3 → .4 → 4     v .9 .8 .7 → .8 → 1     res .8 .7 .6 → .7 → 2     c .7 .6 .5 → .6 → 3
  fitted on kadid10k (live only): the same + .1, except vgg16_r (failed) and convnext (never ran).

optimize: test set demo_sr_val (3 images, per-image offsets −1, 0, +1 × a per-evaluator scale, the
same for every run) and selection set set5 (val/, one image). Evaluators: psnr_y, ssim_y,
fidelity_<b> x4 (DISTS-style, lower is better), niqe (no-reference, lower is better); their records
say which share the run's loss backbone or discriminator trunk. Values at the final step 30:
    no adversarial loss: NOADV below. PSNR/SSIM rank v1 res2 c3 r4 (the IQA order); the four
      fidelity measures and NIQE rank r1 c2 res3 v4 (the reverse).
    adversarial (d, w): ADV_BASE[b] + DISC[d] + WEIGHT[w] (offsets the same for every backbone).
  step 20 = psnr +0.3 and distances +.01 (the best step by val/psnr_y); step 10 = psnr −1.
  (vgg16, vanilla_conv, 0.01) is stopped by the scheduler after step 20; (resnet50, vanilla_conv,
  0.01) collapses at step 20; (convnext_tiny, patch_resnet50, 0.01) fails after step 10 (loop.py:88);
  convnext_tiny runs have no meta.json in their checkpoints.

transfer (resnet50, FR protocol train kadid10k, test live/csiq), seeds 0-2, report "best" by
val/srcc (step 20; step 30 = −.1): SRCC per seed in TRANSFER; random seed 2 fails.

A second experiment (GENERATORS_EXPERIMENT): 3 backbones x generator.arch {swinir, hat}, no
adversarial loss; with SwinIR every evaluator ranks the losses in the IQA order, with HAT in reverse.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import json
import os
import shutil
import tempfile
import types
from pathlib import Path
from typing import Any

from mlflow_store import new_store

R, V, RES, C = "vgg16_r", "vgg16", "resnet50", "convnext_tiny"
BACKBONES = [R, V, RES, C]
BENCHES = ["live", "csiq", "tid2013"]
REFS = ["A", "A", "B", "C", "D"]
EVALUATORS = ["psnr_y", "ssim_y", f"fidelity_{R}", f"fidelity_{V}", f"fidelity_{RES}", f"fidelity_{C}", "niqe"]
TEST_SET, VAL_SET = "demo_sr_val", "set5"
IMAGES = ["img0", "img1", "img2"]
SCALE = [1.0, 0.01, 0.01, 0.01, 0.01, 0.01, 0.1]  # per-image spread of each evaluator
EXPERIMENT, PARTIAL_EXPERIMENT, GENERATORS_EXPERIMENT = "fixture", "fixture_partial", "fixture_generators"


def record(e: str) -> dict[str, Any]:
    """The evaluator record of `e` (without `shares`, which depends on the run)."""
    if e.startswith("fidelity_"):
        b = e[len("fidelity_"):]
        return {"name": e, "metric": e, "family": "DISTS-style fidelity", "mode": "FR", "higher_better": False,
                "range": [0.0, 1.0], "backbone": b, "weights": "random"}
    if e == "niqe":
        return {"name": e, "metric": e, "family": "natural scene statistics", "mode": "NR", "higher_better": False,
                "range": None, "backbone": None, "weights": None}
    return {"name": e, "metric": e, "family": "signal fidelity (BT.601 Y)", "mode": "FR", "higher_better": True,
            "range": None, "backbone": None, "weights": None}


IQA_UNIFORM = {R: [0.5, 0.4, 0.3], V: [0.9, 0.8, 0.7], RES: [0.8, 0.7, 0.6], C: [0.7, 0.6, 0.5]}
FITTED_BONUS = 0.1
ASSESS_FAILED = (R, "live", "kadid10k")
ASSESS_NOT_RUN = (C, "live", "kadid10k")

# evaluator order: psnr_y, ssim_y, fid_r, fid_v, fid_res, fid_c, niqe
NOADV = {
    R: [23.5, 0.74, 0.05, 0.05, 0.05, 0.05, 3.0],
    V: [25.0, 0.80, 0.20, 0.20, 0.20, 0.20, 4.5],
    RES: [24.5, 0.78, 0.15, 0.15, 0.15, 0.15, 4.0],
    C: [24.0, 0.76, 0.10, 0.10, 0.10, 0.10, 3.5],
}
ADV_BASE = {
    R: [24.0, 0.75, 0.08, 0.08, 0.08, 0.08, 3.0],
    C: [23.6, 0.73, 0.10, 0.10, 0.10, 0.10, 3.2],
    RES: [23.2, 0.71, 0.12, 0.12, 0.12, 0.12, 3.4],
    V: [22.8, 0.69, 0.14, 0.14, 0.14, 0.14, 3.6],
}
DISC = {"vanilla_conv": [-0.4, -0.02, 0.025, 0.025, 0.025, 0.025, 0.2],
        "patch_resnet50": [0.4, 0.02, -0.02, -0.02, -0.02, -0.02, -0.2]}
WEIGHT = {0.01: [0.1, 0.01, -0.01, -0.01, -0.01, -0.01, -0.05], 0.05: [-0.1, -0.01, 0.01, 0.01, 0.01, 0.01, 0.05]}
STEP_OFFSET = {10: [-1.0, -0.05, 0.05, 0.05, 0.05, 0.05, 0.5], 20: [0.3, 0.0, 0.01, 0.01, 0.01, 0.01, 0.0],
               30: [0.0] * 7}
OPT_STOPPED = (V, "vanilla_conv", 0.01)
OPT_COLLAPSED = (RES, "vanilla_conv", 0.01)
OPT_FAILED = (C, "patch_resnet50", 0.01)
NO_META_BACKBONE = C
# runs whose checkpoints carry SwinIR weights ("ema"); the other representative runs do not
WITH_GENERATOR = {(R, "none", 0.0), (R, "patch_resnet50", 0.01), (V, "none", 0.0)}
ERROR_TEXT = ('Traceback (most recent call last):\n  File "/src/raygrid/stages/loop.py", line 301, in train\n'
              '    step_fn()\n  File "/src/raygrid/stages/optimize/loop.py", line 88, in step\n'
              '    raise RuntimeError("CUDA error: out of memory")\nRuntimeError: CUDA error: out of memory\n')

TRANSFER = {  # SRCC at the reported (best) step 20, per seed 0, 1, 2
    "imagenet": {"live": [0.9, 0.9, 0.8], "csiq": [0.8, 0.8, 0.7]},
    "discriminator": {"live": [0.8, 0.8, 0.8], "csiq": [0.7, 0.7, 0.7]},
    "random": {"live": [0.6, 0.7, 0.6], "csiq": [0.5, 0.6, 0.5]},
}
TRANSFER_FAILED = ("random", 2)
TRANSFER_STEP = {10: -0.2, 20: 0.0, 30: -0.1}
TRANSFER_VAL = {10: 0.5, 20: 0.7, 30: 0.6}


def ranking(rho: float, n: int = 5) -> tuple[int, ...]:
    """The first permutation of 1..n (itertools order) whose Spearman correlation with 1..n is rho."""
    target = round((1 - rho) * n * (n * n - 1) / 6)
    return next(p for p in itertools.permutations(range(1, n + 1))
                if sum((a - b) ** 2 for a, b in zip(p, range(1, n + 1))) == target)


def space_dict(name: str = EXPERIMENT) -> dict[str, Any]:
    res = {"workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 1}
    opt_base = {"generator": {"preset": "tiny"}, "fidelity": {"weights": "random"}, "adversarial": {"weights": "random"},
                "data": {"train": "demo_sr_train", "val": [VAL_SET], "test": [TEST_SET], "hr_crop": 64, "batch_size": 2},
                "eval": {"fidelity_backbones": BACKBONES, "weights": "random", "nr_metrics": ["niqe"]}}
    if name == GENERATORS_EXPERIMENT:
        opt_base["eval"] = {"fidelity_backbones": BACKBONES[:3], "weights": "random"}
        return {"name": name, "stages": {
            "assess": {"trainable": "assess", "base": {"fidelity": {"weights": "random"}, "n_boot": 10, "benchmark": "live"},
                       "axes": {"fidelity.backbone": BACKBONES[:3]}, "budget": {"steps": 1, "eval_every": 1},
                       "scheduler": {"kind": "none", "metric": "abs_srcc", "mode": "max"}, "resources": res},
            "optimize": {"trainable": "sr_gan", "base": opt_base,
                         "axes": {"fidelity.backbone": BACKBONES[:3], "generator.arch": ["swinir", "hat"]},
                         "budget": {"steps": 10, "eval_every": 10},
                         "scheduler": {"kind": "none", "metric": "val/psnr_y", "mode": "max"}, "resources": res}}}
    return {
        "name": name,
        "stages": {
            "assess": {
                "trainable": "assess", "base": {"fidelity": {"weights": "random"}, "n_boot": 10},
                "axes": {"fidelity.backbone": BACKBONES, "benchmark": BENCHES, "fit_on": [None, "kadid10k"]},
                "conditions": [{"if": {"fit_on": "kadid10k"}, "then": {"benchmark": "live"}}],
                "budget": {"steps": 1, "eval_every": 1},
                "scheduler": {"kind": "none", "metric": "abs_srcc", "mode": "max"}, "resources": res,
            },
            "optimize": {
                "trainable": "sr_gan", "base": opt_base,
                "axes": {"fidelity.backbone": BACKBONES, "loss.adversarial_weight": [0, 0.01, 0.05],
                         "adversarial.discriminator": ["none", "vanilla_conv", "patch_resnet50"]},
                "conditions": [
                    {"if": {"loss.adversarial_weight": 0}, "then": {"adversarial.discriminator": "none"}},
                    {"if": {"loss.adversarial_weight": {"gt": 0}}, "then": {"adversarial.discriminator": {"ne": "none"}}},
                ],
                "budget": {"steps": 30, "eval_every": 10},
                "scheduler": {"kind": "none", "metric": "val/psnr_y", "mode": "max"}, "resources": res,
            },
            "transfer": {
                "trainable": "iqa_finetune",
                "base": {"model": {"weights": "random", "discriminator": _discriminator_source()},
                         "data": {"image_size": 64, "batch_size": 4}},
                "axes": {"model.backbone": [RES], "model.init": ["imagenet", "discriminator", "random"]},
                "linked": {"protocol": {"fr_kadid": {"model.kind": "fr", "data.train": "kadid10k",
                                                     "data.test": ["live", "csiq"]}}},
                "seeds": [0, 1, 2], "budget": {"steps": 30, "eval_every": 10},
                "scheduler": {"kind": "none", "metric": "val/srcc", "mode": "max"}, "resources": res,
            },
        },
    }


def _discriminator_source() -> dict[str, Any]:
    """The transfer stage's source cell: (vgg16, patch_resnet50, 0.05). Where the source rule names
    the seed and the trunk's starting weights (the protocol's DiscriminatorSource), every transfer
    seed starts from that cell's one run (seed 0, random adversarial weights as the fixture trains)."""
    from raygrid.stages.transfer.config import DiscriminatorSource

    rule = {"head": "patch", "fidelity_backbone": V, "adversarial_weight": 0.05}
    fields = DiscriminatorSource.model_fields
    return {**rule, **({"seed": 0} if "seed" in fields else {}), **({"weights": "random"} if "weights" in fields else {})}


# The report entries a space with `report:` blocks gives plan.json (the protocol's schema): the
# optimize stage reports its final step and names its selection metric; transfer reports "best".
REPORT = {"assess": {"checkpoint": "final", "step": None, "selection": None},
          "optimize": {"checkpoint": "final", "step": None, "selection": {"metric": "val/psnr_y", "mode": "max"}},
          "transfer": {"checkpoint": "best", "step": None, "selection": {"metric": "val/srcc", "mode": "max"}}}


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------


def opt_final(backbone: str, disc: str, weight: float) -> list[float]:
    if disc == "none":
        return list(NOADV[backbone])
    return [a + d + w for a, d, w in zip(ADV_BASE[backbone], DISC[disc], WEIGHT[weight])]


def opt_step(backbone: str, disc: str, weight: float, step: int, gen_sign: float = 1.0) -> tuple[dict, list[dict]]:
    """(metrics, per-item rows) of an optimize run at `step`."""
    vals = [f + o for f, o in zip(opt_final(backbone, disc, weight), STEP_OFFSET[step])]
    metrics, rows = {}, []
    for e, v, s in zip(EVALUATORS, vals, SCALE):
        per_image = [v + k * s for k in (-1, 0, 1)]
        rows += [{"role": "test", "set": TEST_SET, "image": img, "evaluator": e, "value": x}
                 for img, x in zip(IMAGES, per_image)]
        rows.append({"role": "val", "set": VAL_SET, "image": "v0", "evaluator": e, "value": v})
        metrics.update({f"test/{TEST_SET}/{e}": v, f"test/{e}": v, f"val/{VAL_SET}/{e}": v, f"val/{e}": v})
    metrics.update({"loss/g_total": 1.0 / step, "loss/g_fidelity": 0.5 / step, "loss/g_adversarial": 0.1 * weight * step,
                    "loss/g_pixel": 0.0, "loss/d": 0.7 - step / 100, "throughput/images_per_s": 12.0})
    return metrics, rows


def evaluator_records(backbone: str, disc: str, evaluators=EVALUATORS) -> list[dict[str, Any]]:
    from raygrid.spec.discriminators import trunk_of

    trunk = trunk_of(disc)
    out = []
    for e in evaluators:
        rec = record(e)
        rec["shares"] = [s for s, b in (("loss", backbone), ("discriminator", trunk)) if b and rec["backbone"] == b]
        out.append(rec)
    return out


def iqa_rows(bench: str, srcc: float, with_split: bool = True) -> list[dict[str, Any]]:
    q = ranking(srcc)
    return [{"benchmark": bench, "item": f"{bench}_d{i}", "ref_id": f"{bench}_{REFS[i]}", "split": "test",
             "pred": (6 - q[i]) / 10, "lower_better": True, "score": float(i + 1)} for i in range(5)]


def assess_values(backbone: str, bench: str, fit_on: str | None) -> float:
    return round(IQA_UNIFORM[backbone][BENCHES.index(bench)] + (FITTED_BONUS if fit_on else 0.0), 10)


def transfer_step(init: str, seed: int, step: int) -> tuple[dict, list[dict]]:
    metrics = {"val/srcc": TRANSFER_VAL[step], "val/plcc": TRANSFER_VAL[step] + 0.02, "loss/train": 1.0 / step,
               "throughput/images_per_s": 30.0}
    rows = [{"role": "val", "benchmark": "kadid10k", "item": f"v{i}", "ref_id": f"k{i % 2}", "pred": float(i),
             "score": float(i)} for i in range(4)]
    for bench, per_seed in TRANSFER[init].items():
        srcc = round(per_seed[seed] + TRANSFER_STEP[step], 10)
        q = ranking(srcc)
        rows += [{"role": "test", "benchmark": bench, "item": f"{bench}_d{i}", "ref_id": f"{bench}_{REFS[i]}",
                  "pred": q[i] / 10, "score": float(i + 1)} for i in range(5)]
        metrics[f"test/{bench}/srcc"] = srcc
    return metrics, rows


# ---------------------------------------------------------------------------------------------
# Logging through TrialRunLogger
# ---------------------------------------------------------------------------------------------


def _fake_trial(trial_id: str, trial, meta_extra: dict[str, Any] | None = None):
    # what Tune hands the callback: the trial's JSON form (Trial.to_json), as the runner builds it
    return types.SimpleNamespace(trial_id=trial_id, config={"spec": trial.to_json(**(meta_extra or {}))},
                                 status="RUNNING", error_file=None)


def _checkpoint(root: Path, trial_id: str, step: int, metrics: dict[str, float], state: dict[str, Any],
                with_meta: bool, rows: list[dict] | None = None, evaluators: list[dict] | None = None) -> str:
    """A reported checkpoint dir as raygrid.stages.loop.report writes it, with the loop's files."""
    import pandas as pd
    import torch

    d = root / trial_id / f"checkpoint_{step:06d}"
    d.mkdir(parents=True, exist_ok=True)
    torch.save({**state, "step": step, "opt_g": {}, "rng": None}, d / "state.pt")
    if with_meta:
        (d / "meta.json").write_text(json.dumps({"step": step, "metrics": {"step": step, **metrics}}))
    if rows is not None:
        pd.DataFrame(rows).to_parquet(d / "scores.parquet", index=False)
    if evaluators is not None:
        (d / "evaluators.json").write_text(json.dumps(evaluators))
    return str(d)


_CALLBACK_LOGS_FILES: list[bool] = []  # does this checkout's callback log the loops' files? (asked once)


def _as_the_callback_does(client, run_id: str, trial_dir: Path, outcome: dict[str, str] | None = None) -> None:
    """What the Tune callback logs from the reported checkpoints (Wave B contract), for a
    callback that does not yet: scores/step_<step:08d>.parquet, evaluators.json, outcome tags."""
    ckpts = sorted(trial_dir.glob("checkpoint_*"))
    if not any((c / "scores.parquet").exists() for c in ckpts):
        return
    if not _CALLBACK_LOGS_FILES:
        _CALLBACK_LOGS_FILES.append(bool(client.list_artifacts(run_id, "scores")))
    if not _CALLBACK_LOGS_FILES[0]:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "scores").mkdir()
            for ckpt in ckpts:
                if (ckpt / "scores.parquet").exists():
                    step = int(ckpt.name.split("_")[1])
                    shutil.copy(ckpt / "scores.parquet", Path(tmp) / "scores" / f"step_{step:08d}.parquet")
                if (ckpt / "evaluators.json").exists():
                    shutil.copy(ckpt / "evaluators.json", Path(tmp) / "evaluators.json")
            client.log_artifacts(run_id, tmp)
    if outcome:
        tags = client.get_run(run_id).data.tags
        for k, v in outcome.items():
            if tags.get(k) != v:
                client.set_tag(run_id, k, v)


_GENERATOR: dict[str, Any] = {}


def _generator_state(seed: int) -> dict[str, Any]:
    """A tiny SwinIR state dict, different per seed: one model is built and perturbed."""
    import torch

    from raygrid.nets.generators import create_generator

    if "base" not in _GENERATOR:
        torch.manual_seed(0)
        _GENERATOR["base"] = create_generator("swinir", "tiny", scale=4).state_dict()
    g = torch.Generator().manual_seed(seed)
    return {k: (v + 0.02 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone())
            for k, v in _GENERATOR["base"].items()}


class _Sweep:
    def __init__(self, root: Path, uri: str, name: str):
        from raygrid.plan import make_plan, plan_to_json
        from raygrid.run import tracking
        from raygrid.space import parse_space
        from raygrid.spec import mlflow as names

        self.root, self.uri, self.name = root, uri, name
        root.mkdir(parents=True, exist_ok=True)
        self.sweep = parse_space(space_dict(name), source=f"<{name}>")
        self.exp_id = tracking.ensure_experiment(uri, name, str(root / "mlartifacts"))
        self.run_id, _ = tracking.start_sweep_run(uri, self.exp_id, name, str(root / "ray"), resume=False)
        self.client = names.client(uri)
        plan = plan_to_json(make_plan(self.sweep), self.sweep)
        for st in plan["stages"]:
            st["report"] = REPORT[st["name"]] if name == EXPERIMENT else REPORT["assess"]
        (root / "plan.json").write_text(json.dumps(plan, default=str))
        self.client.log_artifact(self.run_id, str(root / "plan.json"))
        self.run_ids: dict[tuple, str] = {}

    def logger(self, stage: str):
        from raygrid.run import tracking

        sched = self.sweep.stages[stage].spec.scheduler
        return tracking.TrialRunLogger(self.uri, self.exp_id, self.run_id, self.name, stage, sched.metric, sched.mode,
                                       self.sweep.stages[stage].spec.budget.steps, str(self.root / "ray"), telemetry=False)

    def trial(self, cb, stage: str, t, steps: list[int], report, extra=None, error: str | None = None,
              outcome: dict[str, str] | None = None) -> str:
        """One trial: start, a result per step (`report(step) -> (metrics, checkpoint kwargs)`), end."""
        trial = _fake_trial(f"{stage}_{t.index:05d}", t, extra)
        cb.on_trial_start(0, [trial], trial)
        for step in steps:
            metrics, ck = report(step)
            path = _checkpoint(self.root / "ckpt", trial.trial_id, step, metrics, **ck)
            cb.on_trial_result(0, [trial], trial, {"step": step, **metrics, "checkpoint_path": path, "timestamp": step})
        if error is not None:
            trial.status, trial.error_file = "ERROR", str(self.root / f"{trial.trial_id}.err")
            Path(trial.error_file).write_text(error)
            cb.on_trial_error(0, [trial], trial)
        else:
            trial.status = "TERMINATED"
            cb.on_trial_complete(0, [trial], trial)
        run_id = cb._trials[trial.trial_id]["run_id"]
        _as_the_callback_does(self.client, run_id, self.root / "ckpt" / trial.trial_id, outcome)
        return run_id

    def result(self) -> dict[str, Any]:
        return {"tracking_uri": self.uri, "experiment": self.name, "sweep_run_id": self.run_id, "run_ids": self.run_ids}


@contextlib.contextmanager
def _provenance_once():
    """The callback tags every run with the git commit and package versions (two git processes and
    a dozen metadata reads per run, a fifth of the fixture's time); they do not change while a store
    is written, so they are computed once here."""
    from raygrid.run import tracking

    real = tracking.provenance_tags
    tracking.provenance_tags = functools.cache(real)
    try:
        yield
    finally:
        tracking.provenance_tags = real


def build_store(root: Path, tracking_uri: str | None = None, partial: bool = False) -> dict[str, Any]:
    """Log the fixture sweep into `tracking_uri` (default: sqlite under root). partial=True logs
    the same plan but only the assess stage. Returns {tracking_uri, experiment, sweep_run_id, run_ids}."""
    with _provenance_once():
        return _build_store(Path(root), tracking_uri, partial)


def _build_store(root: Path, tracking_uri: str | None, partial: bool) -> dict[str, Any]:
    from raygrid.spec import mlflow as names

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    s = _Sweep(root, tracking_uri or names.default_tracking_uri(str(root)), PARTIAL_EXPERIMENT if partial else EXPERIMENT)
    cb = s.logger("assess")
    for t in s.sweep.stages["assess"].trials:
        b, bench, fit = t.config.fidelity.backbone, t.config.benchmark, t.config.fit_on
        if (b, bench, fit) == ASSESS_NOT_RUN:
            continue
        failed = (b, bench, fit) == ASSESS_FAILED
        srcc = assess_values(b, bench, fit)
        rep = lambda step, srcc=srcc, bench=bench: ({"srcc": srcc, "abs_srcc": abs(srcc), "pairs": 5.0},
                                                    {"state": {}, "with_meta": True, "rows": iqa_rows(bench, srcc)})
        s.run_ids[("assess", b, bench, fit)] = s.trial(cb, "assess", t, [] if failed else [1], rep,
                                                       error=ERROR_TEXT if failed else None)
    if partial:
        return s.result()

    cb = s.logger("optimize")
    for t in s.sweep.stages["optimize"].trials:
        b, d, w = t.config.fidelity.backbone, t.config.adversarial.discriminator, float(t.config.loss.adversarial_weight)
        cell = (b, d, w)
        steps = [10, 20] if cell in (OPT_STOPPED, OPT_COLLAPSED) else [10] if cell == OPT_FAILED else [10, 20, 30]
        gen = _generator_state(t.index) if cell in WITH_GENERATOR else None

        def rep(step, b=b, d=d, w=w, gen=gen, cell=cell):
            metrics, rows = opt_step(b, d, w, step)
            if cell == OPT_COLLAPSED and step == 20:
                metrics["outcome/collapsed_at"] = 20.0  # how a loop says it stopped the run
            state = {"discriminator_name": d, **({"ema": gen} if gen is not None and step >= 20 else {})}
            return metrics, {"state": state, "with_meta": b != NO_META_BACKBONE, "rows": rows,
                             "evaluators": evaluator_records(b, d) if step == 10 else None}

        outcome = ({"raygrid.outcome": "collapsed", "raygrid.outcome_step": "20",
                    "raygrid.outcome_reason": "the discriminator won outright for 3 evaluations"}
                   if cell == OPT_COLLAPSED else None)
        s.run_ids[("optimize", *cell)] = s.trial(cb, "optimize", t, steps, rep, error=ERROR_TEXT if cell == OPT_FAILED
                                                 else None, outcome=outcome)

    cb = s.logger("transfer")
    source = s.run_ids[("optimize", V, "patch_resnet50", 0.05)]
    for t in s.sweep.stages["transfer"].trials:
        init, seed = t.config.model.init, t.config.seed
        failed = (init, seed) == TRANSFER_FAILED

        def rep(step, init=init, seed=seed):
            metrics, rows = transfer_step(init, seed, step)
            return metrics, {"state": {"model": {}}, "with_meta": True, "rows": rows}

        s.run_ids[("transfer", init, seed)] = s.trial(
            cb, "transfer", t, [10] if failed else [10, 20, 30], rep,
            extra={"init_from_run": source} if init == "discriminator" else None, error=ERROR_TEXT if failed else None)
    return s.result()


GEN_IQA = {R: 0.5, V: 0.9, RES: 0.8}  # live SRCC: IQA order v, res, r
GEN_ORDER = {"swinir": [V, RES, R], "hat": [R, RES, V]}  # best first, for every evaluator


def build_generator_store(root: Path, tracking_uri: str) -> dict[str, Any]:
    """Three backbones x two generators, no adversarial loss (GENERATORS_EXPERIMENT)."""
    with _provenance_once():
        return _build_generator_store(Path(root), tracking_uri)


def _build_generator_store(root: Path, tracking_uri: str) -> dict[str, Any]:
    s = _Sweep(root, tracking_uri, GENERATORS_EXPERIMENT)
    cb = s.logger("assess")
    for t in s.sweep.stages["assess"].trials:
        b = t.config.fidelity.backbone
        rows = iqa_rows("live", GEN_IQA[b])
        s.run_ids[("assess", b)] = s.trial(cb, "assess", t, [1], lambda step, rows=rows, b=b: (
            {"srcc": GEN_IQA[b]}, {"state": {}, "with_meta": True, "rows": rows}))
    evaluators = EVALUATORS[:5]
    cb = s.logger("optimize")
    for t in s.sweep.stages["optimize"].trials:
        b, arch = t.config.fidelity.backbone, t.config.generator.arch
        place = GEN_ORDER[arch].index(b)  # 0 = best

        def rep(step, b=b, place=place):
            rows = []
            for e in evaluators:
                good = record(e)["higher_better"]
                v = (3 - place) if good else (place + 1) / 10
                rows += [{"role": "test", "set": TEST_SET, "image": img, "evaluator": e, "value": v} for img in IMAGES]
            return {f"test/{e}": 0.0 for e in evaluators}, {"state": {}, "with_meta": True, "rows": rows,
                                                           "evaluators": evaluator_records(b, "none", evaluators)}

        s.run_ids[("optimize", b, arch)] = s.trial(cb, "optimize", t, [10], rep)
    return s.result()


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


def shared_store(tmp_path_factory, kind: str = "full") -> dict[str, Any]:
    """Build a store once per session (kind: full | partial | generators); all live in one sqlite
    file (MLflow's first-time sqlite set-up costs seconds)."""
    if kind not in _STORES:
        if "root" not in _STORES:
            _STORES["root"] = {"path": _fast_dir(tmp_path_factory)}
        root = _STORES["root"]["path"]
        uri = new_store(root / "mlflow.db")
        if kind == "generators":
            _STORES[kind] = build_generator_store(root / kind, uri)
        else:
            _STORES[kind] = build_store(root / kind, tracking_uri=uri, partial=kind == "partial")
    return _STORES[kind]

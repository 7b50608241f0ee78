"""The study protocol of the shipped spaces, read from the dry run's plan.json (what the analysis
reads too), and the pieces that enforce it: selection sets apart from reported sets at the image
level, the reported checkpoint, the transfer stage's source rule, and its val split."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from raygrid.space import SPACES_DIR, load_space
from raygrid.spec.datasets import SR_SETS, shared_images
from raygrid.sweep import main


@pytest.fixture(scope="module")
def paper_plan(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("plan") / "plan.json"
    assert main(["--space", "paper", "--dry-run", "--plan-out", str(out)]) == 0
    return json.loads(out.read_text())


def stage(plan: dict, name: str) -> dict:
    return next(s for s in plan["stages"] if s["name"] == name)


def images(name: str) -> tuple[str, set[str] | None]:
    """(folder, the image stems of the set, None for the whole folder), from the set's record."""
    record = SR_SETS[name]
    return record.folder, set(record.stems) if record.stems is not None else None


def test_no_optimize_or_transfer_stage_prunes_across_the_study_axes(paper_plan):
    for name in ("optimize", "transfer"):
        s = stage(paper_plan, name)
        sched = s["scheduler"]
        assert s["study_axes"], name
        if sched["kind"] == "asha":
            assert sched["group_by"] and set(s["study_axes"]) <= set(sched["group_by"]), name
            assert sched["metric"].startswith("val/")
        assert not sched["metric"].startswith("test/")
    # the study axes are what the grid varies
    assert set(stage(paper_plan, "optimize")["study_axes"]) == {
        "fidelity.backbone", "loss.adversarial_weight", "adversarial.discriminator", "disc_init"}


def test_no_image_is_in_a_selection_set_and_a_reported_set(paper_plan):
    trials = stage(paper_plan, "optimize")["trial_list"]
    pairs = {(tuple(t["config"]["data"]["val"]), tuple(t["config"]["data"]["test"])) for t in trials}
    assert pairs == {(("div2k_val_select",),
                      ("set5", "set14", "bsd100", "urban100", "manga109", "div2k_val_test"))}
    (val, test), = pairs
    for v in val:
        v_folder, v_stems = images(v)
        assert v_stems  # the selection slice is a named list of images
        for t in test:
            t_folder, t_stems = images(t)
            if t_folder == v_folder:  # a slice of the same folder: no image in both
                assert t_stems is not None and not (v_stems & t_stems), (v, t)
    # DIV2K-val is split 10 / 90, and together the slices are the whole of it
    assert len(SR_SETS["div2k_val_select"].stems) == 10 and len(SR_SETS["div2k_val_test"].stems) == 90
    assert set(SR_SETS["div2k_val_select"].stems) | set(SR_SETS["div2k_val_test"].stems) == {
        f"{i:04d}" for i in range(801, 901)}


def test_shared_images_between_sets():
    assert shared_images("div2k_val_select", "div2k_val_test") is None
    assert shared_images("div2k_val", "div2k_val_select") == SR_SETS["div2k_val_select"].stems
    assert shared_images("set5", "set5") == ()
    assert shared_images("set5", "set14") is None
    assert shared_images("/data/x", "/data/y") is None and shared_images("/data/x", "/data/x") == ()


def test_paper_has_from_scratch_discriminators_that_train(paper_plan):
    trials = stage(paper_plan, "optimize")["trial_list"]
    scratch = {t["config"]["adversarial"]["discriminator"] for t in trials
               if t["config"]["adversarial"]["weights"] == "random" and t["config"]["adversarial"]["trunk_trainable"]}
    for trunk in ("vgg16", "resnet50", "dinov2_vits14"):  # the transfer backbones
        assert {f"vanilla_{trunk}", f"patch_{trunk}"} <= scratch
    # the ImageNet-initialised DINOv2 trunk is frozen (projected GAN): never a transfer source
    frozen = {t["config"]["adversarial"]["discriminator"] for t in trials
              if t["config"]["adversarial"]["discriminator"] != "none" and not t["config"]["adversarial"]["trunk_trainable"]}
    assert frozen == {"vanilla_dinov2_vits14", "patch_dinov2_vits14"}


def test_every_discriminator_init_points_at_a_trained_trunk_and_some_at_scratch_ones(paper_plan):
    optimize = stage(paper_plan, "optimize")["trial_list"]
    transfer = stage(paper_plan, "transfer")["trial_list"]
    from_disc = [t for t in transfer if t["config"]["model"]["init"] == "discriminator"]
    assert len(from_disc) == (2 * 2 + 1) * 2 * 3  # VGG-16, ResNet-50 × {imagenet, scratch} + DINOv2 scratch
    starts = set()
    for t in from_disc:
        src = optimize[t["source"]["index"]]
        assert src["key"] == t["source"]["key"]
        adv = src["config"]["adversarial"]
        model = t["config"]["model"]
        assert adv["trunk_trainable"], t["point"]
        assert adv["discriminator"] == f"{model['discriminator']['head']}_{model['backbone']}"
        assert src["config"]["seed"] == t["config"]["seed"]  # seed: same
        assert adv["weights"] == model["discriminator"]["weights"]
        starts.add(adv["weights"])
    assert starts == {"imagenet", "random"}
    assert all("source" not in t for t in transfer if t["config"]["model"]["init"] != "discriminator")


def test_every_stage_reports_its_final_checkpoint_at_the_last_step(paper_plan):
    for s in paper_plan["stages"]:
        assert s["report"] == {"checkpoint": "final", "step": None, "selection": None}
        assert s["report_step"] == s["budget"]["steps"]


def test_generators_space_is_the_paper_optimize_stage_with_a_generator_axis():
    paper = yaml.safe_load((SPACES_DIR / "paper.yaml").read_text())["stages"]
    gens = yaml.safe_load((SPACES_DIR / "generators.yaml").read_text())["stages"]
    assert set(gens) == {"assess", "optimize"} and gens["assess"] == paper["assess"]
    opt, ref = gens["optimize"], paper["optimize"]
    assert opt["axes"].pop("generator.arch") == ["swinir", "rrdbnet", "hat"]
    assert opt["base"].pop("generator") == {"checkpoint": "official"}
    assert ref["base"].pop("generator") == {"arch": "swinir", "preset": "m", "checkpoint": "official"}
    assert opt == ref
    trials = load_space("generators").stages["optimize"].trials
    assert {(t.config.generator.arch, t.config.generator.preset) for t in trials} == {
        ("swinir", "m"), ("rrdbnet", "full"), ("hat", "full")}


# ---------------------------------------------------------------------------------------------
# Trunk trainability is resolved in the config; settings that cannot matter are normalised
# ---------------------------------------------------------------------------------------------


def test_trunk_trainable_auto_is_resolved_in_the_config():
    from raygrid.stages.optimize.config import AdversarialConfig

    assert AdversarialConfig(discriminator="patch_resnet50").trunk_trainable is True
    assert AdversarialConfig(discriminator="patch_dinov2_vits14").trunk_trainable is False
    assert AdversarialConfig(discriminator="patch_dinov2_vits14", trunk_trainable=True).trunk_trained
    # the conv trunk has no pretrained weights; no discriminator has no trunk
    assert AdversarialConfig(discriminator="vanilla_conv", weights="imagenet").weights == "random"
    none = AdversarialConfig(weights="imagenet", trunk_trainable=True)
    assert (none.weights, none.trunk_trainable, none.trunk_trained) == ("random", False, False)
    # what a trial logs is the resolved value, and it validates back to itself
    dumped = AdversarialConfig(discriminator="patch_vgg16").model_dump()
    assert dumped["trunk_trainable"] is True and AdversarialConfig.model_validate(dumped).model_dump() == dumped


# ---------------------------------------------------------------------------------------------
# The source rule at run time (raygrid.run.lineage on the runs MLflow has)
# ---------------------------------------------------------------------------------------------


def _runs():
    from raygrid.run.lineage import SourceRun

    sweep = load_space("demo")
    out = []
    for t in sweep.stages["optimize"].trials:
        ckpt = {"best": f"/ckpt/{t.index}/best", "final": f"/ckpt/{t.index}/final"}
        out.append(SourceRun(f"run{t.index}", "sweep-now", t.config, ckpt, start_time=1000.0 + t.index))
    return sweep, out


def test_choose_follows_the_rule_prefers_this_sweep_then_the_latest_run():
    from raygrid.run.lineage import SourceRun, choose
    from raygrid.spec.trainables import get

    sweep, runs = _runs()
    transfer = sweep.stages["transfer"]
    lin = get("iqa_finetune").lineage
    found, missing, refused = choose(transfer, lin, runs, "sweep-now")
    assert not missing and not refused
    for index, run in found.items():
        assert run.config == transfer.sources[index].config  # the run of the cell validation named
    # an older sweep's run of the same cell never wins over this sweep's; among this sweep's, the latest
    i, run = next(iter(found.items()))
    older = SourceRun("old", "sweep-before", run.config, run.checkpoints, start_time=9e12)
    later = SourceRun("later", "sweep-now", run.config, run.checkpoints, start_time=run.start_time + 1)
    assert choose(transfer, lin, [older, *runs], "sweep-now")[0][i].run_id == run.run_id
    assert choose(transfer, lin, [later, *runs], "sweep-now")[0][i].run_id == "later"
    # a run without the checkpoint the rule asks for is no source
    bare = [SourceRun(r.run_id, r.sweep_run_id, r.config, {"best": None, "final": None}) for r in runs]
    assert sorted(choose(transfer, lin, bare, "sweep-now")[1]) == sorted(found)


def test_choose_refuses_a_source_whose_trunk_was_frozen():
    from raygrid.run.lineage import SourceRun, choose
    from raygrid.spec.trainables import get

    sweep, runs = _runs()
    frozen = []
    for r in runs:
        adv = r.config.adversarial.model_copy(update={"trunk_trainable": False})
        frozen.append(SourceRun(r.run_id, r.sweep_run_id, r.config.model_copy(update={"adversarial": adv}),
                                r.checkpoints, r.start_time))
    found, missing, refused = choose(sweep.stages["transfer"], get("iqa_finetune").lineage, frozen, "sweep-now")
    assert not found and not missing and len(refused) == 2
    assert all("discriminator trunk was frozen" in why for why in refused.values())


# ---------------------------------------------------------------------------------------------
# The transfer stage selects on a val split carved from its training benchmark
# ---------------------------------------------------------------------------------------------


def _table(mode: str, splits: dict[str, str]) -> pd.DataFrame:
    rows = []
    for ref, split in splits.items():
        for k in range(4 if mode == "FR" else 1):
            rows.append({"dist": f"{ref}_{k}.png", "ref": f"{ref}.png" if mode == "FR" else None, "score": float(k),
                         "split": split, "ref_id": ref})
    df = pd.DataFrame(rows)
    df.attrs.update(benchmark="t", mode=mode)
    return df


def test_val_split_is_carved_from_training_references_only():
    from raygrid.stages.transfer.splits import carve_val

    table = _table("FR", {f"r{i:02d}": "test" if i < 4 else "train" for i in range(20)})
    out = carve_val(table, 0.1, seed=3)
    val_refs = set(out.loc[out["split"] == "val", "ref_id"])
    assert len(val_refs) == 2  # 10 % of the 16 training references
    assert out.groupby("ref_id")["split"].nunique().eq(1).all()  # a reference is in one split only
    assert (out["split"] == "test").equals(table["split"] == "test")  # test rows untouched
    assert not val_refs & set(table.loc[table["split"] == "test", "ref_id"])
    # a benchmark with an official val split keeps it
    official = _table("NR", {"a": "train", "b": "val", "c": "test", "d": "train"})
    assert carve_val(official, 0.1, seed=0).equals(official)
    with pytest.raises(ValueError, match="cannot carve a val split from 1 training group"):
        carve_val(_table("FR", {"a": "train", "b": "test"}), 0.1, seed=0)


# ---------------------------------------------------------------------------------------------
# Slices of one folder open as their images only
# ---------------------------------------------------------------------------------------------


def test_slices_of_the_demo_evaluation_folder(tmp_path):
    from raygrid.data.sr import SRTestSet, open_sr_test_set, resolve_sr_root

    root = str(tmp_path)
    select, test = open_sr_test_set("demo_sr_select", root), open_sr_test_set("demo_sr_test", root)
    whole = SRTestSet(resolve_sr_root("demo_sr_val", root))
    assert [p.name for p in select.pairs] == ["retina"]
    assert [p.name for p in test.pairs] == ["stereo_motorcycle", "colorwheel", "logo"]
    assert sorted(p.name for p in select.pairs + test.pairs) == sorted(p.name for p in whole.pairs)
    assert select[0]["hr"].shape[-1] == 192 and select[0]["lr"].shape[-1] == 48
    with pytest.raises(FileNotFoundError, match="the slice names 1 image"):
        SRTestSet(resolve_sr_root("demo_sr_val", root), stems=["retina", "lena"])

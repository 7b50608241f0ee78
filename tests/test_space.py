"""Search spaces: parsing, every kind of validation error, grid expansion with conditions."""

from __future__ import annotations

import json

import pytest
import yaml

from raygrid.plan import make_plan, plan_to_json
from raygrid.space import SPACES_DIR, SpaceError, load_space, parse_space


def demo_raw() -> dict:
    return yaml.safe_load((SPACES_DIR / "demo.yaml").read_text())


def write(tmp_path, raw: dict, name: str = "space.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


# ---------------------------------------------------------------------------------------------
# The shipped spaces
# ---------------------------------------------------------------------------------------------


def test_paper_grid_counts_match_the_hand_derivation():
    sweep = load_space("paper")
    assess, optimize, transfer = (sweep.stages[s] for s in ("assess", "optimize", "transfer"))
    # assess: 6 backbones × 5 benchmarks × {uniform, fitted on KADID}
    assert len(assess.trials) == 6 * 5 * 2
    # optimize per seed: 6 × (1 + 2 heads × 3 trunks × 6 weights) with ImageNet-initialised
    # discriminators + the from-scratch arm for the VGG-16 loss (2 × 3 × 6)
    seeds = optimize.spec.seeds
    assert len(seeds) == 3
    assert len(optimize.trials) == (6 * (1 + 2 * 3 * 6) + 2 * 3 * 6) * 3
    assert sum(t.point["seed"] == seeds[0] for t in optimize.trials) == 258
    scratch = [t for t in optimize.trials if t.point["disc_init"] == "scratch"]
    assert len(scratch) == 36 * 3 and all(t.config.fidelity.backbone == "vgg16" for t in scratch)
    # transfer per seed: (3 backbones × 4 inits, less DINOv2's frozen ImageNet discriminator) × 2 protocols
    assert len(transfer.trials) == (3 * 4 - 1) * 2 * 3


def test_paper_optimize_conditions_pair_none_with_weight_zero_only():
    trials = load_space("paper").stages["optimize"].trials
    for t in trials:
        none = t.config.adversarial.discriminator == "none"
        assert none == (t.config.loss.adversarial_weight == 0)
    # every non-zero weight meets every real discriminator for every backbone
    combos = {(t.config.fidelity.backbone, t.config.adversarial.discriminator,
               t.config.loss.adversarial_weight) for t in trials if t.point["seed"] == 0}
    assert ("clip_vit_b16", "patch_dinov2_vits14", 0.2) in combos
    assert ("clip_vit_b16", "none", 0.0) in combos


def test_demo_space_counts_and_resolved_configs():
    sweep = load_space("demo")
    assert {k: len(s.trials) for k, s in sweep.stages.items()} == {"assess": 6, "optimize": 8, "transfer": 4}
    assert sweep.spec.weights_dir == "demo"
    t = sweep.stages["optimize"].trials[0]
    # base values, axis values, seed and budget all land in the one resolved config
    assert t.config.generator.preset == "tiny"
    assert t.config.budget.model_dump() == {"steps": 60, "eval_every": 20}
    assert t.config.seed == 0
    assert t.config.trainable == "sr_gan"
    assert (t.config.data.val, t.config.data.test) == (["demo_sr_select"], ["demo_sr_test"])
    linked = sweep.stages["transfer"].trials[0].config
    assert linked.model.kind == "nr" and linked.data.test == ["demo_nr"]
    # every transfer arm is its own init; the two discriminator arms start from different optimize runs
    transfer = sweep.stages["transfer"]
    assert sorted(t.point["init"] for t in transfer.trials) == ["disc_imagenet", "disc_scratch", "imagenet", "random"]
    sources = {transfer.trials[i].point["init"]: s.config.adversarial for i, s in transfer.sources.items()}
    assert sources["disc_imagenet"].weights == "imagenet" and sources["disc_scratch"].weights == "random"
    assert all(a.trunk_trainable for a in sources.values())


def test_trial_keys_are_stable_and_distinct():
    a = load_space("demo").stages["optimize"].trials
    b = load_space("demo").stages["optimize"].trials
    assert [t.key for t in a] == [t.key for t in b]
    assert len({t.key for t in a}) == len(a)


def test_plan_json_holds_every_trial(tmp_path):
    sweep = load_space("demo")
    out = plan_to_json(make_plan(sweep), sweep)
    json.dumps(out)  # serialisable
    counts = {s["name"]: (s["trials"], len(s["trial_list"])) for s in out["stages"]}
    assert counts == {"assess": (6, 6), "optimize": (8, 8), "transfer": (4, 4)}
    for s in out["stages"]:
        assert s["report"] == {"checkpoint": "final", "step": None, "selection": None}
        assert s["report_step"] == s["budget"]["steps"]


def grouped_asha_space(seeds=(0, 1, 2)) -> dict:
    raw = demo_raw()
    opt = raw["stages"]["optimize"]
    opt["seeds"] = list(seeds)
    opt["scheduler"] = {"kind": "asha", "metric": "val/psnr_y", "mode": "max", "grace_period": 20,
                        "reduction_factor": 3, "group_by": [*opt["axes"], *opt["linked"]]}
    return raw


def test_grouped_asha_estimate_applies_the_fraction_within_groups():
    from raygrid import costs

    plan = make_plan(parse_space(grouped_asha_space(seeds=(0, 1))))
    opt = next(s for s in plan.stages if s.name == "optimize")
    # every group is one cell: its 2 seeds compete; at least one of them runs each segment
    assert set(opt.groups.values()) == {2} and len(opt.groups) == 8
    fraction = costs.asha_step_fraction(60, 20, 3, group_size=2)
    assert opt.gpu_hours_asha == pytest.approx(opt.gpu_hours_full * fraction)
    # within groups of 2 the saving is smaller than a plain ASHA over the whole grid would promise
    assert costs.asha_step_fraction(60, 20, 3) < fraction < 1
    assert sum(v["gpu_hours_asha"] for v in opt.by_value["disc_init"].values()) == pytest.approx(opt.gpu_hours_asha)
    # one trial per group: nothing is ever stopped
    single = make_plan(parse_space(grouped_asha_space(seeds=(0,))))
    opt1 = next(s for s in single.stages if s.name == "optimize")
    assert opt1.gpu_hours_asha == pytest.approx(opt1.gpu_hours_full)


def test_plan_text_says_what_grouped_asha_costs(capsys):
    from raygrid.plan import format_plan

    text = format_plan(make_plan(parse_space(grouped_asha_space())))
    assert ("scheduler: ASHA on val/psnr_y (max) within 8 groups of fidelity.backbone, loss.adversarial_weight, "
            "adversarial.discriminator, disc_init (3 trials each)") in text
    assert "if ASHA stops as designed within its groups" in text


# ---------------------------------------------------------------------------------------------
# Grid expansion
# ---------------------------------------------------------------------------------------------


def small_optimize(**changes) -> dict:
    raw = demo_raw()
    raw["stages"] = {"optimize": raw["stages"]["optimize"]}
    raw["stages"]["optimize"]["linked"] = {}
    raw["stages"]["optimize"].update(changes)
    return raw


def test_conditions_with_in_and_numeric_predicates():
    raw = small_optimize(
        axes={
            "fidelity.backbone": ["vgg16_r", "resnet50", "convnext_tiny"],
            "loss.adversarial_weight": [0, 0.01, 0.1],
            "adversarial.discriminator": ["none", "vanilla_conv", "patch_conv"],
        },
        conditions=[
            {"if": {"loss.adversarial_weight": 0}, "then": {"adversarial.discriminator": "none"}},
            {"if": {"loss.adversarial_weight": {"gt": 0}}, "then": {"adversarial.discriminator": {"ne": "none"}}},
            # patch discriminators only with the CNN backbones, and only at the small weight
            {"if": {"adversarial.discriminator": "patch_conv"},
             "then": {"fidelity.backbone": {"in": ["vgg16_r", "resnet50"]}, "loss.adversarial_weight": {"le": 0.01}}},
        ],
        seeds=[0, 1],
    )
    stage = parse_space(raw).stages["optimize"]
    # per seed: 3 none + vanilla 3 backbones × 2 weights + patch 2 backbones × 1 weight = 11
    assert len(stage.trials) == 2 * (3 + 6 + 2)
    assert stage.grid_size == 3 * 3 * 3 * 2


def test_linked_axis_sets_keys_together_and_can_be_conditioned():
    raw = demo_raw()
    tr = raw["stages"]["transfer"]
    raw["stages"] = {"transfer": tr}
    tr["base"]["model"]["discriminator"] = {"head": "patch", "fidelity_backbone": "vgg16_r", "adversarial_weight": 0.05}
    tr["linked"]["protocol"]["fr_demo"] = {"model.kind": "fr", "data.train": "demo_fr", "data.test": ["demo_fr"]}
    tr["conditions"] = [{"if": {"protocol": "fr_demo"}, "then": {"init": {"in": ["imagenet", "random"]}}}]
    trials = parse_space(raw).stages["transfer"].trials
    fr = [t for t in trials if t.point["protocol"] == "fr_demo"]
    assert len(trials) == 4 + 2 and len(fr) == 2
    assert all(t.config.model.kind == "fr" and t.config.data.train == "demo_fr" for t in fr)


def test_optuna_search_counts_samples_not_grid_points():
    conditions = demo_raw()["stages"]["optimize"]["conditions"][:2]
    raw = small_optimize(conditions=conditions, search={"num_samples": 18, "params": {
        "loss.pixel_weight": {"uniform": [0.0, 1.0]},
        "adversarial.lr": {"loguniform": [1e-5, 1e-3], "when": {"adversarial.discriminator": {"ne": "none"}}},
    }})
    stage = parse_space(raw).stages["optimize"]
    assert stage.num_trials == 18 and len(stage.trials) == 9
    # every grid point gets the same number of samples (compared cells, equal budgets)
    raw["stages"]["optimize"]["search"]["num_samples"] = 10
    with pytest.raises(SpaceError, match=r"stages.optimize.search.num_samples: 10 samples over 9 grid points: "
                                         r"expected a multiple of 9"):
        parse_space(raw)


# ---------------------------------------------------------------------------------------------
# Validation errors: one per kind of mistake, each naming the file and the dotted key
# ---------------------------------------------------------------------------------------------


def mutate(fn):
    raw = demo_raw()
    fn(raw)
    return raw


CASES = [
    # misspelt keys at every level
    ("misspelt stage key", lambda r: r["stages"]["optimize"].update(schedular=r["stages"]["optimize"].pop("scheduler")),
     "stages.optimize.schedular", "unknown key; expected one of trainable, base, axes"),
    ("misspelt top-level key", lambda r: r.update(stagez={}),
     "stagez", "unknown key"),
    ("unknown stage", lambda r: r["stages"].update(finetune=r["stages"]["transfer"]),
     "stages.finetune", "assess"),
    ("misspelt base key", lambda r: r["stages"]["optimize"]["base"]["generator"].update(presett="m"),
     "stages.optimize.base.generator.presett", "unknown key"),
    ("misspelt axis key", lambda r: r["stages"]["optimize"]["axes"].update({"fidelity.backbon": ["vgg16"]}),
     "stages.optimize.axes.fidelity.backbon", "unknown key 'backbon' in fidelity; expected one of backbone"),
    ("axis into a value", lambda r: r["stages"]["optimize"]["axes"].update({"seedling.x": [1]}),
     "stages.optimize.axes.seedling.x", "unknown key 'seedling'"),
    # wrong types
    ("wrong type in budget", lambda r: r["stages"]["optimize"]["budget"].update(steps="many"),
     "stages.optimize.budget.steps", "integer"),
    ("wrong type on an axis", lambda r: r["stages"]["optimize"]["axes"].update({"loss.adversarial_weight": [0, "big"]}),
     "stages.optimize.axes.loss.adversarial_weight[1]", "value 'big'"),
    ("axes not a list", lambda r: r["stages"]["optimize"]["axes"].update({"fidelity.backbone": "vgg16"}),
     "stages.optimize.axes.fidelity.backbone", "list"),
    # unknown names
    ("unknown backbone", lambda r: r["stages"]["optimize"]["axes"].update({"fidelity.backbone": ["vgg16", "vgg17"]}),
     "stages.optimize.axes.fidelity.backbone[1]", "unknown backbone 'vgg17'"),
    ("unknown discriminator", lambda r: r["stages"]["optimize"]["axes"].update(
        {"adversarial.discriminator": ["none", "patch_vit"]}),
     "stages.optimize.axes.adversarial.discriminator[1]", "unknown discriminator 'patch_vit'"),
    ("unknown dataset", lambda r: r["stages"]["assess"]["base"].update(benchmark="kadid"),
     "stages.assess.base.benchmark", "unknown dataset 'kadid'"),
    ("unknown SR set", lambda r: r["stages"]["optimize"]["base"]["data"].update(val=["set6"]),
     "stages.optimize.base.data.val", "unknown SR test set 'set6'"),
    ("unknown scheduler metric", lambda r: r["stages"]["optimize"]["scheduler"].update(metric="val/fid"),
     "stages.optimize.scheduler.metric", "'val/fid' is not reported by sr_gan"),
    # impossible combinations
    ("discriminator without conditions", lambda r: r["stages"]["optimize"].update(
        conditions=r["stages"]["optimize"]["conditions"][2:]),
     "stages.optimize", "impossible combination"),
    ("official DISTS weights on another backbone", lambda r: r["stages"]["optimize"]["base"]["fidelity"].update(alpha_beta="dists"),
     "stages.optimize.fidelity", "impossible combination {"),
    ("conditions remove every trial", lambda r: r["stages"]["optimize"]["conditions"].append(
        {"if": {"seed": 0}, "then": {"fidelity.backbone": "resnet50", "loss.adversarial_weight": {"gt": 1}}}),
     "stages.optimize.conditions", "remove every trial"),
    ("condition on a non-axis", lambda r: r["stages"]["optimize"]["conditions"][0]["if"].update({"loss.pixel_weight": 0}),
     "stages.optimize.conditions[0].if.loss.pixel_weight", "not an axis"),
    ("condition value typo", lambda r: r["stages"]["optimize"]["conditions"][0]["then"].update(
        {"adversarial.discriminator": "nonee"}),
     "stages.optimize.conditions[0].then.adversarial.discriminator", "'nonee' is not one of the axis values"),
    ("grace period beyond budget", lambda r: r["stages"]["optimize"].update(scheduler={
        "kind": "asha", "metric": "val/psnr_y", "mode": "max", "grace_period": 10_000,
        "group_by": ["fidelity.backbone", "loss.adversarial_weight", "adversarial.discriminator", "disc_init"]}),
     "stages.optimize.scheduler.grace_period", "beyond the budget"),
    # the protocol: selection apart from report, no pruning across the study, equal budgets
    ("a reported set that is also a selection set", lambda r: r["stages"]["optimize"]["base"]["data"].update(
        test=["demo_sr_test", "demo_sr_val"]),
     "stages.optimize.base.data.test[1]", "'demo_sr_val' is also a selection set: it shares images retina"),
    ("a set in both roles", lambda r: r["stages"]["optimize"]["base"]["data"].update(test=["demo_sr_select"]),
     "stages.optimize.base.data.test[0]", "'demo_sr_select' is also a selection set"),
    ("a plain ASHA over the study's axes", lambda r: r["stages"]["optimize"].update(scheduler={
        "kind": "asha", "metric": "val/psnr_y", "mode": "max", "grace_period": 20}),
     "stages.optimize.scheduler", "a plain ASHA (no group_by) would stop trials across the study axes "),
    ("a grouped ASHA missing a study axis", lambda r: r["stages"]["transfer"].update(scheduler={
        "kind": "asha", "metric": "val/srcc", "mode": "max", "grace_period": 20, "group_by": ["model.backbone"]}),
     "stages.transfer.scheduler.group_by", "would stop trials across the study axes 'init'"),
    ("grouping by the seed", lambda r: r["stages"]["transfer"].update(scheduler={
        "kind": "asha", "metric": "val/srcc", "mode": "max", "grace_period": 20, "group_by": ["init", "seed"]}),
     "stages.transfer.scheduler.group_by[1]", "seeds are what competes within a group"),
    ("grouping by an unknown axis", lambda r: r["stages"]["transfer"].update(scheduler={
        "kind": "asha", "metric": "val/srcc", "mode": "max", "grace_period": 20, "group_by": ["inti"]}),
     "stages.transfer.scheduler.group_by[0]", "'inti' is not an axis of this stage"),
    ("group_by without ASHA", lambda r: r["stages"]["transfer"]["scheduler"].update(group_by=["init"]),
     "stages.transfer.scheduler", "group_by groups the brackets of an ASHA"),
    ("a scheduler on a test metric", lambda r: r["stages"]["optimize"]["scheduler"].update(metric="test/psnr_y"),
     "stages.optimize.scheduler.metric", "'test/psnr_y' is a test metric"),
    ("ASHA on a training loss", lambda r: r["stages"]["transfer"].update(scheduler={
        "kind": "asha", "metric": "loss/train", "mode": "min", "grace_period": 20, "group_by": ["init"]}),
     "stages.transfer.scheduler.metric", "it must be a val/... metric"),
    ("report best without a selection", lambda r: r["stages"]["optimize"].update(report={"checkpoint": "best"}),
     "stages.optimize.report", "checkpoint 'best' needs selection"),
    ("report best by a test metric", lambda r: r["stages"]["optimize"].update(report={
        "checkpoint": "best", "selection": {"metric": "test/psnr_y", "mode": "max"}}),
     "stages.optimize.report.selection.metric", "'test/psnr_y' is not a val/... metric"),
    ("report at a step with no evaluation", lambda r: r["stages"]["optimize"]["report"].update(step=30),
     "stages.optimize.report.step", "30 is not an evaluation step (every 20 and the last)"),
    ("report beyond the budget", lambda r: r["stages"]["transfer"]["report"].update(step=80),
     "stages.transfer.report.step", "beyond the budget of 60 steps"),
    ("an arm identical to another by construction", lambda r: r["stages"]["optimize"]["conditions"].pop(3),
     "stages.optimize", "two grid points give the same trial config"),
    ("a transfer source whose trunk is frozen", lambda r: r["stages"]["optimize"]["base"]["adversarial"].update(
        trunk_trainable=False),
     "stages.transfer.base.model.discriminator", "the source's discriminator trunk was frozen"),
    ("a source rule naming several optimize runs", lambda r: r["stages"]["optimize"]["axes"].update(
        {"adversarial.gan_loss": ["vanilla", "hinge"]}),
     "stages.transfer.base.model.discriminator", "the rule names 2 optimize trials (they differ in adversarial.gan_loss)"),
    ("a source seed the optimize stage does not run", lambda r: r["stages"]["transfer"]["base"]["model"][
        "discriminator"].update(seed=7),
     "stages.transfer.base.model.discriminator", "no optimize trial has discriminator 'patch_resnet50'"),
    ("a best source checkpoint without a selection", lambda r: r["stages"]["transfer"]["base"]["model"][
        "discriminator"].update(checkpoint="best"),
     "stages.transfer.base.model.discriminator.checkpoint", "'best' needs stages.optimize.report.selection"),
    ("a discriminator init without its cell's weight", lambda r: r["stages"]["transfer"]["base"]["model"][
        "discriminator"].pop("adversarial_weight"),
     "stages.transfer.model.discriminator.adversarial_weight", "needs the source cell's adversarial weight"),
    ("transfer from a discriminator the grid never trains", lambda r: r["stages"]["transfer"]["base"]["model"][
        "discriminator"].update(head="vanilla"),
     "stages.transfer.base.model.discriminator", "no optimize trial has discriminator 'vanilla_resnet50'"),
    ("seed set in base", lambda r: r["stages"]["assess"]["base"].update(seed=3),
     "stages.assess.base.seed", "set by the stage (seeds)"),
    ("FR measure on an NR set", lambda r: r["stages"]["assess"]["base"].update(benchmark="demo_nr"),
     "stages.assess", "no-reference"),
]


@pytest.mark.parametrize("name,change,key,message", CASES, ids=[c[0] for c in CASES])
def test_validation_error_names_file_key_and_expectation(tmp_path, name, change, key, message):
    path = write(tmp_path, mutate(change))
    with pytest.raises(SpaceError) as err:
        load_space(path)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: ")
    assert err.value.key.startswith(key), text
    assert message in text, text


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nstages:\n  assess: [unclosed\n")
    with pytest.raises(SpaceError, match=r"broken.yaml: line \d+: not valid YAML"):
        load_space(str(path))


def test_unknown_space_name_lists_the_known_ones():
    with pytest.raises(SpaceError, match="no search space named 'papr'; known: .*demo.*paper"):
        load_space("papr")


def test_axis_and_linked_key_clash_is_an_error(tmp_path):
    raw = demo_raw()
    raw["stages"]["transfer"]["axes"]["data.train"] = ["demo_nr"]
    with pytest.raises(SpaceError, match="stages.transfer.linked.protocol.nr_demo.data.train: 'data.train' is also an axis"):
        load_space(write(tmp_path, raw))


def test_useless_axis_is_reported_as_duplicate_trials(tmp_path):
    raw = demo_raw()
    raw["stages"]["assess"]["axes"]["benchmark"] = ["demo_fr", "demo_fr"]
    with pytest.raises(SpaceError, match="two grid points give the same trial config"):
        load_space(write(tmp_path, raw))


def test_every_case_changes_the_space_it_claims_to_break():
    # A case whose change is a no-op (a misspelt key in the case itself) would test the shipped
    # space, not the mistake; and no case may alter what the next one starts from.
    original = yaml.safe_load(SPACES_DIR.joinpath("demo.yaml").read_text())
    for name, change, *_ in CASES:
        assert mutate(change) != original, f"case {name!r} changes nothing"
    assert demo_raw() == original

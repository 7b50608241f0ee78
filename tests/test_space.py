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
    # optimize: 6 × (1 + 2 heads × 3 trunks × 6 weights) per seed, 3 seeds
    seeds = optimize.spec.seeds
    assert len(seeds) == 3
    assert len(optimize.trials) == 6 * (1 + 2 * 3 * 6) * 3
    assert sum(t.point["seed"] == seeds[0] for t in optimize.trials) == 222
    # transfer: 3 backbones × 3 inits × 2 protocols per seed
    assert len(transfer.trials) == 3 * 3 * 2 * 3


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
    assert {k: len(s.trials) for k, s in sweep.stages.items()} == {"assess": 6, "optimize": 9, "transfer": 3}
    t = sweep.stages["optimize"].trials[0]
    # base values, axis values, seed and budget all land in the one resolved config
    assert t.config.generator.preset == "tiny"
    assert t.config.budget.model_dump() == {"steps": 60, "eval_every": 20}
    assert t.config.seed == 0
    assert t.config.trainable == "sr_gan"
    linked = sweep.stages["transfer"].trials[0].config
    assert linked.model.kind == "nr" and linked.data.test == ["demo_nr"]


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
    assert counts == {"assess": (6, 6), "optimize": (9, 9), "transfer": (3, 3)}


def test_asha_estimate_is_below_full_budget():
    plan = make_plan(load_space("paper"))
    opt = next(s for s in plan.stages if s.name == "optimize")
    assert 0 < opt.gpu_hours_asha < opt.gpu_hours_full
    assess = next(s for s in plan.stages if s.name == "assess")
    assert assess.gpu_hours_asha is None


# ---------------------------------------------------------------------------------------------
# Grid expansion
# ---------------------------------------------------------------------------------------------


def small_optimize(**changes) -> dict:
    raw = demo_raw()
    raw["stages"] = {"optimize": raw["stages"]["optimize"]}
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
    tr["base"]["model"]["discriminator"] = {"head": "patch", "fidelity_backbone": "vgg16_r"}
    tr["linked"]["protocol"]["fr_demo"] = {"model.kind": "fr", "data.train": "demo_fr", "data.test": ["demo_fr"]}
    tr["conditions"] = [{"if": {"protocol": "fr_demo"}, "then": {"model.init": {"in": ["imagenet", "random"]}}}]
    trials = parse_space(raw).stages["transfer"].trials
    fr = [t for t in trials if t.point["protocol"] == "fr_demo"]
    assert len(trials) == 3 + 2 and len(fr) == 2
    assert all(t.config.model.kind == "fr" and t.config.data.train == "demo_fr" for t in fr)


def test_optuna_search_counts_samples_not_grid_points():
    raw = small_optimize(search={"num_samples": 10, "params": {
        "loss.pixel_weight": {"uniform": [0.0, 1.0]},
        "adversarial.lr": {"loguniform": [1e-5, 1e-3], "when": {"adversarial.discriminator": {"ne": "none"}}},
    }})
    stage = parse_space(raw).stages["optimize"]
    assert stage.num_trials == 10 and len(stage.trials) == 9


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
    ("discriminator without conditions", lambda r: r["stages"]["optimize"].update(conditions=[]),
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
    ("grace period beyond budget", lambda r: r["stages"]["optimize"]["scheduler"].update(grace_period=10_000),
     "stages.optimize.scheduler.grace_period", "beyond the budget"),
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

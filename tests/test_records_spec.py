"""The per-item tables' format: exactly the contract's columns, a clear line otherwise, and small
enough for the paper grid (a table of the paper's shape, per evaluation)."""

from __future__ import annotations

import numpy as np
import pytest

from raygrid.spec import records


def test_tables_have_exactly_the_contract_columns():
    assert [c for c, _ in records.SCHEMAS["optimize"]] == ["role", "set", "image", "evaluator", "value"]
    assert [c for c, _ in records.SCHEMAS["assess"]] == ["benchmark", "item", "ref_id", "split", "pred",
                                                         "lower_better", "score"]
    assert [c for c, _ in records.SCHEMAS["transfer"]] == ["role", "benchmark", "item", "ref_id", "pred", "score"]
    data = {"role": ["val"], "set": ["set5"], "image": ["baby"], "evaluator": ["psnr_y"], "value": [30.25]}
    df = records.read_table(records.table_bytes("optimize", data), "optimize")
    assert df.to_dict("list") == data and str(df.value.dtype) == "float32"
    with pytest.raises(ValueError, match=r"optimize score table: columns \['image', 'role', 'set', 'value'\], expected"):
        records.table_bytes("optimize", {k: v for k, v in data.items() if k != "evaluator"})
    with pytest.raises(ValueError, match="unknown score table kind 'train'"):
        records.table_bytes("train", data)
    with pytest.raises(ValueError, match="assess score table: columns"):
        records.read_table(records.table_bytes("optimize", data), "assess")


def test_an_evaluation_of_the_paper_panel_on_the_paper_sets_stays_small():
    # 100 validation + 219 test images (Set5, Set14, BSD100, Urban100) x 13 evaluators
    rng = np.random.default_rng(0)
    sets = {"div2k_val": ("val", 100), "set5": ("test", 5), "set14": ("test", 14), "bsd100": ("test", 100),
            "urban100": ("test", 100)}
    evaluators = ["psnr_y", "ssim_y", *(f"fidelity_{i}" for i in range(7)), "musiq", "maniqa", "topiq_nr", "niqe"]
    cols = {k: [] for k, _ in records.SCHEMAS["optimize"]}
    for name, (role, n) in sets.items():
        for i in range(n):
            for e in evaluators:
                for k, v in zip(cols, (role, name, f"img_{i:03d}", e, float(rng.normal(25, 3)))):
                    cols[k].append(v)
    size = len(records.table_bytes("optimize", cols))
    assert len(cols["value"]) == 4147
    # 20 evaluations of a 100k-step run stay under the "few hundred KB" of issue 12
    assert size * 20 < 600_000, size

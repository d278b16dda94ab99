"""The ablation trains what the model config asks for and its table says what each run did."""

from __future__ import annotations

import json

import pytest
from helpers_pipeline import make_cache

from deepmsi.config import model_preset, train_preset
from deepmsi.evaluation.ablation import ablate, parse_variants
from deepmsi.runs.folder import load_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("vsc", [True, False])
def test_vsc_cell_reports_what_each_run_did(tmp_path, vsc):
    cache = make_cache(tmp_path / "cache", n=40)
    model = model_preset("tiny", modalities="tav", vsc=vsc)
    train = train_preset("tiny", epochs=1, batch_size=8, patience=0)
    variants = parse_variants(["v", "tav", "tav-novsc"])
    result = ablate(cache, tmp_path / "abl", model, train, variants=variants, progress=False)

    # a model config with VSC off is never turned back on by a variant
    assert load_run(tmp_path / "abl" / "runs" / "tav").model_config.vsc is vsc
    cells = [line.split("|")[2].strip() for line in result.table().splitlines()[2:]]
    assert cells == ["off (no guidance)", "on" if vsc else "off", "off"]
    rows = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert [r["vsc_ran"] for r in rows] == [False, vsc, False]

"""One placement from the command line to the core: every command that makes a model, given
``--precision bf16-emulated``, makes every model in that precision and records it in its run records
(issue: precision dropped silently by grid runs, LoRA attach/load/merge, the study). The Ray case is in
tests/test_ray.py (it needs that module's Ray instance)."""
import json
import os

import pytest

import gozaru as gz
from gozaru.engine.model import Model
from gozaru.engine.placement import Placement
from gozaru.lab import cli
from gozaru.lab.record import RunRecord
from gozaru.lab.source import BaseSource
from test_cli import setup  # noqa: F401 - the CLI tests' inputs: dolly jsonl, tokenizer, a tiny base checkpoint

PRECISION = "bf16-emulated"


@pytest.fixture
def made(monkeypatch):
    """Every Model made while the test runs (through any path: all go through Model.__init__)."""
    models = []
    init = Model.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        models.append(self)

    monkeypatch.setattr(Model, "__init__", spy)
    return models


def data_args(setup):
    _, jsonl, tok, _ = setup
    return ["--tokenizer", tok, "--data", jsonl, "--gozaru", "--seq-len", "48", "--eval-size", "8"]


def grid_args(setup, out, conditions):
    folder, _, _, base = setup
    grid = folder / f"{os.path.basename(out)}.json"
    grid.write_text(json.dumps(conditions))
    return ["grid", "--base", base, *data_args(setup), "--grid", str(grid), "--steps", "2", "--batch-size", "4",
            "--n-prompts", "3", "--max-new-tokens", "3", "--no-plots", "--no-progress", "--out", out,
            "--precision", PRECISION]


def assert_all_made_in(models, precision=PRECISION):
    assert models, "the command made no model"
    assert {m.precision for m in models} == {precision}


def record_in(checkpoint) -> dict:
    return RunRecord.from_payload(gz.load(checkpoint)[2]["extra"], checkpoint).placement


def assert_grid_records(out, slugs):
    for slug in ["base", *slugs]:
        with open(os.path.join(out, "runs", slug + ".json")) as f:
            assert json.load(f)["placement"]["precision"] == PRECISION, slug
    for slug in slugs:
        assert record_in(os.path.join(out, "runs", slug + ".h5"))["precision"] == PRECISION, slug


def test_train_and_resume(setup, made, tmp_path, capsys):
    out = str(tmp_path / "t.h5")
    common = ["train", "--base", setup[3], *data_args(setup), "--select", "last", "--layers", "1", "--batch-size",
              "4", "--no-progress", "--precision", PRECISION, "--out", out]
    assert cli.main([*common, "--steps", "2"]) == 0
    assert_all_made_in(made)
    placement = record_in(out)
    assert placement["precision"] == PRECISION and placement["backend"] == "cpu" and placement["threads"] >= 1
    assert gz.load(out)[0].precision == "fp32"   # the file holds fp32 weights; the precision is the run's
    assert cli.main(["info", out]) == 0
    assert f"placement  cpu, {PRECISION}, {placement['threads']} thread(s)" in capsys.readouterr().out
    made.clear()
    assert cli.main([*common[:1], "--resume", out, *common[3:], "--steps", "3"]) == 0
    assert_all_made_in(made)
    assert record_in(out)["precision"] == PRECISION


def test_eval(setup, made):
    base = setup[3]
    assert cli.main(["eval", base, *data_args(setup), "--base", base, "--n-prompts", "2", "--max-new-tokens", "2",
                     "--no-progress", "--precision", PRECISION]) == 0
    assert len(made) == 2
    assert_all_made_in(made)


def test_grid_local_with_a_lora_condition(setup, made, tmp_path):
    out = str(tmp_path / "grid")
    conditions = [{"name": "last 1", "selection": {"kind": "last", "layers": 1}},
                  {"name": "lora", "selection": {"kind": "last", "layers": 1, "lora": {"r": 2}}}]
    assert cli.main(grid_args(setup, out, conditions)) == 0
    assert_all_made_in(made)
    assert any(m.lora for m in made)   # the LoRA model itself was made in the precision
    assert_grid_records(out, ["last-1", "lora"])


def test_study_on_a_user_base(setup, made, tmp_path):
    out = str(tmp_path / "study")
    assert cli.main(["study", "--base", setup[3], *data_args(setup), "--shares", "head", "1", "--positions", "last",
                     "--types", "layers", "--seeds", "2", "--steps", "1", "--batch-size", "4", "--n-prompts", "3",
                     "--max-new-tokens", "3", "--sweep-steps", "1", "--lr-factors", "0.5", "1", "2", "4", "8",
                     "--no-progress", "--out", out, "--precision", PRECISION]) == 0
    assert_all_made_in(made)
    records = [os.path.join(out, folder, f) for folder in ("runs", "sweep")
               for f in os.listdir(os.path.join(out, folder)) if f.endswith(".json")]
    assert len(records) > 1 + 5   # the base, the sweep and the runs
    for path in records:   # every study run records the placement it computed in
        with open(path) as f:
            assert json.load(f)["placement"]["precision"] == PRECISION, path


def test_export_and_import(setup, made, tmp_path):
    folder = str(tmp_path / "hf")
    assert cli.main(["export-hf", setup[3], folder, "--precision", PRECISION]) == 0
    assert cli.main(["import-hf", folder, str(tmp_path / "back.h5"), "--precision", PRECISION]) == 0
    assert len(made) == 2
    assert_all_made_in(made)


def test_every_lora_path_keeps_the_placement(tmp_path):
    """attach, load_adapter and merge used to return fp32 models whatever the base computed in."""
    cfg = gz.GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=32)
    base = gz.Model(cfg, seed=0, precision=PRECISION)
    adapted = gz.lora.attach(base, r=2)
    gz.lora.save_adapter(adapted, tmp_path / "adapter")
    for model in (adapted, gz.lora.load_adapter(base, tmp_path / "adapter"), gz.lora.merge(adapted), base.clone()):
        assert model.placement == base.placement


def test_the_base_source_is_resolved_once_and_loads_placed(setup, tmp_path):
    _, _, _, base = setup
    placement = Placement(precision=PRECISION)
    folder = tmp_path / "hf"
    gz.load(base)[0].to_hf(folder)
    model = gz.Model(gz.load(base)[0].config, seed=0)
    sources = {"checkpoint": base, "hf": str(folder), "model": model,
               "factory": lambda p: gz.Model(model.config, seed=1, placement=p)}
    for kind, value in sources.items():
        source = BaseSource.of(value)
        assert source.kind == kind and BaseSource.of(source) is source
        assert source.config() == model.config
        assert source.load(placement).precision == PRECISION, kind
    assert BaseSource.of(model).load() is model   # a Model source is that model (now in the placement asked for)
    with pytest.raises(TypeError, match="base must be"):
        BaseSource.of(3)
    with pytest.raises(ValueError, match="runs on cpu"):
        BaseSource.of(model).load(Placement(backend="cuda"))


def test_placement_values():
    p = Placement(precision=PRECISION, threads=2)
    assert Placement.from_dict(p.to_dict()) == p and Placement.of(p, threads=1).threads == 1
    with pytest.raises(ValueError, match="threads"):
        Placement(threads=0)
    with pytest.raises(TypeError, match="precision"):
        Placement(precision=16)
    choices = ", ".join(f"'{name}'" for name in gz._core.PRECISIONS)
    with pytest.raises(ValueError, match=choices):   # the core checks the name and lists its vocabulary
        gz.Model(gz.preset("tiny", num_hidden_layers=1), placement=Placement(precision="fp16"))

"""Tracking: `gozaru train --tensorboard DIR --mlflow URI` leaves event files whose scalars the tensorboard
package reads back and an MLflow run whose metrics mlflow reads back, equal to the run's own history; a grid
tracks one run per condition, a study one per fine-tune; `gozaru eval --json` writes its results."""
import json
import os

import pytest

import gozaru as gz
from gozaru import data
from gozaru.data.tokenizer import Tokenizer
from gozaru.lab import cli
from gozaru.lab.record import RunRecord
from gozaru.lab.tracking import safe_run_name

pytest.importorskip("tensorboard", reason="tracking extra: pip install 'gozaru[tracking]'")
pytest.importorskip("mlflow", reason="tracking extra: pip install 'gozaru[tracking]'")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("track")
    records = data.SyntheticCorpus(0).instructions(60, seed=4)
    jsonl = data.save_jsonl(records, folder / "dolly.jsonl")
    tokenizer = Tokenizer.train([f"{r.instruction}\n{r.output}\n{data.to_gozaru(r.output)}" for r in records],
                                vocab_size=600, seed=0)
    tok = tokenizer.save(str(folder / "spiece.model"))
    cfg = gz.GPTNeoXConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    base = str(folder / "base.h5")
    gz.Model(cfg, seed=0).save(base)
    common = ["--tokenizer", tok, "--data", str(jsonl), "--gozaru", "--seq-len", "48", "--eval-size", "8"]
    return folder, base, common


def tb_scalars(logdir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_train_reports_to_tensorboard_and_mlflow(setup, tmp_path):
    from mlflow.tracking import MlflowClient

    folder, base, common = setup
    out = str(tmp_path / "run1.h5")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli.main(["train", "--base", base, *common, "--select", "last", "--layers", "1", "--steps", "4",
                     "--batch-size", "4", "--out", out, "--no-progress", "--tensorboard", str(tmp_path / "tb"),
                     "--mlflow", uri, "--mlflow-experiment", "tracking-test"]) == 0
    history = RunRecord.from_payload(gz.load(out)[2]["extra"], out).history
    assert [h["step"] for h in history] == [1, 2, 3, 4]

    logdir = tmp_path / "tb" / "run1"
    loss = tb_scalars(logdir, "train/loss")
    assert [s for s, _ in loss] == [1, 2, 3, 4]
    assert [v for _, v in loss] == pytest.approx([h["loss"] for h in history], rel=1e-6)   # float32 in events
    assert [v for _, v in tb_scalars(logdir, "train/lr")] == pytest.approx([h["lr"] for h in history], rel=1e-6)
    assert len(tb_scalars(logdir, "train/tokens_per_s")) == 4 and len(tb_scalars(logdir, "eval/eval_loss")) == 1

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tracking-test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "run1" and run.info.status == "FINISHED"
    got = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss"))
    assert got == [(h["step"], pytest.approx(h["loss"], rel=1e-12)) for h in history]
    assert "eval_eval_loss" in run.data.metrics and run.data.params["train.steps"] == "4"


def test_mlflow_default_store_is_mlflows_own(setup, tmp_path, monkeypatch):
    """--mlflow without a URI leaves the choice to mlflow (its local SQLite store mlflow.db, in mlflow 3)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    folder, base, common = setup
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    default = mlflow.get_tracking_uri()
    assert cli.main(["train", "--base", base, *common, "--steps", "2", "--batch-size", "4",
                     "--out", str(tmp_path / "r.h5"), "--no-progress", "--mlflow"]) == 0
    exp = MlflowClient(tracking_uri=default).get_experiment_by_name("gozaru")
    assert exp is not None and len(MlflowClient(tracking_uri=default).search_runs([exp.experiment_id])) == 1


def test_grid_tracks_one_run_per_condition_and_eval_writes_json(setup, tmp_path):
    folder, base, common = setup
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps([{"name": "last 1", "selection": {"kind": "last", "layers": 1}},
                                {"name": "mlp", "selection": {"kind": "mlp"}}]))
    assert cli.main(["grid", "--base", base, *common, "--grid", str(grid), "--steps", "2", "--batch-size", "4",
                     "--n-prompts", "4", "--max-new-tokens", "4", "--no-plots", "--out", str(tmp_path / "g"),
                     "--no-progress", "--tensorboard", str(tmp_path / "tb")]) == 0
    assert sorted(os.listdir(tmp_path / "tb")) == ["last_1", "mlp"]
    for run in ("last_1", "mlp"):
        assert [s for s, _ in tb_scalars(tmp_path / "tb" / run, "train/loss")] == [1, 2]
        (rate,) = tb_scalars(tmp_path / "tb" / run, "eval/gozaru_rate")
        assert 0.0 <= rate[1] <= 1.0

    result = tmp_path / "eval.json"
    ckpt = str(tmp_path / "g" / "runs" / "mlp.h5")
    assert cli.main(["eval", ckpt, *common, "--n-prompts", "4", "--max-new-tokens", "4", "--no-progress",
                     "--json", str(result)]) == 0
    d = json.loads(result.read_text())
    assert d["n"] == 4 and len(d["answers"]) == 4 and d["rate_low"] <= d["gozaru_rate"] <= d["rate_high"]


def test_study_tracks_every_run(setup, tmp_path):
    """`gozaru study --tensorboard DIR`: one tracked run per fine-tune (sweep runs included), named as its record,
    with the training steps and the run's measures."""
    folder, base, common = setup
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"shares": ["head", 1], "positions": ["last"], "types": ["layers"], "seeds": [0, 1],
                                "lrs": [0.002], "sweep_widen": 0}))
    out, tb = tmp_path / "s", tmp_path / "tb"
    assert cli.main(["study", "--base", base, *common, "--spec", str(spec), "--steps", "2", "--batch-size", "4",
                     "--n-prompts", "4", "--max-new-tokens", "4", "--sweep-steps", "1", "--out", str(out),
                     "--no-progress", "--tensorboard", str(tb)]) == 0
    evaluated = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json") if p.name != "base.json"]
    swept = [json.loads(p.read_text()) for p in (out / "sweep").glob("*.json")]
    assert evaluated and swept
    names = {r["meta"]["name"] for r in evaluated + swept}
    assert sorted(os.listdir(tb)) == sorted(safe_run_name(n) for n in names)
    for r in evaluated:
        run = tb / safe_run_name(r["meta"]["name"])
        assert [s for s, _ in tb_scalars(run, "train/loss")] == [1, 2]
        ((_, adoption),) = tb_scalars(run, "eval/adoption")
        assert adoption == pytest.approx(sum(r["adoption"]) / len(r["adoption"]), rel=1e-5)
    for r in swept:
        ((_, loss),) = tb_scalars(tb / safe_run_name(r["meta"]["name"]), "eval/val_loss")
        assert loss == pytest.approx(r["val_loss"], rel=1e-5)

"""Run files of a grid: no condition name reaches another condition's files (``x.partial`` is a name like any
other), and a checkpoint is only reused for the definition it was trained for (condition and training
settings), whether it is a finished run without its record or an interrupted run's periodic checkpoint."""
import os

import pytest

from gozaru.lab.experiment import Condition, RunsFailed, load_record, run
from gozaru.lab.train import TrainConfig, Trainer
from test_experiment import EVAL, SMALL, lab  # noqa: F401 - the shared lab fixture


def test_a_name_ending_in_partial_does_not_reach_another_runs_checkpoint(lab, tmp_path):  # noqa: F811
    _, _, base, exp = lab
    grid = [Condition("x.partial", {"kind": "last", "layers": 1}), Condition("x", {"kind": "full"})]
    out = str(tmp_path / "exp")
    results = run(grid, base, exp, out, train=SMALL, eval=EVAL, progress=False, log=None)
    assert sorted(results["name"]) == ["base", "x", "x.partial"]
    assert load_record(out, "x")["trainable"] == sorted(base.names)
    last = {n for n in base.names if ".layers.3." in n} | {"embed_out.weight"}
    assert set(load_record(out, "x.partial")["trainable"]) == last
    from gozaru.lab.task import run_paths
    final, record, partial = run_paths(os.path.join(out, "runs"), "x")
    assert len({final, record, partial} | set(run_paths(os.path.join(out, "runs"), "x.partial"))) == 6


@pytest.mark.parametrize("change,field", [({"hparams": {"lr": 0.01}}, "lr"), ({"seed": 5}, "seed"),
                                          ({"selection": {"kind": "mlp"}}, "selection")])
def test_a_finished_checkpoint_is_not_reused_for_a_changed_condition(lab, tmp_path, change, field):  # noqa: F811
    _, _, base, exp = lab
    before = dict(name="c", selection={"kind": "random", "layers": 1}, seed=1, hparams={"lr": 0.001})
    out = str(tmp_path / "exp")
    run([Condition(**before)], base, exp, out, train=SMALL, eval=EVAL, progress=False, log=None)
    final, record = (os.path.join(out, "runs", "c" + ext) for ext in (".h5", ".json"))
    os.remove(record)  # killed after the model was saved, before its record
    stamp = os.path.getmtime(final)
    with pytest.raises((RunsFailed, ValueError), match=f"another definition.*{field}"):
        run([Condition(**{**before, **change})], base, exp, out, train=SMALL, eval=EVAL, progress=False, log=None)
    assert os.path.getmtime(final) == stamp  # left as it was
    # the same definition again: evaluated from the checkpoint, not retrained
    again = run([Condition(**before)], base, exp, out, train=SMALL, eval=EVAL, progress=False, log=None)
    assert "c" in list(again["name"]) and os.path.getmtime(final) == stamp


def test_an_interrupted_checkpoint_is_not_resumed_for_a_changed_condition(lab, tmp_path):  # noqa: F811
    _, _, base, exp = lab
    old = Condition("c", {"kind": "last", "layers": 1}, hparams={"lr": 0.001})
    from gozaru.lab.task import run_paths
    runs = os.path.join(str(tmp_path / "exp"), "runs")
    _, _, partial = run_paths(runs, "c")
    os.makedirs(os.path.dirname(partial))
    config = TrainConfig(**{**SMALL, "lr": 0.001})
    trainer = Trainer(old.model_for(base, old.select(base.config)), exp.train, config, checkpoint=partial,
                      save_at_end=False, condition=old.to_dict())
    trainer.save()  # what an attempt killed at step 0 leaves
    new = Condition("c", {"kind": "last", "layers": 1}, hparams={"lr": 0.02})
    with pytest.raises((RunsFailed, ValueError), match="another definition.*lr"):
        run([new], base, exp, str(tmp_path / "exp"), train=SMALL, eval=EVAL, progress=False, log=None)
    # the old definition resumes it
    done = run([old], base, exp, str(tmp_path / "exp"), train=SMALL, eval=EVAL, progress=False, log=None)
    assert "c" in list(done["name"]) and not os.path.exists(partial)

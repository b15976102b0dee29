"""Bad input that used to end in a traceback (or a silent change) gets one line naming the file and field, or is
accepted where HF accepts it: truncated run records, grid files with non-object items, a checkpoint whose
stored adapter names no tensor (``gozaru info``), an HF ``eos_token_id`` list, JSON nested beyond the parser's
depth, and set_precision on a model another thread is using."""
import json
import threading
import time

import h5py
import numpy as np
import pytest
import torch
import transformers

import gozaru as gz
from gozaru.lab import cli
from gozaru.lab.experiment import Condition, load_grid, run
from test_experiment import EVAL, SMALL, lab  # noqa: F401 - the shared lab fixture

CFG = gz.GPTNeoXConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=24, max_position_embeddings=32)
DEEP = "[" * 200_000 + "]" * 200_000


def test_a_truncated_run_record_names_the_file(lab, tmp_path):  # noqa: F811
    _, _, base, exp = lab
    out = str(tmp_path / "g")
    grid = [Condition("full", {"kind": "full"})]
    run(grid, base, exp, out, train=SMALL, eval=EVAL, progress=False, log=None)
    record = tmp_path / "g" / "runs" / "full.json"
    record.write_bytes(record.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"full\.json: not valid JSON") as e:
        run(grid, base, exp, out, train=SMALL, eval=EVAL, progress=False, log=None)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("items,match", [
    ([1], "item 0 is a int"), ([{"name": "a", "selection": {"kind": "full"}}, "b"], "item 1 is a str"),
    ([{"name": "a", "selection": {"kind": "full"}, "lr": 1}], "item 0: .*unknown field.*lr"),
    (DEEP, "nested too deeply"), ('[{"name": ', "not valid JSON"),
])
def test_grid_files_with_odd_items_name_the_item(tmp_path, items, match):
    path = tmp_path / "grid.json"
    path.write_text(items if isinstance(items, str) else json.dumps(items))
    with pytest.raises(ValueError, match=match) as e:
        load_grid(str(path))
    assert "grid.json" in str(e.value) and "\n" not in str(e.value)


def test_info_on_an_adapter_that_names_no_tensor_is_one_line(tmp_path, capsys):
    path = str(tmp_path / "lora.h5")
    gz.lora.attach(gz.Model(CFG, seed=0), ("dense",), r=2).save(path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["config"])
        config["lora"][0]["target"] = "nodots"
        f.attrs["config"] = json.dumps(config)
    assert cli.main(["info", path]) == 1
    err = capsys.readouterr().err
    assert "nodots" in err and err.count("\n") == 1


def test_deeply_nested_configs_are_one_line_errors(tmp_path):
    (tmp_path / "config.json").write_text('{"vocab_size": ' + DEEP + "}")
    with pytest.raises(gz.CheckpointError, match="config.json: not valid JSON.*nested too deeply"):
        gz.hf.read_hf_config(tmp_path)
    with pytest.raises(ValueError, match="nested too deeply"):
        gz.GPTNeoXConfig.from_json(DEEP, source="x")
    path = tmp_path / "m.h5"
    gz.Model(CFG, seed=0).save(path)
    with h5py.File(path, "r+") as f:
        f.attrs["config"] = '{"lora": ' + DEEP + "}"
    with pytest.raises(gz.CheckpointError):
        gz.load(path)


def test_an_eos_list_is_accepted_and_any_of_them_ends_generation(tmp_path):
    hf_cfg = transformers.GPTNeoXConfig(**{**CFG.to_hf_dict(), "eos_token_id": [3, 7]})
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    hf = transformers.GPTNeoXForCausalLM(hf_cfg).float().eval()
    with torch.no_grad():  # every position's argmax is token 7: generation must stop right after it
        bias = hf.gpt_neox.final_layer_norm.bias
        bias.copy_(3 * torch.randn_like(bias))
        hf.lm_head.weight[7] = 10 * bias
    hf.save_pretrained(tmp_path)
    model = gz.Model.from_hf(tmp_path)
    assert (model.config.eos_token_id, model.config.extra_eos_token_ids) == (3, (7,))
    with torch.no_grad():
        want = hf.generate(torch.tensor([[5, 6]]), max_new_tokens=5, do_sample=False, pad_token_id=0)[0, 2:]
    assert model.generate([[5, 6]], max_new_tokens=5) == [want.tolist()] == [[7]]
    model.to_hf(tmp_path / "out")  # and back: transformers reads the list again
    assert transformers.GPTNeoXConfig.from_pretrained(tmp_path / "out").eos_token_id == [3, 7]


def test_set_precision_on_a_busy_model_says_busy_not_unsupported():
    cfg = CFG.replace(max_position_embeddings=2048, hidden_size=64, num_attention_heads=4)
    m = gz.Model(cfg, seed=0)
    done = threading.Event()

    def work():
        while not done.is_set():
            try:
                m.generate([[1, 2]] * 4, max_new_tokens=500)
            except RuntimeError:
                time.sleep(0.001)

    worker = threading.Thread(target=work)
    worker.start()
    try:
        seen = None
        deadline = time.monotonic() + 30
        while seen is None and time.monotonic() < deadline:
            try:
                m.set_precision("fp32")
            except RuntimeError as e:
                seen = e
            time.sleep(0.001)
    finally:
        done.set()
        worker.join()
    assert seen is not None, "the model was never busy"
    assert isinstance(seen, gz._core.ModelBusyError), repr(seen)
    assert not isinstance(seen, gz.engine.model.PrecisionError), repr(seen)
    assert "in use by another thread" in str(seen)

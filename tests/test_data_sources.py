"""load_dolly's sources beyond a file: a datasets.Dataset / DatasetDict, a list of dicts, a folder in the Hub's
layout (searched recursively, one split), and a Hub dataset id from the local hub cache."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gozaru.data import DataError, Record, load_dolly

ROWS = [{"instruction": f"質問{i}", "input": "", "output": f"答え{i}です。", "category": "qa", "index": str(i)}
        for i in range(6)]


def test_a_datasets_dataset_and_dataset_dict():
    datasets = pytest.importorskip("datasets", reason="the datasets package is in the test extra")
    ds = datasets.Dataset.from_list(ROWS)
    got = load_dolly(ds)
    assert [r.to_dict() for r in got] == ROWS
    dd = datasets.DatasetDict({"train": ds.select(range(4)), "test": ds.select(range(4, 6))})
    assert [r.index for r in load_dolly(dd)] == ["0", "1", "2", "3"]
    assert [r.index for r in load_dolly(dd, split="test")] == ["4", "5"]
    with pytest.raises(DataError, match="no split 'validation'"):
        load_dolly(dd, split="validation")
    with pytest.raises(DataError, match="'output'.*missing column"):
        load_dolly(ds.remove_columns("output"))


def test_a_list_of_dicts_and_records_names_the_bad_item():
    got = load_dolly(ROWS[:2] + [Record("指示", output="出力")])
    assert len(got) == 3 and got[2].instruction == "指示"
    with pytest.raises(DataError, match=r"<list>, item 1, field 'output'"):
        load_dolly([ROWS[0], {"instruction": "x"}])
    skipped = load_dolly([ROWS[0], {"instruction": "x"}], on_error="skip")
    assert len(skipped) == 1 and len(skipped.skipped) == 1
    with pytest.raises(TypeError, match="load_dolly: expected"):
        load_dolly(42)


def _hub_layout(folder):
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ROWS[:4]), folder / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[4:]), folder / "data" / "test-00000-of-00001.parquet")
    (folder / "README.md").write_text("---\nlicense: cc-by-sa-3.0\n---\n")


def test_a_hub_layout_parquet_folder_reads_one_split(tmp_path):
    _hub_layout(tmp_path)
    assert [r.index for r in load_dolly(tmp_path)] == ["0", "1", "2", "3"]
    assert [r.index for r in load_dolly(tmp_path, split="test")] == ["4", "5"]
    with pytest.raises(DataError, match="splits found: test, train"):
        load_dolly(tmp_path, split="validation")


def test_a_folder_is_searched_recursively(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "part.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS[:3]))
    (tmp_path / "top.json").write_text(json.dumps(ROWS[3:], ensure_ascii=False))
    got = load_dolly(tmp_path)
    assert sorted(r.index for r in got) == [str(i) for i in range(6)] and len(got.files) == 2


def test_a_hub_dataset_id_from_the_local_cache(tmp_path, monkeypatch):
    """The cache laid out as huggingface_hub lays it (datasets--org--name/snapshots/<hash>, refs/main)."""
    import importlib

    import huggingface_hub

    repo = tmp_path / "datasets--someone--dolly-mini"
    snap = repo / "snapshots" / ("a" * 40)
    _hub_layout(snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    importlib.reload(huggingface_hub.constants)
    try:
        assert [r.index for r in load_dolly("someone/dolly-mini")] == ["0", "1", "2", "3"]
        with pytest.raises(ValueError, match="not in the hub cache"):
            load_dolly("someone/absent")
    finally:
        monkeypatch.undo()
        importlib.reload(huggingface_hub.constants)

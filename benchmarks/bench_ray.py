"""The Ray executor against the local one, and how a big base should travel to the runs. Prints JSON.

grid: the quick demo's grid (13 runs on its tiny base, built once and cached in OUT/base) with the local executor
(one run at a time, --slots threads) and with the Ray executor (--slots tasks × 1 thread on a local Ray instance);
wall times, mean run time, and Ray's overhead per task = (slots × Ray grid wall − Σ run seconds) / runs, i.e. the
slot time a task holds beyond its own run (scheduling, worker start, loading the base and data from files).

transfer: a --gib float32 array shipped through the object store (put in the driver, get + copy in a task, as
a run copies the base into its own model) against a gozaru checkpoint of that size written to local disk and
loaded cold (its pages dropped from the page cache first) and warm; extrapolated to a 3.6B base (14.4 GB).

Usage: python benchmarks/bench_ray.py [--part grid|transfer|both] [--slots 2] [--gib 1.5] [--out runs/bench-ray]
"""
import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time

import numpy as np
import ray

from gozaru import _core
from gozaru.engine.checkpoint import load
from gozaru.engine.config import GPTNeoXConfig
from gozaru.engine.model import Model
from gozaru.lab import demo
from gozaru.lab.evaluate import EvalConfig
from gozaru.lab.executor import LocalExecutor, RayExecutor
from gozaru.lab.experiment import run
from gozaru.lab.train import TrainConfig

BASE_3_6B_GB = 3.6e9 * 4 / 1e9


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return re.search(r"Model name:\s*(.+)", out).group(1).strip()
    except (OSError, AttributeError):
        return platform.processor()


def grid_part(out: str, slots: int) -> dict:
    settings = demo.SETTINGS["quick"]
    tokenizer, base = demo.build_base(settings, os.path.join(out, "base"), progress=False, log=lambda s: None)
    data = demo.experiment_data(settings, tokenizer)
    grid = demo.demo_grid(base.config, settings)
    train = TrainConfig(steps=settings.finetune_steps, batch_size=settings.finetune_batch, lr=settings.finetune_lr,
                        warmup_steps=max(1, settings.finetune_steps // 10), min_lr_ratio=0.1, max_grad_norm=1.0,
                        checkpoint_every=max(10, settings.finetune_steps // 2), progress=False)
    evaluation = EvalConfig(max_new_tokens=settings.max_new_tokens, batch_size=32)
    base_path = os.path.join(out, "base", "base.h5")

    def timed(executor, name):
        folder = os.path.join(out, name)
        shutil.rmtree(folder, ignore_errors=True)
        lines = []
        t0 = time.perf_counter()
        run(grid, base_path, data, folder, train=train, eval=evaluation, progress=False,
            log=lambda s: lines.append((time.perf_counter() - t0, s)), executor=executor)
        wall = time.perf_counter() - t0
        base_done = next(t for t, s in lines if s.startswith("base:"))  # the base is evaluated alone, first
        secs = [float(m.group(1)) for _, s in lines if (m := re.search(r"\(([\d.]+) s\)$", s))]
        return wall, wall - base_done, secs

    local_wall, local_grid, local_secs = timed(LocalExecutor(threads=slots), "local")
    t0 = time.perf_counter()
    ray.init(num_cpus=slots, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    try:
        ray_wall, ray_grid, ray_secs = timed(RayExecutor(cpus_per_run=1), "ray")
    finally:
        ray.shutdown()
    runs = len(grid)
    return {"runs": runs,
            "local": {"threads": slots, "wall_s": round(local_wall, 2), "grid_after_base_s": round(local_grid, 2),
                      "mean_run_s": round(sum(local_secs) / runs, 3)},
            "ray": {"tasks_at_once": slots, "threads_per_task": 1, "ray_init_s": round(ray_start, 2),
                    "wall_s": round(ray_wall, 2), "grid_after_base_s": round(ray_grid, 2),
                    "mean_run_s": round(sum(ray_secs) / runs, 3),
                    "overhead_per_task_s": round((slots * ray_grid - sum(ray_secs)) / runs, 3)},
            "speedup_ray_vs_local": round(local_wall / ray_wall, 2)}


def _copy_in_task(flat):
    """What a run does with a base from the object store: copy it into its own parameters."""
    t0 = time.perf_counter()
    own = np.empty_like(flat)
    np.copyto(own, flat)
    return time.perf_counter() - t0


def _drop_cache(path: str):
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # this file's pages only: the next read is cold
    os.close(fd)


def transfer_part(gib: float) -> dict:
    n_layers = 1
    hidden = 1024
    # one wide layer plus a big vocabulary: about gib GiB of float32 parameters, built quickly
    vocab = int(gib * 2**30 / 4 / (2 * hidden)) - 8 * hidden
    cfg = GPTNeoXConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=n_layers, num_attention_heads=8,
                        intermediate_size=4 * hidden, max_position_embeddings=64)
    model = Model(cfg, seed=None)
    flat = model.core.flat_params()
    np.random.default_rng(0).random(dtype=np.float32, out=flat)  # not zeros: nothing to gain from compression
    model.core.params_changed()
    nbytes = flat.nbytes
    result = {"bytes": nbytes}
    folder = tempfile.mkdtemp(prefix="bench-ray-", dir=os.environ.get("TMPDIR", "/tmp"))
    try:
        path = os.path.join(folder, "base.h5")
        t0 = time.perf_counter()
        model.save(path)
        result["checkpoint_write_s"] = round(time.perf_counter() - t0, 2)
        del model, flat
        _drop_cache(path)
        t0 = time.perf_counter()
        raw = np.fromfile(path, dtype=np.uint8)  # the disk alone, no checkpoint parsing
        read_cold = time.perf_counter() - t0
        del raw
        _drop_cache(path)
        t0 = time.perf_counter()
        m = load(path)[0]
        cold = time.perf_counter() - t0
        del m
        t0 = time.perf_counter()
        m = load(path)[0]
        warm = time.perf_counter() - t0
        flat = m.core.flat_params().copy()
        del m
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, object_store_memory=int(nbytes * 1.3))
    try:
        t0 = time.perf_counter()
        ref = ray.put(flat)
        put = time.perf_counter() - t0
        copy = ray.get(ray.remote(_copy_in_task).remote(ref))  # warm-up: a worker started, the page faults paid
        t0 = time.perf_counter()
        copy = ray.get(ray.remote(_copy_in_task).remote(ref))
        get_task = time.perf_counter() - t0
    finally:
        ray.shutdown()
    gb = nbytes / 1e9
    rates = {"file_read_cold": gb / read_cold, "load_cold": gb / cold, "load_warm": gb / warm,
             "object_store_put": gb / put, "object_store_get_and_copy_same_node": gb / get_task}
    result.update({k + "_GBps": round(v, 2) for k, v in rates.items()})
    result.update({"copy_in_task_s": round(copy, 3),
                   "extrapolated_14_4GB_s": {k: round(BASE_3_6B_GB / v, 1) for k, v in rates.items()}})
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("grid", "transfer", "both"), default="both")
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--gib", type=float, default=1.5)
    ap.add_argument("--out", default="runs/bench-ray")
    args = ap.parse_args()
    report = {"cpu": cpu_model(), "cores": os.cpu_count(), "ray": ray.__version__,
              "threads_default": _core.get_num_threads()}
    if args.part in ("grid", "both"):
        report["grid"] = grid_part(args.out, args.slots)
    if args.part in ("transfer", "both"):
        report["transfer"] = transfer_part(args.gib)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

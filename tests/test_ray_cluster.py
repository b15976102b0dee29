"""A real two-node Ray cluster on this machine (``ray start`` head + worker, 1 CPU each): a worker killed in the
middle of a run, and a driver killed in the middle of a grid, still give every run exactly once, with the same
numbers as the local executor; rerunning skips what had finished without touching it."""
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pandas as pd
import pytest

import ray
import ray_lab
from gozaru.lab.executor import RayExecutor
from gozaru.lab.experiment import run
from test_ray import assert_same_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = dict(steps=80, batch_size=8, checkpoint_every=10, progress=False)
SLUGS = ["full", "last-1", "mlp", "random-1-seed3"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_command() -> str:
    """The `ray` script of this interpreter's environment (make test runs .venv/bin/python without activating
    the venv, so its bin/ need not be on PATH), else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "ray")
    return beside if os.access(beside, os.X_OK) else (shutil.which("ray") or "ray")


def start_node(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([ray_command(), "start", "--block", "--num-cpus=1", *args], cwd=ROOT,
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def our_pids(marker: str, temp_dir: str) -> list[int]:
    """The processes of our nodes: those carrying our marker in their environment, or holding a file under our
    temp dir open (Ray's agents get a trimmed environment; workers start sessions of their own, so a process
    group would miss them). Never a process of another Ray instance on this machine."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                ours = marker.encode() in f.read().split(b"\0")
            if not ours:
                fds = f"/proc/{entry}/fd"
                ours = any(os.readlink(os.path.join(fds, fd)).startswith(temp_dir) for fd in os.listdir(fds))
        except OSError:
            continue
        if ours and int(entry) != os.getpid():
            pids.append(int(entry))
    return pids


@pytest.fixture(scope="module")
def cluster():
    temp_dir = tempfile.mkdtemp(prefix="gzray", dir="/tmp")  # short: Ray's socket paths have a length limit
    marker = f"GOZARU_RAY_TEST={temp_dir}"
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a throwaway cluster on loopback: no token to hand around
    env = {**os.environ, "PYTHONPATH": ROOT, "GOZARU_RAY_TEST": temp_dir}
    port = free_port()
    address = f"127.0.0.1:{port}"
    nodes = [start_node(["--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                         f"--temp-dir={temp_dir}"], env)]
    try:
        deadline = time.time() + 90
        while time.time() < deadline:   # the head is up when a client can join it
            if subprocess.run([ray_command(), "status", f"--address={address}"], env=env,
                              capture_output=True).returncode == 0:
                break
            time.sleep(1)
        nodes.append(start_node([f"--address={address}", "--node-ip-address=127.0.0.1"], env))
        ray.init(address=address, log_to_driver=False)
        while time.time() < deadline and ray.cluster_resources().get("CPU", 0) < 2:
            time.sleep(0.5)
        assert ray.cluster_resources().get("CPU", 0) == 2, "the second node did not join"
        yield address
    finally:
        ray.shutdown()
        for _ in range(3):  # again: a process may be starting while we sweep
            for pid in our_pids(marker, temp_dir):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        for proc in nodes:
            proc.wait(30)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return ray_lab.local_reference(tmp_path_factory.mktemp("raycluster"), TRAIN)


def assert_each_run_once(out):
    table = pd.read_csv(os.path.join(out, "results.csv"))
    assert sorted(table["name"]) == sorted(["base", "full", "last 1", "mlp", "random 1 seed3"])
    files = sorted(os.listdir(os.path.join(out, "runs")))
    assert files == sorted(["base.json"] + [s + ext for s in SLUGS for ext in (".h5", ".json")]), files


def test_a_killed_worker_is_retried_and_every_run_lands_once(cluster, lab, tmp_path):
    _, _, base, exp, reference = lab
    out = str(tmp_path / "killed-worker")
    runs = os.path.join(out, "runs")
    lines, errors = [], []

    def driver():
        try:
            run(ray_lab.grid(), base, exp, out, train=TRAIN, eval=ray_lab.EVAL, progress=False, log=lines.append,
                executor=RayExecutor(cpus_per_run=1, max_retries=2))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)

    thread = threading.Thread(target=driver)
    thread.start()
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline and thread.is_alive():
        partial = os.path.isdir(runs) and any(f.endswith(".partial.h5") for f in os.listdir(runs))
        for pid in ray_lab.ray_task_pids() if partial else []:
            if pid in ray_lab.ray_task_pids():  # still running a task right now
                os.kill(pid, signal.SIGKILL)
                killed = pid
                break
        time.sleep(0.05)
    thread.join(180)
    assert killed is not None, "no worker was caught in the middle of a run"
    assert not thread.is_alive() and not errors, errors
    assert_each_run_once(out)
    assert sum("ござる-rate" in line and not line.startswith("base") for line in lines) == 4
    assert_same_results(out, reference)
    again = []
    run(ray_lab.grid(), base, exp, out, train=TRAIN, eval=ray_lab.EVAL, progress=False, log=again.append,
        executor=RayExecutor(cpus_per_run=1))
    assert len(again) == 4 and all("skipped" in line for line in again)


DRIVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import ray_lab
    from gozaru.lab.executor import RayExecutor
    from gozaru.lab.experiment import run
    with RayExecutor({address!r}, cpus_per_run=1, init={{"log_to_driver": False}}) as executor:  # joins the cluster
        run(ray_lab.grid(), {base!r}, ray_lab.experiment({tok!r}), {out!r}, train={train!r}, eval=ray_lab.EVAL,
            progress=False, log=lambda s: print(s, flush=True), executor=executor)
    print("GRID DONE", flush=True)
""")


def test_a_killed_driver_is_rerun_and_finished_runs_are_not_touched(cluster, lab, tmp_path):
    _, tok, base, exp, reference = lab
    out = str(tmp_path / "killed-driver")
    runs = os.path.join(out, "runs")
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(tests=os.path.join(ROOT, "tests"), address=cluster, base=base, tok=tok, out=out,
                                    train=TRAIN))
    env = {**os.environ, "PYTHONPATH": ROOT}   # RAY_AUTH_MODE as the cluster fixture set it
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(runs) and any(f[:-5] in SLUGS for f in os.listdir(runs) if f.endswith(".json")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the grid finished before its driver could be killed: " + proc.stdout.read().decode()
    proc.kill()
    proc.wait()
    finished = {s: (os.path.getmtime(os.path.join(runs, s + ".json")), os.path.getmtime(os.path.join(runs, s + ".h5")))
                for s in SLUGS if os.path.exists(os.path.join(runs, s + ".json"))}
    assert finished and len(finished) < len(SLUGS)
    lines = []
    run(ray_lab.grid(), base, exp, out, train=TRAIN, eval=ray_lab.EVAL, progress=False, log=lines.append,
        executor=RayExecutor(cpus_per_run=1))
    assert sum("skipped" in line for line in lines) >= len(finished)
    for s, stamps in finished.items():
        assert (os.path.getmtime(os.path.join(runs, s + ".json")), os.path.getmtime(os.path.join(runs, s + ".h5"))) \
            == stamps, f"{s} was computed again"
    assert_each_run_once(out)
    assert_same_results(out, reference)

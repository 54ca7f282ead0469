"""Faults that end long runs: a stop signal, non-finite steps, a checkpoint write that fails part way.

Faults are injected by a task plugin of the test suite (tests/fault_plugin.py: a NaN loss or a signal at chosen
steps), registered through the entry-point group only here. Each interrupted run is compared with one that ran
straight through with the same faults: the same per-step losses and the same final weights, bit for bit.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import fault_plugin
import pytest
import torch
from torch import nn

from ernie_cmtl import cli
from ernie_cmtl.checkpoint import checkpoint_dirs, verify_checkpoint
from ernie_cmtl.config import OptimConfig
from ernie_cmtl.engine import TorchEngine
from ernie_cmtl.faults import StopSignals
from ernie_cmtl.registry import discover

REPO = Path(__file__).resolve().parents[1]
STEPS = 8
RUN = ["--set", "model.hidden_size=64", "--set", "model.num_heads=2", "--set", "model.intermediate_size=256",
       "--set", "model.num_layers=2", "--set", "tokenizer.vocab_size=4000", "--set", "data.max_documents=300",
       "--set", "train.batch_size=8", "--set", "train.log_every=3", "--set", "train.eval_every=100",
       "--set", "train.eval_batches=1", "--set", "train.warmup_steps=2", "--set", f"train.max_steps={STEPS}",
       "--set", "model.dropout=0.1", "--set", f"tasks={{{fault_plugin.TASK}: {{}}}}",
       "--set", "schedule.strategy=multitask", "--set", "schedule.stages=[]", "--quiet"]


# -- the engine skips a non-finite step ---------------------------------------------------------------------
def _state(engine: TorchEngine) -> tuple:
    return (copy.deepcopy(engine.module.state_dict()), copy.deepcopy(engine.optimizer.state_dict()),
            engine.scheduler.last_epoch, engine.scheduler.get_last_lr())


@pytest.mark.parametrize("adamw", ["fused", "foreach"])
@pytest.mark.parametrize("bad", ["loss_nan", "loss_inf", "grad_nan"])
def test_a_nonfinite_step_leaves_weights_and_optimizer_untouched(adamw, bad):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    engine = TorchEngine(model, OptimConfig(lr=1e-2, total_steps=10, warmup_steps=2), torch.device("cpu"),
                         adamw=adamw)
    x = torch.randn(16, 4)
    engine.backward(engine(x).square().mean())
    assert engine.step()["skipped"].item() is False  # a normal first step: moments exist from here on
    before = _state(engine)
    loss = engine(x).square().mean()
    if bad == "grad_nan":  # a finite loss whose gradient overflows
        loss = loss + (model[0].weight * torch.tensor(float("nan"))).sum() * 0
    else:
        loss = loss + float("nan" if bad == "loss_nan" else "inf")
    engine.backward(loss)
    stats = engine.step()
    assert bool(stats["skipped"]) and not torch.isfinite(stats["grad_norm"])
    after = _state(engine)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    moments = [(s["exp_avg"], s["exp_avg_sq"], s["step"]) for s in before[1]["state"].values()]
    assert all(torch.equal(a, b) for m, n in zip(moments, [(s["exp_avg"], s["exp_avg_sq"], s["step"]) for s in
               after[1]["state"].values()], strict=True) for a, b in zip(m, n, strict=True))
    engine.rewind_schedule(1)  # what the trainer does once it has read the flag
    assert (engine.scheduler.last_epoch, engine.scheduler.get_last_lr()) == before[2:]
    engine.backward(engine(x).square().mean())
    assert engine.step()["skipped"].item() is False
    assert not torch.equal(before[0]["0.weight"], engine.module.state_dict()["0.weight"])


def test_stop_signals_record_the_first_and_a_second_ctrl_c_still_interrupts():
    before = signal.getsignal(signal.SIGINT)
    with StopSignals(["SIGTERM", "SIGINT"]) as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # a second one (during the checkpoint, say) changes nothing
        assert stop.received == "SIGTERM" and stop.count == 2
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


# -- end to end on the PyTorch engine -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    """The fault plugin registered through a dist-info directory on the path (this process and children)."""
    site = fault_plugin.install(tmp_path_factory.mktemp("fault_site"))
    sys.path.insert(0, str(site))
    discover.cache_clear()
    yield site
    sys.path.remove(str(site))
    discover.cache_clear()


def _cli(run_dir: Path, corpus: list[str], cache_dir: Path, faults: dict, *extra: str) -> int:
    os.environ[fault_plugin.ENV] = json.dumps(faults)
    try:
        return cli.main(["pretrain", "--corpus", *corpus, "--run-dir", str(run_dir), "--set",
                         f"data.cache_dir={cache_dir}", *RUN, *extra])
    finally:
        del os.environ[fault_plugin.ENV]


def _losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    if (checkpoint / "model.pt").is_file():
        return torch.load(checkpoint / "model.pt", weights_only=True)
    from ernie_cmtl.ds_engine import allow_deepspeed_checkpoint_globals

    allow_deepspeed_checkpoint_globals()
    return torch.load(checkpoint / "mp_rank_00_model_states.pt", weights_only=True)["module"]


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal losses, NaN (a skipped step) equal to NaN."""
    return a.keys() == b.keys() and all(x == y or (x != x and y != y) for x, y in
                                        ((a[k], b[k]) for k in a))


NAN_AT = [4]  # read at step 5 where a run stops early, at 6 in a straight one


@pytest.fixture(scope="module")
def straight(plugin, tmp_path_factory, wiki_shards, cache_dir) -> Path:
    """An uninterrupted run whose step 4 has a NaN loss."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    assert _cli(run_dir, wiki_shards, cache_dir, {"nan_at": NAN_AT}) == 0
    return run_dir


def test_nonfinite_step_is_skipped_counted_and_logged(straight):
    records = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    train = {r["step"]: r for r in records if r["kind"] == "train"}
    assert "skipped_steps" not in train[3] and train[6]["skipped_steps"] == {fault_plugin.TASK: 1}
    assert all(v == v for v in _losses(straight).values())  # the NaN did not spread
    assert train[STEPS]["skipped_steps"] == {fault_plugin.TASK: 1}
    log = (straight / "train.log").read_text()
    assert f"step 4 (task {fault_plugin.TASK}, batches 3-3 of its stream): non-finite loss" in log
    weights = _weights(straight / "checkpoints" / f"step_{STEPS:08d}")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_signal_stops_after_the_step_with_a_verified_checkpoint_and_resumes_exactly(
        straight, tmp_path, wiki_shards, cache_dir, capsys, monkeypatch):
    import ernie_cmtl.trainer as trainer_module

    real_save_rng = trainer_module.save_rng

    def save_rng_and_signal_again(directory, rank):  # a second signal while the checkpoint is written
        os.kill(os.getpid(), signal.SIGTERM)
        real_save_rng(directory, rank)

    monkeypatch.setattr(trainer_module, "save_rng", save_rng_and_signal_again)
    run_dir = tmp_path / "run"
    handler = signal.getsignal(signal.SIGTERM)
    code = _cli(run_dir, wiki_shards, cache_dir, {"nan_at": NAN_AT, "signal_at": 5, "signal": "SIGUSR1"})
    assert code == cli.EXIT_STOPPED == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("stopped by SIGUSR1 after step 5; checkpoint ") and "--resume" in err[-1]
    assert [p.name for p in checkpoint_dirs(run_dir / "checkpoints")] == ["step_00000005"]
    assert verify_checkpoint(run_dir / "checkpoints" / "step_00000005") is None
    assert not list((run_dir / "checkpoints").glob(".staging*"))
    assert "stopped by SIGUSR1 after step 5" in (run_dir / "train.log").read_text()
    assert signal.getsignal(signal.SIGTERM) is handler  # restored after the run

    monkeypatch.undo()
    assert _cli(run_dir, wiki_shards, cache_dir, {"nan_at": NAN_AT}, "--resume") == 0
    resumed, uninterrupted = _losses(run_dir), _losses(straight)
    assert sorted(resumed) == [3, 5, 6, 8] and sorted(uninterrupted) == [3, 6, 8]  # logged: every 3, at stops
    assert _same({s: resumed[s] for s in uninterrupted}, uninterrupted)
    final = f"step_{STEPS:08d}"
    a, b = _weights(straight / "checkpoints" / final), _weights(run_dir / "checkpoints" / final)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_too_many_nonfinite_steps_in_a_row_stop_with_one_line(plugin, tmp_path, wiki_shards, cache_dir, capsys):
    code = _cli(tmp_path / "run", wiki_shards, cache_dir, {"nan_at": [2, 3, 4]}, "--set", "train.max_bad_steps=3",
                "--set", "train.log_every=1")
    assert code == cli.EXIT_NONFINITE == 4
    err = capsys.readouterr().err.strip().splitlines()  # a warning per skipped step, then the one error line
    assert len(err) == 4 and "Traceback" not in "".join(err) and err[-1].startswith("ernie-cmtl: non-finite")
    assert f"stopped at step 4 (task {fault_plugin.TASK}, batches 3-3 of its stream): 3 steps in a row" in err[-1]
    assert "train.max_bad_steps=3" in err[-1]


def test_checkpoint_write_failure_keeps_the_previous_one_and_resume_continues(
        straight, tmp_path, wiki_shards, cache_dir, capsys, monkeypatch):
    real_save = torch.save

    def save_until_the_disk_is_full(obj, f, *args, **kwargs):
        if ".staging-step_00000004" in str(f) and str(f).endswith("optimizer.pt"):
            with open(f, "wb") as fh:
                fh.write(b"\0" * 4096)  # part of the file gets written, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    run_dir = tmp_path / "run"
    save_every = ["--set", "train.save_every=2"]
    assert _cli(run_dir, wiki_shards, cache_dir, {"nan_at": NAN_AT}, *save_every) == cli.EXIT_USER_ERROR == 2
    err = capsys.readouterr().err.strip().splitlines()  # the skipped step's warning, then the error line
    assert "Traceback" not in "".join(err) and err[-1].startswith("ernie-cmtl: error: cannot write")
    root = run_dir / "checkpoints"
    assert f"cannot write the checkpoint of step 4 in {root}: No space left on device" in err[-1]
    assert " free there; the previous checkpoint " in err[-1]
    assert "step_00000002 is intact and verified; --resume continues from it" in err[-1]
    assert [p.name for p in checkpoint_dirs(root)] == ["step_00000002"]
    assert verify_checkpoint(root / "step_00000002") is None
    assert not list(root.glob(".staging*"))  # the partial checkpoint is gone

    monkeypatch.undo()
    assert _cli(run_dir, wiki_shards, cache_dir, {"nan_at": NAN_AT}, *save_every, "--resume") == 0
    assert _same({s: v for s, v in _losses(run_dir).items() if s > 2},
                 {s: v for s, v in _losses(straight).items() if s > 2})
    final = f"step_{STEPS:08d}"
    a, b = _weights(straight / "checkpoints" / final), _weights(root / final)
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- two DeepSpeed ranks ------------------------------------------------------------------------------------
DS_RUN = [*RUN, "--set", "train.max_steps=6", "--set", "train.log_every=1", "--set", "schedule.steps_per_task=0"]


def _launch(run_dir: Path, corpus: list[str], cache_dir: Path, site: Path, faults: dict, *extra: str):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(site), str(REPO / "tests")]))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env[fault_plugin.ENV] = json.dumps(faults)
    cmd = [str(REPO / "launch.sh"), "--config", str(REPO / "configs" / "default.yaml"), "--num_gpus", "2", "--",
           "--corpus", *corpus, "--run-dir", str(run_dir), "--set", f"data.cache_dir={cache_dir}", *DS_RUN, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=REPO)


@pytest.mark.slow
def test_two_ranks_skip_the_same_step_and_stop_together_on_a_signal_to_one(plugin, tmp_path, wiki_shards,
                                                                           cache_dir):
    nan = {"nan_at": [2], "nan_ranks": [1]}  # rank 1's loss only: the all-reduced norm makes both skip
    proc = _launch(tmp_path / "straight", wiki_shards, cache_dir, plugin, nan)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _launch(tmp_path / "run", wiki_shards, cache_dir, plugin,
                   {**nan, "signal_at": 3, "signal": "SIGUSR1", "signal_rank": 1})
    assert proc.returncode == cli.EXIT_STOPPED, (proc.stdout[-2000:], proc.stderr[-3000:])
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000003"
    assert [p.name for p in checkpoint_dirs(tmp_path / "run" / "checkpoints")] == [ckpt.name]
    assert verify_checkpoint(ckpt) is None and (ckpt / "rng_rank1.pt").is_file()
    assert "stopped by a signal to another rank after step 3" in (tmp_path / "run" / "train.log").read_text()
    proc = _launch(tmp_path / "run", wiki_shards, cache_dir, plugin, nan, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    straight, resumed = _losses(tmp_path / "straight"), _losses(tmp_path / "run")
    assert straight[2] != straight[2] and _same(resumed, straight)
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("skipped_steps") for r in records if r["kind"] == "train" and r["step"] == 6] == [
        {fault_plugin.TASK: 1}]
    a = _weights(tmp_path / "straight" / "checkpoints" / "step_00000006")
    b = _weights(tmp_path / "run" / "checkpoints" / "step_00000006")
    assert all(torch.equal(a[k], b[k]) for k in a)

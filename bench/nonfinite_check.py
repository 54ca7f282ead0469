"""Cost of the non-finite step check on a normal training step: ``TorchEngine`` as it is (the loss's finiteness
folded into the gradients, the skip decided by fused AdamW's ``found_inf`` on the device) against the same
engine without the check (``optimizer.step()`` straight, the loss as it is).

One step: forward + masked-LM loss + backward + ``engine.step()`` (clipping 1.0, fused AdamW, the schedule).
The two arms are timed interleaved in one process (check, off, check, off, ...) on the same batch, so machine
noise hits both; reported: the median of the timed steps. On CUDA the check arm also runs under
``torch.cuda.set_sync_debug_mode("error")``, which raises if the check synchronizes with the host.

    PYTHONPATH=. python bench/nonfinite_check.py --config small --threads 1 --clock cpu
    PYTHONPATH=. python bench/nonfinite_check.py --config small --threads 1 --clock cpu --part optimizer
    PYTHONPATH=. python bench/nonfinite_check.py --part stop-flag
    PYTHONPATH=. python bench/nonfinite_check.py --config base --batch 32 --steps 30     # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.step_vs_hf import CLOCKS, SEQ_LEN, VOCAB_SIZE, build_ours, model_config
from ernie_cmtl.config import OptimConfig
from ernie_cmtl.engine import TorchEngine
from ernie_cmtl.faults import poison_nonfinite, skip_if_nonfinite


class UncheckedEngine(TorchEngine):
    """The engine's step before the check: no loss poisoning, ``optimizer.step()`` unconditionally."""

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.cfg.grad_accum_steps).backward()

    def step(self) -> dict | None:
        self.micro_steps += 1
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"lr": lr, "grad_norm": grad_norm.detach()}


def batch_of(size: int, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, VOCAB_SIZE, (size, SEQ_LEN), generator=generator)
    n_masked = int(size * SEQ_LEN * 0.15)
    positions = torch.randperm(size * SEQ_LEN, generator=generator)[:n_masked]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "segment_ids": torch.zeros_like(ids),
             "task_ids": torch.zeros(size, dtype=torch.long), "positions": positions,
             "position_labels": ids.reshape(-1)[positions]}
    return {k: v.to(device) for k, v in batch.items()}


def optimizer_step_times(engine: TorchEngine, steps: int, clock) -> tuple[float, float]:
    """Median ms of ``skip_if_nonfinite`` + the loss poisoning against a plain ``optimizer.step()`` on the
    engine's parameters with fixed gradients (interleaved); the rest of the step is the same in both arms."""
    params = [p for group in engine.optimizer.param_groups for p in group["params"]]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
    loss = torch.tensor(2.0, device=norm.device, requires_grad=True)
    times: dict[str, list[float]] = {"check": [], "off": []}
    for i in range(steps + 3):
        for arm in times:
            start = clock()
            if arm == "check":
                poison_nonfinite(loss)
                skip_if_nonfinite(engine.optimizer, norm)
            else:
                engine.optimizer.step()
            if norm.device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times[arm].append((clock() - start) * 1000)
    return statistics.median(times["check"]), statistics.median(times["off"])


def _stop_flag_rank(rank: int, port: int, calls: int) -> None:
    import os

    import torch.distributed as dist

    from ernie_cmtl.faults import agree_any

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    for _ in range(100):
        agree_any(False, 2)
    runs = []
    for _ in range(5):
        dist.barrier()
        start = time.perf_counter()
        for _ in range(calls):
            agree_any(False, 2)
        runs.append((time.perf_counter() - start) / calls * 1e6)
    if rank == 0:
        print(f"stop flag (agree_any, 2 gloo ranks): {', '.join(f'{t:.0f}' for t in runs)} us per call "
              f"(5 x {calls} calls)")
    dist.destroy_process_group()


def stop_flag_cost(calls: int = 1000) -> None:
    """The per-step stop-flag all-reduce between two gloo ranks on this machine."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_stop_flag_rank, args=(port, calls), nprocs=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small", help="model size: small (256 x 4 layers) or base (BERT-base)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per arm (after 3 warm-up steps)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument("--part", choices=["step", "optimizer", "stop-flag"], default="step", help="optimizer: "
                        "time only what the check adds to the optimizer step (skip_if_nonfinite vs "
                        "optimizer.step, same gradients); stop-flag: the per-step stop all-reduce on 2 gloo ranks")
    args = parser.parse_args()
    if args.part == "stop-flag":
        stop_flag_cost()
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = model_config(args.config)
    optim = OptimConfig(lr=1e-4, total_steps=10_000, warmup_steps=10, precision=args.precision)
    arms = {}
    for name, cls in (("check", TorchEngine), ("off", UncheckedEngine)):
        torch.manual_seed(0)
        arms[name] = cls(build_ours(cfg), optim, device)
    batch = batch_of(args.batch, device)
    clock = CLOCKS[args.clock]
    times: dict[str, list[float]] = {name: [] for name in arms}
    for i in range(3 + args.steps):
        for name, engine in arms.items():
            strict = (torch.cuda.set_sync_debug_mode if device.type == "cuda" and name == "check" else None)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = clock()
            if strict is not None:
                strict("error")
            engine.backward(engine(batch))
            engine.step()
            if strict is not None:
                strict("default")
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times[name].append((clock() - start) * 1000)
    check, off = statistics.median(times["check"]), statistics.median(times["off"])
    if args.part == "optimizer":
        check, off = optimizer_step_times(arms["check"], args.steps * 10, clock)
    print(f"device {device}, {args.config}, batch {args.batch} x {SEQ_LEN}, {args.precision}, "
          f"AdamW {arms['check'].adamw_impl}, {args.steps} steps per arm, clock {args.clock}")
    print(f"step with the check {check:.2f} ms, without {off:.2f} ms: {check / off:.4f}x "
          f"({check - off:+.2f} ms)")


if __name__ == "__main__":
    main()

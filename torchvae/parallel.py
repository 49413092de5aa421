"""Data parallelism in PyTorch: DistributedDataParallel over the processes ``torchrun`` starts.

``torchrun --nproc_per_node=N train.py ...`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; ``start`` joins the process group (NCCL when the run uses
CUDA, gloo on CPUs) and each process takes device ``cuda:LOCAL_RANK``. Each process computes its
shard of every global batch; DDP averages the gradients. The terms that span examples are computed
over the global batch from differentiable collectives (``gather_rows``, ``global_sum``): each
process computes the same value, and the collective's backward adds the W processes' gradients, so
DDP's average of the W copies is the one-device gradient. Without a process group every function
here is the one-device computation, unchanged.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist

from vaecore.runs.parallel import SINGLE, Layout, check_port, check_rank, shard_rows
from vaecore.settings.config import ConfigError

ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TORCHRUN = "; start several processes with torchrun --nproc_per_node=N train.py ... (which sets them)"


def stop(finished: bool = False) -> None:
    """Leave the process group, if any. After a ``finished`` run every process first waits for the
    others (the main process writes the run's last outputs alone): gloo aborts a process that tears
    its group down while another still holds its connection ("terminate called without an active
    exception", about one run in five). After a failure nobody waits: the others may never arrive."""
    if dist.is_available() and dist.is_initialized():
        if finished:
            barrier()
        dist.destroy_process_group()


def active() -> bool:
    """Whether this process is one of several in a process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def start(cfg) -> Layout:
    """Join the process group ``torchrun`` describes in the environment (``ENV``), if any; the
    run's layout (``cfg``: the ``RunConfig``; its ``train.device``)."""
    device = cfg.train.device
    try:
        numbers = {name: int(os.environ[name]) for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK") if os.environ.get(name)}
    except ValueError:
        raise ConfigError("WORLD_SIZE, RANK and LOCAL_RANK must be integers; start several processes with "
                          "torchrun --nproc_per_node=N train.py ...") from None
    if "WORLD_SIZE" in numbers:
        check_environment(numbers)
    if numbers.get("WORLD_SIZE", 1) <= 1:
        return SINGLE if device == "cpu" or not torch.cuda.is_available() else Layout(platform="cuda")
    missing = [name for name in ENV if not os.environ.get(name)]
    if missing:
        raise ConfigError(f"WORLD_SIZE is set but {missing[0]} is not: start several processes with "
                          f"torchrun --nproc_per_node=N train.py ... (which sets {', '.join(ENV)})")
    check_port("MASTER_PORT", os.environ["MASTER_PORT"], TORCHRUN)
    world, rank, local_rank = numbers["WORLD_SIZE"], numbers["RANK"], numbers["LOCAL_RANK"]
    cuda = device != "cpu" and torch.cuda.is_available()
    if device.startswith("cuda:"):
        raise ConfigError(f"--device {device}: under torchrun each process takes the GPU cuda:LOCAL_RANK; "
                          f"use --device cuda (or auto)")
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank}: this host has {torch.cuda.device_count()} GPU(s); start at "
                              f"most that many processes per host (--nproc_per_node)")
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Layout(devices=world, processes=world, process_index=rank, platform="cuda" if cuda else "cpu",
                  vote=main_refused)


def check_environment(numbers: dict[str, int]) -> None:
    """torchrun's numbers must agree (``numbers``: WORLD_SIZE and whichever of RANK and LOCAL_RANK are
    set): a RANK outside the world waits forever in the rendezvous for processes that never come."""
    world, rank = numbers["WORLD_SIZE"], numbers.get("RANK")
    check_rank(world, rank, ("WORLD_SIZE", "RANK"), TORCHRUN)
    local = numbers.get("LOCAL_RANK")
    if local is None:
        return
    local_world = os.environ.get("LOCAL_WORLD_SIZE", "")
    local_world = int(local_world) if local_world.isdigit() else world
    top = min(local_world, world if rank is None else rank + 1)  # ranks fill each host from its LOCAL_RANK 0
    if not 0 <= local < top:
        raise ConfigError(f"LOCAL_RANK {local} does not fit RANK {rank} of WORLD_SIZE {world} (it must be 0 to "
                          f"{top - 1}){TORCHRUN}")


def device_name(device: str) -> str:
    """The process's device: ``cuda:LOCAL_RANK`` in a GPU process group, else ``device`` itself."""
    if active() and device != "cpu" and torch.cuda.is_available():
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def world() -> tuple[int, int]:
    """(processes, this process's rank); (1, 0) without a process group."""
    return (dist.get_world_size(), dist.get_rank()) if active() else (1, 0)


def my_rows(x, n: int | None = None):
    """This process's rows of a global batch (numpy or tensor; ``n`` rows, default ``len(x)``)."""
    processes, rank = world()
    if processes == 1:
        return x
    return x[shard_rows(len(x) if n is None else n, processes, rank)]


def _all_gather(x: torch.Tensor) -> list[torch.Tensor]:
    """Every process's ``x``, in rank order, differentiably. ``torch.distributed.nn.functional``'s
    all_gather is the public differentiable collective; recent torch marks it deprecated in favour of
    a private module, and its FutureWarning (once per call site, on every rank) is silenced here."""
    import warnings

    import torch.distributed.nn.functional as dist_nn

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
        return list(dist_nn.all_gather(x))


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """The global batch of a per-example tensor [b, ...] -> [B, ...], differentiably (equal shards)."""
    if not active():
        return x
    return torch.cat(_all_gather(x), dim=0)


def global_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum over processes of a tensor (the same value on each), differentiably."""
    if not active():
        return x
    return torch.stack(_all_gather(x)).sum(0)  # in rank order, the same on every process


def global_rows(n: int) -> int:
    """The global batch size of a shard of ``n`` rows (equal shards)."""
    return n * world()[0]


def mean_terms(terms: dict[str, float]) -> dict[str, float]:
    """Batch means of the loss terms over the global batch, from each process's shard means."""
    if not active():
        return terms
    keys = sorted(terms)
    values = torch.tensor([terms[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(values)
    return {k: float(v) / dist.get_world_size() for k, v in zip(keys, values.tolist())}


def gather_objects(obj) -> list:
    """Every process's ``obj``, in rank order ([obj] without a process group)."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def concat_rows(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def main_refused(refused: bool) -> bool:
    """The main process's ``refused`` on every process (``vaecore.runner.driver.agree``: a run the main
    process refuses stops everywhere, instead of waiting for it in a collective)."""
    if not active():
        return refused
    box = [refused]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def barrier() -> None:
    if active():
        dist.barrier()


def ddp(model: torch.nn.Module, *, find_unused: bool = False) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel for training steps in a process group (the
    model itself without one). Buffers are not broadcast: the BN-VAE's running statistics come
    from the global batch and are the same on every process."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   forward_sync_buffers=False, find_unused_parameters=find_unused)

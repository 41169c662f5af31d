"""Where a run computes: ``train.device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) resolved to a
:class:`torch.device`, and whether the training step runs as a captured CUDA graph
(``train.cuda_graphs``)."""

from __future__ import annotations

import importlib.util

import torch

from .errors import SpecError


def resolve_device(name: str, field: str = "train.device") -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU. Asking for CUDA where
    there is none (or for a device index that does not exist) is a one-line SpecError naming
    ``field`` (where the value came from)."""
    if name == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = ("this torch is built without CUDA" if torch.version.cuda is None
               else "no CUDA device is visible")
        raise SpecError(f"{field}: {name} asked for, but {why} (torch {torch.__version__}); "
                        f"use cpu or auto")
    index = int(name.split(":")[1]) if ":" in name else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise SpecError(f"{field}: {name} asked for, but there {'is' if count == 1 else 'are'} "
                        f"only {count} CUDA device{'s' if count != 1 else ''} (cuda:0"
                        f"{f' to cuda:{count - 1}' if count > 1 else ''})")
    return torch.device("cuda", index)


def describe(device: torch.device) -> str:
    """One line for logs: ``cuda:0 (NVIDIA H100 80GB HBM3, 79.1 GiB)`` or ``cpu``."""
    if device.type != "cuda":
        return str(device)
    props = torch.cuda.get_device_properties(device)
    return f"{device} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"


def use_graphs(setting: str, device: torch.device) -> bool:
    """``auto`` and ``on``: graphs on CUDA; ``off``: never. On the CPU there are no graphs."""
    return device.type == "cuda" and setting in ("auto", "on")


def use_compile(setting: str, device: torch.device) -> bool:
    """``train.compile``: ``on``: the recurrent steps through ``torch.compile``; ``off``: not;
    ``auto``: on CUDA where Triton is installed (kernel launches are a GPU step's cost; compiled
    steps launch about half as many; torch.compile makes GPU kernels with Triton, which e.g.
    torch's Windows wheels lack), not on the CPU (its fused kernels do that job)."""
    return setting == "on" or (setting == "auto" and device.type == "cuda" and has_triton())


def has_triton() -> bool:
    """Whether the Triton compiler, which torch.compile needs for GPU kernels, is installed."""
    return importlib.util.find_spec("triton") is not None


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t``, made on the CPU (e.g. an augmentation's draw from its CPU generator), on
    ``device`` without making the host wait for the device. A CUDA copy from ordinary host
    memory first waits for all the work queued on the device, so the host could not prepare the
    next training step while the GPU runs this one; from pinned memory it is queued like a
    kernel. On the CPU (or for a tensor already on ``device``) this is ``t.to(device)``."""
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)

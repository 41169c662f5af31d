"""Where members train. A runner hosts members by number and speaks of members only (not of
processes): ``create``, ``restore``, ``train`` (every member, ``epochs`` more), ``state``,
``adopt`` (exploit), ``close``. :class:`LocalRunner` trains them one after another in this process
(``pbt.address: local``; tests); :mod:`.ray_runner` spreads them over Ray workers."""

from __future__ import annotations

import contextlib
from typing import Callable, Optional, Protocol, Sequence

import torch

from ..components import InitCache
from ..data.h5 import Dataset
from ..data.sessions import is_multisession
from ..device import use_graphs
from ..spec.schema import Spec
from ..train.stacked import NotStackable, StackedTrainer, group_size, member_memory, planned_memory
from .members import build_member, cpu_state, train_member, train_stacked


class Runner(Protocol):
    def create(self, hparams: dict[int, dict[str, float]]) -> None: ...
    def restore(self, states: dict[int, dict]) -> None: ...
    def train(self, epochs: int) -> dict[int, dict]: ...
    def state(self, member: int) -> dict: ...
    def adopt(self, member: int, state: dict, hparams: dict[str, float]) -> None: ...
    def close(self) -> None: ...


def engine(spec: Spec, device: torch.device | str) -> str:
    """The engine ``pbt.engine`` names for members on ``device`` (``auto``: stacked on CUDA,
    trials on the CPU, where stacking measured no faster: docs/autolfads.md, "Engines")."""
    name = spec.pbt.engine if spec.pbt is not None else "trials"
    if name == "auto":
        return "stacked" if torch.device(device).type == "cuda" else "trials"
    return name


def stacked_batches(spec: Spec) -> str:
    """``pbt.stacked_batches`` (``auto``: member for one session, shared for several)."""
    name = spec.pbt.stacked_batches
    if name == "auto":
        return "shared" if is_multisession(spec.data.path) else "member"
    return name


def describe_engine(spec: Spec) -> str:
    """The engine a population of ``spec`` trains with, in words (for validate and the log)."""
    from ..device import resolve_device

    pbt = spec.pbt
    try:
        device = resolve_device(spec.train.device)
    except Exception:  # noqa: BLE001 - the device's own check reports what is wrong with it
        device = torch.device("cpu")
    name = engine(spec, device)
    if name != "stacked":
        return name
    size = pbt.members_per_worker or ("as many of a worker's members as fit the GPU's memory"
                                      if device.type == "cuda" else "all of a worker's members")
    return f"stacked (groups of {size}; {stacked_batches(spec)} batches)"


class Host:
    """Members living in one process (a Ray worker holds one; the local runner is one). The
    process's torch random stream (dropout, posterior samples) is swapped per member, so each
    member draws from its own stream whoever shares its process; a stacked group draws from
    its first member's stream.

    :meth:`train_all` trains every member it hosts: one after another (engine ``trials``), or as
    stacked groups of ``pbt.members_per_worker`` members (engine ``stacked``; by default all of
    them on the CPU, as many as fit the GPU's memory on CUDA). A model that cannot be stacked
    gets one warning and the trials engine."""

    def __init__(self, spec: Spec, sessions: Sequence[Dataset], log: Callable[[str], None] = lambda s: None):
        self.spec, self.sessions, self.log = spec, sessions, log
        self.members = {}
        self.rng: dict[int, torch.Tensor] = {}
        self.cache = InitCache()
        self.data: dict = {}  # the data tensors, one copy for all members (build_member)
        self.engine: Optional[str] = None  # resolved for the members' device at the first train
        self.groups: Optional[list[tuple[list[int], StackedTrainer]]] = None
        self.warning: Optional[str] = None  # handed to the controller with the next results

    @contextlib.contextmanager
    def _own_stream(self, member: int):
        outside = torch.get_rng_state()
        torch.set_rng_state(self.rng[member])
        try:
            yield
        finally:
            self.rng[member] = torch.get_rng_state()
            torch.set_rng_state(outside)

    def create(self, member: int, hparams: dict[str, float]) -> None:
        self.groups = None  # stacked groups are formed again over the current members
        outside = torch.get_rng_state()
        self.members[member] = build_member(self.spec, self.sessions, member, hparams, self.cache,
                                            self.log, data=self.data)
        self.rng[member] = torch.get_rng_state()  # seeded by the member's seed in build_member
        torch.set_rng_state(outside)

    def restore(self, member: int, state: dict) -> None:
        self.create(member, state["hparams"])
        with self._own_stream(member):
            self.members[member].load_state_dict(state)  # sets the stream to the saved one

    def train(self, member: int, epochs: int) -> dict:
        with self._own_stream(member):
            return train_member(self.members[member], epochs, self.spec.pbt.fitness)

    def train_all(self, epochs: int) -> dict[int, dict]:
        """Every hosted member ``epochs`` more (:func:`train_member` results by member)."""
        if self.engine is None and self.members:
            self.engine = engine(self.spec, next(iter(self.members.values())).device)
        groups = self._stacked_groups() if self.engine == "stacked" else None
        if groups is None:
            out = {m: self.train(m, epochs) for m in sorted(self.members)}
        else:
            out = {}
            for ids, group in groups:
                with self._own_stream(ids[0]):
                    out.update(zip(ids, train_stacked(group, epochs, self.spec.pbt.fitness)))
        if self.warning and out:
            out[min(out)]["warning"], self.warning = self.warning, None
        return out

    def _stacked_groups(self) -> Optional[list[tuple[list[int], StackedTrainer]]]:
        if self.groups is not None or not self.members:
            return self.groups
        ids = sorted(self.members)
        first = self.members[ids[0]]
        size = self.spec.pbt.members_per_worker
        # Forming the groups (the memory probe, the check's trial step) draws random numbers:
        # from a stream of its own, so that no member's stream depends on when the groups were
        # formed (a resumed population forms them again and must compute the same numbers).
        devices = [first.device] if first.device.type == "cuda" else []
        if size is None and first.device.type == "cuda":
            with torch.random.fork_rng(devices):
                per = member_memory(lambda: build_member(self.spec, self.sessions, ids[0],
                                                         first.hparams, self.cache, data=self.data))
            free, total = torch.cuda.mem_get_info(first.device)
            held = torch.cuda.memory_reserved(first.device)
            size = group_size(len(ids), per,
                              planned_memory(free, total, held, self.spec.pbt.resources.gpu))
        size = size or len(ids)
        graphs = use_graphs(self.spec.train.cuda_graphs, first.device)
        groups = []
        for k in range(0, len(ids), size):
            chunk = ids[k:k + size]
            with torch.random.fork_rng(devices):
                group = StackedTrainer([self.members[m] for m in chunk], stacked_batches(self.spec),
                                       self.log, graphs=graphs)
                try:
                    group.check()
                except NotStackable as exc:
                    self.engine = "trials"
                    self.warning = (f"warning: pbt.engine: stacked: the model cannot run stacked ({exc}); "
                                    f"training the members one after another (pbt.engine: trials hides this)")
                    self.log(self.warning)
                    return None
            groups.append((chunk, group))
        self.groups = groups
        return groups

    def state(self, member: int) -> dict:
        with self._own_stream(member):
            return cpu_state(self.members[member].state_dict())

    def adopt(self, member: int, state: dict, hparams: dict[str, float]) -> None:
        with self._own_stream(member):  # its own stream stays: adopt does not touch it
            self.members[member].adopt(state, hparams)


class LocalRunner:
    """Every member in this process, trained one after another."""

    def __init__(self, spec: Spec, sessions: Sequence[Dataset], log: Callable[[str], None] = print):
        self.host = Host(spec, sessions)

    def create(self, hparams: dict[int, dict[str, float]]) -> None:
        for m, h in hparams.items():
            self.host.create(m, h)

    def restore(self, states: dict[int, dict]) -> None:
        for m, s in states.items():
            self.host.restore(m, s)

    def train(self, epochs: int) -> dict[int, dict]:
        return self.host.train_all(epochs)

    def state(self, member: int) -> dict:
        return self.host.state(member)

    def adopt(self, member: int, state: dict, hparams: dict[str, float]) -> None:
        self.host.adopt(member, state, hparams)

    def close(self) -> None:
        pass

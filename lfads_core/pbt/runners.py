"""Where members train. A runner hosts members by number and speaks of members only (not of
processes): ``create``, ``restore``, ``train`` (every member, ``epochs`` more), ``state``,
``adopt`` (exploit), ``close``. :class:`LocalRunner` trains them one after another in this process
(``pbt.address: local``; tests); :mod:`.ray_runner` spreads them over Ray workers."""

from __future__ import annotations

import contextlib
from typing import Callable, Protocol, Sequence

import torch

from ..data.h5 import Dataset
from ..components import InitCache
from ..spec.schema import Spec
from .members import build_member, cpu_state, train_member


class Runner(Protocol):
    def create(self, hparams: dict[int, dict[str, float]]) -> None: ...
    def restore(self, states: dict[int, dict]) -> None: ...
    def train(self, epochs: int) -> dict[int, dict]: ...
    def state(self, member: int) -> dict: ...
    def adopt(self, member: int, state: dict, hparams: dict[str, float]) -> None: ...
    def close(self) -> None: ...


class Host:
    """Members living in one process (a Ray worker holds one; the local runner is one). The
    process's torch random stream (dropout, posterior samples) is swapped per member, so each
    member draws from its own stream whoever shares its process."""

    def __init__(self, spec: Spec, sessions: Sequence[Dataset], log: Callable[[str], None] = lambda s: None):
        self.spec, self.sessions, self.log = spec, sessions, log
        self.members = {}
        self.rng: dict[int, torch.Tensor] = {}
        self.cache = InitCache()

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
        outside = torch.get_rng_state()
        self.members[member] = build_member(self.spec, self.sessions, member, hparams, self.cache, self.log)
        self.rng[member] = torch.get_rng_state()  # seeded by the member's seed in build_member
        torch.set_rng_state(outside)

    def restore(self, member: int, state: dict) -> None:
        self.create(member, state["hparams"])
        with self._own_stream(member):
            self.members[member].load_state_dict(state)  # sets the stream to the saved one

    def train(self, member: int, epochs: int) -> dict:
        with self._own_stream(member):
            return train_member(self.members[member], epochs, self.spec.pbt.fitness)

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
        return {m: self.host.train(m, epochs) for m in sorted(self.host.members)}

    def state(self, member: int) -> dict:
        return self.host.state(member)

    def adopt(self, member: int, state: dict, hparams: dict[str, float]) -> None:
        self.host.adopt(member, state, hparams)

    def close(self) -> None:
        pass

"""The Ray glue: members spread over Ray actors (workers), each hosting one or more members
(:class:`lfads_core.pbt.runners.Host`). Ray core, not Tune: Tune's PBT scheduler cannot express
the binary tournament, and restoring a Tuner's PBT state has open bugs; the controller here is
plain Python and resumes from its own files.

Embedded by default (a local Ray with this machine's CPUs and GPUs, no dashboard); ``address``
(``auto`` or ``HOST:PORT``; or ``RAY_ADDRESS``) joins a running cluster. The data go to the
workers through Ray's object store and the members' states come back to the driver the same way,
so no shared file system is needed.
"""

from __future__ import annotations

import math
import os
import socket
from typing import Callable, Optional, Sequence

from ..data.h5 import Dataset
from ..errors import LfadsError, SpecError
from ..spec.load import spec_from_dict, spec_to_dict
from ..spec.schema import Spec


def _worker_class(ray):
    @ray.remote(max_restarts=0)
    class Worker:
        def __init__(self, spec_dict: dict, sessions, threads: int):
            import torch

            from .runners import Host

            torch.set_num_threads(max(1, threads))
            self.host = Host(spec_from_dict(spec_dict), sessions)

        def pid(self) -> int:
            return os.getpid()

        def create(self, member: int, hparams: dict) -> None:
            self.host.create(member, hparams)

        def restore(self, member: int, state: dict) -> None:
            self.host.restore(member, state)

        def train_all(self, epochs: int) -> dict:
            return self.host.train_all(epochs)

        def state(self, member: int) -> dict:
            return self.host.state(member)

        def adopt(self, member: int, state: dict, hparams: dict) -> None:
            self.host.adopt(member, state, hparams)

    return Worker


def cluster_address(address: Optional[str]) -> tuple[Optional[str], str]:
    """The Ray cluster a population joins and where that was said: ``pbt.address`` (or
    ``--address``), else the environment variable ``RAY_ADDRESS``; ``(None, "")`` for an
    embedded cluster."""
    if address:
        return address, "pbt.address"
    env = os.environ.get("RAY_ADDRESS")
    return (env, "RAY_ADDRESS") if env else (None, "")


def describe_cluster(spec: Spec) -> str:
    """Where a population of ``spec`` trains, in words (for validate)."""
    if spec.pbt.address == "local":
        return "local (this process, no Ray)"
    address, source = cluster_address(spec.pbt.address)
    if address is None:
        return "embedded"
    return address if source == "pbt.address" else f"{address} (from RAY_ADDRESS)"


def check_resources(spec: Spec, source: str = "spec") -> None:
    """With an embedded cluster (this machine), one member's ``pbt.resources`` must fit it: a
    spec error before anything is written (a cluster elsewhere is checked once joined)."""
    if spec.pbt.address == "local" or cluster_address(spec.pbt.address)[0] is not None:
        return
    import torch

    res, cpus, gpus = spec.pbt.resources, len(os.sched_getaffinity(0)), torch.cuda.device_count()
    problems = []
    if res.cpu > cpus:
        problems.append(f"{source}: pbt.resources.cpu: one member asks for {res.cpu:g} CPU, this "
                        f"machine (the embedded Ray cluster) has {cpus}")
    if res.gpu > gpus:
        problems.append(f"{source}: pbt.resources.gpu: one member asks for {res.gpu:g} GPU, this "
                        f"machine (the embedded Ray cluster) has {gpus}")
    if problems:
        raise SpecError("\n".join(problems))


def preflight(spec: Spec, source: str = "spec") -> None:
    """Before anything is written: the resources against an embedded cluster, and that a
    cluster named by ``pbt.address`` or ``RAY_ADDRESS`` answers (no-op with ``local``)."""
    if spec.pbt.address == "local":
        return
    check_resources(spec, source)
    address, where = cluster_address(spec.pbt.address)
    if address:
        check_reachable(address, where)


def check_reachable(address: str, source: str, timeout: float = 5.0) -> None:
    """A one-line error when nothing answers at the cluster's address (``auto`` resolved as Ray
    resolves it): ``ray.init`` would retry for many minutes there, deaf to Ctrl-C. An address
    Ray cannot resolve is left to ``ray.init``'s own error."""
    target = address[len("ray://"):] if address.startswith("ray://") else address
    if not address.startswith("ray://"):
        try:
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address(address) or ""
        except Exception:  # noqa: BLE001 - no cluster found for auto, a malformed address: ray.init says
            return
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        seen = f" ({target})" if target != address else ""
        raise LfadsError(f"{source}: no Ray cluster answers at {address}{seen}: "
                         f"{exc.strerror or type(exc).__name__}; start one there (ray start --head) "
                         f"or leave pbt.address unset (and RAY_ADDRESS empty) for an embedded cluster") from None


class RayRunner:
    """Members on ``n`` Ray workers of ``cpu`` CPUs (and ``gpu`` GPUs) each; ``n`` is what the
    cluster can run at once (never more than the members), so no worker waits for resources;
    member ``m`` lives on worker ``m % n``. Each worker runs torch with ``cpu`` threads."""

    def __init__(self, spec: Spec, sessions: Sequence[Dataset], address: Optional[str],
                 log: Callable[[str], None] = print):
        try:
            import ray
        except ImportError:
            raise LfadsError("pbt: Ray is not installed (pip install 'lfads-core[pbt]'), or set "
                             "pbt.address: local to train the population in this process") from None
        self.ray, self.log = ray, log
        res = spec.pbt.resources
        address, source = cluster_address(address)
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local embedded cluster
        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if address:
                check_reachable(address, source)
            try:
                if address:
                    ray.init(address=address, **kwargs)
                else:  # "local": a new cluster even if one started by `ray start` is running here
                    ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)), **kwargs)
            except Exception as exc:  # noqa: BLE001 - a cluster that cannot be reached: one line
                where = address or "a local embedded cluster"
                first = str(exc).splitlines()[0] if str(exc) else ""
                raise LfadsError(f"{source or 'pbt.address'}: cannot start or join Ray at {where} "
                                 f"({type(exc).__name__}: {first})") from None
        total = ray.cluster_resources()
        fits = math.floor(total.get("CPU", 0) / res.cpu + 1e-9)
        if res.gpu > 0:
            fits = min(fits, math.floor(total.get("GPU", 0) / res.gpu + 1e-9))
        if fits < 1:
            raise LfadsError(f"pbt.resources: one member needs {res.cpu:g} CPU and {res.gpu:g} GPU, "
                             f"the Ray cluster has {total.get('CPU', 0):g} CPU and {total.get('GPU', 0):g} GPU")
        self.n = min(spec.pbt.population, fits)
        self.cls = _worker_class(ray).options(num_cpus=res.cpu, num_gpus=res.gpu)
        self.spec_dict = spec_to_dict(spec)
        self.sessions = ray.put(list(sessions))
        self.threads = max(1, int(res.cpu))
        self.workers = [self._new_worker() for _ in range(self.n)]
        self.hparams: dict[int, dict] = {}
        self.lost: dict[int, str] = {}  # members rebuilt after their worker died
        pids = self.ray.get([w.pid.remote() for w in self.workers])
        log(f"Ray: {self.n} worker{'s' if self.n != 1 else ''} of {res.cpu:g} CPU{f' and {res.gpu:g} GPU' if res.gpu else ''} "
            f"({total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU in the cluster"
            f"{f' at {address}' if address else ', embedded'}; worker pids {', '.join(map(str, pids))})")

    def _new_worker(self):
        return self.cls.remote(self.spec_dict, self.sessions, self.threads)

    def _worker(self, member: int):
        return self.workers[member % self.n]

    def create(self, hparams: dict[int, dict]) -> None:
        self.hparams.update(hparams)
        self.ray.get([self._worker(m).create.remote(m, h) for m, h in hparams.items()])

    def restore(self, states: dict[int, dict]) -> None:
        for m, s in states.items():
            self.hparams[m] = s["hparams"]
        self.ray.get([self._worker(m).restore.remote(m, s) for m, s in states.items()])

    def _respawn(self, w: int, why: str) -> None:
        """A new worker in place of dead worker ``w``; its members are rebuilt from their
        hyperparameters and reported as failed at the next ``train`` (then cloned from a good
        member by the controller)."""
        self.workers[w] = self._new_worker()
        members = [m for m in self.hparams if m % self.n == w]
        self.ray.get([self.workers[w].create.remote(m, self.hparams[m]) for m in members])
        self.lost.update({m: why for m in members})

    def _call(self, member: int, method: str, *args):
        try:
            return self.ray.get(getattr(self._worker(member), method).remote(member, *args))
        except self.ray.exceptions.RayActorError as exc:
            self._respawn(member % self.n, f"its Ray worker died ({str(exc).splitlines()[0]})")
            return self.ray.get(getattr(self._worker(member), method).remote(member, *args))

    def train(self, epochs: int) -> dict[int, dict]:
        refs = {w: worker.train_all.remote(epochs) for w, worker in enumerate(self.workers)}
        out, dead = {}, {}
        for w, ref in refs.items():
            try:
                out.update(self.ray.get(ref))
            except self.ray.exceptions.RayActorError as exc:
                dead[w] = f"its Ray worker died ({str(exc).splitlines()[0]})"
        for w, why in dead.items():
            self._respawn(w, why)
        for m, why in list(self.lost.items()):
            out[m] = {"error": why, "rows": []}
            del self.lost[m]
        return out

    def state(self, member: int) -> dict:
        return self._call(member, "state")

    def adopt(self, member: int, state: dict, hparams: dict) -> None:
        self.hparams[member] = hparams
        self._call(member, "adopt", state, hparams)

    def close(self) -> None:
        for w in self.workers:
            self.ray.kill(w)

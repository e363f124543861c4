"""Where a batch of independent tasks runs: this machine's cores, or a Ray cluster. Registry `EXECUTORS`.

A `WorkSpec` says what to run, independently of where: a `context` shipped to workers once (a scenario), a
`prepare(context, group)` that builds a group's state once per worker (a method's twin), and a
`work(context, state, items)` that returns one result per item. Tasks are (group, items) pairs; an
executor yields each task's results as soon as that task finishes (any order), so the caller can journal
them and show progress. Neither executor schedules by hand: the process pool's queue and Ray's
ActorPool hand tasks to whichever worker is free.

- `local`: a process pool (spawn) of `jobs` workers, or this process when jobs = 1. The context is
  pickled with each task and the state is built once per task.
- `ray`: one actor per CPU of the cluster (`ray.init(address)`; no address: a local instance on this
  machine). The context goes into Ray's object store once (ray.put: one copy per node) and each actor
  keeps the state of every group it has served, so a method's twin is built at most once per actor.
"""
from __future__ import annotations

import multiprocessing
import os
import socket
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

from moe2sim.errors import InputError

Task = tuple[str, list[Any]]


@dataclass(frozen=True)
class WorkSpec:
    context: Any
    prepare: Callable[[Any, str], Any]
    work: Callable[[Any, Any, list[Any]], list[Any]]


class Executor(Protocol):
    """Used as a context manager: entering connects (Ray) and fixes `workers`; leaving releases what it started."""

    workers: int
    tasks_per_worker: int

    def __enter__(self) -> "Executor": ...

    def __exit__(self, *exc: object) -> None: ...

    def run(self, job: WorkSpec, tasks: list[Task]) -> Iterator[list[Any]]:
        """Each task's results, as tasks finish."""


def _run_task(job: WorkSpec, task: Task) -> list[Any]:
    group, items = task
    return job.work(job.context, job.prepare(job.context, group), items)


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the parent, which stops them: no traceback from every worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalExecutor:
    """This machine: a spawn process pool of `jobs` workers (default: all cores), or in-process for jobs = 1."""

    tasks_per_worker = 1

    def __init__(self, jobs: int | None = None, address: str | None = None) -> None:
        if address is not None:
            raise InputError("--address", address, "only the ray backend connects to a cluster")
        self.workers = jobs or os.cpu_count() or 1

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run(self, job: WorkSpec, tasks: list[Task]) -> Iterator[list[Any]]:
        if self.workers == 1 or len(tasks) <= 1:
            states: dict[str, Any] = {}
            for group, items in tasks:
                if group not in states:
                    states[group] = job.prepare(job.context, group)
                yield job.work(job.context, states[group], items)
            return
        # spawn, not fork: a forked child of a process that already ran torch can deadlock
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)),
                                   mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_sigint)
        try:
            pending = {pool.submit(_run_task, job, t) for t in tasks}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        except BaseException:  # Ctrl-C or an error: no orphan workers (shutdown forgets them, so take them first)
            workers = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in workers:
                proc.terminate()
            for proc in workers:
                proc.join(timeout=5)
            raise
        pool.shutdown()


class GroupWorker:
    """A Ray actor's body: the job's context (fetched once from the object store) and the state of every
    group this actor has served."""

    def __init__(self, context: Any, prepare: Callable[[Any, str], Any],
                 work: Callable[[Any, Any, list[Any]], list[Any]]) -> None:
        self.context, self.prepare, self.work = context, prepare, work
        self.states: dict[str, Any] = {}

    def run(self, task: Task) -> list[Any]:
        group, items = task
        if group not in self.states:
            self.states[group] = self.prepare(self.context, group)
        return self.work(self.context, self.states[group], items)


def import_ray():
    """Ray, or one clear InputError (exit 2) naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise InputError("--backend", "ray", "Ray is not installed; install the extra: pip install 'moe2sim[ray]'"
                         ) from None
    return ray


CONNECT_TIMEOUT_S = 10.0


def reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse, within `timeout_s`, a Ray address (host:port or ray://host:port) nothing listens on: ray.init
    itself retries an unreachable head for ever. `auto` (the cluster this machine belongs to) is left to Ray."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError("--address", address, "expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise InputError("--address", address, f"nothing answers there within {timeout_s:g} s ({exc}): start the "
                         "head with `ray start --head` and pass the address it prints") from None


class RayExecutor:
    """A Ray cluster at `address` (e.g. ray://head:10001 or auto), or a local instance started here and shut
    down after the run. Workers: `jobs` actors, default one per CPU the cluster has."""

    tasks_per_worker = 4

    def __init__(self, jobs: int | None = None, address: str | None = None) -> None:
        self.ray = import_ray()
        self.jobs, self.address = jobs, address
        self.workers = jobs or 1
        self.started = False

    def __enter__(self) -> "RayExecutor":
        """Connect to the cluster, or start a local instance (then shut down on exit); workers = its CPUs
        (at most `jobs`)."""
        ray = self.ray
        if self.address:
            reachable(self.address)
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": self.address} if self.address else {
                "num_cpus": self.jobs or os.cpu_count() or 1, "include_dashboard": False}
            ray.init(log_to_driver=False, **kwargs)
            self.started = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, min(self.jobs or cpus, cpus))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False

    def run(self, job: WorkSpec, tasks: list[Task]) -> Iterator[list[Any]]:
        from ray.util import ActorPool

        ray = self.ray
        context = ray.put(job.context)
        actor = ray.remote(num_cpus=1)(GroupWorker)
        actors = [actor.remote(context, job.prepare, job.work) for _ in range(max(1, min(self.workers, len(tasks))))]
        pool = ActorPool(actors)
        for task in tasks:
            pool.submit(lambda a, t: a.run.remote(t), task)
        try:
            while pool.has_next():
                yield pool.get_next_unordered()
        finally:
            for a in actors:
                ray.kill(a)


EXECUTORS: dict[str, Callable[..., Executor]] = {"local": LocalExecutor, "ray": RayExecutor}


def executor(name: str, jobs: int | None = None, address: str | None = None) -> Executor:
    """The executor `name` (a key of EXECUTORS; the user picks it with --backend) with `jobs` workers."""
    if name not in EXECUTORS:
        raise InputError("--backend", name, f"unknown backend; choose one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name](jobs, address)

"""Work spread over a Ray cluster: the ``cluster`` setting and a pool of worker actors.

The ``cluster`` setting of ``aseguide generate`` (and ``aseguide analyze --cluster``) is
one of

``local`` (default)
    everything in this process; Ray is not needed.
``ray``
    connect to a running Ray cluster (``RAY_ADDRESS``, or the cluster that
    ``ray start --head`` / ``ray start --address=...`` started on this node), one worker
    per GPU (one per CPU on a cluster without GPUs).
``{address: ..., workers: N, gpus_per_worker: G, cpus_per_worker: C}``
    the same with explicit settings, every key optional: ``address`` is a Ray address
    (``auto``, the default: the running cluster; ``local``: start a private Ray instance
    on this machine; ``host:6379`` or ``ray://host:10001``), ``workers`` the number of
    worker actors (default: as many as the cluster's GPUs, or CPUs, hold), ``gpus_per_worker``
    the GPUs each one reserves (default 1 on a cluster with GPUs, else 0; fractions share
    a GPU) and ``cpus_per_worker`` its CPUs (default 1; also its torch threads).

:func:`parse_cluster` checks a setting without importing Ray (unknown keys and bad
values are named); :class:`WorkerPool` starts the actors (each builds its state, e.g. a
model, once), runs tasks on them and gives the results back in task order. A task whose
actor dies (killed, node lost, evicted for memory) is run again on another actor,
replaced on the fly; one whose actor ran out of host memory can be split first (the
``split`` argument of :meth:`WorkerPool.map`). Ray is an optional dependency
(``pip install aseguide[ray]``); :func:`require_ray` says what to install.

Examples
--------
>>> parse_cluster("local").is_local
True
>>> parse_cluster({"address": "local", "workers": 2})
ClusterSettings(kind='ray', address='local', workers=2, gpus_per_worker=None, cpus_per_worker=1.0)
>>> parse_cluster({"workers": 0})
Traceback (most recent call last):
...
ValueError: cluster: workers must be a positive integer, got 0
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ClusterSettings", "parse_cluster", "cluster_from_text", "require_ray", "WorkerPool", "CLUSTER_KEYS", "RAY_INSTALL"]

logger = logging.getLogger(__name__)

#: Keys of a ``cluster`` mapping.
CLUSTER_KEYS = ("address", "workers", "gpus_per_worker", "cpus_per_worker")
#: What to install for ``cluster: ray``.
RAY_INSTALL = "pip install 'aseguide[ray]' (or: pip install ray)"


@dataclass(frozen=True)
class ClusterSettings:
    """A checked ``cluster`` setting (see :func:`parse_cluster`).

    Parameters
    ----------
    kind : {"local", "ray"}
        Where the work runs.
    address : str or None
        The Ray address (``"auto"``, ``"local"``, ``"host:port"``, ``"ray://host:port"``).
    workers : int or None
        Worker actors (``None``: as many as the cluster's resources hold).
    gpus_per_worker : float or None
        GPUs per worker (``None``: 1 on a cluster with GPUs, else 0).
    cpus_per_worker : float
        CPUs per worker.
    """

    kind: str = "local"
    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0

    @property
    def is_local(self) -> bool:
        """Whether the work stays in this process."""
        return self.kind == "local"


def _number(name: str, value: Any, *, integer: bool, positive: bool) -> Any:
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    ok = ok and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        kind = "integer" if integer else "number"
        raise ValueError(f"cluster: {name} must be a {'positive' if positive else 'non-negative'} {kind}, "
                         f"got {value!r}")
    return value if integer else float(value)


def parse_cluster(value: Any) -> ClusterSettings:
    """Check a ``cluster`` setting; no Ray needed.

    Parameters
    ----------
    value : None, str or mapping
        ``None`` or ``"local"``, ``"ray"``, or a mapping of :data:`CLUSTER_KEYS`.

    Returns
    -------
    ClusterSettings

    Raises
    ------
    ValueError
        An unknown string or key, or a bad value, named.

    Examples
    --------
    >>> parse_cluster("ray").address
    'auto'
    >>> parse_cluster({"gpus_per_worker": 0.5}).gpus_per_worker
    0.5
    >>> parse_cluster({"nodes": 2})
    Traceback (most recent call last):
    ...
    ValueError: cluster: unknown key(s) ['nodes']; known: ['address', 'workers', 'gpus_per_worker', 'cpus_per_worker']
    """
    if value is None or value == "local":
        return ClusterSettings()
    if value == "ray":
        return ClusterSettings(kind="ray", address="auto")
    if not isinstance(value, Mapping):
        raise ValueError(f"cluster must be 'local', 'ray' or a mapping with keys {list(CLUSTER_KEYS)}, got {value!r}")
    unknown = sorted(set(value) - set(CLUSTER_KEYS), key=str)
    if unknown:
        raise ValueError(f"cluster: unknown key(s) {unknown}; known: {list(CLUSTER_KEYS)}")
    address = value.get("address", "auto")
    if address is None:
        address = "auto"
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"cluster: address must be 'auto', 'local', 'host:port' or 'ray://host:port', got {address!r}")
    workers = value.get("workers")
    if workers is not None:
        workers = _number("workers", workers, integer=True, positive=True)
    gpus = value.get("gpus_per_worker")
    if gpus is not None:
        gpus = _number("gpus_per_worker", gpus, integer=False, positive=False)
    cpus = _number("cpus_per_worker", value.get("cpus_per_worker", 1), integer=False, positive=True)
    return ClusterSettings(kind="ray", address=address, workers=workers, gpus_per_worker=gpus, cpus_per_worker=cpus)


def cluster_from_text(text: str) -> Any:
    """The ``cluster`` setting of a command-line value: ``local``, ``ray`` or a YAML/JSON mapping.

    Parameters
    ----------
    text : str
        E.g. ``"ray"`` or ``"{address: local, workers: 2}"``.

    Returns
    -------
    str or dict
        The setting, checked by :func:`parse_cluster`.

    Raises
    ------
    ValueError
        Text that is no valid setting, named.

    Examples
    --------
    >>> cluster_from_text("{address: local, workers: 2}")
    {'address': 'local', 'workers': 2}
    """
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"cluster {text!r} is not 'local', 'ray' or a YAML mapping: {error}") from None
    parse_cluster(value)
    return value


def require_ray():
    """The ``ray`` module, or an :class:`ImportError` saying what to install.

    Examples
    --------
    >>> ray = require_ray()  # doctest: +SKIP
    """
    try:
        import ray
    except ImportError as error:
        raise ImportError(f"cluster: ray needs Ray, which is not installed ({error}); install it with "
                          f"{RAY_INSTALL}, or use cluster: local") from None
    return ray


def _is_memory_loss(error: BaseException) -> bool:
    """Whether Ray lost a task because its worker ran out of (host) memory."""
    from ray.exceptions import OutOfMemoryError

    text = str(error).lower()
    return isinstance(error, OutOfMemoryError) or "out of memory" in text or "outofmemory" in text


class WorkerPool:
    """Worker actors on a Ray cluster, each built once, running tasks with retries.

    Parameters
    ----------
    worker_class : type
        A plain class; ``worker_class(*args, **kwargs)`` is built in every actor (it
        loads its model there, once). Its methods are what :meth:`map` calls.
    settings : ClusterSettings
        Where and how many (``kind="ray"``).
    args, kwargs : tuple, dict
        Constructor arguments (large objects are put in Ray's object store once).
    max_retries : int
        How often one task may lose its worker before the run stops.
    name : str
        Prefix of the actor names (``<name>-<run>-<n>``, see :func:`ray.util.list_named_actors`).

    Attributes
    ----------
    retried : int
        Tasks run again after their worker was lost.
    workers : int
        Worker actors of the pool.

    Examples
    --------
    >>> class Square:
    ...     def run(self, x):
    ...         return x * x
    >>> with WorkerPool(Square, parse_cluster({"address": "local", "workers": 2})) as pool:  # doctest: +SKIP
    ...     [result for _, result in pool.map("run", [(1,), (2,), (3,)])]
    [1, 4, 9]
    """

    def __init__(self, worker_class: type, settings: ClusterSettings, args: Sequence[Any] = (),
                 kwargs: Mapping[str, Any] | None = None, *, max_retries: int = 3,
                 name: str = "aseguide-worker") -> None:
        if settings.is_local:
            raise ValueError("WorkerPool needs a Ray cluster setting, got cluster: local")
        self.settings = settings
        self.max_retries = int(max_retries)
        self.retried = 0
        self._ray = require_ray()
        self._owned = False
        self._started = False
        self._class = worker_class
        self._args = tuple(args)
        self._kwargs = dict(kwargs or {})
        self._name = f"{name}-{uuid.uuid4().hex[:8]}"
        self._counter = itertools.count()
        self._actors: list[Any] = []
        self._remote = None
        self._gpus = 0.0

    # ------------------------------------------------------------------ start and stop
    def __enter__(self) -> "WorkerPool":
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _connect(self) -> None:
        ray = self._ray
        if ray.is_initialized():
            return
        address = self.settings.address
        kwargs: dict[str, Any] = {"include_dashboard": False} if address == "local" else {}
        if address == "local" and self.settings.workers is not None:
            # a private instance offers the workers asked for, even beyond the cores (they share them)
            kwargs["num_cpus"] = max(os.cpu_count() or 1, math.ceil(self.settings.workers
                                                                    * self.settings.cpus_per_worker))
        try:
            ray.init(address=address, logging_level=logging.WARNING, **kwargs)
        except ConnectionError as error:
            raise ConnectionError(f"cluster: no Ray cluster at address {address!r} ({error}); start one with "
                                  "'ray start --head' (and 'ray start --address=HEAD:6379' on the other "
                                  "nodes), set RAY_ADDRESS, or use cluster: {address: local}") from None
        self._owned = True

    def _plan(self) -> tuple[int, float]:
        """Number of workers and GPUs per worker, from the settings and the cluster's resources."""
        resources = self._ray.cluster_resources()
        gpus = self.settings.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
        workers = self.settings.workers
        if workers is None:
            if gpus > 0:
                workers = int(resources.get("GPU", 0) // gpus)
            else:
                workers = int(resources.get("CPU", 1) // self.settings.cpus_per_worker)
            workers = max(1, workers)
        for resource, each in (("GPU", gpus), ("CPU", self.settings.cpus_per_worker)):
            available = resources.get(resource, 0)
            if workers * each > available + 1e-9:
                key = "gpus_per_worker" if resource == "GPU" else "cpus_per_worker"
                raise ValueError(f"cluster: {workers} workers with {key}={each:g} need {workers * each:g} "
                                 f"{resource}s, but the Ray cluster has {available:g}; lower workers or {key}")
        return workers, gpus

    def start(self) -> None:
        """Connect (or start a local Ray) and create the actors; waits until all are built."""
        if self._started:
            return
        self._connect()
        self._started = True
        ray = self._ray
        try:
            workers, self._gpus = self._plan()
        except ValueError:
            self.close()
            raise
        self._remote = ray.remote(self._class)
        self._args = tuple(ray.put(a) if _large(a) else a for a in self._args)
        self._actors = [self._spawn() for _ in range(workers)]
        try:
            ray.get([actor.__ray_ready__.remote() for actor in self._actors])
        except self._ray.exceptions.RayActorError as error:
            self.close()
            raise RuntimeError(f"cluster: a worker could not be built: {error}") from None

    def _spawn(self):
        options = {"num_cpus": self.settings.cpus_per_worker, "num_gpus": self._gpus,
                   "name": f"{self._name}-{next(self._counter)}", "max_restarts": 0}
        return self._remote.options(**options).remote(*self._args, **self._kwargs)

    @property
    def workers(self) -> int:
        return len(self._actors)

    def close(self) -> None:
        """Stop the actors (and the Ray instance this pool started)."""
        ray = self._ray
        for actor in self._actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._actors = []
        if self._owned and ray.is_initialized():
            ray.shutdown()
        self._owned = self._started = False

    # ------------------------------------------------------------------ running tasks
    def call(self, method: str, *args: Any) -> Any:
        """Run ``method(*args)`` on one worker and return its result (checks, probes)."""
        self.start()
        return self._ray.get(getattr(self._actors[0], method).remote(*args))

    def map(self, method: str, tasks: Iterable[tuple], *,
            split: Callable[[tuple], list[tuple] | None] | None = None,
            join: Callable[[list], Any] | None = None) -> Iterator[tuple[int, Any]]:
        """Run ``method(*task)`` for every task over the workers; yield ``(position, result)`` in task order.

        Tasks are taken from ``tasks`` lazily, one per free worker; results that come
        back early wait in a buffer until those before them are yielded.

        Parameters
        ----------
        method : str
            Method of the worker class.
        tasks : iterable of tuple
            Argument tuples.
        split : callable, optional
            ``split(task)`` gives the parts of a task whose worker ran out of host
            memory (``None`` or ``[]``: it cannot be split, run it again whole).
        join : callable, optional
            ``join(results)`` combines the results of a split task's parts, in order
            (default: the list of them).

        Yields
        ------
        tuple of (int, object)
            Position of the task in ``tasks`` and its result.

        Raises
        ------
        RuntimeError
            A task lost its worker more than ``max_retries`` times, or a worker could not be built.
        """
        self.start()
        join = join or list
        source = enumerate(iter(tasks))
        queue: deque = deque()            # (position, path, task, tries) to run again first
        parts: dict[int, dict[tuple, Any]] = {}  # results of the parts of split tasks
        missing: dict[int, int] = {}      # parts still running, per position
        done: dict[int, Any] = {}
        inflight: dict[Any, tuple] = {}
        idle = list(self._actors)
        exhausted = False
        following = 0

        def fill() -> None:
            nonlocal exhausted
            while idle and (queue or not exhausted):
                if queue:
                    item = queue.popleft()
                else:
                    nxt = next(source, None)
                    if nxt is None:
                        exhausted = True
                        break
                    item = (nxt[0], (), nxt[1], 0)
                    missing[item[0]] = 1
                actor = idle.pop(0)
                inflight[getattr(actor, method).remote(*item[2])] = (actor, item)

        fill()
        while inflight:
            ready, _ = self._ray.wait(list(inflight), num_returns=1)
            actor, (position, path, task, tries) = inflight.pop(ready[0])
            try:
                result = self._ray.get(ready[0])
            except (self._ray.exceptions.RayActorError, self._ray.exceptions.OutOfMemoryError,
                    self._ray.exceptions.WorkerCrashedError) as error:
                self._lost(actor, idle, error)
                if tries + 1 > self.max_retries:
                    raise RuntimeError(f"cluster: task {position} lost its worker {tries + 1} times; last: "
                                       f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
                pieces = split(task) if split is not None and _is_memory_loss(error) else None
                if pieces:
                    missing[position] += len(pieces) - 1
                    queue.extendleft(reversed([(position, path + (k,), piece, tries + 1)
                                               for k, piece in enumerate(pieces)]))
                else:
                    queue.appendleft((position, path, task, tries + 1))
                fill()
                continue
            idle.append(actor)
            fill()  # before the results are handed out: the workers stay busy meanwhile
            parts.setdefault(position, {})[path] = result
            missing[position] -= 1
            if missing[position] == 0:
                pieces = parts.pop(position)
                del missing[position]
                done[position] = pieces[()] if list(pieces) == [()] else join([pieces[k] for k in sorted(pieces)])
            while following in done:
                yield following, done.pop(following)
                following += 1

    def _lost(self, actor: Any, idle: list, error: BaseException) -> None:
        """Replace a worker that died (its task is run again by the caller)."""
        if getattr(error, "actor_init_failed", False):
            raise RuntimeError(f"cluster: a worker could not be built: {error}") from None
        self.retried += 1
        logger.warning("cluster: a worker was lost (%s); its task runs again on another worker",
                       str(error).splitlines()[0] if str(error) else type(error).__name__)
        try:
            self._ray.kill(actor)
        except Exception:  # noqa: BLE001 - already gone
            pass
        replacement = self._spawn()
        self._actors = [replacement if a is actor else a for a in self._actors]
        idle.append(replacement)


def _large(value: Any) -> bool:
    """Objects worth one copy in the object store (a model) rather than one per actor."""
    return not isinstance(value, (str, int, float, bool, type(None), Mapping, list, tuple))

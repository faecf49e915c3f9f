"""``--metrics``: the worker's Prometheus endpoint, added up over its processes, and its queues' depth.

The process that starts the worker (a pool's parent) makes a fresh
``PROMETHEUS_MULTIPROC_DIR`` before any worker process forks; each worker process
writes its counts to files of its own there (:mod:`sqsmaster.worker.metrics`). The
parent serves ``/metrics`` on a thread, adding the files up at each scrape (the live
gauges of a process that ended are dropped: ``mark_process_dead``), and samples the
depth of each queue every :data:`SAMPLE_PERIOD` seconds on another thread: one
GetQueueAttributes per queue per period, never one per scrape, so scrapes cost no
SQS request. The directory is removed when the worker ends. The endpoint listens on
127.0.0.1 unless the address names another interface (``0.0.0.0`` must be given).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
from typing import Any, Iterator

from ..backends import QueueBackend
from ..errors import ConfigurationError
from .metrics import prometheus, queue_label
from .receiving import open_worker_queue
from .signals import block_stop_signals

logger = logging.getLogger(__name__)

#: Seconds between two samples of the queues' depth (one GetQueueAttributes per queue each time).
SAMPLE_PERIOD = 15.0
#: Where the endpoint listens when the address is a bare port.
DEFAULT_HOST = "127.0.0.1"
#: prometheus_client's multiprocess directory variable.
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: ``sqsmaster_queue_messages``'s ``state`` label, and the SQS attribute each one is.
DEPTH_STATES = {"visible": "ApproximateNumberOfMessages", "in_flight": "ApproximateNumberOfMessagesNotVisible",
                "delayed": "ApproximateNumberOfMessagesDelayed"}
#: Longest the worker's end waits for a sample in flight (s); the sampler is a daemon, abandoned after it.
CLOSE_TIMEOUT = 1.0

#: The start of the name of a worker's metrics directory, followed by the worker's pid.
DIR_PREFIX = "sqsmaster-metrics-"

#: Bytes of a metrics file's header (the size used, then padding): a file shorter than that is being created.
_HEADER = 8
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]*_(\d+)\.db$")
_DIRECTORY = re.compile("^" + re.escape(DIR_PREFIX) + r"(\d+)-")


def parse_address(text: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPV6]:PORT`` as ``(host, port)``; a bare port listens on 127.0.0.1.

    Raises ConfigurationError naming the address.
    """
    text = str(text).strip()
    host, colon, port = text.rpartition(":")
    if not colon:
        host, port = DEFAULT_HOST, text
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host or not host:
        raise ConfigurationError(f"--metrics {text!r}: give PORT, HOST:PORT or [IPV6]:PORT (a bare port listens "
                                 f"on {DEFAULT_HOST} only)")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigurationError(f"--metrics {text!r}: the port must be a number from 0 to 65535")
    return host, int(port)


def forget_dead_processes(path: str) -> None:
    """Drop the live gauges (tasks in progress) of worker processes that ended, however they ended."""
    for name in os.listdir(path):
        match = _LIVE_GAUGE_FILE.match(name)
        if match and not _alive(int(match.group(1))):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(int(match.group(1)), path)


def _remove_orphans(temp: str) -> None:
    """Remove the metrics directories of workers that died without removing theirs (SIGKILL)."""
    try:
        names = os.listdir(temp)
    except OSError:
        return
    for name in names:
        match = _DIRECTORY.match(name)
        if match and not _alive(int(match.group(1))):
            logger.info("metrics: removing %s, left by worker pid %s, which is gone", name, match.group(1))
            shutil.rmtree(os.path.join(temp, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class QueueDepths:
    """Each queue's depth by state as last sampled, and the collector that shows it.

    :param queues: ``(label, queue)`` pairs
    :param processes: the worker's processes, for the backlog per process
    """

    def __init__(self, queues: list[tuple[str, QueueBackend]], processes: int) -> None:
        self._queues = queues
        self._processes = processes
        self._lock = threading.Lock()
        self._depths: dict[str, dict[str, int]] = {}
        self._failing: set[str] = set()

    def sample(self) -> None:
        """One GetQueueAttributes per queue; a queue that cannot be read is left out until it can."""
        for label, queue in self._queues:
            try:
                attributes = queue.get_attributes()
                depth = {state: int(attributes.get(name, 0)) for state, name in DEPTH_STATES.items()}
            except Exception as exc:  # QueueError, or a value that is not a number: the next sample may do
                if label not in self._failing:
                    logger.warning("metrics: could not read the depth of queue %s (%s); left out until it can be",
                                   queue.url, exc)
                self._failing.add(label)
                with self._lock:
                    self._depths.pop(label, None)
                continue
            self._failing.discard(label)
            with self._lock:
                self._depths[label] = depth

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        with self._lock:
            depths = dict(self._depths)
        messages = GaugeMetricFamily("sqsmaster_queue_messages", f"Messages in the queue by state, sampled every "
                                     f"{SAMPLE_PERIOD:g}s", labels=["queue", "state"])
        backlog = GaugeMetricFamily("sqsmaster_queue_backlog_per_process",
                                    "Visible messages per worker process of this worker", labels=["queue"])
        for label, depth in sorted(depths.items()):
            for state, count in depth.items():
                messages.add_metric([label, state], count)
            backlog.add_metric([label], depth["visible"] / self._processes)
        yield messages
        yield backlog
        yield GaugeMetricFamily("sqsmaster_worker_processes", "Worker processes of this worker",
                                value=self._processes)


class _Fleet:
    """The collector the endpoint serves: every worker process's files, then the sampled depths."""

    def __init__(self, path: str, depths: QueueDepths) -> None:
        self._path = path
        self._depths = depths

    def collect(self) -> Iterator[Any]:
        from prometheus_client.multiprocess import MultiProcessCollector

        forget_dead_processes(self._path)
        yield from MultiProcessCollector.merge(files_born(self._path), accumulate=True)
        yield from self._depths.collect()


def files_born(path: str) -> list[str]:
    """The metrics files of ``path`` that have a header to read.

    prometheus_client creates a process's file empty, then sizes it: a scrape in between
    would fail on the empty file (a 500). Such a file holds no count yet; the next scrape reads it.
    """
    born = []
    for entry in os.scandir(path):
        if entry.name.endswith(".db"):
            try:
                if entry.stat().st_size >= _HEADER:
                    born.append(entry.path)
            except FileNotFoundError:  # a live gauge's file removed by mark_process_dead meanwhile
                pass
    return born


class MetricsExporter:
    """The endpoint and the depth sampler of one worker (see the module's docstring).

    :param address: ``(host, port)`` from :func:`parse_address`; port 0 picks a free one (see :attr:`url`)
    :param queue_urls: the worker's queues
    :param processes: the worker's processes (``concurrency``)
    """

    def __init__(self, address: tuple[str, int], queue_urls: list[str], processes: int,
                 queue_constructor: Any = None, period: float = SAMPLE_PERIOD) -> None:
        self.address = address
        self._urls = queue_urls
        self._processes = processes
        self._constructor = queue_constructor
        self._period = period
        self._stop = threading.Event()
        self._clients: list[Any] = []
        self._server: Any = None
        self._sampler: threading.Thread | None = None
        self.path: str | None = None
        self._previous_dir: str | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def start(self) -> None:
        """Make the directory, open the queues, listen, start the threads (the sampler samples at once).
        Raises ConfigurationError (an address that cannot be listened on, prometheus_client missing);
        then nothing is left behind."""
        client = prometheus()
        self._previous_dir = os.environ.get(MULTIPROC_DIR)
        _remove_orphans(tempfile.gettempdir())
        self.path = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-")
        os.environ[MULTIPROC_DIR] = self.path  # before any worker process forks: each inherits it
        try:
            queues = []
            for url in self._urls:
                queue, made = open_worker_queue(url, self._constructor)
                self._clients += [made] if made is not None else []
                queues.append((queue_label(url), queue))
            depths = QueueDepths(queues, self._processes)
            registry = client.CollectorRegistry()
            registry.register(_Fleet(self.path, depths))
            self._server = _listen(*self.address, client.make_wsgi_app(registry))
        except BaseException:
            self.close()
            raise
        threading.Thread(target=self._serve, name="sqsmaster-metrics", daemon=True).start()
        self._sampler = threading.Thread(target=self._sample, args=(depths,), name="sqsmaster-metrics-sampler",
                                         daemon=True)
        self._sampler.start()
        logger.info("metrics on %s (queue depth sampled every %gs)", self.url, self._period)

    def _serve(self) -> None:
        _leave_signals_to_the_main_thread()  # its request threads inherit the mask
        self._server.serve_forever(poll_interval=0.5)

    def _sample(self, depths: QueueDepths) -> None:
        _leave_signals_to_the_main_thread()
        while True:
            depths.sample()
            if self._stop.wait(self._period):
                return

    def close(self) -> None:
        """Stop serving and sampling, remove the directory, restore ``PROMETHEUS_MULTIPROC_DIR``; idempotent."""
        self._stop.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            if server.socket in _listening:
                _listening.remove(server.socket)
        if self._sampler is not None:
            self._sampler.join(CLOSE_TIMEOUT)
        for made in self._clients:
            made.close()
        self._clients = []
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
        if self._previous_dir is None:
            os.environ.pop(MULTIPROC_DIR, None)
        else:
            os.environ[MULTIPROC_DIR] = self._previous_dir
        self._previous_dir = os.environ.get(MULTIPROC_DIR)


def _leave_signals_to_the_main_thread() -> None:
    """The stop signals, and SIGALRM: in a worker of one process (signal isolation) the task's hard timeout
    must interrupt the main thread's blocking call, which a SIGALRM handed to this thread would not."""
    block_stop_signals()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})


_listening: list[socket.socket] = []


def _close_in_child() -> None:
    """A forked worker process (or task process) must not hold the endpoint's socket open."""
    for sock in _listening:
        try:
            sock.close()
        except OSError:
            pass
    _listening.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


def _listen(host: str, port: int, app: Any) -> Any:
    from wsgiref.simple_server import WSGIRequestHandler, make_server  # http.server: only a worker with --metrics

    from prometheus_client.exposition import ThreadingWSGIServer

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # a scrape every 15 s is not news
            pass

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

        class Server(ThreadingWSGIServer):
            address_family = family

        server = make_server(host, port, app, Server, handler_class=Quiet)
    except OSError as exc:  # gaierror included
        raise ConfigurationError(f"--metrics {host}:{port}: cannot listen there ({exc.strerror or exc})") from None
    _listening.append(server.socket)
    return server

"""Run independent jobs on a local process pool or a Dask cluster, and follow them.

A sweep is a list of :class:`Job` s, each run by one call ``task(job.payload)``
in a worker process (one task per job).  The caller's process only submits,
waits and reports; it never trains.  Two backends share one interface
(``slots()``, ``submit(task, payload, key)``, context manager):

- :class:`LocalPool`: worker processes on this machine (``spawn``), the
  default; needs nothing beyond the standard library.  No worker outlives
  the sweep: leaving the pool on an exception (Ctrl-C, SIGTERM, an error)
  stops every task (a fit saves its checkpoint at the step under way; files
  are cleaned up, run directories unlocked) and ends the workers, killing
  any still running after a grace period; a worker whose client died, even
  of SIGKILL, stops its task the same way and exits (it watches its parent).
- :class:`DaskCluster`: the workers of an existing ``dask.distributed``
  cluster, reached through its scheduler's address.  Dask is imported only
  here, when this backend is chosen.

Progress travels through files, so that it works the same on both backends
(the caller and the workers share the file system; on a cluster that is the
shared path the workers write to): each task rewrites the JSON file
``job.progress_path`` with its ``session``, ``step``, ``steps``,
``start_step`` (the step it resumed from) and ``seconds`` (its wall time so
far) after every chunk of work.  From those records :func:`run_jobs` prints,
every ``progress_every`` seconds, the runs done out of the total, the runs in
flight, the elapsed time and an ETA (:func:`eta_seconds`) from the measured
step rates.
"""
import contextlib
import json
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass

from radref.training.files import write_json_atomic  # noqa: F401 (the sweep's writer)
from radref.training.signals import EXIT_TERMINATED, Terminated

#: Threading variables of the BLAS libraries: one thread per worker process,
#: the pool provides the parallelism.
BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class SweepError(ValueError):
    """A sweep cannot start or did not finish (printed as a one-line error)."""


@dataclass
class Job:
    """One unit of work: ``payload`` goes to the task; the rest is for reporting.

    ``rate_key`` groups jobs with the same cost per step (their measured step
    rates are pooled for the ETA); ``steps - start_step`` is the work left at
    submission.
    """
    label: str
    payload: dict
    key: str
    progress_path: str
    steps: int
    start_step: int
    rate_key: str


# --------------------------------------------------------------- progress files
class RunFileError(ValueError):
    """A run's JSON file exists but cannot be read; the message names it."""


def read_json(path):
    """The JSON document at ``path``, or ``None`` when there is none (yet).

    Raises
    ------
    RunFileError
        The file exists but is unreadable, empty, truncated or not JSON (the
        message starts with its path).
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise RunFileError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None


def _progress_record(path):
    """A progress file's record, or ``None`` when there is none or it cannot be
    read (progress is advisory: a damaged file never stops a sweep)."""
    try:
        record = read_json(path)
    except RunFileError:
        return None
    keys = ("session", "step", "start_step", "seconds")
    return record if isinstance(record, dict) and all(k in record for k in keys) else None


class ProgressReporter:
    """Worker side: rewrites a job's progress file after each chunk of work."""

    def __init__(self, path, session, steps, start_step):
        self.path, self.start = path, time.perf_counter()
        self.record = {"session": session, "host": socket.gethostname(), "pid": os.getpid(),
                       "steps": steps, "start_step": start_step, "step": start_step,
                       "seconds": 0.0}

    def report(self, step):
        self.record.update(step=step, seconds=time.perf_counter() - self.start)
        write_json_atomic(self.path, self.record)


# ------------------------------------------------------------------- the ETA
def pooled_rates(samples):
    """Steps per second for each rate key, pooled over its measured runs.

    Parameters
    ----------
    samples : iterable of (rate_key, steps_done, seconds)

    Returns
    -------
    dict
        ``rate_key -> sum(steps_done) / sum(seconds)`` for every key with some
        measured work, and under ``None`` the same pooled over all keys (the
        fallback for a key not measured yet).
    """
    steps, seconds = {}, {}
    for key, done, spent in samples:
        if done > 0 and spent > 0:
            steps[key] = steps.get(key, 0) + done
            seconds[key] = seconds.get(key, 0.0) + spent
    rates = {key: steps[key] / seconds[key] for key in steps}
    if rates:
        rates[None] = sum(steps.values()) / sum(seconds.values())
    return rates


def eta_seconds(remaining, rates, slots):
    """Seconds until every job is done, from measured step rates.

    The work left is ``sum(steps_left / rate)`` over the jobs, shared by
    ``slots`` parallel workers; no job can finish before its own
    ``steps_left / rate``, so the ETA is the larger of the two.

    Parameters
    ----------
    remaining : list of (rate_key, steps_left)
    rates : dict from :func:`pooled_rates`
    slots : int
        Tasks that run at the same time.

    Returns
    -------
    float or None
        ``None`` while no rate has been measured.
    """
    if not remaining:
        return 0.0
    if not rates:
        return None
    times = [left / rates.get(key, rates[None]) for key, left in remaining]
    return max(sum(times) / max(slots, 1), max(times))


def format_duration(seconds):
    """``h:mm:ss``."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# ------------------------------------------------------------------ backends
@contextlib.contextmanager
def _single_blas_thread():
    """Set the BLAS thread variables to 1 for processes spawned meanwhile."""
    saved = {var: os.environ.get(var) for var in BLAS_THREAD_VARIABLES}
    os.environ.update({var: "1" for var in BLAS_THREAD_VARIABLES})
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


class LocalPool:
    """``workers`` processes on this machine (``spawn``: no state shared with
    the caller), one BLAS thread each."""

    def __init__(self, workers):
        self.workers = workers
        self.description = f"local process pool of {workers} worker process" + \
                           ("es" if workers > 1 else "")

    def __enter__(self):
        import concurrent.futures
        import multiprocessing
        self._env = _single_blas_thread()
        self._env.__enter__()
        # the pool's workers are the children started from here on (found
        # through multiprocessing's public active_children, not the pool's
        # private attributes)
        self._children_before = {p.pid for p in multiprocessing.active_children()}
        self._executor = concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_local_worker_init, initargs=(os.getpid(),))
        self._futures = []
        return self

    def __exit__(self, kind, exc, traceback):
        try:
            if kind is None:
                self._executor.shutdown(wait=True, cancel_futures=True)
            else:  # Ctrl-C, SIGTERM or an error: no task is left running
                self.stop_workers()
        finally:
            self._env.__exit__(kind, exc, traceback)

    def stop_workers(self, grace=30.0):
        """Stop every task now and end the workers.

        Tasks not started are cancelled; every worker gets SIGTERM: a running
        fit stops after the step under way and saves its checkpoint, any
        other task unwinds (temporary files removed, run directory unlocked),
        and a worker starts no further task.  Once every task has ended the
        workers are shut down normally; any still running after ``grace``
        seconds are killed (SIGKILL).
        """
        import concurrent.futures
        with _signals_ignored():  # a second Ctrl-C or SIGTERM must not stop this halfway
            for future in self._futures:
                future.cancel()
            processes = self._workers()
            for process in processes:
                if process.is_alive():
                    process.terminate()
            running = [future for future in self._futures if not future.done()]
            concurrent.futures.wait(running, timeout=grace)
            if all(future.done() for future in self._futures):
                self._executor.shutdown(wait=True, cancel_futures=True)
                return
            for process in processes:
                if process.is_alive():
                    process.kill()
                    process.join(5.0)
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _workers(self):
        """The pool's worker processes alive now."""
        import multiprocessing
        return [p for p in multiprocessing.active_children()
                if p.pid not in self._children_before]

    def slots(self):
        return self.workers

    def submit(self, task, payload, key):
        future = self._executor.submit(_run_in_local_worker, task, payload)
        self._futures.append(future)
        return future


@contextlib.contextmanager
def _signals_ignored():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


#: State of a local worker process: a task running, asked to stop, its client's pid.
_WORKER = {"busy": False, "stopping": False, "client": None}


def _local_worker_init(client_pid, period=0.5):
    """Set up a local worker process.

    Ctrl-C is the client's to handle (it stops the workers).  SIGTERM asks
    the worker to stop: the running task stops (a fit after the step under
    way, with its checkpoint saved: it takes SIGTERM over, see
    :func:`radref.training.signals.defers_sigterm`), no further task starts,
    and the worker ends when the client shuts the pool down.  A worker whose
    client is gone (killed, even by SIGKILL: the worker then has another
    parent) stops its task the same way and exits: no worker outlives its
    sweep.
    """
    _WORKER["client"] = client_pid
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_terminated)

    def watch():
        while os.getppid() == client_pid:
            time.sleep(period)
        if not _WORKER["busy"]:
            os._exit(EXIT_TERMINATED)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="radref-watch-client", daemon=True).start()


def _worker_terminated(signum, frame):
    _WORKER["stopping"] = True
    if _WORKER["busy"]:
        raise Terminated("worker terminated by SIGTERM")


# A fit running in the worker takes SIGTERM over (radref.training.signals.
# defers_sigterm): it stops after the step under way and saves its checkpoint.
_worker_terminated.radref_defers = True


def _run_in_local_worker(task, payload):
    """``task(payload)`` in a local worker, unless the worker was asked to stop.
    A task stopped by SIGTERM raises ``KeyboardInterrupt`` (a fit's
    ``TrainingInterrupted`` after saving its state, else :class:`Terminated`):
    it goes back to the client, or, when the client is gone, the worker exits."""
    if _WORKER["stopping"]:
        raise Terminated("the sweep is stopping: task not started")
    _WORKER["busy"] = True
    try:
        return task(payload)
    except KeyboardInterrupt:
        _WORKER["stopping"] = True
        if os.getppid() != _WORKER["client"]:  # orphaned: nobody to report to
            os._exit(EXIT_TERMINATED)
        raise
    finally:
        _WORKER["busy"] = False


class DaskCluster:
    """The workers of an existing ``dask.distributed`` cluster.

    One task per job, keyed by ``key`` (the same run submitted twice is one
    task).  A worker that dies mid-task makes the scheduler run the task again
    on another worker (up to dask's ``distributed.scheduler.allowed-failures``
    times); the task itself resumes from its checkpoint.
    """

    def __init__(self, address, timeout=30):
        self.address, self.timeout = address, timeout
        self.description = f"Dask cluster at {address}"

    def __enter__(self):
        try:
            from dask.distributed import Client
        except ImportError:
            raise SweepError("--scheduler needs dask.distributed, which is not installed: "
                             "pip install 'radref[dask]' (on the client and on every "
                             "worker)") from None
        try:
            self.client = Client(self.address, timeout=self.timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SweepError(f"cannot reach the Dask scheduler at {self.address}: "
                             f"{type(exc).__name__}: {exc}") from None
        if not self.client.nthreads():
            self.client.close()
            raise SweepError(f"the Dask cluster at {self.address} has no workers: start some "
                             f"with 'dask worker {self.address}'")
        return self

    def __exit__(self, *exc_info):
        self.client.close()

    def slots(self):
        return max(sum(self.client.nthreads().values()), 1)

    def submit(self, task, payload, key):
        return self.client.submit(task, payload, key=key, pure=False)


# --------------------------------------------------------------- the monitor
def run_jobs(jobs, task, backend, session, on_result, log=print, progress_every=30.0,
             already_done=0, poll=0.1):
    """Submit every job to ``backend`` and wait for all, reporting progress.

    Parameters
    ----------
    jobs : list of Job
    task : callable
        Top-level function (picklable by reference): ``task(job.payload) -> dict``.
    backend : LocalPool or DaskCluster, entered
    session : str
        Marks this sweep's progress records (older ones are ignored).
    on_result : callable
        ``on_result(job, result, n_done, n_total)`` as each job finishes.
    log : callable
        Receives each status line.
    progress_every : float
        Seconds between status lines.
    already_done : int
        Runs of the sweep that needed no job (reused), counted as done.

    Returns
    -------
    results : list of dict, in completion order
    failures : list of (Job, Exception)
    """
    total = len(jobs) + already_done
    start = time.monotonic()
    futures = {backend.submit(task, job.payload, job.key): job for job in jobs}
    results, failures, measured = [], [], []
    last_status = start
    while futures:
        for future in [f for f in futures if f.done()]:
            job = futures.pop(future)
            try:
                result = future.result()
            except Exception as exc:  # the task's own error, or a worker lost too often
                failures.append((job, exc))
                log(f"FAILED {job.label}: {type(exc).__name__}: {exc}")
                continue
            results.append(result)
            record = _progress_record(job.progress_path)
            if record is not None and record.get("session") == session:
                measured.append((job.rate_key, record["step"] - record["start_step"],
                                 record["seconds"]))
            on_result(job, result, already_done + len(results) + len(failures), total)
        now = time.monotonic()
        if futures and now - last_status >= progress_every:
            log(status_line(list(futures.values()), session, measured, backend.slots(),
                            already_done + len(results) + len(failures), total, now - start))
            last_status = now
        if futures:
            time.sleep(poll)
    log(f"runs done {total}/{total} · elapsed {format_duration(time.monotonic() - start)}")
    return results, failures


def status_line(pending, session, measured, slots, n_done, n_total, elapsed, shown=4):
    """``runs done a/b · in flight k: ... · elapsed · ETA`` from the progress
    files of the ``pending`` jobs and the rates ``measured`` on finished ones."""
    in_flight, remaining, samples = [], [], list(measured)
    for job in pending:
        record = _progress_record(job.progress_path)
        if record is not None and record.get("session") == session:
            step = record["step"]
            in_flight.append(f"{job.label} {step}/{job.steps}")
            samples.append((job.rate_key, step - record["start_step"], record["seconds"]))
        else:
            step = job.start_step
        remaining.append((job.rate_key, job.steps - step))
    eta = eta_seconds(remaining, pooled_rates(samples), slots)
    flying = ", ".join(in_flight[:shown]) + (f", +{len(in_flight) - shown} more"
                                             if len(in_flight) > shown else "")
    return (f"runs done {n_done}/{n_total} · in flight {len(in_flight)}"
            + (f": {flying}" if in_flight else "")
            + f" · elapsed {format_duration(elapsed)} · ETA "
            + ("unknown (no step rate measured yet)" if eta is None else format_duration(eta)))

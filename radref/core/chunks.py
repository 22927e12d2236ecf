"""Rows evaluated a chunk at a time, in one thread or several.

Every row of a flow's input is independent of the others (the log-density,
inference, the inverse and sampling act row by row), so a large input can be
cut into chunks of rows:

- each chunk's arrays stay in the CPU cache (time per point flat in ``n``),
  and the memory is the outputs plus one chunk's working set per thread;
- chunks can run in parallel threads: NumPy releases the GIL inside its
  loops, so two threads keep two cores busy for most of a chunk.

The chunks are cut the same way whatever the number of threads, each chunk
is computed by the same NumPy calls on the same numbers, and its results are
written at its own rows of outputs allocated once: the result is bit for bit
the same for any ``n_jobs``.

``n_jobs`` follows scikit-learn: ``None`` or ``1`` is one thread (no pool),
``-1`` every CPU (:func:`radref.checks.effective_n_jobs`).

Several threads take longer chunks than one (each layer kind's
``THREAD_CHUNK_ROWS``, a multiple of :data:`CHUNK_ROWS`): a thread holds the
GIL between NumPy's loops, and with 4,096 rows a Rad layer's loops are so
short that two threads mostly wait for each other (docs/performance.md,
"Threads").  The results stay bit for bit the same because the one
computation whose rounding could depend on how many rows it is given, the
matrix product (BLAS tiles it by its shape), is made in blocks of
:data:`CHUNK_ROWS` rows whatever the chunk (:func:`matmul_in_row_blocks`).

While the chunks run in several threads, BLAS runs in one thread of its own
per chunk (:func:`one_blas_thread`, when threadpoolctl is installed: ``pip
install radref[threads]``): the chunks already keep every core busy, and a
matrix product that also starts BLAS's threads puts two threads on each core,
or waits while another chunk's product holds them.  A product's rounding does
not depend on BLAS's threads (they split its output, not its sums;
tests/test_threads.py checks it), so the results stay the same bits.
"""
import contextlib
import contextvars
import functools
import numbers
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from radref.checks import effective_n_jobs

#: Rows per chunk (:func:`radref.core.flow.flow_log_density`, ``flow_infer``,
#: ``flow_inverse``, ``flow_sample_from_noise``,
#: ``radref.training.train.mean_loglik_and_grad``): the arrays of one chunk stay
#: in the CPU cache (measured in validation/benchmark.py; 2,000-8,000 rows are
#: equally fast for the paper's models), and memory stays bounded in ``n``.
CHUNK_ROWS = 4096


def matmul_in_row_blocks(a, b):
    """``a @ b``, computed :data:`CHUNK_ROWS` rows of ``a`` at a time.

    The plain form is ``a @ b`` (and for up to ``CHUNK_ROWS`` rows this is
    that one call).  BLAS chooses and tiles its kernels by the shape of the
    product, so the rounding of one row's result may depend on how many rows
    are multiplied with it; in blocks that start every ``CHUNK_ROWS`` rows,
    a row is always multiplied in the same call whether its chunk has
    ``CHUNK_ROWS`` rows or a multiple of them, and chunks of any such size
    give the same bits (tests/test_threads.py checks both).

    Parameters
    ----------
    a : ndarray of float64, shape (n, k)
    b : ndarray of float64, shape (k, m)

    Returns
    -------
    ndarray of float64, shape (n, m)
    """
    if len(a) <= CHUNK_ROWS:
        return a @ b
    out = np.empty((len(a), b.shape[1]), dtype=np.result_type(a, b))
    for rows in row_chunks(len(a), CHUNK_ROWS):
        np.matmul(a[rows], b, out=out[rows])
    return out


def row_chunks(n, chunk_rows=CHUNK_ROWS):
    """Slices ``[start, stop)`` that cover ``range(n)`` with ``chunk_rows`` rows each
    (the last one shorter).

    Raises
    ------
    TypeError
        If ``chunk_rows`` is not an integer (a float, a bool), as everywhere in
        radref (docs/errors.md).
    ValueError
        If ``chunk_rows`` is an integer below 1.
    """
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, numbers.Integral):
        raise TypeError(f"chunk_rows must be a positive integer, got "
                        f"{type(chunk_rows).__name__} {chunk_rows!r}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    return [slice(start, min(start + chunk_rows, n)) for start in range(0, n, chunk_rows)]


class _Outputs:
    """The outputs of :func:`map_row_chunks`: allocated when the first chunk's
    results arrive (their trailing shapes and dtypes are ``fn``'s), then each
    chunk's results written at its rows (disjoint rows: no lock needed)."""

    def __init__(self, n):
        self.n, self.arrays, self._lock = n, None, threading.Lock()

    def write(self, rows, results):
        with self._lock:  # the first chunk to finish allocates, once
            if self.arrays is None:
                self.arrays = tuple(np.empty((self.n,) + r.shape[1:], r.dtype) for r in results)
        for output, result in zip(self.arrays, results):
            output[rows] = result


def run_in_threads(task, items, threads):
    """``task(item)`` for every item, on ``threads`` threads.

    Each call runs in a copy of the caller's context: NumPy's ``errstate`` is
    a context variable, so ``np.errstate(over="raise")`` around the caller
    holds in the threads too.  Raises the exception of the first item, in
    the order of ``items``, whose call raised (the one a loop would raise);
    the items not started by then are cancelled.
    """
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="radref") as pool:
        futures = [pool.submit(contextvars.copy_context().run, task, item) for item in items]
        try:
            for future in futures:
                future.result()
        finally:
            for future in futures:
                future.cancel()


@functools.lru_cache(maxsize=None)
def _blas_controller():
    """threadpoolctl's controller of the loaded BLAS libraries, made once
    (making it inspects every loaded library), or None without threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


#: the blocks inside :func:`one_blas_thread` (of any thread), and the
#: limiter that gives BLAS its threads back when the last one ends
_ONE_BLAS_THREAD = {"lock": threading.Lock(), "blocks": 0, "limiter": None}


@contextlib.contextmanager
def one_blas_thread():
    """Within the block, BLAS (the matrix products) runs in one thread; when
    the block ends it has its threads back.  Without threadpoolctl, it does
    nothing.

    The limit holds for the whole process, as BLAS's own setting does, so
    blocks of several threads at once share it: the first to begin sets it,
    the last to end lifts it (each lifting its own would hand BLAS its
    threads back while another block runs, or keep them from it after all
    ended).  :func:`map_row_chunks` takes it only while its own threads keep
    the cores busy.
    """
    controller = _blas_controller()
    if controller is None:
        yield
        return
    shared = _ONE_BLAS_THREAD
    with shared["lock"]:
        if shared["blocks"] == 0:
            _any_thread_may_set_blas()
            shared["limiter"] = controller.limit(limits=1, user_api="blas")
        shared["blocks"] += 1
    try:
        yield
    finally:
        with shared["lock"]:
            shared["blocks"] -= 1
            if shared["blocks"] == 0:
                _any_thread_may_set_blas()  # the last block may end in another thread
                shared["limiter"].restore_original_limits()
                shared["limiter"] = None
                _any_thread_may_set_blas()


def _any_thread_may_set_blas():
    """threadpoolctl (3.8, for one) lets only one thread set OpenBLAS's
    threads, the first that did, until its ``with`` block ends, and ignores
    the others without a word; :func:`one_blas_thread` sets and restores
    from whichever thread begins the first block and ends the last, so it
    hands the control back each time."""
    from threadpoolctl import OpenBLASController
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


def map_row_chunks(fn, arrays, chunk_rows=CHUNK_ROWS, n_jobs=None):
    """``fn(*arrays)`` evaluated ``chunk_rows`` rows at a time, in ``n_jobs`` threads.

    Rows are independent, so the result is that of one call (to rounding:
    BLAS may sum a matrix product in another order for another number of
    rows), and bit for bit the same for every ``n_jobs``.  Each output is
    written into an array allocated once, so the memory used is the outputs
    plus one chunk's working set per thread, whatever ``n``.

    Parameters
    ----------
    fn : callable
        ``fn(*chunks) -> tuple of ndarray``, every output with the chunk's rows
        as its first axis; called from several threads at once if
        ``n_jobs`` is not 1, so it must not modify shared state.
    arrays : tuple of ndarray
        Inputs with the same number ``n`` of rows (first axis).
    chunk_rows : int
        Rows per chunk, ``>= 1``.
    n_jobs : int or None
        Threads (scikit-learn's convention: ``None`` is 1, ``-1`` every CPU);
        never more than there are chunks.  With more than one, BLAS runs in
        one thread meanwhile (:func:`one_blas_thread`).

    Returns
    -------
    tuple of ndarray
        The outputs of ``fn`` for all ``n`` rows.

    Raises
    ------
    TypeError, ValueError
        For a bad ``chunk_rows`` or ``n_jobs``; and whatever ``fn`` raises
        (for the first chunk, in row order, that raised).
    """
    chunks = row_chunks(len(arrays[0]), chunk_rows)
    threads = min(effective_n_jobs("n_jobs", n_jobs), len(chunks))
    if len(chunks) <= 1:  # one chunk: no copy
        return fn(*arrays)
    outputs = _Outputs(len(arrays[0]))

    def evaluate(rows):
        outputs.write(rows, fn(*(a[rows] for a in arrays)))

    if threads == 1:
        for rows in chunks:
            evaluate(rows)
    else:
        with one_blas_thread():
            run_in_threads(evaluate, chunks, threads)
    return outputs.arrays

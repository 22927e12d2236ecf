"""Files radref writes: whole or not at all, never over an input, one writer at a time.

Three small tools that every writer of radref uses (checkpoints, models,
point files, the sweep's run files and tables):

- :func:`atomic_write` writes through a temporary file in the target's
  directory (``.radref-<pid>-<host>-<random>.tmp``), flushed and ``fsync``-ed,
  renamed over the target (``os.replace``), then ``fsync``-s the directory so
  that the rename itself survives a power cut.  Any exception on the way, a
  ``KeyboardInterrupt`` or a SIGTERM turned into an exception included,
  removes the temporary file.  A writer killed outright (SIGKILL, power cut)
  cannot clean up; the next :func:`atomic_write` into that directory removes
  the temporary files of this host whose process is gone
  (:func:`remove_stale_temporaries`).
- :func:`same_file` says whether two paths name the same file: the same
  inode once both exist (symlinks, hard links, ``./sub/../x``), else the same
  resolved path.  The command line refuses an output that is one of its inputs.
- :func:`exclusive` holds an advisory lock (``fcntl.flock``) on a lock file
  next to a target (``.<name>.radref-lock``, or ``.radref-lock`` inside a
  directory) for as long as a writer works on it; a second writer is refused
  with :class:`LockedError`, whose message names the holder (pid, host,
  command, since when).  The kernel releases the lock when its holder dies,
  however it dies.
"""
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
import time

#: start of every temporary or lock file radref leaves in a directory
PREFIX = ".radref-"
LOCK_SUFFIX = ".radref-lock"
#: temporaries of radref before they carried their owner: removed when older than this
LEGACY_STALE_SECONDS = 24 * 3600


class LockedError(OSError):
    """Another process holds the lock of a file or directory radref would write."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message


# ------------------------------------------------------------- same file
def same_file(a, b):
    """Whether the paths ``a`` and ``b`` name one file: the same inode when both
    exist (symlinks, hard links, any spelling), else the same resolved path."""
    a, b = os.fspath(a), os.fspath(b)
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): compare where they lead
        return os.path.realpath(a) == os.path.realpath(b)


# -------------------------------------------------------- atomic writing
def _host_tag():
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


_OWNED = re.compile(r"^\.radref-(\d+)-([0-9a-f]{8})-.*\.tmp$")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(directory):
    """Remove the temporary files a killed writer left in ``directory``: those
    of this host whose process is gone, and radref's older, ownerless
    ``.radref-*.tmp`` files after :data:`LEGACY_STALE_SECONDS`.  Returns
    the names removed.  Never fails (a file another process removes
    meanwhile is fine)."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    host, now = _host_tag(), time.time()
    for name in names:
        if not (name.startswith(PREFIX) and name.endswith(".tmp")):
            continue
        path = os.path.join(directory, name)
        owned = _OWNED.match(name)
        try:
            if owned:
                pid = int(owned.group(1))
                stale = owned.group(2) == host and pid != os.getpid() and not _alive(pid)
            else:
                stale = now - os.lstat(path).st_mtime > LEGACY_STALE_SECONDS
            if stale:
                os.unlink(path)
                removed.append(name)
        except OSError:
            continue
    return removed


def _new_file_mode(path):
    """The mode of the file ``path`` replaces, or that of a new file (0666 & ~umask)."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def fsync_directory(directory):
    """Make a rename in ``directory`` durable (where the file system allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # e.g. a file system without directory fsync
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode="wb", replace=True):
    """Write ``path`` whole or not at all.

    Yields a file object (``mode`` ``"wb"`` or ``"w"``, UTF-8) on a temporary
    file in ``path``'s directory; when the block ends normally the file is
    flushed, ``fsync``-ed, given the mode of the file it replaces (or the
    usual mode of a new file), renamed over ``path`` and the directory
    ``fsync``-ed.  When the block raises (anything, ``KeyboardInterrupt``
    included) the temporary file is removed and ``path`` is untouched.

    With ``replace=False`` an existing ``path`` is never replaced, even one
    that another process created while the block ran: the finished file is
    put in place by a hard link, which fails if ``path`` exists, and
    :class:`FileExistsError` is raised (the temporary file removed).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(directory)
    fd, tmp = tempfile.mkstemp(prefix=f"{PREFIX}{os.getpid()}-{_host_tag()}-", suffix=".tmp",
                               dir=directory)
    try:
        os.chmod(tmp, _new_file_mode(path))
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            _place_new(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)


def _place_new(tmp, path):
    """Rename ``tmp`` to ``path`` unless ``path`` exists, atomically where
    the file system has hard links (``link`` refuses an existing name)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "File exists", path) from None
    except OSError:  # no hard links here (some network and FAT file systems)
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "File exists", path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def write_json_atomic(path, document):
    """``document`` as JSON (indented; NaN and infinities refused) at ``path``,
    through :func:`atomic_write`."""
    text = json.dumps(document, allow_nan=False, indent=1)  # fails before anything is written
    with atomic_write(path, "w") as f:
        f.write(text)


# ----------------------------------------------------------------- locks
def lock_path(path):
    """The lock file of ``path``: ``.radref-lock`` inside a directory,
    ``.<name>.radref-lock`` beside a file."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        return os.path.join(path, PREFIX + "lock")
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}{LOCK_SUFFIX}")


def _holder(fd):
    """What the lock file open at ``fd`` says about its holder (one phrase)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        record = json.loads(os.read(fd, 65536).decode() or "null")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["since"]))
        return (f"process {record['pid']} on host {record['host']} "
                f"({record['command']}, since {since})")
    except (OSError, ValueError, TypeError, KeyError, OverflowError):
        return "another process (which has not written its name yet)"


def _command():
    argv = [os.path.basename(sys.argv[0]) or "python"] + sys.argv[1:] if sys.argv else ["?"]
    text = " ".join(argv)
    return text if len(text) <= 200 else text[:197] + "..."


@contextlib.contextmanager
def exclusive(path, what=None):
    """Hold the advisory lock of ``path`` (a file, existing or not, or a
    directory) for the duration of the block.

    Raises
    ------
    LockedError
        Another process holds it; the message names ``what`` (default:
        ``path``) and the holder.
    """
    what = os.fspath(path) if what is None else what
    lock = lock_path(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockedError(f"{what} is being written by {holder}: wait for it to "
                                  f"finish, or stop it") from None
            raise
        try:  # the previous holder may have removed the file between our open and flock
            current = os.stat(lock).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command(),
                  "since": time.time()}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(record).encode())
        yield lock
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still holding it: the next writer re-creates it
        os.close(fd)


def is_locked(path):
    """The holder phrase of ``path``'s lock when another process holds it, else ``None``
    (a snapshot: the caller must still take the lock before writing)."""
    lock = lock_path(path)
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _holder(fd)
    finally:
        os.close(fd)  # closing releases the shared lock, if taken
    return None

"""Points in and out of files for the ``radref`` command.

Formats, chosen by the file's extension:

- ``.npy``: a NumPy array of shape ``(n, d)`` (read without pickles);
- ``.csv`` (commas), ``.tsv`` (tabs), ``.txt`` (commas, tabs or spaces, as the
  first data line has them): one point per line, an optional header line
  (a first line none of whose fields is a number), ``#`` comments and blank
  lines ignored;
- ``-``: standard input (any of the above: a ``.npy`` stream is recognised
  by its header, text by its delimiter) or standard output (CSV).

Every error is a :class:`DataFileError` whose message starts with the
command-line flag and the file (``--data pts.csv: line 3: 'x' is not a
number``), never a library's internals.
"""
import io
import os
import sys
import warnings

import numpy as np

from radref.checks import POINTS_IN_A_FILE, check_array
from radref.training.files import atomic_write, same_file

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
TEXT_DELIMITERS = {".csv": ",", ".tsv": "\t"}
EXTENSIONS = (".npy", ".csv", ".tsv", ".txt")
STDIO = "-"


class DataFileError(Exception):
    """A file the user named cannot be used; the message says which and why."""


class DataFileWarning(UserWarning):
    """A file of points that reads, but perhaps not as its writer meant (the
    command prints it as ``radref: warning: ...``)."""


def extension(path):
    return os.path.splitext(path)[1].lower()


# ---------------------------------------------------------------- reading

def read_bytes(flag, path):
    """The bytes of ``path`` (standard input for ``-``)."""
    if path == STDIO:
        return sys.stdin.buffer.read()
    if not os.path.exists(path):
        raise DataFileError(f"{flag} {path}: no such file")
    if os.path.isdir(path):
        raise DataFileError(f"{flag} {path}: is a directory, not a file")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise DataFileError(f"{flag} {path}: cannot read ({exc.strerror})") from None


def read_points(flag, path):
    """The points in ``path``: a finite float64 array of shape ``(n, d)``, ``n >= 1``."""
    raw = read_bytes(flag, path)
    where = "standard input" if path == STDIO else path
    ext = None if path == STDIO else extension(path)
    if raw.startswith(ZIP_MAGIC):
        raise DataFileError(f"{flag} {where}: a zip archive (a radref model?), not a table "
                            f"of points")
    if ext is not None and ext not in EXTENSIONS:
        raise DataFileError(f"{flag} {path}: unknown kind of file; points are read from "
                            f".npy, .csv, .tsv or .txt files, or from - (standard input)")
    if raw.startswith(NPY_MAGIC):
        array = _parse_npy(flag, where, raw)
    elif ext == ".npy":
        raise DataFileError(f"{flag} {where}: not a .npy array file (no NumPy header)")
    else:
        array = _parse_text(flag, where, raw, TEXT_DELIMITERS.get(ext))
    return _checked_points(flag, where, array)


def _parse_npy(flag, where, raw):
    try:
        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataFileError(f"{flag} {where}: holds Python objects, not numbers (a .npy "
                                f"file of dtype object)") from None
        raise DataFileError(f"{flag} {where}: a damaged .npy file") from None
    except (OSError, EOFError):
        raise DataFileError(f"{flag} {where}: a damaged or truncated .npy file") from None
    if array.dtype.names is not None:
        raise DataFileError(f"{flag} {where}: holds a structured array "
                            f"(named fields); save a plain (n, d) array of numbers")
    return array


def _parse_text(flag, where, raw, delimiter):
    """Rows of numbers from text; ``delimiter=None``: the first data line's
    comma, tab or runs of spaces."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataFileError(f"{flag} {where}: not a text file (nor a .npy array)") from None
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)]
    lines = [(number, line) for number, line in lines if line and not line.startswith("#")]
    if not lines:
        raise DataFileError(f"{flag} {where}: holds no data (empty, or comments only)")
    if delimiter is None:
        first = lines[0][1]
        delimiter = "," if "," in first else "\t" if "\t" in first else None
    if _is_header(lines[0][1], delimiter):
        header = _fields(lines[0][1], delimiter)
        lines = lines[1:]
        if not lines:
            raise DataFileError(f"{flag} {where}: holds a header line but no data")
        if len(header) > 1 and header[0] == "" and all(header[1:]):
            warnings.warn(f"{flag} {where}: the header names every column but the first, as "
                          f"in a file pandas wrote with its index: that column is used as a "
                          f"coordinate like the others (write the file with index=False, or "
                          f"drop the column)", DataFileWarning, stacklevel=2)
    try:
        array = np.loadtxt([line for _, line in lines], delimiter=delimiter, ndmin=2,
                           comments=None, dtype=np.float64)
    except ValueError:
        raise DataFileError(f"{flag} {where}: {_first_bad_line(lines, delimiter)}") from None
    bad = np.flatnonzero(~np.all(np.isfinite(array), axis=1))
    if bad.size:  # named by the file's line (a header or comments shift the points)
        raise DataFileError(f"{flag} {where}: line {lines[bad[0]][0]} (point {bad[0] + 1}) "
                            f"holds NaN or an infinite value; every coordinate must be a "
                            f"finite number")
    return array


def _fields(line, delimiter):
    return [field.strip() for field in line.split(delimiter)]


def _is_number(field):
    try:
        float(field)
    except ValueError:
        return False
    return True


def _is_header(line, delimiter):
    """A header names its columns: none of its fields is a number."""
    return not any(_is_number(field) for field in _fields(line, delimiter))


def _first_bad_line(lines, delimiter):
    """What is wrong with the first line that is not a row of numbers."""
    width, width_line = None, None
    for number, line in lines:
        fields = _fields(line, delimiter)
        for field in fields:
            if not _is_number(field):
                if ";" in field and delimiter != ";":
                    return (f"line {number}: {field!r} is not a number; fields separated by "
                            f"';' are not read: radref reads commas, tabs or spaces; "
                            f"with decimal points in the numbers, replace each ';' by ',' "
                            f"(tr ';' ',' < in.csv > out.csv)")
                shown = field if field else "an empty field"
                return f"line {number}: {shown!r} is not a number" if field else (
                    f"line {number}: {shown}")
        if width is None:
            width, width_line = len(fields), number
        elif len(fields) != width:
            return (f"line {number} has {len(fields)} values, line {width_line} has {width} "
                    f"(every point needs the same number of columns)")
    return "not a table of numbers"


def _checked_points(flag, where, array):
    """The one array check (:func:`radref.checks.check_array`), in the command line's wording."""
    try:
        return check_array(f"{flag} {where}", array, wording=POINTS_IN_A_FILE)
    except ValueError as exc:
        raise DataFileError(str(exc)) from None


# ---------------------------------------------------------------- writing

def check_output(flag, path, extensions=EXTENSIONS, allow_stdout=True, inputs=(),
                 overwrite=False):
    """Fail before any work if ``path`` cannot be written: wrong extension,
    missing directory, a directory in its place, one of the command's
    ``inputs`` (``(flag, path)`` pairs) under any name: the same file by
    identity (symlink, hard link) or by resolved path (``./sub/../x``), or
    an existing file when ``overwrite`` is false (the user's ``--overwrite``)."""
    for input_flag, input_path in inputs:
        if input_path is not None and STDIO not in (path, input_path) \
                and same_file(path, input_path):
            raise DataFileError(f"{flag} {path}: is {input_flag} {input_path}, an input of this "
                                f"command; radref never writes over its input: choose another "
                                f"{flag}")
    if path == STDIO:
        if allow_stdout:
            return
        raise DataFileError(f"{flag} -: this output cannot go to standard output; name a file")
    if os.path.isdir(path):
        raise DataFileError(f"{flag} {path}: is a directory")
    if extension(path) not in extensions:
        raise DataFileError(f"{flag} {path}: the file name must end in "
                            f"{', '.join(extensions[:-1])} or {extensions[-1]}"
                            if len(extensions) > 1 else
                            f"{flag} {path}: the file name must end in {extensions[0]}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise DataFileError(f"{flag} {path}: directory {directory} does not exist")
    if not overwrite and os.path.lexists(path):
        raise DataFileError(exists_message(flag, path))


def exists_message(flag, path):
    """The one wording of an output that exists and may not be replaced."""
    return (f"{flag} {path}: exists; radref replaces a file only when told to: add "
            f"--overwrite, or choose another {flag}")


def write_array(flag, path, array, overwrite=False):
    """Write ``array`` (points ``(n, d)`` or values ``(n,)``) in the format
    ``path``'s extension names; ``-`` writes CSV to standard output.  Files
    are written atomically (:func:`radref.training.files.atomic_write`), so
    a failure never leaves a half-written file; without ``overwrite`` a file
    that exists (even one created meanwhile by another process) is kept."""
    if path == STDIO:
        _write_text(sys.stdout, array, ",")
        sys.stdout.flush()
        return
    ext = extension(path)
    try:
        with atomic_write(path, "wb" if ext == ".npy" else "w", replace=overwrite) as f:
            if ext == ".npy":
                np.save(f, array)
            else:
                _write_text(f, array, {".csv": ",", ".tsv": "\t"}.get(ext, " "))
    except FileExistsError:
        raise DataFileError(exists_message(flag, path) + " (it appeared while radref "
                            "worked; it is unchanged)") from None
    except OSError as exc:
        raise DataFileError(f"{flag} {path}: cannot write ({exc.strerror})") from None


def _write_text(stream, array, delimiter):
    # 17 significant digits: float64 values read back exactly
    np.savetxt(stream, array, delimiter=delimiter, fmt="%.17g")


"""Lines of math versus lines of guards and speed tricks, per core module (issue #12).

Usage::

    python validation/core_lines.py                  # the working tree
    python validation/core_lines.py --rev b47972b    # a commit (read with ``git show``)
    python validation/core_lines.py --explain surjection [--rev REV]   # every counted line, tagged

What is counted.  The executable lines of each module of ``radref/core``, read
from its syntax tree: for every statement, the physical lines it spans, less
blank and comment-only lines.  Not counted: docstrings, comments, ``import``
statements, ``def`` and ``class`` header lines, and the bodies of classes
(the field declarations of named tuples: data layout, neither math nor a
guard).  A compound statement (``if``, ``for``, ``while``, ``with``, ``try``)
counts its header lines; the statements of its body are counted one by one
(``else:`` lines are syntax and not counted).

How a line is classified.  Every line of one statement gets that statement's
class.  A statement is **guard/speed** if one of the rules below applies, and
**math** otherwise.  The rules are syntactic and fixed in this file, so that
they apply unchanged to any revision, including code written without them in
mind (a per-line tag convention would have to be written into every module,
and would classify code by its author's own say-so):

G0  module: every line of ``numerics.py`` and ``chunks.py`` is guard/speed;
    the first exists only because float64 is finite (range limit, overflow
    thresholds, overflow-safe products), the second only for speed and memory
    (rows a chunk at a time, in threads: issue #26).  A *call* of one of its overflow-safe formulas
    (``SAFE_FORMULAS``: each computes the value of a formula of the paper, for
    any magnitude) is the formula and counts as math; every other numerics
    name is a guard name (rule G2).
G1  argument checking: ``raise`` and ``assert`` statements, the header of an
    ``if`` whose body only raises, calls of the checks of ``radref.checks``,
    and the closing ``return <parameter>`` of a validator (a function whose
    other lines are all guard/speed, e.g. ``k = np.asarray(k); if ...: raise
    ...; return k``).
G2  extreme values: the statement mentions a *guard name* (as a variable,
    function, or attribute): the range and overflow names in ``GUARD_NAMES``
    (numerics' range limit and screening, the overflow machinery the core had
    before issue #12, NumPy's floating-point machinery), the chunking and
    caching names in ``SPEED_NAMES``, and every name made a guard name by G3.
G3  taint: a variable first bound by a G2/G3 statement (``direct =
    _direct(...)``, ``far = out_of_range_rows(z)``, and then ``y = z[~direct]``
    ...) is a guard name in its scope, except where that statement's value is
    a call of a (non-builtin, non-NumPy) function that is no guard name
    (``gate_out = mlp_forward(zero_rows(z, far))`` is the network, at a
    stand-in) or a conditional expression one of whose branches is a math
    variable (``zero_rows(x, out) if any_out else x``).
    Function parameters, and variables first bound by a math statement, stay
    math even if a guard statement rebinds them later (``v = clip(v)``);
    binding a literal constant, or by a G5 statement, taints nothing.  A
    function every counted line of which is guard/speed is a guard name too
    (its calls are guards).  Iterated to a fixed point.
G4  fast path: the header of an ``if`` whose test is a whole-array predicate
    or a shape test (``.all()``, ``.any()``, ``np.all``/``np.any`` without an
    axis, ``.size``, ``.shape``, ``is True``).  If the ``if`` has an
    alternative (an ``else``, or its body ends in ``return`` and statements
    follow) and neither branch holds a guard line by the other rules, the two
    branches compute the same thing and the ``if`` body, the special case, is
    speed as well (the general formula is the math).
G5  plumbing: a statement whose whole value is one allocation or layout call
    (``np.empty``, ``np.zeros``, ``np.ones``, ``np.full`` and their ``_like``
    versions, ``np.asarray``, ``np.broadcast_to``, ``.astype``, ``.reshape``,
    ``.copy``, ``.ravel``, ``.setflags``), and a value copied unchanged into
    part of an array at fixed positions (``rows[..., 0, :] = p_logits``,
    ``dc[..., 9] = dz_b``): the values are the math, where they go is layout
    (an assignment through a mask, ``piece[u < a] = 1``, is math).
G6  speed: a call with an ``out=`` argument (computing into an existing
    array), and decorators in ``SPEED_NAMES`` (``functools.lru_cache``).

Caveats: the rules see syntax, not intent.  A math line that also carries a
guard variable counts as a guard (``FlowCache(..., out)``); a speed trick that
uses no guard name and no fast-path test counts as math (the stacked
log-softmax of ``slopes.py``, a table lookup).  ``--explain`` prints each line
with its class and rule, so every figure can be checked by reading.
"""
import argparse
import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ("softmax", "slopes", "surjection", "gating", "base", "numerics", "mlp", "layer1d",
           "coupling", "layers/masks", "layers/rad", "layers/affine", "flow", "chunks")
#: modules with the issue's goal of at least 80 % math
#: the coupling layers were radref/core/coupling.py until the redesign of issue #12
GOAL_MODULES = ("slopes", "surjection", "gating", "coupling", "layers/rad", "layers/affine")
#: modules with no math at all (rule G0); the table's last row leaves them out
GUARD_MODULES = ("numerics", "chunks")

#: overflow-safe formulas of radref.core.numerics: a call computes a formula's value (math)
SAFE_FORMULAS = {"exp_times", "exp_times_cumulative", "half_squared_norm"}
GUARD_NAMES = {
    # the range limit and the screening of out-of-range rows (radref.core.numerics)
    "RANGE", "all_in_range", "out_of_range_rows", "zero_rows", "out_of_range",
    # overflow thresholds of radref.core.numerics
    "LOG_MAX", "SAFE_LOG_SCALE", "SAFE_FACTOR", "SAFE_SQUARE",
    # the overflow machinery before issue #12 (surjection.py, base.py)
    "_LOG_MAX", "_DIRECT_LOG", "_DIRECT_FACTOR", "_DIRECT", "_within", "_direct",
    "_exp_product", "_exp",
    # NumPy's floating-point machinery
    "errstate", "seterr", "finfo", "nextafter", "ldexp", "frexp", "isfinite", "isnan", "isinf",
    "nan_to_num",
}
BUILTINS = {"bool", "any", "all", "len", "min", "max", "abs", "float", "int"}
SPEED_NAMES = {"CHUNK_ROWS", "chunk_rows", "keep_caches", "lru_cache", "n_jobs"}
PLUMBING_NUMPY = {"empty", "zeros", "ones", "full", "empty_like", "zeros_like", "ones_like",
                  "full_like", "asarray", "ascontiguousarray", "broadcast_to"}
PLUMBING_METHODS = {"astype", "reshape", "copy", "ravel", "setflags"}


def read_source(module, rev=None):
    """Source text of ``radref/core/<module>.py`` (at git revision ``rev``); None if absent."""
    path = f"radref/core/{module}.py"
    if rev is None:
        full = os.path.join(REPO, path)
        if not os.path.exists(full):
            return None
        with open(full, encoding="utf-8") as f:
            return f.read()
    result = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, capture_output=True,
                            text=True)
    return result.stdout if result.returncode == 0 else None


def _names(node):
    """Every identifier a node mentions: variable names and attribute names."""
    found = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            found.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            found.add(sub.attr)
        elif isinstance(sub, ast.arg):
            found.add(sub.arg)
    return found


def _bound_names(stmt):
    """Names a simple statement binds (assignment targets)."""
    targets = []
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
        targets = [stmt.target]
    found = set()
    for target in targets:
        for sub in ast.walk(target):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                found.add(sub.id)
    return found


def _is_docstring(stmt):
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str))


def _is_copy_into_part(stmt):
    """``array[position] = name`` (or an attribute, an indexed name, a constant): a
    value copied unchanged into part of a preallocated array."""
    if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1:
        return False
    target = stmt.targets[0]
    if not isinstance(target, ast.Subscript):
        return False
    if any(isinstance(sub, (ast.Compare, ast.BoolOp)) or (
            isinstance(sub, ast.UnaryOp) and isinstance(sub.op, (ast.Invert, ast.Not)))
           for sub in ast.walk(target.slice)):
        return False  # a masked assignment (piece[u < a] = 1) is a piecewise definition
    value = stmt.value
    return isinstance(value, (ast.Name, ast.Attribute, ast.Constant)) or (
        isinstance(value, ast.Subscript) and isinstance(value.value, (ast.Name, ast.Attribute)))


def _validator_return(function):
    """Lines of a closing ``return <parameter>`` of ``function`` (none if absent)."""
    if function is None or not isinstance(function.body[-1], ast.Return):
        return set()
    last = function.body[-1]
    parameters = {a.arg for a in ast.walk(function.args) if isinstance(a, ast.arg)}
    if isinstance(last.value, ast.Name) and last.value.id in parameters:
        return set(range(last.lineno, last.end_lineno + 1))
    return set()


def _writes_in_place(stmt):
    """A call with an ``out=`` argument (computed into an existing array, for speed)."""
    return any(isinstance(sub, ast.keyword) and sub.arg == "out" for sub in ast.walk(stmt))


def _is_plumbing(stmt):
    value = getattr(stmt, "value", None)
    if not isinstance(stmt, (ast.Assign, ast.Return, ast.Expr)) or not isinstance(value, ast.Call):
        return False
    func = value.func
    if not isinstance(func, ast.Attribute):
        return False
    if isinstance(func.value, ast.Name) and func.value.id == "np":
        return func.attr in PLUMBING_NUMPY
    return func.attr in PLUMBING_METHODS


def _is_fast_path_test(test):
    for sub in ast.walk(test):
        if isinstance(sub, ast.Attribute) and sub.attr in ("size", "shape"):
            return True
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
            if sub.func.attr in ("all", "any") and not any(k.arg == "axis" for k in sub.keywords):
                if isinstance(sub.func.value, ast.Name) and sub.func.value.id == "np":
                    if len(sub.args) < 2:
                        return True
                elif not sub.args:
                    return True
        if isinstance(sub, ast.Compare) and any(isinstance(op, ast.Is) for op in sub.ops):
            if any(isinstance(c, ast.Constant) and c.value is True for c in sub.comparators):
                return True
    return False


class Classifier:
    """Classify the counted lines of one module (see the module docstring)."""

    def __init__(self, source, module):
        self.source = source
        self.module = module
        self.text = source.splitlines()
        self.tree = ast.parse(source)
        self.guard_functions = {alias.asname or alias.name for node in ast.walk(self.tree)
                                if isinstance(node, ast.ImportFrom) and node.module == "radref.checks"
                                for alias in node.names}

    def run(self):
        """``{line number: (class, rule)}`` with class ``"math"`` or ``"guard"``."""
        while True:
            self.lines = {}
            self.function_nodes = {}
            self._block(self.tree.body, scope=_Scope(None))
            new = set()
            for name, node in self.function_nodes.items():
                tags = [self.lines[n][0] for n in self.lines
                        if node.lineno <= n <= node.end_lineno and n not in _validator_return(node)]
                if tags and all(kind == "guard" for kind in tags):
                    new.add(name)
            if new <= self.guard_functions:
                break
            self.guard_functions |= new
        for name in self.guard_functions:  # a validator's return of its argument is a check too
            for n in _validator_return(self.function_nodes.get(name)):
                self.lines[n] = ("guard", "G1")
        if self.module in GUARD_MODULES:
            self.lines = {n: ("guard", "G0") for n in self.lines}
        return self.lines

    # -- lines
    def _counted(self, first, last):
        for number in range(first, last + 1):
            stripped = self.text[number - 1].strip()
            if stripped and not stripped.startswith("#"):
                yield number

    def _tag(self, first, last, kind, rule):
        for number in self._counted(first, last):
            self.lines[number] = (kind, rule)

    # -- rules
    def _guard_names(self, scope):
        return (GUARD_NAMES | SPEED_NAMES | self.guard_functions | scope.all_guard()) \
            - SAFE_FORMULAS

    def _simple_rule(self, stmt, scope):
        if isinstance(stmt, (ast.Raise, ast.Assert)):
            return "G1"
        if _names(stmt) & self._guard_names(scope):
            return "G2" if _names(stmt) & (GUARD_NAMES | SPEED_NAMES) else "G3"
        if _is_plumbing(stmt) or _is_copy_into_part(stmt):
            return "G5"
        if _writes_in_place(stmt):
            return "G6"
        return None

    def _header_rule(self, stmt, scope):
        if isinstance(stmt, ast.If) and stmt.body and all(isinstance(s, ast.Raise)
                                                           for s in stmt.body):
            return "G1"
        header = getattr(stmt, "test", None) or getattr(stmt, "iter", None)
        if isinstance(stmt, ast.With):
            header = ast.Tuple(elts=[item.context_expr for item in stmt.items], ctx=ast.Load())
        if header is not None and _names(header) & self._guard_names(scope):
            return "G2" if _names(header) & (GUARD_NAMES | SPEED_NAMES) else "G3"
        if isinstance(stmt, ast.If) and _is_fast_path_test(stmt.test):
            return "G4"
        return None

    def _taints(self, stmt, scope):
        """Whether a guard statement makes its targets guard names (rule G3): not if
        its value is a call of a math function (``mlp_forward(zero_rows(z, far))``
        is the network, evaluated at a stand-in) or a conditional expression with
        a math variable as one branch (``zero_rows(x, out) if any_out else x``)."""
        value = stmt.value
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
            return value.func.id in self._guard_names(scope) | BUILTINS
        if isinstance(value, ast.IfExp):
            math_names = {n for n, g in scope.all_bindings().items() if not g}
            for branch in (value.body, value.orelse):
                if isinstance(branch, ast.Name) and branch.id in math_names:
                    return False
        return True

    # -- walking
    def _block(self, body, scope):
        index = 0
        while index < len(body):
            stmt = body[index]
            rest = body[index + 1:]
            if _is_docstring(stmt) or isinstance(stmt, (ast.Import, ast.ImportFrom, ast.Pass)):
                pass
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self._function(stmt, scope)
            elif isinstance(stmt, ast.ClassDef):
                for sub in stmt.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        self._function(sub, scope)
            elif isinstance(stmt, (ast.If, ast.For, ast.While, ast.With, ast.Try)):
                self._compound(stmt, rest, scope)
            else:
                rule = self._simple_rule(stmt, scope)
                kind = "math" if rule is None else "guard"
                if not (isinstance(getattr(stmt, "value", None), ast.Constant)):
                    for name in _bound_names(stmt):  # constants and plumbing do not taint
                        scope.bind(name, rule in ("G2", "G3") and self._taints(stmt, scope))
                self._tag(stmt.lineno, stmt.end_lineno, kind, rule or "-")
            index += 1

    def _function(self, node, scope):
        self.function_nodes.setdefault(node.name, node)
        for decorator in node.decorator_list:
            if _names(decorator) & SPEED_NAMES:
                self._tag(decorator.lineno, decorator.end_lineno, "guard", "G6")
        inner = _Scope(scope)
        for arg in ast.walk(node.args):
            if isinstance(arg, ast.arg):
                inner.bind(arg.arg, False)  # parameters are the function's math inputs
        self._block(node.body, inner)

    def _compound(self, stmt, rest, scope):
        first_body = stmt.body[0].lineno
        rule = self._header_rule(stmt, scope)
        self._tag(stmt.lineno, first_body - 1, "guard" if rule else "math", rule or "-")
        if isinstance(stmt, ast.For):
            for name in _bound_names(ast.Assign(targets=[stmt.target], value=stmt.iter)):
                scope.bind(name, rule is not None)
        before = dict(self.lines)
        self._block(stmt.body, scope)
        for handler in getattr(stmt, "handlers", []):
            self._tag(handler.lineno, handler.body[0].lineno - 1, "guard", "G1")
            self._block(handler.body, scope)
        self._block(getattr(stmt, "orelse", []), scope)
        self._block(getattr(stmt, "finalbody", []), scope)
        if rule == "G4":
            self._fast_path_body(stmt, rest, before, scope)

    def _fast_path_body(self, stmt, rest, before, scope):
        if stmt.orelse:
            alternative = stmt.orelse
        elif isinstance(stmt.body[-1], ast.Return) and rest:
            alternative = rest
        else:
            return
        body_lines = [n for n in self.lines if n not in before
                      and stmt.body[0].lineno <= n <= stmt.body[-1].end_lineno]
        if any(self.lines[n][0] == "guard" for n in body_lines):
            return
        scratch = Classifier(self.source, self.module)
        scratch.guard_functions = self.guard_functions
        scratch.lines, scratch.function_nodes = {}, {}
        scratch._block(alternative, scope.copy())
        if any(kind == "guard" for kind, _ in scratch.lines.values()):
            return
        for n in body_lines:
            self.lines[n] = ("guard", "G4")


class _Scope:
    """Which names of a scope were first bound by a guard statement (rule G3)."""

    def __init__(self, parent):
        self.parent = parent
        self.first_binding = {}

    def copy(self):
        twin = _Scope(self.parent)
        twin.first_binding = dict(self.first_binding)
        return twin

    def bind(self, name, guard):
        self.first_binding.setdefault(name, guard)

    def all_bindings(self):
        merged = self.parent.all_bindings() if self.parent else {}
        merged.update(self.first_binding)
        return merged

    def all_guard(self):
        names = {n for n, guard in self.first_binding.items() if guard}
        return names | (self.parent.all_guard() if self.parent else set())


def count(rev=None):
    """``{module: (math lines, guard/speed lines)}`` at ``rev`` (None: working tree)."""
    table = {}
    for module in MODULES:
        source = read_source(module, rev)
        if source is None:
            continue
        lines = Classifier(source, module).run()
        math = sum(1 for kind, _ in lines.values() if kind == "math")
        table[module] = (math, len(lines) - math)
    return table


def markdown(table, title):
    rows = [f"| {title} | lines | math | guard/speed | math % |", "|---|---|---|---|---|"]
    total_math = total_guard = 0
    for module, (math, guard) in table.items():
        total_math += math
        total_guard += guard
        goal = " (goal >= 80 %)" if module in GOAL_MODULES else ""
        rows.append(f"| {module}{goal} | {math + guard} | {math} | {guard} | "
                    f"{100.0 * math / max(1, math + guard):.0f} |")
    rows.append(f"| all | {total_math + total_guard} | {total_math} | {total_guard} | "
                f"{100.0 * total_math / max(1, total_math + total_guard):.0f} |")
    # the modules that hold equations: what a speed trick must not crowd out
    math = sum(m for module, (m, _) in table.items() if module not in GUARD_MODULES)
    guard = sum(g for module, (_, g) in table.items() if module not in GUARD_MODULES)
    rows.append(f"| all but {', '.join(GUARD_MODULES)} | {math + guard} | {math} | {guard} | "
                f"{100.0 * math / max(1, math + guard):.1f} |")
    return "\n".join(rows)


def explain(module, rev=None):
    source = read_source(module, rev)
    if source is None:
        sys.exit(f"radref/core/{module}.py not found" + (f" at {rev}" if rev else ""))
    lines = Classifier(source, module).run()
    text = source.splitlines()
    for number, line in enumerate(text, start=1):
        if number in lines:
            kind, rule = lines[number]
            print(f"{number:4d} {kind:5s} {rule:2s} | {line}")
        else:
            print(f"{number:4d}          | {line}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="git revision to read (default: the working tree)")
    parser.add_argument("--explain", metavar="MODULE", help="print MODULE's lines, tagged")
    args = parser.parse_args(argv)
    if args.explain:
        explain(args.explain, args.rev)
    else:
        print(markdown(count(args.rev), args.rev or "working tree"))


if __name__ == "__main__":
    main()

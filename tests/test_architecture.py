"""The import graph is a tree of layers: no module imports from a layer above it.

Layers, bottom to top (radref/__init__.py):
checks < core < datasets < datasets_nd < training < reference < user.
"""
import ast
import pathlib

import pytest

import radref

PACKAGE = pathlib.Path(radref.__file__).parent
LAYERS = ["radref._version", "radref.checks", "radref.core", "radref.datasets",
          "radref.datasets_nd", "radref.training", "radref.reference", "radref.user"]


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name):
    """Index in LAYERS of the module ``name`` (None for radref itself)."""
    for i in reversed(range(len(LAYERS))):
        if name == LAYERS[i] or name.startswith(LAYERS[i] + "."):
            return i
    return None


def radref_imports(path):
    """Every ``radref...`` module that ``path`` imports, at any depth in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("radref"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.startswith("radref"):
            modules = set()
            # ``from radref.core import slopes`` imports the module radref.core.slopes
            for alias in node.names:
                candidate = PACKAGE.parent.joinpath(*node.module.split("."), alias.name)
                if candidate.with_suffix(".py").exists() or candidate.is_dir():
                    modules.add(f"{node.module}.{alias.name}")
                else:  # a name defined in the module itself
                    modules.add(node.module)
            found |= modules
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def test_every_module_belongs_to_a_layer():
    for path in MODULES:
        name = module_name(path)
        assert name == "radref" or layer_of(name) is not None, name


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_imports_from_a_layer_above_it(path):
    name = module_name(path)
    if name == "radref":  # the package re-exports the public names of every layer
        return
    for imported in radref_imports(path):
        if imported == "radref":
            raise AssertionError(f"{name} imports the top-level package radref")
        assert layer_of(imported) <= layer_of(name), \
            f"{name} (layer {LAYERS[layer_of(name)]}) imports {imported} from a layer above it"


def test_the_check_catches_an_upward_import(tmp_path):
    # the checker itself: a core module importing the user layer is found
    bad = tmp_path / "bad.py"
    bad.write_text("from radref.user.estimators import RadFlow\n")
    imported = radref_imports(bad)
    assert imported == {"radref.user.estimators"}
    assert layer_of("radref.user.estimators") > layer_of("radref.core.flow")


def test_the_user_layer_has_no_god_module():
    """Issue 22: the estimator is a thin adapter (under 400 lines) and no module of
    radref/user exceeds 500 lines."""
    sizes = {p.name: len(p.read_text().splitlines()) for p in (PACKAGE / "user").glob("*.py")}
    assert sizes["estimators.py"] < 400, sizes["estimators.py"]
    assert max(sizes.values()) <= 500, sizes

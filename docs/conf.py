"""Sphinx configuration of radref's documentation site.

Build it from the repository root with

    python -m sphinx -W --keep-going -n -b html docs docs/_build/html

(warnings are errors, every cross-reference must resolve). The pages are the
Markdown files of docs/ read by MyST; docs/notebooks/ holds MyST Markdown
notebooks that myst-nb executes at every build; docs/reference/ is the API
reference generated from the docstrings (autosummary + numpydoc). docs/site.md
says why this tool chain and how the pieces fit.
"""
import base64
import hashlib
import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.transforms import SphinxTransform

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(REPO))  # autodoc imports the radref of this checkout

import radref  # noqa: E402  (after the path set-up on purpose)

project = "radref"
author = "the radref authors"
copyright = "the radref authors, MIT licence"
version = release = radref.__version__

extensions = [
    "myst_nb",  # MyST Markdown pages and executed notebooks (includes myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx.ext.mathjax",
]

# .rst first: autosummary writes its generated stubs (reStructuredText) with the
# first suffix
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
root_doc = "index"
templates_path = ["_templates"]
# notebooks/*.ipynb: what the notebooks' documented headless run writes beside
# its .md (docs/notebooks/index.md); the .md is the source, and both would be
# two files for one document
exclude_patterns = ["_build", "_vendor", "**.ipynb_checkpoints", "jupyter_execute",
                    "notebooks/*.ipynb"]
# every reference must resolve (-n on the command line turns this on as well)
nitpicky = True
# golden.md shows the JSON schema with "..." for elided parts: not valid JSON,
# highlighted as plain text after this warning
suppress_warnings = ["misc.highlighting_failure"]

# ---------------------------------------------------------------- MyST
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
# GitHub-style anchors for `page.md#section` links (the pages are read on
# GitHub too); 4 levels covers every heading the pages link to
myst_heading_anchors = 4

# ---------------------------------------------------------------- notebooks
# Every notebook is executed at every build, so a notebook that no longer runs
# against the current package fails the build (and the test that builds it).
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# ---------------------------------------------------------------- API reference
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {
    "members": True,
    "undoc-members": True,  # module constants the docstrings refer to (PROBLEMS, ...)
    "member-order": "bysource",
    # the estimators' methods live on a shared base class; not Python's own
    # (the command line's argparse subclasses would list argparse's methods)
    "inherited-members": ("object,BaseException,tuple,dict,"
                          "ArgumentParser,_ActionsContainer,_AttributeHolder,HelpFormatter"),
}
autodoc_typehints = "none"  # numpydoc sections state the types and shapes
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# Names the reference cannot link: NumPy's and Python's own (intersphinx would
# need the network, which the CI build does not have) and private helpers,
# which docstrings mention for readers of the code but the reference leaves out.
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|math|typing|collections|builtins|pathlib|argparse)(\..*)?"),
    (r"py:.*", r"(.*\.)?_[A-Za-z0-9].*"),
    # argparse's own docstrings type a message as "string" (ArgumentParser.error,
    # whose docstring the command line's parser inherits)
    (r"py:class", r"string"),
]

# ---------------------------------------------------------------- math
# MathJax comes from the npm registry, pinned, and is served from the site
# itself: the site works offline and never loads a script from another host.
MATHJAX_VERSION = "3.2.2"
#: the registry's own integrity hash of that tarball (npm view mathjax@3.2.2 dist.integrity)
MATHJAX_INTEGRITY = ("sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/"
                     "FEsPsjKPZGJvtRZM1vO+geW0OhGw==")
VENDOR = DOCS / "_vendor"


def _stop(message):
    """End the build with ``message`` and nothing else.

    Sphinx reports an exception raised here (and a ``sys.exit``) as a
    "Configuration error!" of 40 lines, versions and a traceback, with the
    message somewhere inside; a reader who only lacks npm should see what
    to do, so this prints the message and exits at once (the build has
    written nothing yet)."""
    sys.stdout.flush()
    print(f"\ndocs/conf.py: {message}\n", file=sys.stderr, flush=True)
    os._exit(2)


def _vendor_mathjax():
    """Unpack MathJax's es5 build into docs/_vendor/mathjax (once)."""
    target = VENDOR / "mathjax"
    stamp = target / ".version"
    if stamp.is_file() and stamp.read_text() == MATHJAX_VERSION:
        return
    npm = shutil.which("npm")
    if npm is None:
        _stop(f"the site serves MathJax {MATHJAX_VERSION}, which the build fetches "
              "(once) from the npm registry with npm, and npm is not on the PATH.\n"
              "Install it (Debian, Ubuntu: apt-get install npm; elsewhere Node.js, "
              "which includes npm), then build again.")
    with tempfile.TemporaryDirectory() as tmp:
        fetch = subprocess.run([npm, "pack", "--loglevel=error", f"mathjax@{MATHJAX_VERSION}"],
                               cwd=tmp, capture_output=True, text=True)
        if fetch.returncode != 0:
            said = "\n".join("    " + line for line in fetch.stderr.strip().splitlines()[-6:])
            _stop(f"npm pack mathjax@{MATHJAX_VERSION} failed (exit status "
                  f"{fetch.returncode}); npm said:\n{said}\n"
                  "The build fetches MathJax (once) from the npm registry (npm config get "
                  "registry names it): check that this machine reaches it, then build again.")
        tarball = Path(tmp) / f"mathjax-{MATHJAX_VERSION}.tgz"
        digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
        if f"sha512-{digest}" != MATHJAX_INTEGRITY:
            _stop(f"{tarball.name} from the npm registry is not the tarball pinned here "
                  "(its sha512 differs): the registry, or a proxy on the way, served other "
                  "bytes; nothing was unpacked.")
        with tarfile.open(tarball) as archive:
            try:
                archive.extractall(tmp, filter="data")
            except TypeError:  # Python before 3.10.12 / 3.11.4: the hash above vouches for it
                archive.extractall(tmp)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(Path(tmp) / "package" / "es5", target)
        shutil.copy(Path(tmp) / "package" / "LICENSE", target / "LICENSE")
    stamp.write_text(MATHJAX_VERSION)


_vendor_mathjax()
# copied to _static/: _static/mathjax/tex-chtml.js, _static/radref.svg
html_static_path = ["_vendor", "_static"]
mathjax_path = "mathjax/tex-chtml.js"
# textmacros: \texttt{log\_p} in the pages shows log_p, not log\_p
mathjax3_config = {"loader": {"load": ["[tex]/textmacros"]},
                   "tex": {"packages": {"[+]": ["textmacros"]}}}

# ---------------------------------------------------------------- HTML
html_theme = "pydata_sphinx_theme"
html_title = f"radref {release}"
html_favicon = "_static/radref.svg"
# the site's own rules (why each, in the file)
html_css_files = ["radref.css"]
html_theme_options = {
    # the first five pages of the toctree (docs/index.md) in the navigation bar,
    # the others under "More": five and the search field fit one line in a window
    # 1100 pixels wide (narrower, the theme moves the search field to a second
    # line; below 960, everything goes into a menu)
    "header_links_before_dropdown": 5,
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
# an explicit colour mode: without one the theme logs an error to the console
html_context = {"default_mode": "light"}
# a left sidebar only where there is a section to navigate
html_sidebars = {"*": [], "notebooks/*": ["sidebar-nav-bs"], "reference/**": ["sidebar-nav-bs"]}
html_show_sourcelink = False
html_last_updated_fmt = None


# ---------------------------------------------------------------- links to the repository
# The pages are also read on GitHub, so they link to source files by path
# (`[slopes_forward](../radref/core/slopes.py)`). On the site such a link goes
# to the API reference instead: to the member its text names when the
# reference documents it, else to the module's page. Links to other files of
# the repository (tests/, validation/) are served as downloads by MyST.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z_0-9]*(?:\.[A-Za-z_][A-Za-z_0-9]*)*")
#: a link text that is a file's name or path (``model.md``, ``core/slopes.py``):
#: on the site, where readers see pages and not files, no link shows one
#: (tests/test_site.py), except a download link, whose text is the file it gets
_FILE_NAME = re.compile(r"[\w./-]*\w\.(md|py|ipynb|html)|[\w.-]+/")


def _module_of_path(path):
    """Dotted module name of ``path`` (absolute) if it is a radref source file,
    following the radref 0.x flat paths (radref/slopes.py is radref.core.slopes)."""
    try:
        relative = Path(path).resolve().relative_to(REPO)
    except ValueError:
        return None
    if relative.parts[:1] != ("radref",) or relative.suffix != ".py":
        return None
    dotted = ".".join(relative.with_suffix("").parts)
    dotted = dotted.removesuffix(".__init__")
    try:
        return importlib.import_module(dotted).__name__  # the alias gives the new home
    except ImportError:
        return None


def _member_target(module_name, text):
    """Full name of the object ``text`` names in ``module_name`` (``slopes_forward``,
    ```Density(pdf, ...)```, ``RadFlow.transform``), where it is defined; None
    if the text names no member."""
    match = _IDENTIFIER.match(text.strip().strip("`"))
    if match is None:
        return None
    obj = importlib.import_module(module_name)
    for part in match.group(0).split("."):
        if not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    if inspect.ismodule(obj):
        return obj.__name__
    defined_in = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if defined_in and qualname and (inspect.isclass(obj) or inspect.isroutine(obj)):
        return f"{defined_in}.{qualname}"
    return f"{module_name}.{match.group(0)}"


class RepositoryLinks(SphinxTransform):
    """Turn MyST links to radref source files into Python cross-references."""

    default_priority = 5

    def apply(self):
        for node in list(self.document.findall(addnodes.pending_xref)) + list(
                self.document.findall(addnodes.download_reference)):
            if node.get("reftype") != "myst" or node.get("refdomain") not in (None, ""):
                continue
            target = node["reftarget"].split("#", 1)[0]
            _, path = self.env.relfn2path(target, self.env.docname)
            if Path(path).is_dir() and REPO in Path(path).resolve().parents:
                # a folder of the repository: no page to go to, keep the text
                node.replace_self(nodes.literal(target, node.astext()))
                continue
            module_name = _module_of_path(path)
            if module_name is None:
                continue
            member = _member_target(module_name, node.astext())
            xref = addnodes.pending_xref(
                "", refdomain="py", reftype="obj" if member else "mod",
                reftarget=member or module_name, refexplicit=True, refwarn=True,
                refdoc=self.env.docname, radref_module=module_name)
            if _FILE_NAME.fullmatch(node.astext().strip("`")):
                # the text is the file's path, right on GitHub; here the link
                # goes to the module's page, so it shows the module's name
                xref += nodes.literal(module_name, module_name)
            elif not node.children:
                xref += nodes.literal(node.astext(), node.astext())
            else:
                xref += node.children[0].deepcopy()
            node.replace_self(xref)


def _member_fallback(app, env, node, contnode):
    """A link whose text names a member the reference does not document (a
    private helper, an undocumented constant) goes to its module's page."""
    module_name = node.get("radref_module")
    if not module_name or node.get("reftype") != "obj":
        return None
    domain = env.domains["py"]
    return domain.resolve_xref(env, node["refdoc"], app.builder, "mod", module_name,
                               node, contnode)


# ---------------------------------------------------------------- docstrings
# radref's docstrings are written to be read as plain text (help(), an
# editor): outside ``literals`` they use |x| for absolute values and names like
# alpha_- or alpha_+, which reStructuredText would take for substitutions and
# hyperlink targets. Escape those two characters there, so each docstring
# renders as it reads. Literal blocks (after "::") and directives (".. math::")
# are left alone.
_INLINE_MARKUP = re.compile(r"(``.+?``|:[a-z:]+:`[^`]*`|`[^`]*`_{0,2})")


def _escape_plain_text(text):
    pieces = _INLINE_MARKUP.split(text)
    for i in range(0, len(pieces), 2):  # even pieces are outside inline markup
        pieces[i] = re.sub(r"(?<!\\)\|", r"\\|", pieces[i])
        pieces[i] = re.sub(r"(?<=\w)_(?=$|[^\w`])", r"\\_", pieces[i])
    return "".join(pieces)


def _escape_docstring(app, what, name, obj, options, lines):
    block_indent = None  # indentation of the line that opened a literal block
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if block_indent is not None:
            if not line.strip() or indent > block_indent:
                continue
            block_indent = None
        stripped = line.strip()
        if stripped.startswith(".. ") or stripped.endswith("::"):
            block_indent = indent
            if stripped.startswith(".. "):
                continue
        lines[i] = _escape_plain_text(line)


def _import_object(dotted):
    """The object a dotted name documents (``radref.user.estimators.RadFlow.fit``)."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            obj = getattr(obj, part)
        return getattr(obj, "__func__", obj)  # a classmethod: the one function
    raise ImportError(dotted)


def _unique_python_target(app, env, node, contnode):
    """Resolve a short Python name in a docstring that Sphinx's scoped lookup
    misses: :class:`RadFlow` in a summary table shown on another module's
    page, :meth:`fit` of an estimator named in an exception's docstring, or
    :data:`PROBLEMS`, a module constant without an entry of its own.

    It goes to the one documented object of that name (several documented
    names count as one when they are the same object, e.g. a method both
    estimators inherit); a module attribute without an entry goes to its
    module's page. Anything else stays unresolved, and the build fails."""
    if node.get("refdomain") != "py" or node.get("radref_module"):
        return None
    from sphinx.util.nodes import make_refnode
    target = node["reftarget"].lstrip("~.")
    domain = env.domains["py"]
    matches = sorted(name for name in domain.objects
                     if name == target or name.endswith("." + target))
    if matches and len({id(_import_object(name)) for name in matches}) == 1:
        entry = domain.objects[matches[0]]
        return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id,
                            contnode, matches[0])
    module_name = node.get("py:module")
    if not matches and module_name and "." not in target \
            and hasattr(importlib.import_module(module_name), target) \
            and module_name in domain.modules:
        module = domain.modules[module_name]
        return make_refnode(app.builder, node["refdoc"], module.docname, module.node_id,
                            contnode, module_name)
    return None


def _write_ipynb(app, exception):
    """Put an .ipynb of every notebook (without outputs: run it yourself) next
    to its page, for people who prefer Jupyter's own files."""
    if exception is not None or app.builder.format != "html":
        return
    import jupytext
    for source in sorted((DOCS / "notebooks").glob("*.md")):
        if "jupytext" not in source.read_text(encoding="utf-8")[:400]:
            continue  # a plain page of the folder, not a notebook
        notebook = jupytext.read(source)
        out = Path(app.outdir) / "notebooks" / f"{source.stem}.ipynb"
        out.parent.mkdir(parents=True, exist_ok=True)
        jupytext.write(notebook, out, fmt="ipynb")


def setup(app):
    app.add_transform(RepositoryLinks)
    app.connect("missing-reference", _member_fallback)
    app.connect("missing-reference", _unique_python_target)
    app.connect("autodoc-process-docstring", _escape_docstring, priority=400)
    app.connect("build-finished", _write_ipynb)
    return {"parallel_read_safe": True}

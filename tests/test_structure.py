"""House rules, checked statically on src/bitsback (and, for the K = 0 path, by running it).

1. No module uses another module's underscore-prefixed names: ``from X import _name``,
   ``mod._name`` / ``getattr(mod, "_name")`` where ``mod`` is bound by an import of another
   bitsback module. A private *module* (own name starting with "_", e.g. ``bitsback._rans``,
   ``bitsback.cdf._coder``) may be imported only from its own package and its subpackages.
   Dunder names (``__version__``) are public; ``self._x`` / ``cls._x`` are not imports.
2. No import cycles among bitsback modules, lazy (function-level) imports included.
3. The K = 0 coding path imports neither torch nor onnx (onnxruntime is expected).

The checkers take a source root and a package name so that the self-test below can run
them on a small synthetic package with known violations.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "bitsback"
FIXTURE = Path(__file__).parent / "fixtures" / "mnist-t10k-first64-idx3-ubyte.gz"


# --------------------------------------------------------------------------- the package


@dataclass
class Module:
    name: str           # dotted, e.g. "bitsback.cdf.latent"; a package's __init__ is the package
    path: Path
    is_package: bool
    tree: ast.Module | None = None   # None for modules without Python source (.pyx, .so)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@functools.lru_cache(maxsize=None)   # the two static tests share one parse
def discover(src: Path, package: str) -> dict[str, Module]:
    """Every module of ``package`` under ``src``: .py files parsed; .pyx / extension modules
    known by name only (so ``from . import _rans`` resolves to a module)."""
    mods: dict[str, Module] = {}
    pkg_dir = src / package
    for path in sorted(pkg_dir.rglob("*")):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        rel = path.relative_to(src)
        if path.suffix == ".py":
            stem = path.stem
        elif path.suffix in (".pyx", ".so", ".pyd"):
            stem = path.name.split(".")[0]
        else:
            continue
        # only directories that are packages (have an __init__.py) hold modules
        if not all((src.joinpath(*rel.parts[: i + 1]) / "__init__.py").is_file() for i in range(len(rel.parts) - 1)):
            continue
        parts = list(rel.parts[:-1])
        is_pkg = stem == "__init__"
        if not is_pkg:
            parts.append(stem)
        name = ".".join(parts)
        if path.suffix == ".py":
            mods[name] = Module(name, path, is_pkg, ast.parse(path.read_bytes(), str(path)))
        else:
            mods.setdefault(name, Module(name, path, False))
    return mods


def _from_base(mod: Module, node: ast.ImportFrom) -> str | None:
    """The absolute module named by a ``from ... import`` (None if it climbs out of the tree)."""
    if not node.level:
        return node.module
    parts = mod.name.split(".") if mod.is_package else mod.name.split(".")[:-1]
    up = node.level - 1
    if up > len(parts) - 1:
        return None
    parts = parts[: len(parts) - up]
    return ".".join(parts + ([node.module] if node.module else []))


def _in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _private_module_issue(importer: str, target: str) -> str | None:
    """A private module (any private component of ``target``) may only be imported from its
    own package and that package's subpackages."""
    parts = target.split(".")
    for i in range(1, len(parts)):
        if is_private(parts[i]):
            pkg = ".".join(parts[:i])
            if not _in_package(importer, pkg):
                return f"uses private module {target} (only {pkg} and its subpackages may)"
    return None


# --------------------------------------------------------------------------- scopes

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef,
           ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


class _Scope:
    """Names bound in one scope, flow-insensitively: name -> the modules it may be bound to
    (an empty set: bound, but never to a module of ours, so it shadows outer scopes)."""

    def __init__(self, parent: "_Scope | None", is_class: bool = False):
        self.parent, self.is_class = parent, is_class
        self.names: dict[str, set[str]] = {}
        self.globals: set[str] = set()

    def bind(self, name: str, modules=()) -> bool:
        """Record a binding; True when it added a module to the name."""
        if name in self.globals and self.parent is not None:
            return self.module_scope().bind(name, modules)
        have = self.names.setdefault(name, set())
        new = set(modules) - have
        have |= new
        return bool(new)

    def module_scope(self) -> "_Scope":
        s = self
        while s.parent is not None:
            s = s.parent
        return s

    def lookup(self, name: str) -> set[str]:
        s, first = self, True
        while s is not None:
            if name in s.globals:
                return s.module_scope().names.get(name, set())
            if (first or not s.is_class) and name in s.names:
                return s.names[name]
            s, first = s.parent, False
        return set()


def _walk_scoped(tree: ast.Module):
    """(node, scope) for every node, and the module scope. A function's decorators, defaults
    and a class's bases are attributed to the inner scope (a simplification: they only
    matter if a parameter shadows a module name in its own default)."""
    pairs: list[tuple[ast.AST, _Scope]] = []
    root = _Scope(None)
    stack = [(tree, root)]
    while stack:
        node, scope = stack.pop()
        pairs.append((node, scope))
        for child in ast.iter_child_nodes(node):
            if isinstance(child, _SCOPES):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    scope.bind(child.name)
                inner = _Scope(scope, is_class=isinstance(child, ast.ClassDef))
                args = getattr(child, "args", None)
                if isinstance(args, ast.arguments):
                    for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
                        if a is not None:
                            inner.bind(a.arg)
                stack.append((child, inner))
            else:
                stack.append((child, scope))
    return pairs, root


# --------------------------------------------------------------------------- rule 1


def private_access_violations(src: Path = SRC, package: str = PACKAGE) -> list[str]:
    mods = discover(src, package)
    out: list[str] = []
    for mod in mods.values():
        if mod.tree is None:
            continue
        rel = _rel(mod.path, src)
        pairs, _ = _walk_scoped(mod.tree)

        def report(node, what):
            out.append(f"{rel}:{node.lineno}: {what}")

        def modules_of(expr, scope) -> set[str]:
            """The modules of ours an expression may evaluate to: a name bound to one, or a
            submodule reached by attributes (``cdf.latent``)."""
            if isinstance(expr, ast.Name):
                return scope.lookup(expr.id)
            if isinstance(expr, ast.Attribute):
                return {f"{b}.{expr.attr}" for b in modules_of(expr.value, scope) if f"{b}.{expr.attr}" in mods}
            return set()

        for node, scope in pairs:          # `global x` first: it redirects x's bindings
            if isinstance(node, ast.Global):
                scope.globals.update(node.names)
        # pass 1: bindings (and the import statements' own violations)
        aliases = []
        for node, scope in pairs:
            if isinstance(node, ast.Import):
                for a in node.names:
                    ours = _in_package(a.name, package)
                    if ours:
                        issue = _private_module_issue(mod.name, a.name)
                        if issue:
                            report(node, f"import {a.name}: {issue}")
                    if a.asname:
                        scope.bind(a.asname, {a.name} if ours else ())
                    else:
                        top = a.name.split(".")[0]
                        scope.bind(top, {top} if ours else ())
            elif isinstance(node, ast.ImportFrom):
                base = _from_base(mod, node)
                ours = base is not None and _in_package(base, package)
                if ours:
                    issue = _private_module_issue(mod.name, base)
                    if issue:
                        report(node, f"from {base} import ...: {issue}")
                for a in node.names:
                    if a.name == "*":
                        continue
                    sub = f"{base}.{a.name}" if ours else None
                    is_mod = sub in mods
                    if ours:
                        if is_mod:
                            issue = _private_module_issue(mod.name, sub)
                            if issue:
                                report(node, f"from {base} import {a.name}: {issue}")
                        elif is_private(a.name) and base != mod.name:
                            report(node, f"from {base} import {a.name}: private name of another module")
                    scope.bind(a.asname or a.name, {sub} if is_mod else ())
            elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                scope.bind(node.id)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                scope.bind(node.name)
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                # module aliases: `lat = cdf.latent`, `a, b = cdf.latent, cdf.logistic`
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    if isinstance(t, ast.Name):
                        aliases.append((scope, t.id, node.value))
                    elif (isinstance(t, (ast.Tuple, ast.List)) and isinstance(node.value, (ast.Tuple, ast.List))
                          and len(t.elts) == len(node.value.elts)):
                        aliases += [(scope, e.id, v) for e, v in zip(t.elts, node.value.elts) if isinstance(e, ast.Name)]
        changed = True
        while changed:                     # aliases of aliases
            changed = False
            for scope, name, value in aliases:
                changed |= scope.bind(name, modules_of(value, scope))

        # pass 2: attribute access through names bound to modules
        def check_attr(node, bases, attr):
            for base in sorted(bases):
                if base == mod.name:
                    continue
                sub = f"{base}.{attr}"
                if sub in mods:
                    issue = _private_module_issue(mod.name, sub)
                    if issue:
                        report(node, f"{ast.unparse(node)}: {issue}")
                elif is_private(attr):
                    report(node, f"{ast.unparse(node)}: private name of module {base}")

        for node, scope in pairs:
            if isinstance(node, ast.Attribute):
                check_attr(node, modules_of(node.value, scope), node.attr)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2
                  and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
                check_attr(node, modules_of(node.args[0], scope), node.args[1].value)
    return sorted(set(out), key=_line_key)


def _rel(path: Path, src: Path) -> str:
    """``src/bitsback/x.py`` for this repository's files, ``pk/x.py`` for the self-test's."""
    return (path.relative_to(ROOT) if ROOT in path.parents else path.relative_to(src)).as_posix()


def _line_key(s: str):
    path, line, _ = s.split(":", 2)
    return path, int(line), s


# --------------------------------------------------------------------------- rule 2


def import_graph(src: Path = SRC, package: str = PACKAGE) -> dict[str, dict[str, list[str]]]:
    """module -> {imported module: [evidence "path:line (lazy)", ...]} over bitsback modules.

    ``import a.b.c`` imports a.b.c; ``from P import n`` imports P.n when that is a module,
    and P itself unless P is the importer or one of its enclosing packages (those are
    already being initialised when the importer runs, so ``from . import sub`` is no
    dependency on the package's __init__); a name that is not a module is taken from P.
    Importing a module also runs its enclosing packages' __init__: those not enclosing the
    importer count too. Dynamic imports (importlib) are not seen.
    """
    mods = discover(src, package)
    graph: dict[str, dict[str, list[str]]] = {m: {} for m in mods}

    def enclosing(importer: str, pkg: str) -> bool:
        return _in_package(importer, pkg) and (pkg != importer or mods[importer].is_package)

    def add(mod: Module, target: str, node, lazy: bool, how: str):
        # the target, plus its enclosing packages that do not enclose the importer
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            t = ".".join(parts[:i])
            if t not in mods or t == mod.name:
                continue
            if i < len(parts) and enclosing(mod.name, t):
                continue
            rel = _rel(mod.path, src)
            ev = f"{rel}:{node.lineno}{' (lazy)' if lazy else ''}{'' if t == target else ' (package of ' + target + ')'}"
            graph[mod.name].setdefault(t, []).append(ev)

    for mod in mods.values():
        if mod.tree is None:
            continue
        for node, lazy in _imports(mod.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if _in_package(a.name, package):
                        add(mod, a.name, node, lazy, "import")
            elif isinstance(node, ast.ImportFrom):
                base = _from_base(mod, node)
                if base is None or not _in_package(base, package):
                    continue
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    if a.name != "*" and sub in mods:
                        add(mod, sub, node, lazy, "from")
                        if base != mod.name and not enclosing(mod.name, base):
                            add(mod, base, node, lazy, "from")
                    else:
                        add(mod, base, node, lazy, "from")
    for m in graph:
        graph[m].pop(m, None)
        for t in graph[m]:
            graph[m][t] = sorted(set(graph[m][t]), key=lambda e: int(e.split(":")[1].split()[0]))
    return graph


def _imports(tree: ast.AST, lazy: bool = False):
    """(import statement, whether it sits inside a function) for every import in ``tree``."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, lazy
        elif isinstance(child, ast.stmt) or isinstance(child, ast.excepthandler) or isinstance(child, ast.match_case):
            # imports are statements: expressions never hold one (lambdas cannot)
            yield from _imports(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))


def strongly_connected(graph: dict[str, dict]) -> list[list[str]]:
    """Tarjan's SCCs with more than one module, or one module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, out = set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def simple_cycles(graph: dict[str, dict], comp: list[str], limit: int = 50) -> list[list[str]]:
    """Elementary cycles within one SCC, each starting at its smallest module (at most ``limit``)."""
    order = {v: i for i, v in enumerate(sorted(comp))}
    cycles: list[list[str]] = []
    for s in sorted(comp):
        path = [s]

        def dfs(v):
            for w in sorted(graph.get(v, ())):
                if len(cycles) >= limit:
                    return
                if w == s:
                    cycles.append(path + [s])
                elif w in order and order[w] > order[s] and w not in path:
                    path.append(w)
                    dfs(w)
                    path.pop()

        dfs(s)
    return sorted(cycles, key=lambda c: (len(c), c))


def cycle_report(graph, comps) -> list[str]:
    lines = []
    for comp in comps:
        lines.append(f"cycle group ({len(comp)} modules): {', '.join(comp)}")
        for cyc in simple_cycles(graph, comp):
            lines.append("  cycle: " + " -> ".join(cyc))
            for a, b in zip(cyc, cyc[1:]):
                lines.append(f"    {a} -> {b}: {'; '.join(graph[a][b])}")
    return lines


# --------------------------------------------------------------------------- the tests


def test_no_cross_module_private_access():
    found = private_access_violations()
    assert not found, (f"{len(found)} uses of another module's private names or of private modules "
                       "from outside their package:\n" + "\n".join(found))


def test_no_import_cycles():
    graph = import_graph()
    comps = strongly_connected(graph)
    assert not comps, "import cycles among bitsback modules (lazy imports included):\n" + "\n".join(
        cycle_report(graph, comps))


K0_SCRIPT = r"""
import importlib.abc, json, sys, traceback

first = {}
class Spy(importlib.abc.MetaPathFinder):      # where torch / onnx got imported from, if they do
    def find_spec(self, name, path=None, target=None):
        if name in ("torch", "onnx") and name not in first:
            frames = [f for f in traceback.format_stack()[:-1] if "<frozen" not in f]
            first[name] = "".join(frames[-8:])
        return None
sys.meta_path.insert(0, Spy())

import numpy as np
import bitsback
from bitsback import datasets

names, fixture = json.loads(sys.argv[1]), sys.argv[2]
images = datasets.load(fixture)[:6]
for name in names:
    x = datasets.binarize(images) if "binary" in name else images
    codec = bitsback.load(name, device="cpu")
    y = codec.decompress(codec.compress(x))
    assert y.dtype == np.uint8 and y.shape == x.shape and np.array_equal(y, x), name
print(json.dumps({"torch": "torch" in sys.modules, "onnx": "onnx" in sys.modules,
                  "onnxruntime": "onnxruntime" in sys.modules, "where": first}))
"""


def test_k0_path_imports_neither_torch_nor_onnx():
    zoo = SRC / PACKAGE / "zoo"
    names = sorted(p.name for p in zoo.iterdir() if (p / "manifest.json").is_file())
    if not names:
        pytest.skip("no bundled models in src/bitsback/zoo")
    r = subprocess.run([sys.executable, "-c", K0_SCRIPT, json.dumps(names), str(FIXTURE)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, f"K = 0 round trip failed for {names}:\n{r.stdout}\n{r.stderr[-4000:]}"
    res = json.loads(r.stdout.strip().splitlines()[-1])
    where = "\n".join(f"{k} first imported at:\n{v}" for k, v in res["where"].items())
    assert not res["torch"] and not res["onnx"], f"K = 0 path imported {res}:\n{where}"
    assert res["onnxruntime"]


# --------------------------------------------------------------------------- self-test


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))


def test_checkers_on_a_synthetic_package(tmp_path):
    _write(tmp_path, {
        "pk/__init__.py": """
            __version__ = "1"
            from .errors import Error
            def load():
                from .codec import Codec
                return Codec()
        """,
        "pk/errors.py": "class Error(Exception):\n    pass\n",
        "pk/_rans.pyx": "# cython\n",
        "pk/codec.py": """
            import os
            from . import _rans, errors
            from .errors import Error as _E
            from .cdf import latent as _lat
            import pk.cdf.latent as L
            class Codec:
                _own = 1
                def f(self):
                    return self._x, type(self)._own, os._exit, errors.__doc__, _rans.Messages
            def _helper():
                return _lat._RES, L._TABLE, L.public
            def shadowed(L):
                return L._TABLE
            def lazy():
                from . import engine
                return getattr(engine, "_secret"), engine.run
            alias, other = L, os
            def use_alias():
                return alias._TABLE, other._x
        """,
        "pk/engine.py": """
            from .codec import Codec, _helper
            import pk
            from .cdf import _coder
            def run():
                return pk.cdf._coder, pk.__version__, pk.codec._helper
        """,
        "pk/cdf/__init__.py": "from . import latent\nfrom ._coder import run\n",
        "pk/cdf/_coder.py": "from .. import _rans\nfrom ..errors import Error\nrun = 1\n",
        "pk/cdf/latent.py": """
            from ._coder import run
            _RES = 1
            _TABLE = 2
            public = 3
            def g():
                import pk.cdf._coder as c
                return c._private
        """,
    })
    got = set(private_access_violations(tmp_path, "pk"))
    assert got == {
        "pk/codec.py:12: _lat._RES: private name of module pk.cdf.latent",
        "pk/codec.py:12: L._TABLE: private name of module pk.cdf.latent",
        "pk/codec.py:17: getattr(engine, '_secret'): private name of module pk.engine",
        "pk/codec.py:20: alias._TABLE: private name of module pk.cdf.latent",
        "pk/engine.py:2: from pk.codec import _helper: private name of another module",
        "pk/engine.py:4: from pk.cdf import _coder: uses private module pk.cdf._coder (only pk.cdf and its subpackages may)",
        "pk/engine.py:6: pk.cdf._coder: uses private module pk.cdf._coder (only pk.cdf and its subpackages may)",
        "pk/engine.py:6: pk.codec._helper: private name of module pk.codec",
        "pk/cdf/latent.py:8: c._private: private name of module pk.cdf._coder",
    }, "\n".join(sorted(got))

    graph = import_graph(tmp_path, "pk")
    assert set(graph["pk.codec"]) == {"pk._rans", "pk.errors", "pk.cdf", "pk.cdf.latent", "pk.engine"}
    assert set(graph["pk.cdf._coder"]) == {"pk._rans", "pk.errors"}        # `from .. import _rans`: not pk
    assert set(graph["pk.cdf.latent"]) == {"pk.cdf._coder"}                # its own package is not an edge
    assert set(graph["pk"]) == {"pk.errors", "pk.codec"}
    assert set(graph["pk.engine"]) == {"pk.codec", "pk", "pk.cdf", "pk.cdf._coder"}
    comps = strongly_connected(graph)
    assert comps == [["pk", "pk.codec", "pk.engine"]], comps     # pk.cdf imports nothing of them
    assert simple_cycles(graph, comps[0]) == [["pk.codec", "pk.engine", "pk.codec"],
                                              ["pk", "pk.codec", "pk.engine", "pk"]]

"""The package stays one a newcomer can change: small modules and classes, imports in one direction.

Pure Python (`ast`), no TensorFlow: under a second.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "bitat_tf"
MAX_CLASS_LINES = 200
MAX_MODULE_LINES = 400


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def _name(path):
    return path.relative_to(PACKAGE).as_posix()


def _lines(path):
    return len(path.read_text().splitlines())


def _classes(path):
    tree = ast.parse(path.read_text())
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]


def test_no_module_is_longer_than_its_limit():
    sizes = sorted(((_lines(p), _name(p)) for p in _modules()), reverse=True)
    print("largest modules:", ", ".join(f"{name} {lines}" for lines, name in sizes[:5]))
    over = [(name, lines) for lines, name in sizes if lines > MAX_MODULE_LINES]
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them by responsibility): {over}"


def test_no_class_is_longer_than_200_lines():
    sizes = sorted(((lines, f"{_name(p)}:{cls}") for p in _modules() for cls, lines in _classes(p)), reverse=True)
    print("largest classes:", ", ".join(f"{name} {lines}" for lines, name in sizes[:5]))
    over = [(name, lines) for lines, name in sizes if lines > MAX_CLASS_LINES]
    assert not over, f"classes over {MAX_CLASS_LINES} lines (split them into mixins or collaborators): {over}"


def _module_of(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(module):
    path = PACKAGE.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _imports(path):
    """The package's modules that `path` imports when it is imported (not those imported inside functions)."""
    found = set()
    for node in ast.parse(path.read_text()).body:  # module level; a function's imports run later
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("bitat_tf")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("bitat_tf"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if _exists(child) else node.module)
    return {m for m in found if m != "bitat_tf"}  # the package's __init__ loads its names lazily


def _cycle(graph):
    """One import cycle of `graph` (module -> modules), or None."""
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                return stack[stack.index(imported):] + [imported]
            if imported not in state:
                found = visit(imported)
                if found:
                    return found
        state[module] = "done"
        stack.pop()
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_modules_import_each_other_in_one_direction():
    graph = {_module_of(p): _imports(p) for p in _modules()}
    assert "bitat_tf.engine" in graph["bitat_tf.progressive"] and "bitat_tf.engine" in graph["bitat_tf.baselines"]
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_methods_are_peers_under_the_dispatcher():
    """`binarize` (api.py) dispatches to both methods; neither method's module imports the other's."""
    graph = {_module_of(p): _imports(p) for p in _modules()}
    assert {"bitat_tf.progressive", "bitat_tf.baselines"} <= graph["bitat_tf.api"]
    assert "bitat_tf.baselines" not in graph["bitat_tf.progressive"]
    assert "bitat_tf.progressive" not in graph["bitat_tf.baselines"]


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
])
def test_the_cycle_check_finds_cycles(graph, cycle):
    assert _cycle(graph) == cycle

#!/usr/bin/env python3
"""Checks the layout rules of the workspace (issue 12): no import loops between the modules of
a crate, and no source file over MAX_LINES lines of non-test code.

A module's edges are the `crate::…`, `super::…` and `self::…` paths its non-test code names,
resolved to the module file that defines them. Loops are strongly connected components of more
than one module (Tarjan's algorithm). Exits 1 with one line per problem, 0 when clean.

Usage: hack/check-layout.py [workspace root, default: the parent of hack/]
"""

import re
import sys
from pathlib import Path

MAX_LINES = 600
CRATES_FILE = "Cargo.toml"
PATH_RE = re.compile(r"\b((?:crate|super|self)(?:::(?:\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*))+)")
TEST_START_RE = re.compile(r"^\s*#\[cfg\(test\)\]")


def workspace_members(root):
    text = (root / CRATES_FILE).read_text()
    block = re.search(r"members\s*=\s*\[([^\]]*)\]", text)
    if not block:
        sys.exit(f"{root / CRATES_FILE}: no [workspace] members list")
    return re.findall(r'"([^"]+)"', block.group(1))


def module_path(src, file):
    """The module path of a source file: src/a/b.rs and src/a/b/mod.rs are ("a", "b")."""
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def non_test_code(text):
    """The lines before the first `#[cfg(test)]` (tests sit at the end of a file here)."""
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if TEST_START_RE.match(line):
            return lines[:number]
    return lines


def strip_comments(lines):
    return [line.split("//", 1)[0] for line in lines]


def resolve(path, here, modules):
    """The longest module prefix a `crate::`/`super::`/`self::` path names, or None."""
    segments = path.split("::")
    base = list(here)
    rest = []
    head = segments[0]
    if head == "crate":
        base, rest = [], segments[1:]
    elif head in ("super", "self"):
        index = 0
        while index < len(segments) and segments[index] in ("super", "self"):
            if segments[index] == "super" and base:
                base.pop()
            index += 1
        rest = segments[index:]
    rest = [s for s in rest if not s.startswith("{")]
    best = tuple(base) if tuple(base) in modules else None
    for length in range(1, len(rest) + 1):
        candidate = tuple(base + rest[:length])
        if candidate in modules:
            best = candidate
    return best


def crate_edges(src):
    files = {module_path(src, f): f for f in src.rglob("*.rs") if "bin" not in f.relative_to(src).parts}
    modules = set(files)
    edges = {m: set() for m in modules}
    for here, file in files.items():
        code = " ".join(strip_comments(non_test_code(file.read_text())))
        for match in PATH_RE.finditer(code):
            target = resolve(match.group(1), here, modules)
            if target is not None and target != here and not is_ancestor(here, target):
                edges[here].add(target)
    return files, edges


def is_ancestor(module, other):
    """A child module naming its parent (`super::Type`) is how Rust nests; not a loop."""
    return len(other) < len(module) and module[: len(other)] == other


def strongly_connected(edges):
    index, low, stack, on_stack, result = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            result.append(component)

    sys.setrecursionlimit(10000)
    for node in edges:
        if node not in index:
            visit(node)
    return result


def name(module):
    return "::".join(module) or "crate root"


def main():
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    problems = []
    for crate in workspace_members(root):
        src = root / crate / "src"
        files, edges = crate_edges(src)
        for component in strongly_connected(edges):
            if len(component) > 1:
                loop = " ↔ ".join(sorted(name(m) for m in component))
                problems.append(f"{crate}: import loop between {loop}")
        for file in sorted(src.rglob("*.rs")):
            if file.name == "tests.rs":
                continue
            count = len(non_test_code(file.read_text()))
            if count > MAX_LINES:
                problems.append(
                    f"{file.relative_to(root)}: {count} lines of non-test code (limit {MAX_LINES}): split it along its concerns"
                )
    for problem in problems:
        print(problem)
    if problems:
        sys.exit(1)
    print("layout: no import loops, no source file over", MAX_LINES, "lines")


if __name__ == "__main__":
    main()

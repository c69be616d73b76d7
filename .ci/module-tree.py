#!/usr/bin/env python3
"""Checks that each crate's modules import one way: no module reaches (through `crate::`
or `super::` paths) a module that reaches it back. Prints every cycle and exits 1 if any.

A module is a file under `src/` (`a/b.rs` and `a/b/mod.rs` are `a::b`); a reference to
`crate::a::b::Item` is an edge to the deepest module that exists (`a::b`). A child's use
of its parent (`super::`) counts like any other edge, so a parent that imports from its
child and a child that imports from its parent form a cycle as well. Submodule
declarations (`mod x;`) are not edges: declaring is not importing.
"""
import os
import re
import sys

ROOTS = ["src"] + [os.path.join("crates", c, "src") for c in sorted(os.listdir("crates"))]
PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super)::\{([^;]*)\};", re.S)


def modules(root):
    found = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, root)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            if rel and rel[0] == "bin":
                continue
            found["::".join(rel)] = path
    return found


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)  # comments, doc comments included
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def resolve(mods, here, kind, segments):
    base = [] if kind == "crate" else here.split("::")[:-1] if here else []
    while segments and segments[0] == "super":
        base = base[:-1]
        segments = segments[1:]
    parts = base + segments
    for n in range(len(parts), 0, -1):
        name = "::".join(parts[:n])
        if name in mods:
            return name
    return None


def root_exports(mods):
    """Names the crate root re-exports (`pub use a::{B, C}`), mapped to their module: a
    path through the root (`crate::B`) is an import of `a`."""
    names = {}
    text = strip(open(mods[""], encoding="utf-8").read())
    for stmt in re.findall(r"\bpub\s+use\s+([^;]+);", text):
        stmt = re.sub(r"\s+", "", stmt)
        m = re.match(r"(?:crate::|self::)?([A-Za-z_][A-Za-z0-9_]*)::(.*)", stmt)
        if not m or m.group(1) not in mods:
            continue
        rest = m.group(2)
        items = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)(?:as([A-Za-z_][A-Za-z0-9_]*))?(?=[,}]|$)", rest.strip("{}"))
        for item, alias in items:
            names[alias or item] = m.group(1)
    return names


def edges(mods):
    graph = {m: set() for m in mods}
    exported = root_exports(mods)
    for here, path in mods.items():
        text = strip(open(path, encoding="utf-8").read())
        refs = [(k, p.strip(":").split("::")) for k, p in PATH.findall(text)]
        for kind, group in USE_GROUP.findall(text):
            for item in re.split(r",", re.sub(r"\{[^}]*\}", "", group)):
                item = item.strip().split(" as ")[0]
                if item:
                    refs.append((kind, item.split("::")))
        for kind, segments in refs:
            target = resolve(mods, here, kind, segments)
            if target is None and kind == "crate" and segments:
                target = exported.get(segments[0])
            # The root declares and re-exports every module: not an import. A module's own
            # items and its descendants are not an import of another module either.
            if here == "" or target is None or target == here or target.startswith(here + "::"):
                continue
            graph[here].add(target)
    return graph


def cycles(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    failed = False
    for root in ROOTS:
        mods = modules(root)
        for comp in cycles(edges(mods)):
            failed = True
            print(f"{root}: modules import each other: {' ⇄ '.join(m or 'lib' for m in comp)}")
    if failed:
        sys.exit(1)
    print(f"module imports form a tree in {len(ROOTS)} crates")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Checks the library's architecture (proxy/src, not the binary's commands):

- no import circles between modules (a module using its own ancestors is
  structure, not a circle: `control/flags.rs` adds methods to `Control`);
- every arrow points down the layers below: the admin API over the control
  path over the data path over the shared model, nothing into the crate root.

Prints each violation with the file that makes it; exit status 1 if any.
"""

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "proxy" / "src"

# Higher ranks may use lower ones; equal ranks only within one component.
RANK = {
    "error": 0,
    "parse": 1,
    "flags": 1,
    "logging": 1,
    "config": 2,
    "stats": 3,
    "plugin": 4,
    "data": 5,
    "control": 6,
    "report": 7,
    "admin": 8,
}

TESTS = re.compile(r"^#\[cfg\(test\)\]\s*\n\s*mod tests", re.M)
PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*?)\}", re.S)
MOD = re.compile(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_0-9]+)\s*;", re.M)
USE_CHILD = re.compile(r"\b([a-z_][a-z0-9_]*)::")
REEXPORT = re.compile(r"^pub use ([a-z_]+)(?:::[a-z_]+)*::(?:\{([^}]*)\}|([A-Za-z_]+));", re.M)


def module_of(path: Path) -> tuple:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib"):
        parts.pop()
    return tuple(parts)


def code(path: Path) -> str:
    text = path.read_text()
    m = TESTS.search(text)
    text = text[: m.start()] if m else text
    # Comments and doc links are not imports.
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def main() -> int:
    # Test modules may use anything.
    files = [p for p in SRC.rglob("*.rs") if "bin" not in p.relative_to(SRC).parts and p.stem != "tests"]
    modules = {module_of(p): p for p in files}
    root_names = {}
    for m in REEXPORT.finditer((SRC / "lib.rs").read_text()):
        for name in (m.group(2) or m.group(3)).split(","):
            root_names[name.strip()] = (m.group(1),)

    def resolve(base: tuple, segs: list) -> tuple:
        if not segs:
            return base
        if base == () and segs[0] in root_names:
            return root_names[segs[0]]
        best = base
        for i in range(1, len(segs) + 1):
            if base + tuple(segs[:i]) in modules:
                best = base + tuple(segs[:i])
        return best

    edges = {}
    for mod, path in modules.items():
        text = code(path)
        refs = []
        for m in GROUP.finditer(text):
            for item in re.split(r"[,\s{}]+", m.group(3)):
                if item and item != "self":
                    refs.append((m.group(1), m.group(2).strip(":").split("::") + item.split("::")))
        for m in PATH.finditer(text):
            refs.append((m.group(1), m.group(2).strip(":").split("::")))
        children = set(MOD.findall(text))
        for m in USE_CHILD.finditer(text):
            if m.group(1) in children:
                refs.append(("self", [m.group(1)]))
        out = edges.setdefault(mod, set())
        for kind, segs in refs:
            segs = [s for s in segs if s]
            base = {"crate": (), "super": mod[:-1], "self": mod}[kind]
            target = resolve(base, segs)
            if target != mod:
                out.add(target)

    problems = []
    for mod, targets in sorted(edges.items()):
        for t in sorted(targets):
            if t == ():
                problems.append(f"{modules[mod].relative_to(SRC)}: uses the crate root")
                continue
            if mod[: len(t)] == t:
                continue  # an ancestor
            a, b = (mod[0] if mod else None), t[0]
            if a and a != b and RANK.get(b, 99) >= RANK.get(a, 99):
                problems.append(f"{modules[mod].relative_to(SRC)}: `{'::'.join(mod)}` uses `{'::'.join(t)}`, "
                                f"which is not below it")

    # Circles: strongly connected components over non-ancestor arrows.
    graph = {m: {t for t in ts if m[: len(t)] != t} for m, ts in edges.items()}
    index, low, stack, on, sccs = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    for comp in sccs:
        problems.append("import circle: " + " ↔ ".join(sorted("::".join(m) or "crate" for m in comp)))

    for p in problems:
        print(p)
    if "-v" in sys.argv:
        for m, ts in sorted(edges.items()):
            print("::".join(m) or "crate", "->", ", ".join(sorted("::".join(t) or "crate" for t in ts)))
    n = sum(len(t) for t in edges.values())
    print(f"layers: {len(modules)} modules, {n} arrows, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

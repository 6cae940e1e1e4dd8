#!/usr/bin/env python3
"""Report import cycles between the top-level modules of a Rust crate.

Usage: scripts/module-cycles.py [--layers] [CRATE_SRC_DIR ...]
       (default: every workspace crate's src/)

For every production source file under SRC (test code excluded: `tests.rs` files and
`#[cfg(test)] mod ... { ... }` blocks), the script collects the paths it names through
`crate::X`, `use crate::{X, Y::Z}` and `super::...` (resolved against the file's own module
path) and records an edge "top-level module of the file -> top-level module X".  Only names
declared as modules in `lib.rs` count (items defined in `lib.rs` itself are not a module).
Comments are ignored, so doc links do not create edges.

It prints each strongly connected component of more than one module, one shortest cycle
through it, and the file:line of every edge inside the component — the places to cut.
With `--layers` (and no cycle) it also prints the modules by layer: a module's layer is the
longest dependency path below it, so every edge points to a lower layer.
Exit status: 0 without cycles, 1 with cycles.  Standard library only.
"""

import os
import re
import sys
from collections import defaultdict, deque

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments(text):
    """Blank out // and /* */ comments and string literals, keeping line numbers."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == '"' or (c == "r" and re.match(r'r#*"', text[i:i + 40]) and
                          (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_"))):
            if c == "r":
                m = re.match(r'r(#*)"', text[i:])
                end = '"' + m.group(1)
                j = text.find(end, i + len(m.group(0)))
                j = n if j < 0 else j + len(end)
            else:
                j = i + 1
                while j < n and text[j] != '"':
                    j += 2 if text[j] == "\\" else 1
                j += 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            j = i + len(re.match(r"'(\\.|[^\\'])'", text[i:i + 4]).group(0))
            out.append("' '")
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip_test_blocks(text):
    """Remove `#[cfg(test)] mod name { ... }` blocks (brace-matched), keeping line numbers."""
    pat = re.compile(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+" + IDENT + r"\s*\{")
    while True:
        m = pat.search(text)
        if not m:
            return text
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        text = text[:m.start()] + "\n" * text.count("\n", m.start(), j) + text[j:]


def split_top(s):
    """Split a use-tree body on top-level commas."""
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def first_segments(tree):
    """`{a::b, c, d::{e}}` or `a::b` -> first segments of each path (a, c, d)."""
    tree = tree.strip()
    if tree.startswith("{") and tree.endswith("}"):
        out = []
        for p in split_top(tree[1:-1]):
            out += first_segments(p)
        return out
    m = re.match(IDENT, tree)
    return [m.group(0)] if m else []


def module_path(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib"):
        rel = rel[:-1]
    return rel


def references(text, modpath):
    """Yield (line, resolved absolute path head list) for crate::/super:: references."""
    for m in re.finditer(r"\b(crate|super)((?:\s*::\s*super)*)\s*::\s*(\{|" + IDENT + ")", text):
        line = text.count("\n", 0, m.start()) + 1
        if m.group(1) == "crate":
            base = []
        else:
            ups = 1 + m.group(2).count("super")
            if ups > len(modpath):
                continue
            base = modpath[:len(modpath) - ups]
        if m.group(3) == "{":
            depth, j = 1, m.end()
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            heads = first_segments(text[m.end() - 1:j])
        else:
            heads = [m.group(3)]
        for h in heads:
            if h == "self":
                if base:
                    yield line, base
                continue
            yield line, base + [h]


def scan(src):
    lib = os.path.join(src, "lib.rs")
    if not os.path.exists(lib):
        return None
    libtext = strip_comments(open(lib, encoding="utf-8").read())
    mods = set(re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*;", libtext, re.M))
    edges = defaultdict(list)  # (a, b) -> ["file:line", ...]
    for root, _dirs, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs") or f == "tests.rs":
                continue
            path = os.path.join(root, f)
            if os.path.samefile(path, lib) or (root == src and f == "main.rs"):
                continue
            modpath = module_path(src, path)
            if not modpath or modpath[0] not in mods:
                continue
            text = strip_test_blocks(strip_comments(open(path, encoding="utf-8").read()))
            for line, target in references(text, modpath):
                if target and target[0] in mods and target[0] != modpath[0]:
                    edges[(modpath[0], target[0])].append(f"{os.path.relpath(path)}:{line}")
    return mods, edges


def sccs(nodes, adj):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(adj[v]):
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
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def shortest_cycle(comp, adj):
    members = set(comp)
    best = None
    for start in comp:
        prev, q = {start: None}, deque([start])
        found = None
        while q and not found:
            v = q.popleft()
            for w in sorted(adj[v]):
                if w not in members:
                    continue
                if w == start:
                    found = v
                    break
                if w not in prev:
                    prev[w] = v
                    q.append(w)
        if found:
            path, v = [], found
            while v is not None:
                path.append(v)
                v = prev[v]
            path = path[::-1] + [start]
            if best is None or len(path) < len(best):
                best = path
    return best


def layers(mods, adj):
    memo = {}

    def height(m):
        if m not in memo:
            memo[m] = 0 if not adj[m] else 1 + max(height(x) for x in adj[m])
        return memo[m]

    by = {}
    for m in mods:
        by.setdefault(height(m), []).append(m)
    for h in sorted(by, reverse=True):
        print(f"  layer {h:2}: " + ", ".join(sorted(by[h])))


def report(src, show_layers=False):
    res = scan(src)
    if res is None:
        return 0
    mods, edges = res
    adj = defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
    cyclic = [c for c in sccs(mods, adj) if len(c) > 1]
    print(f"{src}: {len(mods)} top-level modules, {len(edges)} edges, {len(cyclic)} cycle(s)")
    for comp in cyclic:
        print("  cycle: " + " -> ".join(shortest_cycle(comp, adj)))
        print("  component: " + ", ".join(comp))
        for (a, b), sites in sorted(edges.items()):
            if a in comp and b in comp:
                more = f" (+{len(sites) - 3} more)" if len(sites) > 3 else ""
                print(f"    {a} -> {b}: {', '.join(sites[:3])}{more}")
    if show_layers and not cyclic:
        layers(mods, adj)
    return len(cyclic)


def main(argv):
    show_layers = "--layers" in argv[1:]
    dirs = [a for a in argv[1:] if a != "--layers"]
    if not dirs:
        here = os.path.dirname(os.path.abspath(__file__))
        ws = os.path.dirname(here)
        dirs = sorted(os.path.join(ws, d, "src") for d in os.listdir(ws)
                      if os.path.isfile(os.path.join(ws, d, "src", "lib.rs")))
    total = sum(report(d, show_layers) for d in dirs)
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""Check that every relative link in the docs resolves to a file inside the repository.

Usage: scripts/doc-links.py [FILE.md ...]   (default: README.md and docs/**/*.md)

Looks at Markdown links `[text](target)`, reference definitions `[id]: target` and
`<img src="...">`; skips URLs with a scheme (https:, mailto:, ...) and pure `#anchors`.
A target is resolved against the linking file's directory, with any `#anchor` or `?query`
dropped, and must exist and stay inside the repository.

Code spans that name a repository path are checked too: a span starting with `../` or with
one of the repository's top-level directories (`node/src/app.rs`, `docs/adr/`, ...) must name
an existing file or directory, resolved against the linking file's directory or, failing
that, the repository root; `../` must not leave the repository. Prints each broken link as
`file:line: target` and exits 1 if there is any. Standard library only.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INLINE = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
IMG = re.compile(r"<img[^>]*\bsrc=\"([^\"]+)\"")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
CODE = re.compile(r"`([A-Za-z0-9_.][A-Za-z0-9_./-]*)`")
TOP = {d for d in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, d)) and not d.startswith(".")}
TOP.discard("target")


def code_paths(line):
    """Code spans that name a path in the repository (see the module doc)."""
    for m in CODE.finditer(line):
        span = m.group(1)
        first = span.split("/", 1)[0]
        if span.startswith("../") or ("/" in span and first in TOP):
            yield span


def resolve_code_path(path, span):
    for base in (os.path.dirname(path), ROOT):
        resolved = os.path.normpath(os.path.join(base, span))
        if os.path.commonpath([ROOT, resolved]) != ROOT:
            return "outside the repository"
        if os.path.exists(resolved):
            return None
    return "missing"


def targets(line):
    for pat in (INLINE, IMG):
        for m in pat.finditer(line):
            yield m.group(1)
    m = REFDEF.match(line)
    if m:
        yield m.group(1)


def check(path):
    broken = []
    in_fence = False
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.lstrip().startswith(("```", "~~~")):
                in_fence = not in_fence
                continue
            if in_fence:
                continue
            for span in code_paths(line):
                why = resolve_code_path(path, span)
                if why:
                    broken.append(f"{os.path.relpath(path, ROOT)}:{n}: `{span}` ({why})")
            # Inline code spans are not links.
            line = re.sub(r"`[^`]*`", "", line)
            for target in targets(line):
                if SCHEME.match(target) or target.startswith("#"):
                    continue
                rel = re.split(r"[#?]", target, maxsplit=1)[0]
                if not rel:
                    continue
                if rel.startswith("/"):
                    resolved = os.path.normpath(os.path.join(ROOT, rel.lstrip("/")))
                else:
                    resolved = os.path.normpath(os.path.join(os.path.dirname(path), rel))
                inside = os.path.commonpath([ROOT, resolved]) == ROOT
                if not inside or not os.path.exists(resolved):
                    why = "outside the repository" if not inside else "missing"
                    broken.append(f"{os.path.relpath(path, ROOT)}:{n}: {target} ({why})")
    return broken


def main(argv):
    files = argv[1:]
    if not files:
        files = [os.path.join(ROOT, "README.md")]
        for d, _dirs, names in os.walk(os.path.join(ROOT, "docs")):
            files += [os.path.join(d, n) for n in sorted(names) if n.endswith(".md")]
    broken = []
    for f in files:
        if os.path.exists(f):
            broken += check(os.path.abspath(f))
    for b in broken:
        print(b)
    print(f"{len(files)} files, {len(broken)} broken relative link(s)")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

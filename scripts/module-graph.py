#!/usr/bin/env python3
"""The daemon crate's module graph: which top-level module of src/ uses which (a
`crate::NAME` outside comments and test code), and any cycle in it.

    python3 scripts/module-graph.py           print each module's dependencies, then cycles
    python3 scripts/module-graph.py --check   the same; exit 1 if there is a cycle (CI)

Between crates Cargo refuses a cycle by itself; inside the `lockerd` crate this check
keeps the modules in one direction (README "Architecture"). Standard library only.
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_files():
    """Top-level module name -> its source files (NAME.rs and everything under NAME/)."""
    mods = {}
    for entry in sorted(os.listdir(SRC)):
        path = os.path.join(SRC, entry)
        if entry.endswith(".rs"):
            name = entry[:-3]
            if name == "lib":
                continue
            mods.setdefault(name, []).append(path)
        elif os.path.isdir(path) and entry != "bin":
            for root, _, files in os.walk(path):
                mods.setdefault(entry, []).extend(
                    os.path.join(root, f) for f in sorted(files) if f.endswith(".rs")
                )
    return mods


def code_of(path):
    """The file without its test module (`#[cfg(test)]` to the end, or a tests.rs file)
    and without comment lines."""
    if os.path.basename(path) == "tests.rs":
        return ""
    text = open(path, encoding="utf-8").read().split("#[cfg(test)]")[0]
    return "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))


def graph():
    files = module_files()
    deps = {}
    for name, paths in files.items():
        used = set()
        for p in paths:
            used.update(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", code_of(p)))
        deps[name] = sorted(used & set(files) - {name})
    return deps


def cycles(deps):
    """Every elementary cycle, each once, starting at its smallest name."""
    found = set()

    def walk(start, node, path):
        for n in deps[node]:
            if n == start:
                found.add(tuple(path))
            elif n not in path and n > start:
                walk(start, n, path + [n])

    for s in deps:
        walk(s, s, [s])
    return sorted(found)


def main():
    deps = graph()
    for name, used in sorted(deps.items()):
        print(f"{name:12} -> {', '.join(used) if used else '(nothing)'}")
    found = cycles(deps)
    if found:
        for c in found:
            print("cycle: " + " -> ".join(c + (c[0],)))
    else:
        print("no cycle")
    if "--check" in sys.argv[1:] and found:
        sys.exit(1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Fails when two modules of a crate import each other, directly or around a loop (issue 11).

For each crate source directory given, every module file's `crate::`, `super::`, `self::` and
child-module paths (outside `#[cfg(test)] mod tests`) name the modules it uses; a strongly
connected component of more than one module is a cycle. Checked at file granularity and with
modules collapsed to their top-level name. A heuristic reader, not a Rust parser: it errs towards
reporting. Usage: tests/module-cycles.py crates/core/src crates/box/src ...
"""
import os
import re
import sys


def modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if f.endswith('.rs'):
                path = os.path.join(root, f)
                rel = os.path.relpath(path, src)[:-3].split(os.sep)
                if rel[-1] == 'mod':
                    rel = rel[:-1]
                if rel in (['lib'], ['main']):
                    rel = []
                mods[tuple(rel)] = path
    return mods


def strip(text):
    text = re.sub(r'//[^\n]*', '', text)
    text = re.sub(r'"(\\.|[^"\\])*"', '""', text)
    tests = text.find('#[cfg(test)]\nmod tests')
    return text[:tests] if tests >= 0 else text


def uses(mod, text, mods):
    out = set()

    def add(path):
        for n in range(len(path), -1, -1):
            if tuple(path[:n]) in mods:
                if tuple(path[:n]) != mod:
                    out.add(tuple(path[:n]))
                return

    for m in re.finditer(r'\b(crate|super|self)((?:::\w+)+)', text):
        head, rest = m.group(1), [x for x in m.group(2).split('::') if x]
        base = [] if head == 'crate' else list(mod) if head == 'self' else list(mod[:-1])
        while head == 'super' and rest and rest[0] == 'super':
            base, rest = base[:-1], rest[1:]
        add(base + rest)
    for m in re.finditer(r'\bcrate::\{([^}]*)\}', text):
        for item in m.group(1).split(','):
            add([x for x in item.strip().split('::') if x])
    for m in re.finditer(r'(?<![:\w])(\w+)::', text):
        if mod + (m.group(1),) in mods:
            out.add(mod + (m.group(1),))
    return out


def cycles(graph):
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
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
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def main(dirs):
    status = 0
    for src in dirs:
        mods = modules(src)
        graph = {m: uses(m, strip(open(p, encoding='utf-8').read()), mods) for m, p in mods.items()}
        top = {}
        for m, used in graph.items():
            top.setdefault(m[:1], set()).update(u[:1] for u in used if u[:1] != m[:1])
        for label, g in (('module', graph), ('top-level module', top)):
            for comp in cycles(g):
                status = 1
                names = ', '.join('::'.join(m) or 'crate' for m in comp)
                print(f'{src}: {label} import cycle: {names}')
    return status


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:] or ['crates/core/src', 'crates/box/src', 'crates/authority/src']))

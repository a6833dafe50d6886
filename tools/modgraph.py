#!/usr/bin/env python3
"""modgraph: keep each crate's module graph free of import circles.

Usage:
    tools/modgraph.py [--graph | --dot | --layers] [--root DIR] [SRC_DIR ...]

With no flag, prints every circle of each crate, with the imports that make
it (file:line and the names taken), and exits 1 if there is one; otherwise it
prints a one-line summary and exits 0.

    --graph    each module and what it imports (module: names), `[parent]`
               and `[child]` marking the internal edges, and which modules
               of another crate its `crate::` paths name
    --dot      the graph as Graphviz DOT (edges in a circle drawn red)
    --layers   a layering, bottom (imports nothing of its crate) first; with
               circles, each circle is shown as one block and the exit is 1
    --root DIR the repository to read (default: the one holding this script)
    SRC_DIR    a crate's source directory, relative to the root (default:
               `src` and `crates/domain/src`); the crate's name is read from
               the Cargo.toml beside it

Exit: 0 no circle, 1 circles, 2 usage or a crate that cannot be read.
Meant for `make test`, with no flag: a new circle then fails the tests.

The nodes
---------
One node per file module, found the way rustc finds them: from the crate
root (`lib.rs`) through each `mod name;` declaration (`name.rs` or
`name/mod.rs`; `foo/bar.rs` is `foo::bar`). Inline `mod name { ... }` blocks
belong to the node of their file. Files no `mod` reaches (`main.rs`,
`src/bin/*`: binary crates of their own, which see the library only as
`imds_guard::`) are not nodes. The crate root itself is not a node: it is the
parent of every top-level module (see below).

The edges
---------
Every path from one module to another of the same crate, outside test code:

* `use` declarations, grouped or not (`use crate::{a, b::c as d}`), with
  `crate::`, `self::`, `super::` (resolved against the module, inline `mod`
  blocks included) or a name in scope (a child module, or an alias an
  earlier `use` bound to a module);
* paths in code that are not in a `use`: `crate::x::y(..)`,
  `super::sib::f(..)`, and `alias::f(..)` after `use crate::x as alias;`.

A path leads to the deepest file module that is a prefix of it; when the next
segment is a name that module only imports (`pub use`, or a private `use`
a child reaches through `super::`), the re-export is followed to the module
that defines it. A name the crate root imports from another crate (the root
crate's `pub use imds_guard_domain::{policy, ...}`) is outside the crate, so
`crate::policy::X` in `src/` is no edge: it is the domain crate.

Before anything is read, comments (doc comments too) and string, byte, raw
and char literals are blanked (line numbers kept), but for the paths serde's
attributes name in strings (`#[serde(skip_serializing_if =
"crate::report::is_zero")]`, `with`, `default`, `serialize_with`, ...): the
derive writes those calls, so they are edges. Blanked too is every item under
`#[cfg(test)]` (or `#[cfg(all(test, ..))]`): a `mod tests { .. }`, a test-only
fn or `use`, and a test-only `mod x;` file. Test code may import anything.

Circles: parents, children and siblings
---------------------------------------
A folder module (`aws/mod.rs` and `aws/*.rs`) is one unit seen from outside
and a small graph of its own inside. So the graph is read level by level:

* top level: every module is folded into its top-level ancestor (`aws::ec2`
  counts as `aws`), and the circles are those among a crate's top-level
  modules;
* inside each folder module F: the circles among F's direct children (a
  grandchild folds into its child of F).

An edge between a module and its own ancestor or descendant (a child using
`super::Item`, `mod.rs` re-exporting its children) is internal to the folder
and belongs to no level: that two-way traffic is how Rust folder modules are
built, and is not a circle by itself. A circle that runs only through items
defined in a `mod.rs` is therefore not reported; one through a name that
`mod.rs` only re-exports is, since the re-export is followed.

A circle is a strongly connected component of more than one module at one
level. For each, every import inside it is listed: which file, which line,
which names.
"""

import argparse
import os
import re
import sys
from collections import defaultdict

IDENT = r"(?:r#)?[A-Za-z_][A-Za-z0-9_]*"


# --------------------------------------------------------------------------
# Lexing: comments and literals blanked, newlines kept


def strip_comments_and_literals(text):
    """Blank comments and string/char literals, keeping every newline so that
    offsets and line numbers still match the file."""
    out = list(text)
    n = len(text)
    i = 0

    def blank(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if c == "/" and i + 1 < n and text[i + 1] == "/":
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
            continue
        if c == "/" and i + 1 < n and text[i + 1] == "*":
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
            continue
        # raw strings: r"..", r#".."#, br#".."#, cr".."
        m = re.compile(r"(?:b|c)?r(#*)\"").match(text, i)
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = text.find('"' + m.group(1), m.end())
            end = n if end < 0 else end + 1 + len(m.group(1))
            blank(m.end(), max(m.end(), end - 1 - len(m.group(1))))
            i = end
            continue
        if c == '"' or (
            c in "bc"
            and i + 1 < n
            and text[i + 1] == '"'
            and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_"))
        ):
            j = i + 1 if c == '"' else i + 2
            start = j
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            blank(start, min(j, n))
            i = j + 1
            continue
        if c == "'":
            # char literal ('x', '\n', '\u{..}', b'x') or a lifetime/label
            if i + 1 < n and text[i + 1] == "\\":
                j = i + 3  # past the escaped character: '\''
                while j < n and text[j] != "'" and text[j] != "\n":
                    j += 1
                blank(i + 1, j)
                i = j + 1
                continue
            if i + 2 < n and text[i + 2] == "'":
                blank(i + 1, i + 2)
                i += 3
                continue
        i += 1
    return "".join(out)


def blank_span(code, a, b):
    return code[:a] + "".join("\n" if ch == "\n" else " " for ch in code[a:b]) + code[b:]


CFG_ATTR = re.compile(r"#\s*(!?)\s*\[\s*cfg\s*\(")


def _balanced(code, i, open_ch, close_ch):
    """Index just past the bracket closing the one at code[i]."""
    depth = 0
    n = len(code)
    while i < n:
        if code[i] == open_ch:
            depth += 1
        elif code[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def _is_test_predicate(pred):
    pred = re.sub(r"\s+", "", pred)
    if pred == "test":
        return True
    if pred.startswith("all(") and pred.endswith(")"):
        depth, args, cur = 0, [], ""
        for ch in pred[4:-1]:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            if ch == "," and depth == 0:
                args.append(cur)
                cur = ""
            else:
                cur += ch
        args.append(cur)
        return "test" in args
    return False


def _item_end(code, i):
    """End of the item starting at i: its `;` or its closing `}` at depth 0."""
    depth = 0
    n = len(code)
    while i < n:
        ch = code[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0 and ch == "}":
                return i + 1
        elif ch == ";" and depth == 0:
            return i + 1
        i += 1
    return n


def blank_test_items(code):
    """Blank every item under #[cfg(test)]. Returns (code, whole_file_is_test,
    test-only `mod x;` names)."""
    test_mods = set()
    whole = False
    pos = 0
    while True:
        m = CFG_ATTR.search(code, pos)
        if not m:
            break
        paren = m.end() - 1
        pend = _balanced(code, paren, "(", ")")
        pred = code[paren + 1 : pend - 1]
        close = re.compile(r"\s*\]").match(code, pend)
        if not close or not _is_test_predicate(pred):
            pos = m.end()
            continue
        if m.group(1) == "!":
            whole = True
            return code, whole, test_mods
        end = _item_end(code, close.end())
        item = code[close.end() : end]
        dm = re.search(r"\bmod\s+(" + IDENT + r")\s*;", item)
        if dm and not re.search(r"\bmod\s+" + IDENT + r"\s*\{", item):
            test_mods.add(dm.group(1).replace("r#", ""))
        code = blank_span(code, m.start(), end)
        pos = m.start()
    return code, whole, test_mods


# --------------------------------------------------------------------------
# `use` trees


USE_TOKEN = re.compile(r"\s*(::|\{|\}|,|\*|;|\$?" + IDENT + r")")


def tokenize(code, start, end):
    toks = []
    i = start
    while i < end:
        m = USE_TOKEN.match(code, i)
        if not m or m.end() > end:
            break
        toks.append((m.group(1), m.start(1)))
        i = m.end()
    return toks


def parse_use_tree(toks):
    """Leaves of a use tree: (segments, alias, is_glob, offset)."""
    leaves = []

    def tree(i, prefix):
        if i >= len(toks):
            return i
        t = toks[i][0]
        if t == "{":
            i += 1
            while i < len(toks) and toks[i][0] != "}":
                i = tree(i, prefix)
                if i < len(toks) and toks[i][0] == ",":
                    i += 1
            return i + 1
        if t == "*":
            leaves.append((prefix, None, True, toks[i][1]))
            return i + 1
        if t == "::":  # leading `::`: an external crate
            return tree(i + 1, prefix + ["::"])
        segs = list(prefix)
        last = toks[i][1]
        while i < len(toks) and toks[i][0] not in ("{", "}", ",", "*", "::", ";"):
            segs.append(toks[i][0].replace("r#", ""))
            last = toks[i][1]
            i += 1
            if i < len(toks) and toks[i][0] == "::":
                i += 1
                if i < len(toks) and toks[i][0] in ("{", "*"):
                    return tree(i, segs)
            else:
                break
        alias = None
        if i + 1 < len(toks) and toks[i][0] == "as":
            alias = toks[i + 1][0].replace("r#", "")
            i += 2
        if segs and segs[-1] == "self":
            segs = segs[:-1]
        if segs:
            leaves.append((segs, alias or segs[-1], False, last))
        return i

    tree(0, [])
    return leaves


# --------------------------------------------------------------------------
# serde's attributes: `#[serde(skip_serializing_if = "crate::report::is_zero")]`
# is a call the derive writes, so the path in the string is an edge.

SERDE_ATTR = re.compile(r"#\s*\[\s*serde\s*\(")
SERDE_PATH = re.compile(
    r"\b(?:skip_serializing_if|serialize_with|deserialize_with|with|default|getter"
    r"|from|try_from|into)\s*=\s*\"\s*([^\"]*)\""
)
CHAIN_IN_STRING = re.compile(r"(\$?crate|self|super|" + IDENT + r")((?:\s*::\s*(?:r#)?[A-Za-z_]\w*)+)")


# --------------------------------------------------------------------------
# The crate


class Module:
    def __init__(self, path, file, rel):
        self.path = path  # tuple of names, () for the crate root
        self.file = file
        self.rel = rel  # file path shown in reports
        self.code = ""
        self.children = {}  # name -> module path (file or inline)
        self.inline = []  # (start, end, inline path) of inline `mod x { }`
        self.uses = []  # (ctx, segments, alias, glob, offset)
        self.lines = []

    def line_of(self, offset):
        lo, hi = 0, len(self.lines)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.lines[mid] <= offset:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def ctx_at(self, offset):
        best = self.path
        for a, b, p in self.inline:
            if a <= offset < b and len(p) > len(best):
                best = p
        return best


class Crate:
    def __init__(self, root, src_rel):
        self.root = root
        self.src_rel = src_rel.rstrip("/")
        self.src = os.path.join(root, self.src_rel)
        self.name = crate_name(os.path.dirname(os.path.normpath(self.src)))
        self.modules = {}  # file module path -> Module
        self.owner = {}  # any module path (inline too) -> file module path
        self.children = defaultdict(dict)  # module path -> {name: path}
        self.aliases = defaultdict(dict)  # module path -> {alias: (segs, ctx)}
        self.globs = defaultdict(list)  # module path -> [(segs, ctx)]
        self.refs = []  # (src, dst, name, rel, line)
        self.outside = defaultdict(set)  # src -> names outside the crate
        self.problems = []
        lib = os.path.join(self.src, "lib.rs")
        if not os.path.isfile(lib):
            raise SystemExit(f"modgraph: no {os.path.join(self.src_rel, 'lib.rs')}")
        self.load((), lib, self.src)
        for mod in self.modules.values():
            self.collect_uses(mod)
        for mod in self.modules.values():
            self.collect_refs(mod)

    # -- discovery

    def load(self, path, file, child_dir):
        rel = os.path.relpath(file, self.root)
        mod = Module(path, file, rel)
        with open(file, encoding="utf-8") as f:
            text = f.read()
        code = strip_comments_and_literals(text)
        code, whole, _ = blank_test_items(code)
        if whole:
            return
        code = re.sub(r"\bpub\s*\(\s*in\b[^)]*\)", lambda m: " " * len(m.group(0)), code)
        mod.code = code
        mod.text = text
        mod.lines = [i for i, ch in enumerate(code) if ch == "\n"]
        self.modules[path] = mod
        self.owner[path] = path
        # inline modules first, so that `mod x;` inside them find their dirs
        for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{", code):
            name = m.group(1).replace("r#", "")
            end = _balanced(code, m.end() - 1, "{", "}")
            outer = mod.ctx_at(m.start())
            ipath = outer + (name,)
            mod.inline.append((m.end(), end, ipath))
            self.children[outer][name] = ipath
            self.owner[ipath] = path
        for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*;", code):
            name = m.group(1).replace("r#", "")
            outer = mod.ctx_at(m.start())
            sub = os.path.join(child_dir, *outer[len(path) :])
            cpath = outer + (name,)
            flat = os.path.join(sub, name + ".rs")
            folder = os.path.join(sub, name, "mod.rs")
            self.children[outer][name] = cpath
            if outer != path:
                self.owner[cpath] = path  # a file under an inline module
            if os.path.isfile(flat):
                self.load(cpath, flat, os.path.join(sub, name))
            elif os.path.isfile(folder):
                self.load(cpath, folder, os.path.join(sub, name))
            else:
                self.problems.append(f"{rel}:{mod.line_of(m.start()) + 1}: no file for `mod {name};`")

    def collect_uses(self, mod):
        for m in re.finditer(r"(?<![\w$])use\b", mod.code):
            end = _item_end(mod.code, m.end())
            toks = tokenize(mod.code, m.end(), end)
            ctx = mod.ctx_at(m.start())
            for segs, alias, glob, off in parse_use_tree(toks):
                mod.uses.append((ctx, segs, alias, glob, off))
                if glob:
                    self.globs[ctx].append((segs, ctx))
                elif alias and alias != "_":
                    self.aliases[ctx][alias] = (segs, ctx)

    # -- resolution

    def absolute(self, segs, ctx, depth=0):
        """The crate-absolute path of `segs` as written in module `ctx`, or
        None when it names another crate."""
        if not segs or segs[0] == "::" or depth > 12:
            return None
        first = segs[0]
        if first in ("crate", "$crate"):
            return tuple(segs[1:])
        if first == "self":
            return ctx + tuple(segs[1:])
        if first == "super":
            base, rest = ctx, list(segs)
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
            return base + tuple(rest)
        # a name in scope: a child module, an alias, a glob-imported child
        scope = ctx
        while True:
            if first in self.children.get(scope, {}):
                return self.children[scope][first] + tuple(segs[1:])
            if first in self.aliases.get(scope, {}):
                asegs, actx = self.aliases[scope][first]
                if asegs == segs:  # `use name;` of an extern crate
                    return None
                base = self.absolute(asegs, actx, depth + 1)
                return None if base is None else base + tuple(segs[1:])
            for gsegs, gctx in self.globs.get(scope, []):
                g = self.absolute(gsegs, gctx, depth + 1)
                if g is not None and first in self.children.get(g, {}):
                    return self.children[g][first] + tuple(segs[1:])
            break
        return None

    def resolve(self, path, depth=0):
        """(file module, the names after it) for a crate-absolute path, or
        None if it leaves the crate."""
        if path is None or depth > 12:
            return None
        k = len(path)
        while k > 0 and path[:k] not in self.owner:
            k -= 1
        mod_path = path[:k]
        rest = path[k:]
        if rest and rest[0] in self.aliases.get(mod_path, {}):
            asegs, actx = self.aliases[mod_path][rest[0]]
            target = self.absolute(asegs, actx)
            if target is None:
                return None  # re-exported from another crate
            return self.resolve(target + rest[1:], depth + 1)
        return self.owner[mod_path], rest

    def add_ref(self, mod, ctx, segs, off, glob=False, code_path=False):
        abs_path = self.absolute(segs, ctx)
        if abs_path is None:
            return
        r = self.resolve(abs_path)
        if r is None:
            if segs[0] in ("crate", "$crate", "self", "super") or code_path:
                self.outside[mod.path].add(abs_path[0] if abs_path else "?")
            return
        dst, rest = r
        if dst == mod.path:
            return
        if glob:
            name = "*"
        elif rest:
            name = rest[0]
        else:
            name = "(module " + "::".join(abs_path) + ")"
        self.refs.append((mod.path, dst, name, mod.rel, mod.line_of(off) + 1))

    def collect_refs(self, mod):
        code = mod.code
        module_aliases = set()
        spans = []
        for m in re.finditer(r"(?<![\w$])use\b", code):
            end = _item_end(code, m.end())
            spans.append((m.start(), end))
        for ctx, segs, alias, glob, off in mod.uses:
            self.add_ref(mod, ctx, segs, off, glob)
            if not glob and alias:
                a = self.absolute(segs, ctx)
                r = self.resolve(a) if a is not None else None
                if r is not None and not r[1]:
                    module_aliases.add(alias)
        masked = code
        for a, b in spans:
            masked = blank_span(masked, a, b)
        chain = re.compile(
            r"(?<![\w$:.])(\$?crate|self|super|"
            + IDENT
            + r")((?:\s*::\s*(?:r#)?[A-Za-z_]\w*)+)"
        )
        found = [(m.start(), m.group(1), m.group(2)) for m in chain.finditer(masked)]
        # serde's attributes name paths in strings that its derive calls
        for m in SERDE_ATTR.finditer(code):
            end = _balanced(code, m.end() - 1, "(", ")")
            for s in SERDE_PATH.finditer(mod.text, m.end(), end):
                p = CHAIN_IN_STRING.match(s.group(1))
                if p:
                    found.append((s.start(1), p.group(1), p.group(2)))
        for start, head, tail in found:
            first = head.replace("r#", "")
            segs = [first] + [s.strip().replace("r#", "") for s in tail.split("::")[1:]]
            ctx = mod.ctx_at(start)
            if first not in ("crate", "$crate", "self", "super"):
                in_scope = first in module_aliases or first in self.children.get(ctx, {})
                for gsegs, gctx in self.globs.get(ctx, []):
                    g = self.absolute(gsegs, gctx)
                    in_scope = in_scope or (g is not None and first in self.children.get(g, {}))
                if not in_scope:
                    continue
            self.add_ref(mod, ctx, segs, start, code_path=True)

    # -- views

    def nodes(self):
        return sorted(p for p in self.modules if p)

    def edges(self):
        """{(src, dst): [(name, rel, line)]} between file modules."""
        e = defaultdict(list)
        for src, dst, name, rel, line in self.refs:
            item = (name, rel, line)
            if item not in e[(src, dst)]:
                e[(src, dst)].append(item)
        return e

    def levels(self):
        """{folder: {(child_a, child_b): [(src, dst)]}} for every level that
        has children: () is the crate's top level."""
        lv = defaultdict(lambda: defaultdict(list))
        for (src, dst) in self.edges():
            k = 0
            while k < min(len(src), len(dst)) and src[k] == dst[k]:
                k += 1
            if k == len(src) or k == len(dst):
                continue  # ancestor <-> descendant: internal
            folder = src[:k]
            lv[folder][(src[: k + 1], dst[: k + 1])].append((src, dst))
        out = {}
        for folder in sorted({p[:-1] for p in self.nodes()}):
            out[folder] = lv.get(folder, {})
        return out

    def members(self, folder):
        return sorted({p[: len(folder) + 1] for p in self.nodes() if p[: len(folder)] == folder and len(p) > len(folder)})


def crate_name(dir_):
    toml = os.path.join(dir_, "Cargo.toml")
    try:
        with open(toml, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return os.path.basename(os.path.abspath(dir_)).replace("-", "_")
    pkg = re.search(r"^\[package\](.*?)(?=^\[|\Z)", text, re.S | re.M)
    m = re.search(r'^\s*name\s*=\s*"([^"]+)"', pkg.group(1) if pkg else text, re.M)
    return m.group(1).replace("-", "_") if m else os.path.basename(dir_)


# --------------------------------------------------------------------------
# Graph algorithms


def sccs(nodes, adj):
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(adj.get(v, ())):
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

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def layering(nodes, adj):
    """[(layer, [component])], bottom first, over the components."""
    comps = sccs(nodes, adj)
    comp_of = {v: i for i, c in enumerate(comps) for v in c}
    cadj = defaultdict(set)
    for v in nodes:
        for w in adj.get(v, ()):
            if comp_of[v] != comp_of[w]:
                cadj[comp_of[v]].add(comp_of[w])
    height = {}

    def h(c):
        if c not in height:
            height[c] = 1 + max((h(d) for d in cadj[c]), default=-1)
        return height[c]

    layers = defaultdict(list)
    for i, c in enumerate(comps):
        layers[h(i)].append(c)
    return [(k, sorted(layers[k])) for k in sorted(layers)]


# --------------------------------------------------------------------------
# Reports


def name_of(path):
    return "::".join(path) if path else "(crate root)"


def level_title(crate, folder):
    if not folder:
        return f"{crate.name} ({crate.src_rel}/), top-level modules"
    return f"{crate.name}, inside `{name_of(folder)}`"


def level_adj(crate, folder, edges_at):
    adj = defaultdict(set)
    for (a, b) in edges_at:
        adj[a].add(b)
    return crate.members(folder), adj


def circles(crate):
    """[(folder, component, {(a, b): [(src, dst)]})]"""
    out = []
    for folder, edges_at in crate.levels().items():
        nodes, adj = level_adj(crate, folder, edges_at)
        for comp in sccs(nodes, adj):
            if len(comp) > 1:
                inside = {k: v for k, v in edges_at.items() if k[0] in comp and k[1] in comp}
                out.append((folder, comp, inside))
    return out


def fmt_refs(items):
    """names with where each is taken: `Name (file:1, 2)`."""
    by_name = {}
    for name, rel, line in items:
        by_name.setdefault(name, {}).setdefault(rel, []).append(line)
    parts = []
    for name, files in by_name.items():
        locs = "; ".join(f"{rel}:{', '.join(str(x) for x in sorted(set(ls)))}" for rel, ls in files.items())
        parts.append(f"{name} ({locs})")
    return parts


def short(folder, path):
    return name_of(path[len(folder) :]) if folder else name_of(path)


def report_circles(crates):
    found = 0
    for crate in crates:
        for problem in crate.problems:
            print(f"modgraph: {problem}")
        cs = circles(crate)
        if not cs:
            continue
        edges = crate.edges()
        for folder, comp, inside in cs:
            found += 1
            print(f"circle in {level_title(crate, folder)}: {len(comp)} modules")
            print("  " + ", ".join(short(folder, c) for c in comp))
            for (a, b) in sorted(inside):
                print(f"  {short(folder, a)} -> {short(folder, b)}")
                for src, dst in sorted(inside[(a, b)]):
                    via = ""
                    if (src, dst) != (a, b):
                        via = f"[{name_of(src)} -> {name_of(dst)}] "
                    for part in fmt_refs(edges[(src, dst)]):
                        print(f"      {via}{part}")
            print()
    if found:
        print(f"modgraph: {found} circle(s); see the docstring of tools/modgraph.py for the rule")
        return 1
    parts = []
    for crate in crates:
        n = len(crate.nodes())
        e = len(crate.edges())
        parts.append(f"{crate.name} {n} modules, {e} edges")
    print("modgraph: no import circles (" + "; ".join(parts) + ")")
    return 0


def report_graph(crates):
    for crate in crates:
        edges = crate.edges()
        print(f"== {crate.name} ({crate.src_rel}/): {len(crate.nodes())} modules")
        for node in crate.nodes():
            mod = crate.modules[node]
            outs = sorted(dst for (src, dst) in edges if src == node)
            print(f"{name_of(node)}  ({mod.rel})")
            if not outs:
                print("    (imports nothing of its crate)")
            for dst in outs:
                rel = ""
                if dst[: len(node)] == node:
                    rel = " [child]"
                elif node[: len(dst)] == dst:
                    rel = " [parent]"
                names = []
                for name, _, line in edges[(node, dst)]:
                    if name not in names:
                        names.append(name)
                print(f"    -> {name_of(dst)}{rel}: {', '.join(names)}")
            if crate.outside.get(node):
                print(f"    (crate:: names from another crate: {', '.join(sorted(crate.outside[node]))})")
        print()
    return 0


def dot_id(crate, path):
    return '"' + crate.name + "::" + name_of(path) + '"'


def report_dot(crates):
    print("digraph modgraph {")
    print("  rankdir=BT;")
    print('  node [shape=box, fontname="Helvetica", fontsize=10];')
    print('  edge [color="#777777"];')
    for crate in crates:
        red = set()
        for folder, comp, inside in circles(crate):
            for pairs in inside.values():
                red.update(pairs)

        def cluster(folder, indent):
            label = f"{crate.name} ({crate.src_rel}/)" if not folder else name_of(folder)
            cid = "cluster_" + re.sub(r"\W", "_", crate.name + "__" + "__".join(folder))
            print(f"{indent}subgraph {cid} {{")
            print(f'{indent}  label="{label}";')
            for m in crate.members(folder):
                if m in crate.modules:
                    print(f'{indent}  {dot_id(crate, m)} [label="{m[-1]}"];')
                if any(p[: len(m)] == m and len(p) > len(m) for p in crate.nodes()):
                    cluster(m, indent + "  ")
            print(f"{indent}}}")

        cluster((), "  ")
        for (src, dst), items in sorted(crate.edges().items()):
            names = []
            for name, _, _ in items:
                if name not in names:
                    names.append(name)
            attrs = [f'tooltip="{", ".join(names)}"']
            if (src, dst) in red:
                attrs.append("color=red, penwidth=2")
            elif src[: len(dst)] == dst or dst[: len(src)] == src:
                attrs.append("style=dashed")
            print(f"  {dot_id(crate, src)} -> {dot_id(crate, dst)} [{', '.join(attrs)}];")
    print("}")
    return 0


def report_layers(crates):
    cyclic = False
    for crate in crates:
        for folder, edges_at in crate.levels().items():
            nodes, adj = level_adj(crate, folder, edges_at)
            if len(nodes) < 2:
                continue
            print(f"== {level_title(crate, folder)} (bottom first)")
            for k, comps in layering(nodes, adj):
                shown = []
                for c in comps:
                    if len(c) > 1:
                        cyclic = True
                        shown.append("[circle: " + ", ".join(short(folder, x) for x in c) + "]")
                    else:
                        shown.append(short(folder, c[0]))
                print(f"  {k}: {', '.join(shown)}")
            print()
    if cyclic:
        print("modgraph: circles present: no layering until they open (run without flags for the imports)")
        return 1
    return 0


def main(argv):
    ap = argparse.ArgumentParser(
        prog="modgraph.py",
        description="Report import circles between the modules of each crate.",
    )
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--graph", action="store_true", help="print each module and what it imports")
    g.add_argument("--dot", action="store_true", help="print the graph as Graphviz DOT")
    g.add_argument("--layers", action="store_true", help="print a layering, bottom first")
    ap.add_argument(
        "--root",
        default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        help="the repository to read (default: the one holding this script)",
    )
    ap.add_argument(
        "src",
        nargs="*",
        default=["src", "crates/domain/src"],
        help="crate source directories, relative to the root (default: src crates/domain/src)",
    )
    ap.add_argument(
        "--max-lines",
        type=int,
        default=800,
        help="the most lines a production file may hold outside its tests (default 800)",
    )
    args = ap.parse_args(argv)
    try:
        crates = [Crate(args.root, s) for s in args.src]
    except OSError as e:
        print(f"modgraph: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    if args.graph:
        return report_graph(crates)
    if args.dot:
        return report_dot(crates)
    if args.layers:
        return report_layers(crates)
    rc = report_circles(crates)
    return max(rc, report_sizes(args.root, args.src, args.max_lines))


def report_sizes(root, dirs, limit):
    """No production file over `limit` lines (its lines before its first
    `#[cfg(test)]`): a file that long holds more than one concern
    (ARCHITECTURE.md)."""
    over = []
    for d in dirs:
        for dirpath, _, files in os.walk(os.path.join(root, d)):
            for f in sorted(files):
                if not f.endswith(".rs"):
                    continue
                path = os.path.join(dirpath, f)
                n = 0
                with open(path, encoding="utf-8") as fh:
                    for line in fh:
                        if line.startswith("#[cfg(test)]"):
                            break
                        n += 1
                if n > limit:
                    over.append((n, os.path.relpath(path, root)))
    for n, path in sorted(over, reverse=True):
        print(f"modgraph: {path} has {n} lines outside its tests (at most {limit}): split it by concept")
    return 1 if over else 0


if __name__ == "__main__":
    try:
        rc = main(sys.argv[1:])
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        rc = 0
    sys.exit(rc)

#!/usr/bin/env python3
"""Checks the documentation against itself and the code. Standard library
only, no network; a fraction of a second.

  (a) Every relative link in README.md, ARCHITECTURE.md (when it exists),
      CHANGELOG.md and docs/*.md reaches a file that exists, and every
      `#anchor` (in the page, or in another markdown file) names a heading
      of the target, slugged as GitHub slugs them: lowercase, punctuation
      dropped (letters, digits, `_`, `-` and spaces kept), spaces to `-`,
      and a repeated heading gets `-1`, `-2`, ... A link to a page not
      written yet (PENDING below) may dangle until it exists, and the
      summary says so.
  (b) docs/configuration.md documents exactly the environment variables
      crates/domain/src/config/ reads. A variable is documented when it
      heads a row of a table there: the row's first cell holds it in
      backticks (`GUARD_MODE`). A variable is read when config/ passes it
      to its lookup: `get("NAME")` (or `lookup("NAME")`,
      `std::env::var("NAME")`), or a `for (name, ...) in [("NAME", ...),
      ...]` loop whose body calls `get(name)`.
  (c) README.md is under 16,384 bytes (a newcomer reads it in five
      minutes; the rest belongs in docs/).

Exit 0 with a one-line summary, or 1 naming every failure.

    python3 tools/check-docs.py [--root DIR]
"""

import argparse
import os
import re
import sys
import urllib.parse

README_LIMIT = 16384
# Pages the docs link to before they are written: a link to one may dangle
# while the file does not exist (said in the summary); once it exists it is
# checked like any page. Remove a name once its page is written.
PENDING = set()
# The configuration module: a folder (its files read as one text).
CONFIG_RS = os.path.join("crates", "domain", "src", "config")
CONFIG_MD = os.path.join("docs", "configuration.md")

# ---------------------------------------------------------------- markdown

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
# [text](target "title") and ![alt](target); the text may hold one level of
# brackets ([`x`][y] is not followed, [a [b] c](t) is).
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]\\]|\\.|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]*)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"
)
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_ANCHOR = re.compile(r"<a\s[^>]*\b(?:name|id)\s*=\s*[\"']([^\"']+)[\"']", re.I)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(text):
    """(line number, line) for each line outside fenced code blocks."""
    fence = None
    for n, line in enumerate(text.split("\n"), 1):
        m = FENCE.match(line)
        if fence is None:
            if m:
                fence = m.group(1)
                continue
            yield n, line
        elif m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                and not line.strip()[len(m.group(1)):].strip():
            fence = None


def heading_text_to_slug(text):
    """GitHub's slug of a heading's text (its rendered text, lowercased,
    punctuation dropped, spaces to hyphens)."""
    t = CODE_SPAN.sub(lambda m: m.group(2), text)
    # Links and images render as their text.
    t = re.sub(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\([^)]*\)", r"\1", t)
    t = re.sub(r"<[^>]+>", "", t)  # inline HTML
    t = t.lower()
    t = "".join(c for c in t if c.isalnum() or c in "_- ")
    return t.replace(" ", "-")


def anchors_of(text):
    """Every anchor a page offers: its headings' slugs (repeats numbered)
    and explicit <a name/id>."""
    seen = {}
    anchors = set()
    prev = None
    for _, line in prose_lines(text):
        heading = None
        m = ATX.match(line)
        if m:
            heading = m.group(2) or ""
        elif prev is not None and prev.strip() and SETEXT.match(line) \
                and not ATX.match(prev) and "|" not in prev \
                and not re.match(r"^\s*([-*+]|\d+[.)])\s", prev):
            heading = prev.strip()
        if heading is not None:
            slug = heading_text_to_slug(heading.strip())
            n = seen.get(slug, 0)
            anchors.add(slug if n == 0 else f"{slug}-{n}")
            seen[slug] = n + 1
        for a in HTML_ANCHOR.findall(line):
            anchors.add(a)
        prev = line
    return anchors


def links_of(text):
    """(line number, target) of each link outside code."""
    for n, line in prose_lines(text):
        # Code spans hold no links; blank them (keeping columns).
        bare = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
        for m in INLINE_LINK.finditer(bare):
            yield n, m.group(1).strip("<>")
        m = REF_DEF.match(bare)
        if m:
            yield n, m.group(1).strip("<>")


def check_links(root, pages):
    problems = []
    anchor_cache = {}
    count = anchored = 0
    pending = set()

    def anchors(path):
        if path not in anchor_cache:
            with open(path, encoding="utf-8") as f:
                anchor_cache[path] = anchors_of(f.read())
        return anchor_cache[path]

    for page in pages:
        path = os.path.join(root, page)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for line, target in links_of(text):
            if not target or SCHEME.match(target) or target.startswith("//"):
                continue  # absolute: not ours to check offline
            count += 1
            file_part, _, anchor = target.partition("#")
            file_part = urllib.parse.unquote(file_part)
            where = f"{page}:{line}: link {target!r}"
            if file_part:
                if file_part.startswith("/"):
                    dest = os.path.join(root, file_part.lstrip("/"))
                else:
                    dest = os.path.join(os.path.dirname(path), file_part)
                dest = os.path.normpath(dest)
                if not os.path.exists(dest) and os.path.relpath(dest, root) in PENDING and not anchor:
                    pending.add(os.path.relpath(dest, root))
                    continue
                if not os.path.exists(dest):
                    problems.append(f"{where}: {os.path.relpath(dest, root)} does not exist")
                    continue
            else:
                dest = path
            if not anchor:
                continue
            if not dest.lower().endswith((".md", ".markdown")):
                continue  # a line anchor into code, say: GitHub's, not a heading
            anchored += 1
            anchor = urllib.parse.unquote(anchor)
            if anchor not in anchors(dest):
                near = sorted(a for a in anchors(dest) if a.split("-")[0] == anchor.split("-")[0])
                hint = f" (headings there include: {', '.join(near[:5])})" if near else ""
                problems.append(
                    f"{where}: no heading #{anchor} in {os.path.relpath(dest, root)}{hint}"
                )
    return problems, count, anchored, pending


# ---------------------------------------------------------- configuration

def strip_rust_comments(src):
    """config/ without its comments (strings kept), so a name in a doc
    comment is not taken for a read."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(src[i:j + 1])
            i = j + 1
        elif c == "'" and i + 2 < n and (src[i + 2] == "'" or src[i + 1] == "\\"):
            j = src.find("'", i + 2)  # a char literal such as '"'
            out.append(" " * (j + 1 - i))
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching(src, open_at, open_ch, close_ch):
    """Index of the bracket closing the one at open_at (strings skipped)."""
    depth, i = 0, open_at
    while i < len(src):
        c = src[i]
        if c == '"':
            i += 1
            while i < len(src) and src[i] != '"':
                i += 2 if src[i] == "\\" else 1
        elif c == open_ch:
            depth += 1
        elif c == close_ch:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def variables_read(config_rs):
    """The environment variables config/ reads, and anything it names in
    an error that it does not seem to read (a sign this extraction missed
    a way of reading)."""
    src = strip_rust_comments(config_rs)
    cut = src.find("#[cfg(test)]")
    if cut >= 0:
        src = src[:cut]
    name = r'"([A-Z][A-Z0-9_]*)"'
    read = set(re.findall(r"\b(?:get|lookup|std::env::var|env::var|var_os|flag_of)\(\s*" + name + r"\s*\)", src))
    # The typed helpers: whole(&get, "NAME", ...).
    read |= set(re.findall(r"\b(?:whole|senders|arns)\(\s*&get,\s*" + name, src))
    # for (name, ...) in [("NAME", ...), ...] { ... get(name) ... }
    for m in re.finditer(r"\bfor\s*\(\s*([a-z_][a-z0-9_]*)[^)]*\)\s*in\s*\[", src):
        ident = m.group(1)
        close = matching(src, m.end() - 1, "[", "]")
        body_open = src.find("{", close)
        if close < 0 or body_open < 0:
            continue
        body_close = matching(src, body_open, "{", "}")
        body = src[body_open:body_close]
        if not re.search(r"\b(?:get|lookup)\(\s*&?\s*" + ident + r"\s*\)", body):
            continue
        items = src[m.end():close]
        # The first string of each tuple.
        read |= set(re.findall(r"\(\s*" + name, items))
    named = set(re.findall(r"\berr\(\s*" + name, src))
    named |= set(re.findall(r"\bvariable:\s*" + name, src))
    return read, named - read


def variables_documented(config_md):
    """Backticked NAMEs in the first cell of each table row."""
    documented = {}
    for n, line in prose_lines(config_md):
        s = line.strip()
        if not s.startswith("|"):
            continue
        cells = s.strip("|").split("|")
        first = cells[0].strip()
        if re.fullmatch(r":?-+:?", first):
            continue  # the delimiter row
        for v in re.findall(r"`([A-Z][A-Z0-9_]*)`", first):
            documented.setdefault(v, []).append(n)
    return documented


def check_configuration(root):
    problems = []
    rs_path, md_path = os.path.join(root, CONFIG_RS), os.path.join(root, CONFIG_MD)
    if not os.path.exists(md_path):
        return [f"{CONFIG_MD} does not exist"], 0
    text = ""
    for f in sorted(os.listdir(rs_path)):
        if f.endswith(".rs"):
            with open(os.path.join(rs_path, f), encoding="utf-8") as fh:
                # Each file's tests cut off on its own.
                src = fh.read()
                cut = src.find("#[cfg(test)]")
                text += (src[:cut] if cut >= 0 else src) + "\n"
    read, unexplained = variables_read(text)
    with open(md_path, encoding="utf-8") as f:
        documented = variables_documented(f.read())
    if len(read) < 10:
        problems.append(
            f"{CONFIG_RS}: found only {len(read)} variable(s) read ({', '.join(sorted(read)) or 'none'}): "
            "has the way it reads them changed? Update variables_read in tools/check-docs.py"
        )
    if unexplained:
        problems.append(
            f"{CONFIG_RS}: names {', '.join(sorted(unexplained))} in an error but no read of it was found: "
            "a new way of reading? Update variables_read in tools/check-docs.py"
        )
    missing = sorted(read - documented.keys())
    extra = sorted(documented.keys() - read)
    twice = sorted(v for v, lines in documented.items() if len(lines) > 1)
    if missing or extra:
        problems.append(
            f"{CONFIG_MD} and {CONFIG_RS} disagree (a variable is documented when a table row's first cell names it in backticks):\n"
            f"      read by config/, not documented: {', '.join(missing) or '(none)'}\n"
            f"      documented, not read by config/: {', '.join(extra) or '(none)'}"
        )
    for v in twice:
        problems.append(
            f"{CONFIG_MD}: {v} heads more than one row (lines {', '.join(map(str, documented[v]))})"
        )
    return problems, len(read)


# ------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    root = os.path.normpath(ap.parse_args().root)

    pages = ["README.md", "CHANGELOG.md"]
    if os.path.exists(os.path.join(root, "ARCHITECTURE.md")):
        pages.append("ARCHITECTURE.md")
    docs = os.path.join(root, "docs")
    pages += sorted(os.path.join("docs", f) for f in os.listdir(docs) if f.endswith(".md"))
    pages = [p for p in pages if os.path.exists(os.path.join(root, p))]

    problems = []
    link_problems, links, anchored, pending = check_links(root, pages)
    problems += link_problems
    config_problems, variables = check_configuration(root)
    problems += config_problems
    size = os.path.getsize(os.path.join(root, "README.md"))
    if size >= README_LIMIT:
        problems.append(
            f"README.md is {size:,} bytes: keep it under {README_LIMIT:,} (move detail to docs/)"
        )

    if problems:
        for p in problems:
            print(f"check-docs: {p}", file=sys.stderr)
        print(f"check-docs: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    waiting = f" (links to {', '.join(sorted(pending))}, not written yet, allowed)" if pending else ""
    print(
        f"check-docs: ok: {len(pages)} pages, {links} relative links ({anchored} with anchors) resolve{waiting}; "
        f"{CONFIG_MD} documents the {variables} variables config/ reads; README.md {size:,} bytes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

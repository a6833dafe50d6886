#!/usr/bin/env python3
"""dist: a release of imds-guard from what `make template` built.

Usage:
    tools/dist.py build OUT_DIR [--cli PATH] [--sbom PATH] [--bucket NAME]
    tools/dist.py check OUT_DIR
    tools/dist.py compare OUT_DIR OTHER_DIR

`build` reads the bootstraps `sam build` left in .aws-sam/build (one per
function; the functions share three binaries) and writes OUT_DIR:

    functions/{event,sweep,outputs}.zip   one `bootstrap` each, reproducible
    template.packaged.yaml                the stack, its functions pointing at
                                          the zips (sam deploy --resolve-s3
                                          --template-file ... uploads them)
    template.sar.yaml                     the same, for the Serverless
                                          Application Repository: the zips,
                                          README and LICENSE at S3 locations
                                          under s3://BUCKET/imds-guard/VERSION/
    member-template.yaml                  the member stack (StackSets)
    samconfig.toml                        the repository's first-deploy
                                          settings, deploying
                                          template.packaged.yaml
    imds-guard-x86_64-linux               the command line (with --cli)
    sbom.cdx.json                         the Rust dependencies (with --sbom)
    LICENSE, README.md, CHANGELOG.md
    SHA256SUMS                            of every file above

A zip is the same bytes every time it is made from the same binary: one
entry, a fixed timestamp (1980-01-01), mode 0755, deflate level 9 (with
the same zlib: another deflate implementation may pick other bytes).

`check` verifies a release as CI does: each zip holds one executable aarch64
ELF `bootstrap` and zips again to the same bytes; every binary names the
same commit after its version (not `unknown`); each packaged template
names only files that exist (the local one) or the release's S3 prefix (the
SAR one, whose SemanticVersion is the crate's); the SBOM validates as
CycloneDX 1.6 and lists the crates the functions cannot run without (tokio,
aws-sdk-ec2, lambda_runtime); SHA256SUMS verifies. Exit 0 good, 1 a problem (each printed), 2 usage.

`compare` is the release workflow's reproducibility check: two releases
built in two directories list the same files with the same SHA-256 (their
SHA256SUMS are equal); each file that differs is named. Exit 0 the same,
1 different.
"""

import hashlib
import io
import json
import os
import re
import shutil
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, ".aws-sam", "build")
# Each binary's zip, by the cargo binary the template builds it from.
ZIPS = {
    "imds-guard-event": "event.zip",
    "imds-guard-sweep": "sweep.zip",
    "imds-guard-outputs": "outputs.zip",
}
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def version():
    """The crate's version (Cargo.toml's [package])."""
    with open(os.path.join(ROOT, "Cargo.toml"), encoding="utf-8") as f:
        text = f.read()
    package = text.split("[package]", 1)[1].split("\n[", 1)[0]
    m = re.search(r'^version\s*=\s*"([^"]+)"', package, re.M)
    if not m:
        sys.exit("dist: no version in Cargo.toml's [package]")
    return m.group(1)


def per_resource(template, pattern):
    """(resource, match) for each line of `template` matching `pattern`,
    with the top-level resource (a two-space key) it sits under: both
    templates are read the same way, line by line."""
    resource = None
    with open(template, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^  ([A-Za-z0-9]+):\s*$", line)
            if m:
                resource = m.group(1)
                continue
            m = re.match(pattern, line)
            if m and resource:
                yield resource, m


def functions():
    """(logical id, cargo binary) of each function in template.yaml, read
    from its Metadata's BuildProperties.Binary."""
    return [
        (name, m.group(1))
        for name, m in per_resource(os.path.join(ROOT, "template.yaml"), r"^\s+Binary:\s*(\S+)\s*$")
    ]


def zip_bytes(binary: bytes) -> bytes:
    """The one-entry zip of a bootstrap, the same bytes every time."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        info = zipfile.ZipInfo("bootstrap", date_time=FIXED_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.create_system = 3  # Unix: the mode below is read
        info.external_attr = (0o100755 & 0xFFFF) << 16
        z.writestr(info, binary, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return buf.getvalue()


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def built_code_uris(built_template):
    """Each function's CodeUri in the built template: the directory under
    .aws-sam/build that holds its bootstrap. Usually the function's own
    name; a build SAM shares between functions with the same settings is
    `<First>-Shared`, so it is read, never assumed."""
    names = dict(functions())
    return {
        resource: m.group(1)
        for resource, m in per_resource(built_template, r"^\s+CodeUri:\s*['\"]?([^'\"\s]+)['\"]?\s*$")
        if resource in names
    }


def packaged(built_template, code_uri, readme, licence):
    """The built template with each function's CodeUri replaced by
    `code_uri(function)`, and the SAR entry's ReadmeUrl and LicenseUrl (which
    sam build rewrote relative to .aws-sam/build) by `readme`, `licence`."""
    with open(built_template, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    names = dict(functions())
    resource = None
    out = []
    for line in lines:
        m = re.match(r"^  ([A-Za-z0-9]+):\s*$", line)
        if m:
            resource = m.group(1)
        m = re.match(r"^(\s+)CodeUri:\s*\S+\s*$", line)
        if m and resource in names:
            line = f"{m.group(1)}CodeUri: {code_uri(resource)}\n"
        line = re.sub(r"^(\s+ReadmeUrl:\s*)\S+\s*$", lambda m: f"{m.group(1)}{readme}\n", line)
        line = re.sub(r"^(\s+LicenseUrl:\s*)\S+\s*$", lambda m: f"{m.group(1)}{licence}\n", line)
        out.append(line)
    return "".join(out)


def build(out, cli=None, sbom=None, bucket="imds-guard-releases"):
    v = version()
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "functions"))
    fns = functions()
    if not fns:
        sys.exit("dist: template.yaml names no function binary")
    built = os.path.join(BUILD, "template.yaml")
    if not os.path.exists(built):
        sys.exit(f"dist: {built} is missing: run `make template` (sam build) first")
    dirs = built_code_uris(built)
    made = {}
    for fn, binary in fns:
        path = os.path.join(BUILD, dirs[fn], "bootstrap")
        if not os.path.exists(path):
            sys.exit(f"dist: {path} is missing: run `make template` (sam build) first")
        with open(path, "rb") as f:
            data = f.read()
        name = ZIPS.get(binary)
        if name is None:
            sys.exit(f"dist: {fn} builds {binary}, which has no zip name here")
        digest = hashlib.sha256(data).hexdigest()
        # Functions sharing a binary share its zip: it must be one binary.
        if name in made and made[name] != digest:
            sys.exit(f"dist: {fn}'s {binary} differs from another function's: not one build")
        made[name] = digest
        with open(os.path.join(out, "functions", name), "wb") as f:
            f.write(zip_bytes(data))
    by_fn = {fn: ZIPS[b] for fn, b in fns}
    # The release's own copies, beside the template: it deploys from
    # wherever the directory is copied to.
    local = packaged(built, lambda fn: f"functions/{by_fn[fn]}", "README.md", "LICENSE")
    with open(os.path.join(out, "template.packaged.yaml"), "w", encoding="utf-8") as f:
        f.write(local)
    prefix = f"s3://{bucket}/imds-guard/{v}"
    sar = packaged(built, lambda fn: f"{prefix}/{by_fn[fn]}", f"{prefix}/README.md", f"{prefix}/LICENSE")
    with open(os.path.join(out, "template.sar.yaml"), "w", encoding="utf-8") as f:
        f.write(sar)
    shutil.copyfile(os.path.join(ROOT, "member", "template.yaml"), os.path.join(out, "member-template.yaml"))
    for doc in ("LICENSE", "README.md", "CHANGELOG.md"):
        shutil.copyfile(os.path.join(ROOT, doc), os.path.join(out, doc))
    with open(os.path.join(ROOT, "samconfig.toml"), encoding="utf-8") as f:
        config = f.read()
    # In the release, `sam deploy` deploys the packaged template: no build.
    header = "[default.deploy.parameters]\n"
    if header not in config:
        sys.exit(f"dist: samconfig.toml has no {header.strip()} table")
    config = config.replace(header, header + 'template_file = "template.packaged.yaml"\n', 1)
    with open(os.path.join(out, "samconfig.toml"), "w", encoding="utf-8") as f:
        f.write(config)
    if cli:
        dest = os.path.join(out, "imds-guard-x86_64-linux")
        shutil.copyfile(cli, dest)
        os.chmod(dest, 0o755)
    if sbom:
        shutil.copyfile(sbom, os.path.join(out, "sbom.cdx.json"))
    write_sums(out)
    return out


def files_of(out):
    found = []
    for d, _, names in os.walk(out):
        for n in names:
            rel = os.path.relpath(os.path.join(d, n), out)
            if rel != "SHA256SUMS":
                found.append(rel)
    return sorted(found)


def write_sums(out):
    lines = [f"{sha256(os.path.join(out, rel))}  {rel}\n" for rel in files_of(out)]
    with open(os.path.join(out, "SHA256SUMS"), "w", encoding="utf-8") as f:
        f.writelines(lines)


def elf_aarch64(data: bytes) -> bool:
    # ELF magic, 64-bit, little-endian, e_machine EM_AARCH64 (183).
    return (
        data[:4] == b"\x7fELF"
        and data[4] == 2
        and data[5] == 1
        and int.from_bytes(data[18:20], "little") == 183
    )


def static_x86_64(data: bytes) -> bool:
    """A 64-bit little-endian x86-64 ELF with no interpreter (PT_INTERP):
    statically linked, it runs on any x86_64 Linux."""
    if not (data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1):
        return False
    if int.from_bytes(data[18:20], "little") != 62:
        return False
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    phnum = int.from_bytes(data[56:58], "little")
    for i in range(phnum):
        at = phoff + i * phentsize
        if int.from_bytes(data[at : at + 4], "little") == 3:
            return False
    return True


def samconfig_problems(out):
    """The release's samconfig.toml deploys its packaged template and sets
    only parameters that template has."""
    import shlex
    import tomllib

    path = os.path.join(out, "samconfig.toml")
    if not os.path.exists(path):
        return ["samconfig.toml is missing"]
    try:
        with open(path, "rb") as f:
            deploy = tomllib.load(f)["default"]["deploy"]["parameters"]
    except (ValueError, KeyError) as e:
        return [f"samconfig.toml has no readable [default.deploy.parameters]: {e}"]
    problems = []
    if deploy.get("template_file") != "template.packaged.yaml":
        problems.append(f"samconfig.toml deploys {deploy.get('template_file')!r}, not template.packaged.yaml")
    template = os.path.join(out, "template.packaged.yaml")
    if os.path.exists(template):
        with open(template, encoding="utf-8") as f:
            text = f.read()
        # The Parameters section: up to the next top-level key.
        m = re.search(r"^Parameters:\n((?:[ #].*\n|\n)*)", text, re.M)
        params = m.group(1) if m else ""
        known = set(re.findall(r"^  ([A-Za-z0-9]+):\s*$", params, re.M))
        overrides = deploy.get("parameter_overrides", "")
        if isinstance(overrides, list):
            overrides = " ".join(overrides)
        for pair in shlex.split(overrides):
            name = pair.split("=", 1)[0]
            if name not in known:
                problems.append(f"samconfig.toml sets {name}, which template.packaged.yaml does not have")
    return problems


def built_from(binary: bytes, version: str):
    """The commit a binary names after its version (release.rs's LINE),
    `unknown`, or None when it carries no such line."""
    m = re.search(re.escape(version.encode()) + rb" \(commit ([0-9a-f]{12}|unknown)\)", binary)
    return m.group(1).decode() if m else None


def check(out):
    problems = []
    v = version()
    commits = {}
    cli = os.path.join(out, "imds-guard-x86_64-linux")
    if os.path.exists(cli):
        with open(cli, "rb") as f:
            data = f.read()
        if not static_x86_64(data):
            problems.append("imds-guard-x86_64-linux is not a statically linked x86-64 ELF")
        commits["imds-guard-x86_64-linux"] = built_from(data, v)
    for name in ZIPS.values():
        path = os.path.join(out, "functions", name)
        if not os.path.exists(path):
            problems.append(f"{name} is missing")
            continue
        with open(path, "rb") as f:
            raw = f.read()
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            entries = z.infolist()
            if [e.filename for e in entries] != ["bootstrap"]:
                problems.append(f"{name} holds {[e.filename for e in entries]}, not one bootstrap")
                continue
            mode = (entries[0].external_attr >> 16) & 0o777
            if mode & 0o111 == 0:
                problems.append(f"{name}: bootstrap is not executable (mode {oct(mode)})")
            data = z.read("bootstrap")
        if not elf_aarch64(data):
            problems.append(f"{name}: bootstrap is not a 64-bit aarch64 ELF")
        commits[name] = built_from(data, v)
        if zip_bytes(data) != raw:
            problems.append(f"{name}: zipping the same bootstrap again gives other bytes")
    # Every binary says which commit it is, and it is the same one.
    for name, commit in sorted(commits.items()):
        if commit is None:
            problems.append(f"{name} does not carry \"{v} (commit ...)\": not built from this version")
        elif commit == "unknown":
            problems.append(f"{name} was built outside git without IMDS_GUARD_COMMIT: its logs could not say which code it is")
    if len({c for c in commits.values() if c}) > 1:
        problems.append(f"the binaries name different commits: {commits}")
    local = os.path.join(out, "template.packaged.yaml")
    sar = os.path.join(out, "template.sar.yaml")
    for path in (local, sar):
        if not os.path.exists(path):
            problems.append(f"{os.path.basename(path)} is missing")
    if os.path.exists(local):
        with open(local, encoding="utf-8") as f:
            text = f.read()
        uris = re.findall(r"^\s+CodeUri:\s*(\S+)\s*$", text, re.M)
        if len(uris) != len(functions()):
            problems.append(f"template.packaged.yaml has {len(uris)} CodeUri, the stack {len(functions())} functions")
        # Every local path it names is in the release, below it: the
        # directory deploys from wherever it is copied.
        for u in uris + re.findall(r"^\s+(?:ReadmeUrl|LicenseUrl):\s*(\S+)\s*$", text, re.M):
            inside = os.path.normpath(os.path.join(out, u))
            if u.startswith("/") or ".." in u.split("/") or not os.path.isfile(inside):
                problems.append(f"template.packaged.yaml names {u}, which is not a file in the release")
    if os.path.exists(sar):
        with open(sar, encoding="utf-8") as f:
            text = f.read()
        for u in re.findall(r"^\s+(?:CodeUri|ReadmeUrl|LicenseUrl):\s*(\S+)\s*$", text, re.M):
            key = u.rsplit("/", 1)[-1]
            if not re.match(rf"^s3://[a-z0-9.-]+/imds-guard/{re.escape(v)}/", u):
                problems.append(f"template.sar.yaml names {u}, outside the release's S3 prefix")
            elif not (os.path.exists(os.path.join(out, "functions", key)) or os.path.exists(os.path.join(out, key))):
                problems.append(f"template.sar.yaml names {u}, whose file is not in the release")
        m = re.search(r"^\s+SemanticVersion:\s*['\"]?([^'\"\s]+)", text, re.M)
        if not m or m.group(1) != v:
            problems.append(f"template.sar.yaml's SemanticVersion is {m.group(1) if m else 'missing'}, the crate's {v}")
    problems += samconfig_problems(out)
    sbom = os.path.join(out, "sbom.cdx.json")
    if os.path.exists(sbom):
        try:
            with open(sbom, encoding="utf-8") as f:
                doc = json.load(f)
            names = {c.get("name") for c in doc.get("components", [])}
            if doc.get("bomFormat") != "CycloneDX" or not names:
                problems.append("sbom.cdx.json is not a CycloneDX document with components")
            for crate in ("tokio", "aws-sdk-ec2", "lambda_runtime"):
                if crate not in names:
                    problems.append(f"sbom.cdx.json does not list {crate}")
            try:
                from cyclonedx.schema import SchemaVersion
                from cyclonedx.validation.json import JsonStrictValidator

                with open(sbom, encoding="utf-8") as f:
                    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(f.read())
                if error:
                    problems.append(f"sbom.cdx.json does not validate as CycloneDX 1.6: {error}")
            except ImportError:
                problems.append("sbom.cdx.json not validated: run with the release tooling (make dist-venv)")
        except ValueError as e:
            problems.append(f"sbom.cdx.json does not parse: {e}")
    sums = os.path.join(out, "SHA256SUMS")
    if not os.path.exists(sums):
        problems.append("SHA256SUMS is missing")
    else:
        listed = {}
        with open(sums, encoding="utf-8") as f:
            for line in f:
                digest, rel = line.rstrip("\n").split("  ", 1)
                listed[rel] = digest
        if sorted(listed) != files_of(out):
            problems.append(f"SHA256SUMS lists {sorted(listed)}, the release holds {files_of(out)}")
        for rel, digest in listed.items():
            p = os.path.join(out, rel)
            if os.path.exists(p) and sha256(p) != digest:
                problems.append(f"SHA256SUMS: {rel} does not verify")
    for p in problems:
        print(f"dist check: {p}", file=sys.stderr)
    if not problems:
        sizes = ", ".join(
            f"{rel} {os.path.getsize(os.path.join(out, rel)):,} B" for rel in files_of(out)
        )
        built = ", ".join(sorted({c for c in commits.values() if c})) or "no binary"
        print(f"dist check: ok, {v} (commit {built}): {sizes}")
    return 1 if problems else 0


def sums_of(out):
    """SHA256SUMS as {file: digest}."""
    sums = {}
    with open(os.path.join(out, "SHA256SUMS"), encoding="utf-8") as f:
        for line in f:
            digest, _, rel = line.rstrip("\n").partition("  ")
            sums[rel] = digest
    return sums


def compare(one, other):
    a, b = sums_of(one), sums_of(other)
    differ = sorted(rel for rel in a.keys() | b.keys() if a.get(rel) != b.get(rel))
    for rel in differ:
        print(f"dist compare: {rel}: {a.get(rel, 'missing')} in {one}, {b.get(rel, 'missing')} in {other}", file=sys.stderr)
    if differ:
        return 1
    print(f"dist compare: the same {len(a)} files, byte for byte: {one} and {other}")
    return 0


def main(argv):
    if len(argv) < 3 or argv[1] not in ("build", "check", "compare"):
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[2]
    if argv[1] == "check":
        return check(out)
    if argv[1] == "compare":
        if len(argv) != 4:
            print(__doc__, file=sys.stderr)
            return 2
        return compare(out, argv[3])
    opts = dict(zip(argv[3::2], argv[4::2]))
    build(out, cli=opts.get("--cli"), sbom=opts.get("--sbom"), bucket=opts.get("--bucket", "imds-guard-releases"))
    print(f"dist: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

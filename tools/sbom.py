#!/usr/bin/env python3
"""sbom: the Rust dependencies of imds-guard's binaries as CycloneDX 1.6 JSON.

Usage: tools/sbom.py OUT.json

Reads `cargo metadata --locked --filter-platform` (no network: Cargo.lock
decides) for each platform the release is built for (the functions'
aarch64 Linux, the command line's x86_64 musl) and lists every crate the
workspace's binaries are built from there: the workspace's own
packages and everything they reach through normal and build dependencies
(dev-dependencies, which only the tests use, are left out), each with its
version, package URL (pkg:cargo/...), licence expression and, for crates
from crates.io, Cargo.lock's SHA-256. CycloneDX's own library (the
`cyclonedx-python-lib` package) writes the document and validates it
against the 1.6 schema; an invalid one is an error, never written.
"""

import datetime
import hashlib
import json
import os
import subprocess
import sys
import uuid

from cyclonedx.model import HashAlgorithm, HashType
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import LicenseExpression
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL


# The platforms the release's binaries are built for: the functions and the
# command line. A crate only another platform pulls in is not in them.
PLATFORMS = ("aarch64-unknown-linux-gnu", "x86_64-unknown-linux-musl")


def metadata(platform):
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", platform],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def checksums():
    """Cargo.lock's checksum of each registry crate, by (name, version)."""
    sums = {}
    name = version = None
    with open("Cargo.lock", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line == "[[package]]":
                name = version = None
            elif '"' not in line:
                continue  # the lock file's own `version = 4`
            elif line.startswith("name = "):
                name = line.split('"')[1]
            elif line.startswith("version = "):
                version = line.split('"')[1]
            elif line.startswith("checksum = ") and name and version:
                sums[(name, version)] = line.split('"')[1]
    return sums


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    # What the binaries are built from, on each platform they are built
    # for: normal and build edges only (a `null` kind is a normal one).
    packages, nodes, reached = {}, {}, set()
    for platform in PLATFORMS:
        meta = metadata(platform)
        packages.update({p["id"]: p for p in meta["packages"]})
        here = {n["id"]: n for n in meta["resolve"]["nodes"]}
        members = set(meta["workspace_members"])
        todo, seen = list(members), set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            reached.add(pid)
            node = here[pid]
            known = nodes.setdefault(pid, {"id": pid, "deps": []})
            for dep in node["deps"]:
                if any(k.get("kind") in (None, "build") for k in dep["dep_kinds"]):
                    if dep not in known["deps"]:
                        known["deps"].append(dep)
                    todo.append(dep["pkg"])
    sums = checksums()
    root_pkg = next(p for p in meta["packages"] if p["id"] in members and p["name"] == "imds-guard")

    def component(p, kind):
        c = Component(
            name=p["name"],
            version=p["version"],
            type=kind,
            bom_ref=f"{p['name']}@{p['version']}",
            purl=PackageURL("cargo", name=p["name"], version=p["version"]),
        )
        if p.get("license"):
            c.licenses.add(LicenseExpression(p["license"]))
        digest = sums.get((p["name"], p["version"]))
        if digest:
            c.hashes.add(HashType(alg=HashAlgorithm.SHA_256, content=digest))
        return c

    # The same sources, the same document: its serial number from
    # Cargo.lock's and Cargo.toml's bytes, its time the commit's
    # (SOURCE_DATE_EPOCH when set, as reproducible builds name it).
    digest = hashlib.sha256()
    for name in ("Cargo.lock", "Cargo.toml"):
        with open(name, "rb") as f:
            digest.update(f.read())
    bom = Bom(serial_number=uuid.uuid5(uuid.NAMESPACE_URL, "imds-guard:" + digest.hexdigest()))
    epoch = os.environ.get("SOURCE_DATE_EPOCH") or subprocess.run(
        ["git", "log", "-1", "--format=%ct"], capture_output=True, text=True
    ).stdout.strip()
    if epoch.isdigit():
        bom.metadata.timestamp = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
    root = component(root_pkg, ComponentType.APPLICATION)
    bom.metadata.component = root
    by_id = {}
    for pid in sorted(reached):
        if pid == root_pkg["id"]:
            by_id[pid] = root
            continue
        c = component(packages[pid], ComponentType.LIBRARY)
        bom.components.add(c)
        by_id[pid] = c
    for pid in sorted(reached):
        deps = [
            by_id[d["pkg"]]
            for d in nodes[pid]["deps"]
            if d["pkg"] in by_id and any(k.get("kind") in (None, "build") for k in d["dep_kinds"])
        ]
        bom.register_dependency(by_id[pid], deps)
    text = make_outputter(bom, OutputFormat.JSON, SchemaVersion.V1_6).output_as_string(indent=1)
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error:
        print(f"sbom: the document does not validate: {error}", file=sys.stderr)
        return 1
    with open(argv[1], "w", encoding="utf-8") as f:
        f.write(text)
    print(f"sbom: {argv[1]}: {len(reached)} crates (CycloneDX 1.6, validated)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Writes the SPDX 2.3 JSON SBOM of one Convoy binary's image, offline.

Lists every crate the binary is built from (the normal-dependency closure of its package in
`cargo metadata`'s resolve graph for the target platform, with the crates.io SHA-256 of
Cargo.lock) and the Debian packages the image copies files from (the glibc libraries and CA
roots). Called by images/build.sh:

    cargo metadata --format-version 1 --locked --filter-platform TRIPLE |
      python3 images/sbom.py --package convoy-agent --lockfile Cargo.lock \
        --created 2026-01-01T00:00:00Z --revision SHA --source URL \
        /lib/x86_64-linux-gnu/libc.so.6 /etc/ssl/certs/ca-certificates.crt=ca-certificates > sbom.spdx.json
"""

import argparse
import json
import re
import subprocess
import sys
import tomllib


def spdx_id(kind, name, version):
    return "SPDXRef-" + re.sub(r"[^A-Za-z0-9.-]", "-", f"{kind}-{name}-{version}")


def license_expression(declared):
    """Cargo's `license` field as an SPDX expression (old `A/B` means `A OR B`)."""
    if not declared:
        return "NOASSERTION"
    return " OR ".join(part.strip() for part in declared.split("/"))


def crate_closure(metadata, package):
    """Package ids of `package` and every crate it depends on at run time (normal dependencies)."""
    roots = [p["id"] for p in metadata["packages"] if p["name"] == package and p["source"] is None]
    if not roots:
        sys.exit(f"sbom.py: no workspace package '{package}' in cargo metadata")
    nodes = {node["id"]: node for node in metadata["resolve"]["nodes"]}
    seen, todo = set(), list(roots)
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for dep in nodes[current]["deps"]:
            if any(kind["kind"] is None for kind in dep["dep_kinds"]):
                todo.append(dep["pkg"])
    return roots[0], seen


def debian_packages(files):
    """(package, version, architecture) of the Debian packages that installed `files`."""
    found = set()
    for path in files:
        path, _, generated_by = path.partition("=")
        if generated_by:
            found.add((generated_by, *package_version(generated_by)))
            continue
        owner = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True)
        if owner.returncode != 0:
            # Merged /usr: dpkg may know the file under the other spelling of its path.
            alternative = path[4:] if path.startswith("/usr/") else "/usr" + path
            owner = subprocess.run(["dpkg-query", "-S", alternative], capture_output=True, text=True)
        if owner.returncode != 0:
            sys.exit(f"sbom.py: no Debian package owns {path}; the SBOM must name where every file comes from")
        name = owner.stdout.split(":")[0].strip()
        if name.startswith("diversion by"):
            sys.exit(f"sbom.py: {path} is diverted; cannot tell its package")
        found.add((name, *package_version(name)))
    return sorted(found)


def package_version(name):
    """(version, architecture) of the installed Debian package `name`."""
    fields = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version} ${Architecture}", name], capture_output=True, text=True, check=True
    ).stdout.split()
    return fields[0], fields[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True, help="workspace package of the binary")
    parser.add_argument("--lockfile", required=True, help="Cargo.lock, for crate checksums")
    parser.add_argument("--created", required=True, help="creation time, RFC 3339 UTC")
    parser.add_argument("--revision", required=True, help="Git revision the binary is built from")
    parser.add_argument("--source", required=True, help="the repository's URL")
    parser.add_argument(
        "files",
        nargs="*",
        help="host files copied into the image (libraries); PATH=PACKAGE for a file PACKAGE generates (CA roots)",
    )
    args = parser.parse_args()

    metadata = json.load(sys.stdin)
    with open(args.lockfile, "rb") as lock:
        checksums = {
            (p["name"], p["version"]): p["checksum"] for p in tomllib.load(lock).get("package", []) if "checksum" in p
        }
    root, closure = crate_closure(metadata, args.package)
    by_id = {p["id"]: p for p in metadata["packages"]}
    root_package = by_id[root]
    root_spdx = spdx_id("crate", root_package["name"], root_package["version"])

    def depends_on(entry):
        return {"spdxElementId": root_spdx, "relationshipType": "DEPENDS_ON", "relatedSpdxElement": entry["SPDXID"]}

    packages, relationships = [], []
    for pid in sorted(closure, key=lambda i: (by_id[i]["name"], by_id[i]["version"])):
        crate = by_id[pid]
        entry = {
            "name": crate["name"],
            "SPDXID": spdx_id("crate", crate["name"], crate["version"]),
            "versionInfo": crate["version"],
            "downloadLocation": (
                f"https://crates.io/api/v1/crates/{crate['name']}/{crate['version']}/download"
                if crate["source"] and crate["source"].startswith("registry+")
                else (args.source if crate["source"] is None else crate["source"])
            ),
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": license_expression(crate.get("license")),
            "copyrightText": "NOASSERTION",
            "externalRefs": [
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": f"pkg:cargo/{crate['name']}@{crate['version']}",
                }
            ],
        }
        checksum = checksums.get((crate["name"], crate["version"]))
        if checksum:
            entry["checksums"] = [{"algorithm": "SHA256", "checksumValue": checksum}]
        if crate["source"] is None:
            entry["sourceInfo"] = f"built from revision {args.revision}"
        packages.append(entry)
        if pid != root:
            relationships.append(depends_on(entry))
    for name, version, arch in debian_packages(args.files):
        entry = {
            "name": name,
            "SPDXID": spdx_id("deb", name, version),
            "versionInfo": version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "supplier": "Organization: Debian",
            "externalRefs": [
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": f"pkg:deb/debian/{name}@{version}?arch={arch}",
                }
            ],
        }
        packages.append(entry)
        relationships.append(depends_on(entry))
    name = f"{root_package['name']}-{root_package['version']}"
    document = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": f"{args.source}/spdx/{name}-{args.revision}",
        "creationInfo": {"created": args.created, "creators": ["Tool: convoy-images-sbom"]},
        "packages": packages,
        "relationships": [
            {
                "spdxElementId": "SPDXRef-DOCUMENT",
                "relationshipType": "DESCRIBES",
                "relatedSpdxElement": root_spdx,
            }
        ]
        + relationships,
    }
    json.dump(document, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

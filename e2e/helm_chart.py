"""Drives Helm's own engine and client (PyPI helm-python-sdk) for the tests in e2e/tests/charts.rs
and e2e/tests/chart_sources.rs.

usage: helm_chart.py COMMAND PATH  (a JSON request on stdin)
  lint CHART_DIR        {"values": {...}}                              -> {"ok": true, "lint": {...}}
  render CHART_DIR      {"values": {...}, "name": ..., "namespace": ...} -> {"ok": true, "manifests": {...}}
  package CHART_DIR     {"destination": DIR}      -> {"ok": true, "archive": PATH, "digest": "sha256:..."}
  index DIR             {}                        -> {"ok": true, "index": {...}} (writes DIR/index.yaml, as
                                                     `helm repo index DIR`)
  push ARCHIVE          {"remote": "oci://HOST:PORT/PATH", "username": ..., "password": ...}
                                                  -> {"ok": true} (`helm push` over plain HTTP; logs in first
                                                     when a username is given)
  push-image REGISTRY   {"repository": "charts/x", "tag": "1.0.0"} -> {"ok": true}
                        (an OCI image that is not a chart, uploaded with the registry v2 API)
A failure prints {"ok": false, "kind": "<exception class>", "error": "<message>"}.
"""
import hashlib
import json
import os
import sys
import tempfile
import urllib.parse
import urllib.request

import helm_python as helm


def push(archive: str, request: dict) -> dict:
    remote = request["remote"]
    host = remote.removeprefix("oci://").split("/")[0]
    with tempfile.TemporaryDirectory() as home:
        with helm.RegistryClient(plain_http=True, credentials_file=os.path.join(home, "config.json")) as client:
            if request.get("username"):
                client.login(host, request["username"], request["password"], plain_http=True)
            helm.push(archive, remote, client=client, plain_http=True)
    return {"ok": True}


def push_image(registry: str, request: dict) -> dict:
    base, repository = f"http://{registry}", request["repository"]

    def blob(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        started = urllib.request.urlopen(urllib.request.Request(f"{base}/v2/{repository}/blobs/uploads/", method="POST"))
        location = urllib.parse.urljoin(base, started.headers["Location"])
        sep = "&" if "?" in location else "?"
        urllib.request.urlopen(urllib.request.Request(
            f"{location}{sep}digest={digest}", data=data, method="PUT",
            headers={"Content-Type": "application/octet-stream"}))
        return digest

    config, layer = b"{}", b"not a chart"
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(layer),
                    "size": len(layer)}],
    }
    urllib.request.urlopen(urllib.request.Request(
        f"{base}/v2/{repository}/manifests/{request['tag']}", data=json.dumps(manifest).encode(), method="PUT",
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}))
    return {"ok": True}


def main() -> None:
    command, path = sys.argv[1], sys.argv[2]
    request = json.load(sys.stdin)
    values = request.get("values") or {}
    try:
        if command == "lint":
            out = {"ok": True, "lint": helm.lint(path, values, strict=True)}
        elif command == "package":
            archive = helm.package(path, destination=request["destination"])
            out = {"ok": True, "archive": archive, "digest": helm.digest(archive)}
        elif command == "index":
            out = {"ok": True, "index": helm.repo_index_generate(path)}
        elif command == "push":
            out = push(path, request)
        elif command == "push-image":
            out = push_image(path, request)
        else:
            chart = helm.Chart.load(path)
            chart.validate_schema(chart.merge_values(values))
            manifests = chart.render(
                values, name=request.get("name", "convoy"), namespace=request.get("namespace", "default"),
                is_install=True,
            )
            out = {"ok": True, "manifests": manifests}
    except helm.HelmError as e:
        out = {"ok": False, "kind": type(e).__name__, "error": str(e)}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

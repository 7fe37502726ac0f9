"""Renders charts with Helm's own engine (PyPI helm-python-sdk) for tests/helm_conformance.rs.

stdin: JSON list of {"chart": DIR, "values": {...}, "name": ..., "namespace": ...}
stdout: JSON list of {"ok": true, "files": {template: text}, "ms": float}
        or {"ok": false, "error": "..."}
"""
import json
import sys
import time

import helm_python as helm


def main() -> None:
    requests = json.load(sys.stdin)
    out = []
    for req in requests:
        try:
            # Helm's dependency processing changes the loaded chart (it drops disabled
            # subcharts), so every render starts from a freshly loaded one.
            chart = helm.Chart.load(req["chart"])
            start = time.perf_counter()
            files = chart.render(req["values"], name=req["name"], namespace=req["namespace"], is_install=True)
            ms = (time.perf_counter() - start) * 1000
            entry = {"ok": True, "files": files, "ms": ms}
            # The whole release as `helm install --dry-run=client` (what `helm template`
            # prints): dependency processing, schema, splitting, kind order.
            try:
                cfg = helm.Config(storage_driver="memory", namespace=req["namespace"], kube_apiserver="http://127.0.0.1:1")
                rel = cfg.install(req["chart"], req["name"], req["values"], namespace=req["namespace"], dry_run="client")
                entry["manifest"] = rel.get("manifest", "")
            except helm.HelmError as e:
                entry["install_error"] = f"{type(e).__name__}: {e}"
            out.append(entry)
        except helm.HelmError as e:
            out.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

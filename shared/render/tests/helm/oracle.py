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
            out.append({"ok": True, "files": files, "ms": ms})
        except helm.HelmError as e:
            out.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

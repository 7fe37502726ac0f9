"""Drives Helm's own engine (PyPI helm-python-sdk) for the chart tests in e2e/tests/charts.rs.

usage: helm_chart.py lint|render CHART_DIR  (JSON on stdin: {"values": {...}, "name": ..., "namespace": ...})
Prints one JSON object: {"ok": true, "manifests": {...}} / {"ok": true, "lint": {...}}
or {"ok": false, "kind": "<exception class>", "error": "<message>"}.
"""
import json
import sys

import helm_python as helm


def main() -> None:
    command, chart_dir = sys.argv[1], sys.argv[2]
    request = json.load(sys.stdin)
    values = request.get("values") or {}
    try:
        if command == "lint":
            out = {"ok": True, "lint": helm.lint(chart_dir, values, strict=True)}
        else:
            chart = helm.Chart.load(chart_dir)
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

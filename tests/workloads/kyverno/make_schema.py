"""Writes clusterpolicy-v1.schema.json, the JSON Schema the policy tests check against, from the
pydantic models of cloudcoil-models-kyverno (generated from Kyverno's own CRD). Run it in a
scratch environment, not the project's:

    python3 -m venv /tmp/kyverno-models && /tmp/kyverno-models/bin/pip install cloudcoil-models-kyverno==1.13.4.0
    /tmp/kyverno-models/bin/python tests/workloads/kyverno/make_schema.py
"""

import importlib.metadata
import json
from pathlib import Path

from cloudcoil.models.kyverno import v1


def without_titles(node):
    """pydantic's `title`s are its own (from the Python names), not the CRD's: dropped."""
    if isinstance(node, dict):
        return {key: without_titles(value) for key, value in node.items()
                if not (key == "title" and isinstance(value, str))}
    if isinstance(node, list):
        return [without_titles(value) for value in node]
    return node


schema = without_titles(v1.ClusterPolicy.model_json_schema(by_alias=True, mode="validation"))
schema["$comment"] = (f"kyverno.io/v1 ClusterPolicy from cloudcoil-models-kyverno "
                      f"{importlib.metadata.version('cloudcoil-models-kyverno')} (Apache-2.0), generated from "
                      "Kyverno's config/crds/kyverno/kyverno.io_clusterpolicies.yaml (Apache-2.0); "
                      "written by tests/workloads/kyverno/make_schema.py")
out = Path(__file__).with_name("clusterpolicy-v1.schema.json")
out.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
print(out, out.stat().st_size)

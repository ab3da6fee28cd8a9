"""Schema checks of the Kubernetes manifests, for want of a cluster to apply them to.

    pip install kubernetes-validate jsonschema pyyaml
    python deploy/kubernetes/validate.py --crd ray.io_rayservices.yaml deploy/kubernetes/*.yaml

- built-in kinds (Deployment, Service, HorizontalPodAutoscaler, ...): `kubernetes-validate
  --strict` against the Kubernetes version's OpenAPI schemas (unknown fields are errors);
- RayService: against the openAPIV3Schema of KubeRay's CRD (`--crd`, e.g.
  ray-operator/config/crd/bases/ray.io_rayservices.yaml of KubeRay v1.7.0), strictly: a field
  the schema does not define is an error unless the schema keeps unknown fields;
- its `serveConfigV2`: against Ray Serve's config schema when `ray` is importable (the tests do
  this too: tests/ray/test_ray_config.py).

Exit status 0 when every document passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml


def strict(schema: Any) -> Any:
    """`schema` where an object with `properties` takes no other key, unless it says it keeps
    unknown fields (what `kubectl apply --validate=strict` does)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    tightened = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in tightened
        and "additionalProperties" not in tightened
        and not tightened.get("x-kubernetes-preserve-unknown-fields")
    ):
        tightened["additionalProperties"] = False
    return tightened


def crd_validator(crd_path: Path, kind: str) -> Any:
    import jsonschema

    crd = yaml.safe_load(crd_path.read_text())
    if crd["spec"]["names"]["kind"] != kind:
        raise SystemExit(f"{crd_path} defines {crd['spec']['names']['kind']}, not {kind}")
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


def check_serve_config(text: str) -> list[str]:
    try:
        from ray.serve.schema import ServeDeploySchema
    except ImportError:
        return ["(serveConfigV2 not checked: ray is not installed here)"]
    ServeDeploySchema.model_validate(yaml.safe_load(text))
    return []


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--crd", type=Path, help="KubeRay's RayService CRD (ray.io_rayservices.yaml)")
    parser.add_argument("--kubernetes-version", default="1.37.0")
    args = parser.parse_args(argv)
    failed = False
    for path in args.files:
        for document in yaml.safe_load_all(path.read_text()):
            if not document:
                continue
            what = f"{path}: {document['kind']}/{document['metadata']['name']}"
            if document["kind"] == "RayService":
                if args.crd is None:
                    print(f"SKIPPED {what}: no --crd given")
                    continue
                errors = [
                    f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
                    for error in crd_validator(args.crd, "RayService").iter_errors(document)
                ]
                notes = check_serve_config(document["spec"]["serveConfigV2"])
            else:
                import kubernetes_validate

                try:
                    kubernetes_validate.validate(document, args.kubernetes_version, strict=True)
                    errors = []
                except kubernetes_validate.ValidationError as error:
                    errors = [str(error.message)]
                notes = []
            failed |= bool(errors)
            print(f"{'FAILED' if errors else 'passed'} {what} {' '.join(notes)}".rstrip())
            for error in errors:
                print(f"    {error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

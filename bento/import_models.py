"""Import the registry's served models into the BentoML model store and write ``bento/serving.json``.

    python bento/import_models.py [--params params.yaml] [--alias champion] [--out bento/serving.json]

For each role in ``params.serve.models`` (role -> registered name), resolves ``models:/<name>@<alias>``
in the MLflow registry (``MLFLOW_TRACKING_URI``, default ``sqlite:///mlflow.db``), writes it as a
serving bundle (``model.pt`` + ``serving.json``, :mod:`covidscan.serving.bundle`) into a new BentoML
model ``<name>:<generated version>`` labelled with the registry version and alias, and records the tags
in ``serving.json`` together with the serving limits. Roles without a registered version are skipped
and listed in ``serving.json`` as ``not_served`` (role -> ``<name>@<alias>``): the service starts
without them, ``/info`` names them and their requests answer 503 (many deployments have no CT-slice
model, ``ctslice``). ``bentoml build`` then pins exactly these model tags.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from covidscan.environment import quiet_telemetry

quiet_telemetry()

import bentoml  # noqa: E402

from covidscan.config import PARAMS_FILE, Params, load_params  # noqa: E402
from covidscan.errors import CovidscanError  # noqa: E402
from covidscan.serving.bundle import bundle_from_registry  # noqa: E402
from covidscan.tracking.registry import version_by_alias  # noqa: E402

log = logging.getLogger("bento.import_models")


def import_models(params: Params, alias: str, out: Path) -> dict[str, str]:
    """Import every available role; returns role -> BentoML model tag (also written to ``out``, with the
    roles not served)."""
    tags: dict[str, str] = {}
    not_served: dict[str, str] = {}
    for role, name in params.serve.models.items():
        mv = version_by_alias(name, alias)
        if mv is None:
            log.warning("%s: no version under alias %r in the MLflow registry; role %s not served", name, alias, role)
            not_served[role] = f"{name}@{alias}"
            continue
        labels = {"registry_version": str(mv.version), "alias": alias, "role": role, "framework": "covidscan"}
        with bentoml.models.create(name, labels=labels, metadata={"mlflow_uri": f"models:/{name}/{mv.version}"}) as model:
            info = bundle_from_registry(name, alias, role, model.path, params.preprocess)
        tags[role] = str(model.tag)
        log.info("%s: %s@%s = version %s -> bentoml model %s", role, name, alias, info.version, model.tag)
    if not tags:
        raise CovidscanError(f"no served model has a version under alias {alias!r} in the MLflow registry; train and register first")
    config = {
        "models": tags,
        "not_served": not_served,
        "serve": params.serve.model_dump(mode="json"),
        "limits": params.data.dicom.model_dump(mode="json"),
        "explain": params.evaluate.model_dump(mode="json"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return tags


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--alias", default=None, help="registry alias (default params serve.alias)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "serving.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = load_params(args.params, profile=args.profile) if args.params.is_file() else Params()
        tags = import_models(params, args.alias or params.serve.alias, args.out)
    except CovidscanError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(tags))
    return 0


if __name__ == "__main__":
    sys.exit(main())

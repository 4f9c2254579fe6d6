"""Model versions: a model pinned by Hugging Face commit sha or by the content hash of a local
folder, with its prices, context window and default generation parameters.

What a model version *is* (repo, revision, folder, hash) never changes after creation: a new
revision is a new model version, so releases that point at the old one keep meaning the same thing.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from controlplane.models import Backend, ModelVersion, Team
from controlplane.selectors import endpoint_ids_using_model_version
from controlplane.services.audit import Actor, audit_record, snapshot
from controlplane.services.common import require_name, require_team, unique_as_field_error
from controlplane.services.events import publish_after_commit

COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
HUB_TIMEOUT_S = 10.0
AUDITED_FIELDS = [
    "name",
    "hf_repo_id",
    "hf_revision",
    "local_path",
    "content_hash",
    "tokenizer",
    "served_model_name",
    "context_window",
    "input_price_per_mtok",
    "output_price_per_mtok",
    "default_parameters",
    "backend_id",
]
# Fields that may change after creation; the rest is the model's identity.
MUTABLE_FIELDS = (
    "tokenizer",
    "served_model_name",
    "context_window",
    "input_price_per_mtok",
    "output_price_per_mtok",
    "default_parameters",
    "backend",
)
_UNIQUE_NAME = {
    "modelversion_unique_team_name": ("name", "this team already has a model version with this name")
}
MAX_PRICE = Decimal("999999")  # the column holds 6 integer digits


# --- Generation parameters -------------------------------------------------------------------------
# The TGI `parameters` and OpenAI request fields a release or model version may preset. A typo
# here would otherwise reach every request as a silently ignored (or rejected) field.


def _number(
    low: float | None = None, high: float | None = None, *, low_open: bool = False
) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number"
        if low is not None and (value <= low if low_open else value < low):
            return f"must be {'>' if low_open else '>='} {low}"
        if high is not None and value > high:
            return f"must be <= {high}"
        return ""

    return check


def _integer(low: int, high: int | None = None) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be a whole number"
        if value < low or (high is not None and value > high):
            return f"must be between {low} and {high}" if high is not None else f"must be >= {low}"
        return ""

    return check


def _boolean(value: Any) -> str:
    return "" if isinstance(value, bool) else "must be true or false"


def _stop(value: Any) -> str:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        return "must be a non-empty string or a list of them"
    return "" if len(values) <= 4 else "takes at most 4 stop sequences"


def _typed_object(value: Any) -> str:
    return (
        ""
        if isinstance(value, dict) and isinstance(value.get("type"), str)
        else 'must be an object with a "type"'
    )


def _logit_bias(value: Any) -> str:
    ok = isinstance(value, dict) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and -100 <= v <= 100 for v in value.values()
    )
    return "" if ok else "must map token ids to numbers between -100 and 100"


GENERATION_PARAMETERS: dict[str, Callable[[Any], str]] = {
    "temperature": _number(0, 100),
    "top_p": _number(0, 1, low_open=True),
    "typical_p": _number(0, 1, low_open=True),
    "top_k": _integer(1),
    "repetition_penalty": _number(0, low_open=True),
    "frequency_penalty": _number(-2, 2),
    "presence_penalty": _number(-2, 2),
    "max_new_tokens": _integer(1),
    "max_tokens": _integer(1),
    "max_completion_tokens": _integer(1),
    "stop": _stop,
    "seed": _integer(0),
    "do_sample": _boolean,
    "return_full_text": _boolean,
    "watermark": _boolean,
    "details": _boolean,
    "decoder_input_details": _boolean,
    "logprobs": _boolean,
    "top_n_tokens": _integer(0, 20),
    "top_logprobs": _integer(0, 20),
    "best_of": _integer(1, 16),
    "n": _integer(1, 16),
    "truncate": _integer(1),
    "grammar": _typed_object,
    "response_format": _typed_object,
    "logit_bias": _logit_bias,
}


def validate_generation_parameters(params: Any, *, field: str) -> dict[str, Any]:
    """Returns the parameters if every name is known and every value has the right type and range."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ValidationError(
            {field: 'must be a JSON object such as {"temperature": 0.7, "max_new_tokens": 256}'}
        )
    errors = []
    for name, value in params.items():
        check = GENERATION_PARAMETERS.get(name)
        if check is None:
            errors.append(f"unknown parameter {name!r}; known: {', '.join(sorted(GENERATION_PARAMETERS))}")
        elif message := check(value):
            errors.append(f"{name} {message}")
    if errors:
        raise ValidationError({field: errors})
    return dict(params)


# --- Pinning --------------------------------------------------------------------------------------


def resolve_hf_revision(repo_id: str, revision: str) -> str:
    """A 40-hex commit sha is pinned as given (no network). Anything else (a branch, a tag, empty
    for `main`) is resolved on the Hub; without network that fails with an actionable message."""
    if COMMIT_SHA.match(revision.strip().lower()):
        return revision.strip().lower()
    from huggingface_hub import HfApi

    try:
        sha = HfApi().model_info(repo_id, revision=revision or None, timeout=HUB_TIMEOUT_S).sha
    except Exception as exc:  # Any Hub failure (offline, 404, auth) gets the same remedy.
        raise ValidationError(
            {
                "hf_revision": (
                    f"could not resolve {repo_id}@{revision or 'main'} on the Hugging Face Hub "
                    f"({type(exc).__name__}); this server may be offline: pass the full 40-character "
                    "commit sha as hf_revision, or register a local_path instead"
                )
            }
        ) from None
    if not sha:
        raise ValidationError({"hf_revision": "the Hub returned no commit sha; pass the 40-character sha"})
    return sha


def folder_content_hash(folder: Path) -> str:
    """sha256 over every file under `folder`: for each, in sorted order of its relative POSIX path,
    the path, a NUL, its size, a NUL, then its bytes. File symlinks (as in a Hugging Face cache
    snapshot) are followed; directory symlinks are not, so a loop cannot hang the hash."""
    files: list[tuple[str, Path]] = []
    for root, _dirs, names in os.walk(folder, followlinks=False):
        for name in names:
            path = Path(root) / name
            if path.is_file():
                files.append((path.relative_to(folder).as_posix(), path))
    digest = hashlib.sha256()
    for relative, path in sorted(files):
        digest.update(f"{relative}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _pin(hf_repo_id: str, hf_revision: str, local_path: str) -> dict[str, str]:
    if bool(hf_repo_id) == bool(local_path):
        raise ValidationError(
            {"hf_repo_id": "give either hf_repo_id (with hf_revision) or local_path, not both"}
        )
    if local_path:
        folder = Path(local_path)
        if not folder.is_absolute() or not folder.is_dir():
            raise ValidationError(
                {"local_path": f"{local_path!r} is not an absolute path to a folder on this server"}
            )
        return {"local_path": str(folder), "content_hash": folder_content_hash(folder)}
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(hf_repo_id)
    except HFValidationError:
        raise ValidationError({"hf_repo_id": "give a Hub repo id such as 'org/model-name'"}) from None
    return {"hf_repo_id": hf_repo_id, "hf_revision": resolve_hf_revision(hf_repo_id, hf_revision)}


def _validate_mutable(team_id: int, values: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(values) - set(MUTABLE_FIELDS))
    if unknown:
        raise ValidationError({"fields": f"{unknown} cannot be changed; create a new model version instead"})
    clean = dict(values)
    if "backend" in clean:
        require_team(clean["backend"], team_id, "backend", "backend")
    for price in ("input_price_per_mtok", "output_price_per_mtok"):
        if price in clean and not Decimal(0) <= Decimal(clean[price]) <= MAX_PRICE:
            raise ValidationError({price: f"must be between 0 and {MAX_PRICE} USD per million tokens"})
    if "context_window" in clean and not 16 <= int(clean["context_window"]) <= 10_000_000:
        raise ValidationError({"context_window": "must be between 16 and 10,000,000 tokens"})
    if "default_parameters" in clean:
        clean["default_parameters"] = validate_generation_parameters(
            clean["default_parameters"], field="default_parameters"
        )
    return clean


def _check_fits_context(model: ModelVersion) -> None:
    limit = model.default_parameters.get("max_new_tokens") or model.default_parameters.get("max_tokens")
    if isinstance(limit, int) and limit >= model.context_window:
        raise ValidationError(
            {
                "default_parameters": f"max tokens {limit} must be below the context window "
                f"({model.context_window})"
            }
        )


def model_version_create(
    *,
    team: Team,
    name: str,
    backend: Backend,
    actor: Actor,
    hf_repo_id: str = "",
    hf_revision: str = "",
    local_path: str = "",
    **details: Any,
) -> ModelVersion:
    """Pins the model (resolving the revision or hashing the folder) and records it.

    `details` are the mutable fields (tokenizer, served_model_name, context_window, prices,
    default_parameters).
    """
    name = require_name(name)
    clean = _validate_mutable(team.pk, {"backend": backend, **details})
    pin = _pin(hf_repo_id.strip(), hf_revision, local_path.strip())
    clean.setdefault("served_model_name", pin.get("hf_repo_id", "") or name)
    model = ModelVersion(team=team, name=name, **pin, **clean)
    _check_fits_context(model)
    with transaction.atomic():
        with unique_as_field_error(_UNIQUE_NAME):
            model.save(force_insert=True)
        audit_record(
            actor=actor,
            action="model_version.create",
            team_id=team.pk,
            target=model,
            after=snapshot(model, AUDITED_FIELDS),
        )
    return model


def model_version_update(*, model_version: ModelVersion, actor: Actor, **changes: Any) -> ModelVersion:
    clean = _validate_mutable(model_version.team_id, changes)
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=model_version.pk)
        before = snapshot(locked, AUDITED_FIELDS)
        for field, value in clean.items():
            setattr(locked, field, value)
        _check_fits_context(locked)
        locked.save(update_fields=list(clean) or ["tokenizer"])
        audit_record(
            actor=actor,
            action="model_version.update",
            team_id=locked.team_id,
            target=locked,
            before=before,
            after=snapshot(locked, AUDITED_FIELDS),
        )
        publish_after_commit("model_version", str(locked.pk))
        for endpoint_id in endpoint_ids_using_model_version(locked.pk):
            publish_after_commit("endpoint", str(endpoint_id))
    return locked


def model_version_delete(*, model_version: ModelVersion, actor: Actor) -> None:
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=model_version.pk)
        in_use = list(locked.releases.values_list("name", flat=True)[:10])
        if in_use:
            raise ValidationError(
                {"model_version": f"releases {in_use} use this model version; it stays as long as they exist"}
            )
        audit_record(
            actor=actor,
            action="model_version.delete",
            team_id=locked.team_id,
            target=locked,
            before=snapshot(locked, AUDITED_FIELDS),
            after=None,
        )
        locked.delete()

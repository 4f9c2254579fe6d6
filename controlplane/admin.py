"""Admin console registrations for the control plane.

Every write goes through the same services as the API, so it is validated and audited the same
way. A form calls its service after Django's own validation (`ServiceForm._post_clean`): a
service ValidationError becomes a form error, and `save_model` has nothing left to do.
Non-superuser staff see and change only their teams' objects, with their role there.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, ClassVar

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse

from controlplane import admin_audit  # noqa: F401  (registers the audit log views)
from controlplane.models import (
    ApiKey,
    Backend,
    Budget,
    Endpoint,
    KeyScope,
    Membership,
    ModelVersion,
    Release,
    Role,
    Team,
)
from controlplane.permissions import actor_for, can_administer, can_write, role_in, team_id_of, visible_teams
from controlplane.selectors import endpoint_fallback_ids, endpoint_policy
from controlplane.services import backends as backend_services
from controlplane.services import budgets as budget_services
from controlplane.services import catalog as catalog_services
from controlplane.services import endpoints as endpoint_services
from controlplane.services import keys as key_services
from controlplane.services import releases as release_services
from controlplane.services import teams as team_services

# --- Forms that write through services ----------------------------------------------------------------


class ServiceForm(forms.ModelForm):  # type: ignore[type-arg]
    """A ModelForm whose `apply()` calls the service; `request` is bound by TeamScopedAdmin.get_form."""

    request: ClassVar[HttpRequest]
    # Service error keys that name a different form field here.
    error_fields: ClassVar[dict[str, str]] = {}

    def apply(self, data: dict[str, Any]) -> Model:
        raise NotImplementedError

    def _post_clean(self) -> None:
        # ModelForm's own model validation first (not in the stubs, hence the ignore).
        super()._post_clean()  # type: ignore[misc]
        if self.errors:
            return
        try:
            self.instance = self.apply(self.cleaned_data)
        except ValidationError as exc:
            for key, errors in exc.message_dict.items():
                field = self.error_fields.get(key, key)
                self.add_error(field if field in self.fields else None, errors)

    @property
    def actor(self) -> Any:
        return actor_for(self.request)

    @property
    def creating(self) -> bool:
        return self.instance.pk is None


class TeamScopedAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Queryset, choices and permissions follow the user's memberships (superusers see all)."""

    team_path = "team"  # lookup from the model to its team
    admin_only = False  # writes need owner/admin (True) or owner/admin/developer (False)

    def _can(self, request: HttpRequest, team_id: int) -> bool:
        return (can_administer if self.admin_only else can_write)(request.user, team_id)

    def _writable_team_ids(self, request: HttpRequest) -> list[int]:
        return [
            pk for pk in visible_teams(request.user).values_list("pk", flat=True) if self._can(request, pk)
        ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).filter(**{f"{self.team_path}__in": visible_teams(request.user)})

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_staff and visible_teams(request.user).exists())

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return self.has_module_permission(request)
        return role_in(request.user, team_id_of(obj, f"{self.team_path}_id")) is not None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_staff and self._writable_team_ids(request))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return self.has_add_permission(request)
        return self._can(request, team_id_of(obj, f"{self.team_path}_id"))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_change_permission(request, obj)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"request": request})

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "team":
            kwargs["queryset"] = Team.objects.filter(pk__in=self._writable_team_ids(request))
        elif hasattr(db_field.related_model, "team"):
            kwargs["queryset"] = db_field.related_model.objects.filter(team__in=visible_teams(request.user))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if hasattr(db_field.related_model, "team"):
            kwargs["queryset"] = db_field.related_model.objects.filter(team__in=visible_teams(request.user))
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        """The form's service call has saved (and audited) everything already."""

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """Many-to-many fields were written by the service too."""

    delete_service: ClassVar[Callable[..., None] | None] = None
    delete_arg = "obj"

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        assert self.delete_service is not None
        type(self).delete_service(**{self.delete_arg: obj, "actor": actor_for(request)})  # type: ignore[misc]

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for obj in queryset:
            try:
                self.delete_model(request, obj)
            except ValidationError as exc:
                messages.error(request, f"{obj} was not deleted: {' '.join(exc.messages)}")

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> Any:
        """A refusal from the service (e.g. "still in use") is a message, not a server error."""
        try:
            return super().delete_view(request, object_id, extra_context)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            opts = self.model._meta
            return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))

    def _each(self, request: HttpRequest, queryset: QuerySet[Any], call: Callable[[Any], str]) -> None:
        """Runs an action per object the user may change; reports each outcome as a message."""
        for obj in queryset:
            if not self.has_change_permission(request, obj):
                messages.error(request, f"{obj}: your role in its team does not allow this")
                continue
            try:
                messages.info(request, call(obj))
            except ValidationError as exc:
                messages.error(request, f"{obj}: {' '.join(exc.messages)}")


# --- Teams and membership --------------------------------------------------------------------------------


class TeamForm(ServiceForm):
    class Meta:
        model = Team
        fields = ["name", "slug"]

    def apply(self, data: dict[str, Any]) -> Team:
        if self.creating:
            owner = None if self.request.user.is_superuser else self.request.user
            return team_services.team_create(
                name=data["name"], slug=data["slug"], owner=owner, actor=self.actor
            )
        return team_services.team_update(
            team=self.instance, name=data["name"], slug=data["slug"], actor=self.actor
        )


@admin.register(Team)
class TeamAdmin(TeamScopedAdmin):
    form = TeamForm
    team_path = "pk"
    admin_only = True
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ("name",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return visible_teams(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return (
            self.has_module_permission(request) if obj is None else role_in(request.user, obj.pk) is not None
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_staff)  # the creator becomes owner

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return (
            can_administer(request.user, obj.pk)
            if obj is not None
            else bool(self._writable_team_ids(request))
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deleting a tenant cascades into everything it owns; not a console click


class MembershipForm(ServiceForm):
    class Meta:
        model = Membership
        fields = ["team", "user", "role"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        team = data.get("team") or getattr(self.instance, "team", None)
        roles = {data.get("role"), None if self.creating else self.instance.role}
        if team is not None and Role.OWNER in roles and role_in(self.request.user, team.pk) != Role.OWNER:
            raise ValidationError("only an owner can grant or remove the owner role")
        return data

    def apply(self, data: dict[str, Any]) -> Membership:
        if self.creating:
            return team_services.membership_add(
                team=data["team"], user=data["user"], role=data["role"], actor=self.actor
            )
        return team_services.membership_change_role(
            membership=self.instance, role=data["role"], actor=self.actor
        )


@admin.register(Membership)
class MembershipAdmin(TeamScopedAdmin):
    form = MembershipForm
    admin_only = True
    list_display = ["user", "team", "role", "created_at"]
    list_filter = ["role", "team"]
    search_fields = ["user__username", "team__name"]
    delete_service = staticmethod(team_services.membership_remove)  # type: ignore[assignment]
    delete_arg = "membership"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["team", "user"] if obj else []


# --- API keys --------------------------------------------------------------------------------------------


class ApiKeyForm(ServiceForm):
    scopes = forms.MultipleChoiceField(choices=KeyScope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiKey
        fields = [
            "team",
            "name",
            "scopes",
            "endpoints",
            "expires_at",
            "rpm_limit",
            "tpm_limit",
            "concurrency_limit",
        ]

    def apply(self, data: dict[str, Any]) -> ApiKey:
        fields: dict[str, Any] = {
            k: data.get(k)
            for k in ("name", "scopes", "expires_at", "rpm_limit", "tpm_limit", "concurrency_limit")
        }
        endpoints = list(data.get("endpoints") or [])
        if not self.creating:
            return key_services.api_key_update(
                key=self.instance, endpoints=endpoints, actor=self.actor, **fields
            )
        key, secret = key_services.api_key_create(
            team=data["team"],
            endpoints=endpoints,
            created_by_id=self.request.user.pk,
            actor=self.actor,
            **fields,
        )
        messages.warning(self.request, f"Copy the key {key.name!r} now; it is shown this once: {secret}")
        return key


@admin.register(ApiKey)
class ApiKeyAdmin(TeamScopedAdmin):
    form = ApiKeyForm
    list_display = [
        "name",
        "team",
        "display_prefix",
        "scopes",
        "is_active_now",
        "expires_at",
        "revoked_at",
        "rpm_limit",
        "tpm_limit",
        "concurrency_limit",
        "last_used_at",
    ]
    list_filter = ["team", "revoked_at", "expires_at"]
    search_fields = ["name", "=lookup_id"]
    readonly_fields = [
        "display_prefix",
        "rotated_to",
        "last_used_at",
        "created_by",
        "created_at",
        "revoked_at",
    ]
    actions = ["revoke_keys", "rotate_keys"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*self.readonly_fields, "team"] if obj else list(self.readonly_fields)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the row explains usage and audit history

    @admin.display(boolean=True, description="active")
    def is_active_now(self, key: ApiKey) -> bool:
        return key.is_active()

    @admin.action(description="Revoke selected keys now")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        def revoke(key: ApiKey) -> str:
            key_services.api_key_revoke(key=key, actor=actor_for(request))
            return f"{key.name}: revoked"

        self._each(request, queryset, revoke)

    @admin.action(description="Rotate selected keys (old secret valid 24 h)")
    def rotate_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        def rotate(key: ApiKey) -> str:
            new, secret = key_services.api_key_rotate(
                key=key, grace=timedelta(hours=24), actor=actor_for(request)
            )
            return f"{key.name}: new key {new.name!r}, shown this once: {secret}"

        self._each(request, queryset, rotate)


# --- Backends ---------------------------------------------------------------------------------------------


class BackendForm(ServiceForm):
    replica_urls = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        help_text="One URL per line, e.g. http://10.0.0.5:8080",
    )
    credentials = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave empty to keep the stored credential.",
    )
    clear_credentials = forms.BooleanField(required=False, help_text="Remove the stored credential")

    class Meta:
        model = Backend
        fields = [
            "team",
            "name",
            "kind",
            "max_concurrency",
            "health_check_interval_s",
            "circuit_failure_threshold",
            "circuit_cooldown_s",
            "connect_timeout_s",
            "first_token_timeout_s",
            "total_timeout_s",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["replica_urls"] = "\n".join(self.instance.replicas.values_list("url", flat=True))

    def apply(self, data: dict[str, Any]) -> Backend:
        urls = [line.strip() for line in data["replica_urls"].splitlines() if line.strip()]
        replicas = [backend_services.ReplicaSpec(url=url) for url in urls]
        settings = {name: data[name] for name in backend_services.SETTING_FIELDS if name in data}
        if self.creating:
            return backend_services.backend_create(
                team=data["team"],
                name=data["name"],
                kind=data["kind"],
                replicas=replicas,
                credentials=data["credentials"],
                settings=settings,
                actor=self.actor,
            )
        credentials = "" if data["clear_credentials"] else (data["credentials"] or None)
        return backend_services.backend_update(
            backend=self.instance,
            name=data["name"],
            replicas=replicas,
            credentials=credentials,
            settings=settings,
            actor=self.actor,
        )


@admin.register(Backend)
class BackendAdmin(TeamScopedAdmin):
    form = BackendForm
    list_display = [
        "name",
        "team",
        "kind",
        "replica_count",
        "has_credentials_flag",
        "last_test_ok",
        "last_tested_at",
    ]
    list_filter = ["team", "kind"]
    search_fields = ["name", "replicas__url"]
    readonly_fields = ["last_tested_at", "last_test_result"]
    actions = ["test_connection"]
    delete_service = staticmethod(backend_services.backend_delete)  # type: ignore[assignment]
    delete_arg = "backend"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*self.readonly_fields, "team", "kind"] if obj else list(self.readonly_fields)

    @admin.display(description="replicas")
    def replica_count(self, backend: Backend) -> int:
        return backend.replicas.count()

    @admin.display(boolean=True, description="credentials")
    def has_credentials_flag(self, backend: Backend) -> bool:
        return backend.has_credentials

    @admin.display(boolean=True, description="last test")
    def last_test_ok(self, backend: Backend) -> bool | None:
        return None if backend.last_test_result is None else bool(backend.last_test_result.get("ok"))

    @admin.action(description="Test connection (/info or /v1/models)")
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Backend]) -> None:
        def test(backend: Backend) -> str:
            result = backend_services.backend_test_connection(backend=backend, actor=actor_for(request))
            details = "; ".join(f"{r['url']}: {r['detail']}" for r in result["replicas"]) or result["detail"]
            return f"{backend.name}: {'OK' if result['ok'] else 'FAILED'} — {details}"

        self._each(request, queryset, test)


# --- Model versions and releases --------------------------------------------------------------------------


class ModelVersionForm(ServiceForm):
    class Meta:
        model = ModelVersion
        fields = [
            "team",
            "name",
            "backend",
            "hf_repo_id",
            "hf_revision",
            "local_path",
            "tokenizer",
            "served_model_name",
            "context_window",
            "input_price_per_mtok",
            "output_price_per_mtok",
            "default_parameters",
        ]

    def apply(self, data: dict[str, Any]) -> ModelVersion:
        mutable = {k: data[k] for k in catalog_services.MUTABLE_FIELDS if k in data}
        if not self.creating:
            return catalog_services.model_version_update(
                model_version=self.instance, actor=self.actor, **mutable
            )
        if not mutable.get("served_model_name"):
            mutable.pop("served_model_name", None)
        return catalog_services.model_version_create(
            team=data["team"],
            name=data["name"],
            hf_repo_id=data["hf_repo_id"],
            hf_revision=data["hf_revision"],
            local_path=data["local_path"],
            actor=self.actor,
            **mutable,
        )


@admin.register(ModelVersion)
class ModelVersionAdmin(TeamScopedAdmin):
    form = ModelVersionForm
    list_display = [
        "name",
        "team",
        "hf_repo_id",
        "short_revision",
        "backend",
        "context_window",
        "input_price_per_mtok",
        "output_price_per_mtok",
    ]
    list_filter = ["team", "backend"]
    search_fields = ["name", "hf_repo_id", "=hf_revision", "=content_hash"]
    delete_service = staticmethod(catalog_services.model_version_delete)  # type: ignore[assignment]
    delete_arg = "model_version"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        identity = ["team", "name", "hf_repo_id", "hf_revision", "local_path", "content_hash"]
        return identity if obj else ["content_hash"]

    @admin.display(description="revision")
    def short_revision(self, model: ModelVersion) -> str:
        return (model.hf_revision or model.content_hash)[:12]


class ReleaseForm(ServiceForm):
    class Meta:
        model = Release
        fields = [
            "team",
            "name",
            "model_version",
            "prompt_version",
            "generation_defaults",
            "retrieval_config",
            "guardrail_policy",
            "notes",
        ]

    def apply(self, data: dict[str, Any]) -> Release:
        return release_services.release_create(created_by_id=self.request.user.pk, actor=self.actor, **data)


@admin.register(Release)
class ReleaseAdmin(TeamScopedAdmin):
    """Add and view only: a release is immutable."""

    form = ReleaseForm
    list_display = ["name", "team", "model_version", "prompt_version", "created_by", "created_at"]
    list_filter = ["team"]
    search_fields = ["name", "model_version__name"]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "prompt_version":
            from prompts.models import PromptVersion

            kwargs["queryset"] = PromptVersion.objects.filter(prompt__team__in=visible_teams(request.user))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Endpoints --------------------------------------------------------------------------------------------


def _parse_policy(text: str, team_id: int) -> list[endpoint_services.TrafficEntry]:
    """'release-name = weight' per line."""
    entries = []
    for line in filter(None, (raw.strip() for raw in text.splitlines())):
        name, sep, weight = line.rpartition("=")
        release = Release.objects.filter(team_id=team_id, name=name.strip()).first()
        if not sep or not weight.strip().isdigit() or release is None:
            raise ValidationError(
                {"traffic_policy": f"{line!r}: write 'release-name = weight' with a release of this team"}
            )
        entries.append(endpoint_services.TrafficEntry(release=release, weight=int(weight)))
    return entries


def _parse_chain(text: str, team_id: int) -> list[Release]:
    names = [line.strip() for line in text.splitlines() if line.strip()]
    found = {r.name: r for r in Release.objects.filter(team_id=team_id, name__in=names)}
    missing = [name for name in names if name not in found]
    if missing:
        raise ValidationError({"fallback_chain": f"no release(s) {missing} in this team"})
    return [found[name] for name in names]


class EndpointForm(ServiceForm):
    error_fields: ClassVar[dict[str, str]] = {"traffic": "traffic_policy", "fallbacks": "fallback_chain"}
    traffic_policy = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        help_text="One 'release-name = weight' per line, weights summing to 100. A change switches traffic.",
    )
    fallback_chain = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        help_text="Release names, one per line, in the order tried",
    )

    class Meta:
        model = Endpoint
        fields = ["team", "name", "description"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            names = dict(Release.objects.filter(team_id=self.instance.team_id).values_list("pk", "name"))
            policy = endpoint_policy(self.instance)
            self.initial["traffic_policy"] = "\n".join(
                f"{names[p['release']]} = {p['weight']}" for p in policy
            )
            self.initial["fallback_chain"] = "\n".join(
                names[pk] for pk in endpoint_fallback_ids(self.instance)
            )

    def apply(self, data: dict[str, Any]) -> Endpoint:
        team_id = data["team"].pk if self.creating else self.instance.team_id
        traffic = _parse_policy(data["traffic_policy"], team_id)
        chain = _parse_chain(data["fallback_chain"], team_id)
        if self.creating:
            return endpoint_services.endpoint_create(
                team=data["team"],
                name=data["name"],
                description=data["description"],
                traffic=traffic,
                fallbacks=chain,
                actor=self.actor,
            )
        endpoint = self.instance
        if "description" in self.changed_data:
            endpoint = endpoint_services.endpoint_update(
                endpoint=endpoint, description=data["description"], actor=self.actor
            )
        if "traffic_policy" in self.changed_data:
            endpoint = endpoint_services.endpoint_set_traffic(
                endpoint=endpoint, traffic=traffic, actor=self.actor
            )
        if "fallback_chain" in self.changed_data:
            endpoint = endpoint_services.endpoint_set_fallbacks(
                endpoint=endpoint, releases=chain, actor=self.actor
            )
        return endpoint


@admin.register(Endpoint)
class EndpointAdmin(TeamScopedAdmin):
    form = EndpointForm
    list_display = ["name", "team", "traffic_summary", "config_version", "updated_at"]
    list_filter = ["team"]
    search_fields = ["name", "description"]
    readonly_fields = ["config_version", "previous_policy", "updated_at"]
    actions = ["roll_back"]
    delete_service = staticmethod(endpoint_services.endpoint_delete)  # type: ignore[assignment]
    delete_arg = "endpoint"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*self.readonly_fields, "team", "name"] if obj else list(self.readonly_fields)

    @admin.display(description="traffic")
    def traffic_summary(self, endpoint: Endpoint) -> str:
        return ", ".join(
            f"{split.release.name} {split.weight}%" for split in endpoint.traffic.select_related("release")
        )

    @admin.action(description="Roll back to the previous traffic policy")
    def roll_back(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        def roll_back(endpoint: Endpoint) -> str:
            done = endpoint_services.endpoint_rollback(endpoint=endpoint, actor=actor_for(request))
            return f"{endpoint.name}: rolled back (config version {done.config_version})"

        self._each(request, queryset, roll_back)


# --- Budgets ----------------------------------------------------------------------------------------------


class BudgetForm(ServiceForm):
    class Meta:
        model = Budget
        fields = [
            "team",
            "name",
            "scope",
            "api_key",
            "endpoint",
            "period",
            "limit_usd",
            "hard",
            "alert_threshold",
        ]

    def apply(self, data: dict[str, Any]) -> Budget:
        if self.creating:
            return budget_services.budget_create(actor=self.actor, **data)
        return budget_services.budget_update(
            budget=self.instance,
            name=data["name"],
            limit_usd=data["limit_usd"],
            hard=data["hard"],
            alert_threshold=data["alert_threshold"],
            actor=self.actor,
        )


@admin.register(Budget)
class BudgetAdmin(TeamScopedAdmin):
    form = BudgetForm
    admin_only = True
    list_display = [
        "name",
        "team",
        "scope",
        "period",
        "limit_usd",
        "spent_usd",
        "hard",
        "alert_threshold",
        "period_start",
        "alerted_at",
    ]
    list_filter = ["team", "scope", "period", "hard"]
    search_fields = ["name"]
    delete_service = staticmethod(budget_services.budget_delete)  # type: ignore[assignment]
    delete_arg = "budget"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        runtime = ["spent_usd", "period_start", "alerted_at"]
        return [*runtime, "team", "scope", "api_key", "endpoint", "period"] if obj else runtime

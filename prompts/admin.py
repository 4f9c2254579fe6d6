"""Admin for prompts. Every write goes through the prompt services (so it is validated and
audited); versions are read-only once created; labels move through a form or a bulk action.
Non-superusers see and change only their teams' prompts."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from controlplane.models import Membership, Team
from controlplane.models.teams import WRITE_ROLES
from controlplane.permissions import actor_for, can_write, visible_teams
from prompts.models import Prompt, PromptLabel, PromptVersion
from prompts.services import (
    check_label_name,
    check_prompt_name,
    prompt_create,
    prompt_label_move,
    prompt_version_create,
    validate_version_content,
)


def _writable_teams(request: HttpRequest) -> QuerySet[Team]:
    user: Any = request.user
    if getattr(user, "is_superuser", False):
        return Team.objects.all()
    if not user.is_authenticated:
        return Team.objects.none()
    writer = Membership.objects.filter(user=user, role__in=WRITE_ROLES)
    return Team.objects.filter(pk__in=writer.values("team_id"))


class TeamScopedAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    team_path = "team"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).filter(**{f"{self.team_path}__in": visible_teams(request.user)})

    def _team_id(self, obj: Any) -> int:
        value = obj
        for part in self.team_path.split("__"):
            value = getattr(value, part)
        return int(value.pk)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return visible_teams(request.user).exists()

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return _writable_teams(request).exists()

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # immutable unless a subclass says otherwise

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # no delete service: releases and labels point at versions

    def save_via_service(self, request: HttpRequest, obj: Any, call: Any) -> None:
        saved = call()
        obj.__dict__.update({k: v for k, v in saved.__dict__.items() if k != "_state"})
        obj._state.adding = False


class PromptForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = Prompt
        fields = ["team", "name", "description"]

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"])
        try:
            check_prompt_name(name)
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["name"]) from None  # a field's clean takes plain messages
        return name


@admin.register(Prompt)
class PromptAdmin(TeamScopedAdmin):
    form = PromptForm
    list_display = ["name", "team", "created_at"]
    list_filter = ["team"]
    search_fields = ["name", "description"]
    fields = ["team", "name", "description"]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "team":
            kwargs["queryset"] = _writable_teams(request)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Prompt, form: Any, change: bool) -> None:
        self.save_via_service(
            request,
            obj,
            lambda: prompt_create(
                team=obj.team, name=obj.name, description=obj.description, actor=actor_for(request)
            ),
        )


class PromptVersionForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = PromptVersion
        fields = ["prompt", "system_message", "template", "variables_schema", "commit_message"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not self.errors:
            validate_version_content(
                template=data.get("template") or "",
                system_message=data.get("system_message") or "",
                variables_schema=data.get("variables_schema") or {},
            )
        return data


def _label_action(label: str) -> Any:
    def move(modeladmin: PromptVersionAdmin, request: HttpRequest, queryset: QuerySet[PromptVersion]) -> None:
        chosen = list(queryset.select_related("prompt"))
        if len({v.prompt_id for v in chosen}) != len(chosen):
            modeladmin.message_user(
                request, f"select one version per prompt to point {label!r} at", messages.ERROR
            )
            return
        for version in chosen:
            if not can_write(request.user, version.prompt.team_id):
                modeladmin.message_user(request, f"{version}: your role cannot move labels", messages.ERROR)
                continue
            prompt_label_move(prompt=version.prompt, label=label, version=version, actor=actor_for(request))
            modeladmin.message_user(
                request, f"{version.prompt.name}@{label} now points at v{version.version}"
            )

    move.__name__ = f"move_{label}_label"
    move.short_description = f"Point the '{label}' label at the selected version"  # type: ignore[attr-defined]
    return move


@admin.register(PromptVersion)
class PromptVersionAdmin(TeamScopedAdmin):
    form = PromptVersionForm
    team_path = "prompt__team"
    list_display = ["prompt", "version", "commit_message", "created_by", "created_at"]
    list_filter = ["prompt__team"]
    search_fields = ["prompt__name", "commit_message"]
    readonly_fields = ["version", "created_by", "created_at"]
    actions = [_label_action("production"), _label_action("staging")]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "prompt":
            kwargs["queryset"] = Prompt.objects.filter(team__in=_writable_teams(request))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        base = ("prompt", "system_message", "template", "variables_schema", "commit_message")
        return base if obj is None else ("prompt", "version", *base[1:], "created_by", "created_at")

    def save_model(self, request: HttpRequest, obj: PromptVersion, form: Any, change: bool) -> None:
        self.save_via_service(
            request,
            obj,
            lambda: prompt_version_create(
                prompt=obj.prompt,
                template=obj.template,
                system_message=obj.system_message,
                variables_schema=obj.variables_schema,
                commit_message=obj.commit_message,
                actor=actor_for(request),
                created_by=request.user if isinstance(request.user, AbstractBaseUser) else None,
            ),
        )


class PromptLabelForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = PromptLabel
        fields = ["prompt", "name", "version"]

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"])
        try:
            check_label_name(name)
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["name"]) from None  # a field's clean takes plain messages
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        prompt = data.get("prompt") or getattr(self.instance, "prompt", None)
        version = data.get("version")
        if prompt is not None and version is not None and version.prompt_id != prompt.pk:
            raise ValidationError({"version": f"choose a version of {prompt.name!r}"})
        return data


@admin.register(PromptLabel)
class PromptLabelAdmin(TeamScopedAdmin):
    """Saving the form moves the label (prompt_label_move), with its audit row."""

    form = PromptLabelForm
    team_path = "prompt__team"
    list_display = ["prompt", "name", "version", "updated_at"]
    list_filter = ["name", "prompt__team"]
    search_fields = ["prompt__name", "name"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("prompt", "name") if obj is not None else ()

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return self.has_add_permission(request)
        return can_write(request.user, self._team_id(obj))

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "prompt":
            kwargs["queryset"] = Prompt.objects.filter(team__in=_writable_teams(request))
        if db_field.name == "version":
            kwargs["queryset"] = PromptVersion.objects.filter(
                prompt__team__in=_writable_teams(request)
            ).select_related("prompt")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: PromptLabel, form: Any, change: bool) -> None:
        self.save_via_service(
            request,
            obj,
            lambda: prompt_label_move(
                prompt=obj.prompt, label=obj.name, version=obj.version, actor=actor_for(request)
            ),
        )

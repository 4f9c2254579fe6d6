"""Turns domain errors raised by services into 4xx responses that say what to fix.

Services raise Django's ValidationError with field errors; without this handler DRF would let it
escape as a 500.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        return Response(as_serializer_error(exc), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, ProtectedError):
        names = sorted({str(obj) for obj in exc.protected_objects})[:10]
        return Response(
            {"detail": f"still referenced by {names}; remove those references first"},
            status=status.HTTP_409_CONFLICT,
        )
    return drf_exception_handler(exc, context)

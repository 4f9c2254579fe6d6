from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect


def home(request: HttpRequest) -> HttpResponse:
    """The console lives in the admin for now; send people there."""
    return redirect("admin:index")

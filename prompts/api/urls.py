"""Prompt API routes: /api/prompts/, /api/prompt-versions/, /api/prompt-labels/."""

from rest_framework.routers import SimpleRouter

from prompts.api.views import PromptLabelViewSet, PromptVersionViewSet, PromptViewSet

router = SimpleRouter()
router.register("prompts", PromptViewSet, basename="prompt")
router.register("prompt-versions", PromptVersionViewSet, basename="prompt-version")
router.register("prompt-labels", PromptLabelViewSet, basename="prompt-label")

urlpatterns = router.urls

from django.urls import path
from rest_framework.routers import SimpleRouter

from agents.api.views import AgentViewSet, MessageViewSet, SkillListView

router = SimpleRouter()
router.register("agents", AgentViewSet, basename="agent")
router.register("messages", MessageViewSet, basename="message")

urlpatterns = [*router.urls, path("skills/", SkillListView.as_view(), name="skill-list")]

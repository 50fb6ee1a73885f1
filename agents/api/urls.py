from django.urls import path
from rest_framework.routers import SimpleRouter

from agents.api.views import AgentViewSet, SkillListView

router = SimpleRouter()
router.register("agents", AgentViewSet, basename="agent")

urlpatterns = [*router.urls, path("skills/", SkillListView.as_view(), name="skill-list")]

from rest_framework.routers import SimpleRouter

from agents.api.views import AgentViewSet

router = SimpleRouter()
router.register("agents", AgentViewSet, basename="agent")

urlpatterns = router.urls

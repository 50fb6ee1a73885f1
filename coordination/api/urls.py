from rest_framework.routers import SimpleRouter

from coordination.api.views import RunViewSet, WorkflowViewSet

router = SimpleRouter()
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("runs", RunViewSet, basename="run")

urlpatterns = router.urls

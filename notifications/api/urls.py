from rest_framework.routers import SimpleRouter

from notifications.api.views import DeliveryViewSet, SubscriptionViewSet

router = SimpleRouter()
router.register("notifications/subscriptions", SubscriptionViewSet, basename="subscription")
router.register("notifications/deliveries", DeliveryViewSet, basename="delivery")

urlpatterns = router.urls

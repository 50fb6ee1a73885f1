from rest_framework import viewsets

from hive_core.api import ID_PATTERN
from notifications.api.serializers import DeliverySerializer, SubscriptionSerializer
from notifications.models import Delivery, Subscription
from notifications.selectors import delivery_list, subscription_list


class SubscriptionViewSet(viewsets.ModelViewSet):
    """Who is told of which runs' outcomes, and how: a user manages their own, staff
    every one (a group's too)."""

    serializer_class = SubscriptionSerializer
    lookup_value_regex = ID_PATTERN

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular reads the model
            return Subscription.objects.none()
        subscriptions = subscription_list(user=self.request.user)
        if self.request.user.is_staff or self.request.method in ("GET", "HEAD", "OPTIONS"):
            return subscriptions
        # A group's subscription is read by its members, changed by staff only.
        return subscriptions.filter(user=self.request.user)


class DeliveryViewSet(viewsets.ReadOnlyModelViewSet):
    """The notices sent (or being tried) to the user, each try recorded."""

    serializer_class = DeliverySerializer
    lookup_value_regex = ID_PATTERN

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Delivery.objects.none()
        return delivery_list(user=self.request.user)

from django.db.models import Q, QuerySet

from hive_core.visibility import user_sees_all
from notifications.models import Delivery, Subscription


def subscription_list(*, user) -> QuerySet[Subscription]:
    """Staff (and holders of `view_subscription`) see every subscription; a user their
    own and their groups'."""
    subscriptions = Subscription.objects.select_related("user", "group", "command")
    if user_sees_all(user=user, permission="notifications.view_subscription"):
        return subscriptions
    return subscriptions.filter(Q(user=user) | Q(group__in=user.groups.all()))


def delivery_list(*, user) -> QuerySet[Delivery]:
    """Staff (and holders of `view_delivery`) see every delivery; a user those made for
    them (their email, their webhook)."""
    deliveries = Delivery.objects.select_related("run__workflow", "subscription")
    if user_sees_all(user=user, permission="notifications.view_delivery"):
        return deliveries
    return deliveries.filter(user=user)

from django.contrib import admin

from notifications.models import Delivery, Subscription


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "group", "command", "workflow", "outcomes", "email",
                    "webhook_url", "active"]  # fmt: skip
    list_filter = ["active", "email"]
    raw_id_fields = ["user", "command"]


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    """Read-only: deliveries are the record of what was sent."""

    list_display = ["id", "run", "outcome", "channel", "recipient", "status", "attempts",
                    "response_status", "created_at", "sent_at"]  # fmt: skip
    list_filter = ["status", "channel", "outcome"]
    search_fields = ["recipient"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

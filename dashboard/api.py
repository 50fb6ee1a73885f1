"""GET /api/v1/events/?after=<seq>: what a live client missed, oldest first."""

from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.pagination import BasePagination
from rest_framework.response import Response

from dashboard.selectors import event_list
from events.models import Event
from hive_core.api import MAX_ID, query_params


class EventSerializer(serializers.ModelSerializer):
    seq = serializers.IntegerField(source="pk", read_only=True)
    at = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = Event
        fields = ["seq", "kind", "subject", "data", "at"]
        read_only_fields = fields


class AfterFilterSerializer(serializers.Serializer):
    after = serializers.IntegerField(
        required=False,
        default=0,
        min_value=0,
        max_value=MAX_ID,
        help_text="The last sequence number seen.",
    )
    limit = serializers.IntegerField(required=False, default=500, min_value=1, max_value=5000)


class SequencePagination(BasePagination):
    """Pages by sequence number: `last` is the `after` of the next request, `more` says
    whether there is one. Unlike offsets, a page never shifts as events arrive."""

    def paginate_queryset(self, queryset, request, view=None):
        query = AfterFilterSerializer(data=query_params(request))
        query.is_valid(raise_exception=True)
        self.after, limit = query.validated_data["after"], query.validated_data["limit"]
        page = list(queryset.filter(pk__gt=self.after)[: limit + 1])
        self.more = len(page) > limit
        return page[:limit]

    def get_paginated_response(self, data):
        last = data[-1]["seq"] if data else self.after
        return Response({"results": data, "last": last, "more": self.more})

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["results", "last", "more"],
            "properties": {
                "results": schema,
                "last": {"type": "integer"},
                "more": {"type": "boolean"},
            },
        }

    def get_schema_operation_parameters(self, view):
        # From the serializer that checks them, so the schema's bounds are the enforced ones.
        return [
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": {
                    "type": "integer",
                    "minimum": field.min_value,
                    "maximum": field.max_value,
                },
                **({"description": str(field.help_text)} if field.help_text else {}),
            }
            for name, field in AfterFilterSerializer().fields.items()
        ]


class EventListView(ListAPIView):
    """Events after `after`, oldest first: run events for the runs the user may see,
    agent and workflow events for every user."""

    serializer_class = EventSerializer
    pagination_class = SequencePagination

    def get_queryset(self):
        return event_list(user=self.request.user)

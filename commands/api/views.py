from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from commands.api.serializers import (
    CommandDetailSerializer,
    CommandSerializer,
    ExecuteResultSerializer,
    ExecuteSerializer,
    InvocationFilterSerializer,
    InvocationSerializer,
    ScheduleCreateSerializer,
    ScheduleSerializer,
    ScheduleUpdateSerializer,
    TriggerCreatedSerializer,
    TriggerSerializer,
)
from commands.models import Trigger
from commands.selectors import (
    SCHEDULE_ACTION_PERMISSIONS,
    command_list,
    invocation_list,
    schedule_list,
)
from commands.services import (
    command_execute,
    schedule_create,
    schedule_delete,
    schedule_update,
)
from commands.throttles import CommandThrottle
from commands.triggers import trigger_save, trigger_visible_list
from hive_core.api import needs, query_params


class CommandListView(generics.ListAPIView):
    """Every enabled command with its params schema and hint (`?all=1`: disabled too)."""

    serializer_class = CommandSerializer

    def get_queryset(self):
        return command_list(include_disabled=self.request.query_params.get("all") == "1")


class CommandDetailView(generics.RetrieveAPIView):
    serializer_class = CommandDetailSerializer
    lookup_field = "name"

    def get_queryset(self):
        return command_list(include_disabled=True)

    def get_object(self):
        self.kwargs["name"] = self.kwargs["name"].lstrip("/")
        return super().get_object()


class ExecuteView(APIView):
    """`{"text": "/demo:release 1.4.0 env=prod", "dry_run": false}` (and, for its run, a
    `priority` and a `deadline`) → 201 with the invocation and its run; 400 (invalid,
    failed) or 403 (denied) with the error, and the attempt is audited either way (a
    refusal is a CommandFailure, which the API's handler answers: `fields` names the
    argument and points at its token)."""

    throttle_classes = [CommandThrottle]

    @extend_schema(
        request=ExecuteSerializer,
        responses={201: ExecuteResultSerializer, 200: ExecuteResultSerializer},
    )
    def post(self, request):
        body = ExecuteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        given = body.validated_data
        invocation = command_execute(
            text=given["text"],
            user=request.user,
            source=given["source"],
            dry_run=given["dry_run"],
            priority=given["priority"],
            deadline=given["deadline"],
        )
        data = InvocationSerializer(invocation).data
        code = status.HTTP_200_OK if invocation.dry_run else status.HTTP_201_CREATED
        return Response(
            {
                "invocation": data,
                "run": data["run"],
                "plan": (invocation.output if invocation.dry_run else None),
            },
            status=code,
        )


@extend_schema_view(get=extend_schema(parameters=[InvocationFilterSerializer]))
class InvocationListView(generics.ListAPIView):
    """The audit: every invocation, newest first (staff see all, others their own);
    filter with ?command=, ?outcome=, ?source=, ?run=."""

    serializer_class = InvocationSerializer

    def get_queryset(self):
        filters = InvocationFilterSerializer(data=query_params(self.request))
        filters.is_valid(raise_exception=True)
        return invocation_list(user=self.request.user, **filters.validated_data)


class InvocationDetailView(generics.RetrieveAPIView):
    serializer_class = InvocationSerializer

    def get_queryset(self):
        return invocation_list(user=self.request.user)


class _ScheduleView(APIView):
    """Each method needs the permission of the schedule action it is (the rule
    /hive:schedule applies too), and sees only the schedules its user may."""

    actions: dict[str, str] = {}

    def get_permissions(self):
        action = self.actions.get(self.request.method, "list")
        return [permission() for permission in needs(SCHEDULE_ACTION_PERMISSIONS[action])]


class ScheduleListView(_ScheduleView):
    """Schedules that run a command with fixed arguments, as their creator: your own
    (staff: everyone's)."""

    actions = {"GET": "list", "POST": "add"}

    @extend_schema(responses=ScheduleSerializer(many=True), operation_id="schedules_list")
    def get(self, request):
        return Response(ScheduleSerializer(schedule_list(user=request.user), many=True).data)

    @extend_schema(request=ScheduleCreateSerializer, responses={201: ScheduleSerializer})
    def post(self, request):
        body = ScheduleCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        task = schedule_create(
            text=data["text"],
            user=request.user,
            every=data.get("every"),
            cron=data.get("cron", ""),
            name=data.get("name", ""),
            enabled=data["enabled"],
        )
        row = next(s for s in schedule_list(user=request.user) if s["id"] == task.pk)
        return Response(ScheduleSerializer(row).data, status=status.HTTP_201_CREATED)


class ScheduleDetailView(_ScheduleView):
    actions = {"GET": "list", "PATCH": "enable", "DELETE": "remove"}

    def _row(self, pk: int) -> dict:
        row = next((s for s in schedule_list(user=self.request.user) if s["id"] == pk), None)
        if row is None:
            raise NotFound(f"no schedule {pk}")
        return row

    @extend_schema(responses=ScheduleSerializer)
    def get(self, request, pk: int):
        return Response(ScheduleSerializer(self._row(pk)).data)

    @extend_schema(request=ScheduleUpdateSerializer, responses=ScheduleSerializer)
    def patch(self, request, pk: int):
        self._row(pk)
        # A PATCH changes what it names: `{}` changes nothing (as its schema says).
        body = ScheduleUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        if "enabled" in body.validated_data:
            schedule_update(
                schedule_id=pk, enabled=body.validated_data["enabled"], user=request.user
            )
        return Response(ScheduleSerializer(self._row(pk)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, pk: int):
        self._row(pk)
        schedule_delete(schedule_id=pk, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class _TriggerView(APIView):
    """Each method needs the trigger model permission it stands for; a trigger running
    as another user is not yours to see or change (a superuser's are all)."""

    perms = {"GET": "view", "POST": "add", "PUT": "change", "PATCH": "change", "DELETE": "delete"}

    def get_permissions(self):
        return [
            p() for p in needs(f"commands.{self.perms.get(self.request.method, 'view')}_trigger")
        ]

    def _trigger(self, pk: int) -> Trigger:
        trigger = trigger_visible_list(user=self.request.user).filter(pk=pk).first()
        if trigger is None:
            raise NotFound(f"no trigger {pk}")
        return trigger


class TriggerListView(_TriggerView):
    """Webhook triggers: `POST /hooks/<name>`, signed with the secret, runs the command
    template rendered from the JSON body, as the trigger's user."""

    @extend_schema(responses=TriggerSerializer(many=True), operation_id="triggers_list")
    def get(self, request):
        return Response(TriggerSerializer(trigger_visible_list(user=request.user), many=True).data)

    @extend_schema(request=TriggerSerializer, responses={201: TriggerCreatedSerializer})
    def post(self, request):
        body = TriggerSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        given = {"user": request.user, **body.validated_data}
        trigger = trigger_save(trigger=Trigger(**given), by=request.user)
        return Response(TriggerCreatedSerializer(trigger).data, status=status.HTTP_201_CREATED)


class TriggerDetailView(_TriggerView):
    @extend_schema(responses=TriggerSerializer)
    def get(self, request, pk: int):
        return Response(TriggerSerializer(self._trigger(pk)).data)

    @extend_schema(request=TriggerSerializer, responses=TriggerSerializer)
    def patch(self, request, pk: int):
        trigger = self._trigger(pk)
        body = TriggerSerializer(trigger, data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        for field, value in body.validated_data.items():
            setattr(trigger, field, value)
        trigger_save(trigger=trigger, by=request.user)
        return Response(TriggerSerializer(trigger).data)

    @extend_schema(responses={204: None})
    def delete(self, request, pk: int):
        self._trigger(pk).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied, ValidationError
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
)
from commands.models import Invocation
from commands.selectors import (
    SCHEDULE_ACTION_PERMISSIONS,
    command_list,
    invocation_list,
    schedule_list,
)
from commands.services import (
    CommandFailure,
    ScheduleDenied,
    ScheduleError,
    command_execute,
    schedule_create,
    schedule_delete,
    schedule_update,
)
from commands.throttles import CommandThrottle
from hive_core.api import needs, query_params


class CommandRefused(APIException):
    """A refused command in the API's one error shape, `fields` naming the argument and
    pointing at the token in `text`."""

    def __init__(self, exc: CommandFailure):
        super().__init__(str(exc), code=exc.code)
        self.status_code = (
            403 if exc.code == Invocation.Outcome.DENIED else 409 if exc.conflict else 400
        )
        self.fields = {"text": [exc.pointed]}
        if exc.param:
            problem = str(exc).removeprefix(f"{exc.param}: ")
            self.fields = {exc.param: [problem], **self.fields}


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
    """`{"text": "/demo:release 1.4.0 env=prod", "dry_run": false}` → 201 with the
    invocation and its run; 400 (invalid, failed) or 403 (denied) with the error,
    and the attempt is audited either way."""

    throttle_classes = [CommandThrottle]

    @extend_schema(
        request=ExecuteSerializer,
        responses={201: ExecuteResultSerializer, 200: ExecuteResultSerializer},
    )
    def post(self, request):
        body = ExecuteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            invocation = command_execute(
                text=body.validated_data["text"],
                user=request.user,
                source=body.validated_data["source"],
                dry_run=body.validated_data["dry_run"],
            )
        except CommandFailure as exc:
            raise CommandRefused(exc) from None
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
        try:
            task = schedule_create(
                text=data["text"],
                user=request.user,
                every=data.get("every"),
                cron=data.get("cron", ""),
                name=data.get("name", ""),
                enabled=data["enabled"],
            )
        except ScheduleError as exc:
            raise _schedule_error(exc) from None
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
            try:
                schedule_update(
                    schedule_id=pk, enabled=body.validated_data["enabled"], user=request.user
                )
            except ScheduleError as exc:
                raise _schedule_error(exc) from None
        return Response(ScheduleSerializer(self._row(pk)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, pk: int):
        self._row(pk)
        try:
            schedule_delete(schedule_id=pk, user=request.user)
        except ScheduleError as exc:
            raise _schedule_error(exc) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


def _schedule_error(exc: ScheduleError) -> APIException:
    if isinstance(exc, ScheduleDenied):
        return PermissionDenied(str(exc))
    if str(exc).startswith("no schedule "):
        return NotFound(str(exc))
    field, _, message = str(exc).partition(": ")
    known = {"text", "cron", "name", "every"}
    return ValidationError(
        {field: [message]} if field in known else {"non_field_errors": [str(exc)]}
    )

from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from coordination.api.serializers import (
    RejectSerializer,
    RunDetailSerializer,
    RunFilterSerializer,
    RunSerializer,
    SignalSerializer,
    StartSerializer,
    VersionSerializer,
    WorkflowDetailSerializer,
    WorkflowSerializer,
)
from coordination.models import Run, StepRun, Workflow
from coordination.selectors import (
    run_get,
    run_list,
    run_visible_list,
    step_get,
    workflow_get,
    workflow_latest_list,
    workflow_versions,
)
from coordination.services import (
    RUN_ACTION_PERMISSIONS,
    run_cancel,
    run_pause,
    run_rerun,
    run_resume,
    run_start,
    signal_send,
    step_approve,
    step_reject,
    step_retry,
)
from hive_core.api import ID_PATTERN, NewestFirstPagination, needs, query_params


class WorkflowViewSet(viewsets.ReadOnlyModelViewSet):
    """Workflows by name: the newest version of each; `?version=N` on the detail."""

    lookup_field = "name"
    lookup_value_regex = r"[^/]+"

    def get_queryset(self):
        return workflow_latest_list()

    def get_serializer_class(self):
        return (
            WorkflowSerializer if self.action in ("list", "versions") else WorkflowDetailSerializer
        )

    def get_object(self) -> Workflow:
        query = VersionSerializer(data=query_params(self.request))
        query.is_valid(raise_exception=True)
        try:
            return workflow_get(
                name=self.kwargs["name"], version=query.validated_data.get("version")
            )
        except Workflow.DoesNotExist:
            raise Http404 from None

    @extend_schema(parameters=[VersionSerializer])
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(responses=WorkflowSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None)
    def versions(self, request, name=None):
        """Every version of the workflow, newest first."""
        versions = list(workflow_versions(name=name))
        if not versions:
            raise Http404
        return Response(WorkflowSerializer(versions, many=True).data)

    @extend_schema(request=StartSerializer, responses={201: RunSerializer})
    @action(detail=True, methods=["post"], permission_classes=needs("coordination.add_run"))
    def start(self, request, name=None):
        """Start a run of the newest version with `params` (and, over the workflow's,
        a `priority` and a `deadline`)."""
        body = StartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        given = body.validated_data
        run = run_start(
            workflow=self.get_object(),
            params=given["params"],
            user=request.user,
            priority=given["priority"],
            deadline=given["deadline"],
        )
        return Response(RunSerializer(run).data, status=status.HTTP_201_CREATED)


@extend_schema_view(list=extend_schema(parameters=[RunFilterSerializer]))
class RunViewSet(viewsets.ReadOnlyModelViewSet):
    """Runs the user may see (staff: all), newest first, filtered by state, workflow,
    user and creation time; the detail carries every step with its tries, inputs,
    outputs and errors."""

    pagination_class = NewestFirstPagination
    lookup_value_regex = ID_PATTERN

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular reads the model
            return Run.objects.none()
        if self.action != "list":
            return run_visible_list(user=self.request.user)
        filters = RunFilterSerializer(data=query_params(self.request))
        filters.is_valid(raise_exception=True)
        given = filters.validated_data
        return run_list(
            user=self.request.user,
            state=given.get("state", ""),
            workflow=given.get("workflow", ""),
            command=given.get("command", ""),
            started_by=given.get("user", ""),
            since=given.get("since"),
            until=given.get("until"),
        )

    def get_serializer_class(self):
        return RunSerializer if self.action == "list" else RunDetailSerializer

    def get_object(self) -> Run:
        try:
            return run_get(user=self.request.user, pk=int(self.kwargs["pk"]))
        except Run.DoesNotExist:
            raise Http404 from None

    def _step(self, key: str) -> StepRun:
        try:
            return step_get(run=self.get_object(), key=key)
        except StepRun.DoesNotExist:
            raise Http404 from None

    def _detail(self, run: Run, code=status.HTTP_200_OK) -> Response:
        """The run as it is now, after an action changed it."""
        run = run_get(user=self.request.user, pk=run.pk)
        return Response(RunDetailSerializer(run).data, status=code)

    @extend_schema(request=None, responses={200: RunDetailSerializer})
    @action(
        detail=True, methods=["post"], permission_classes=needs(RUN_ACTION_PERMISSIONS["cancel"])
    )
    def cancel(self, request, pk=None):
        """Cancel the run: queued steps never start, running ones are stopped."""
        return self._detail(run_cancel(run=self.get_object(), user=request.user))

    @extend_schema(request=SignalSerializer, responses={201: SignalSerializer})
    @action(
        detail=True, methods=["post"], permission_classes=needs(RUN_ACTION_PERMISSIONS["signal"])
    )
    def signals(self, request, pk=None):
        """Send a signal: it ends the first step waiting for its name (`wait_for`), the
        payload that step's output, or is kept for the first step that waits for it."""
        body = SignalSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        given = body.validated_data
        signal = signal_send(run=self.get_object(), name=given["name"],
                             payload=given.get("payload"), user=request.user)  # fmt: skip
        return Response(SignalSerializer(signal).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: RunDetailSerializer})
    @action(
        detail=True, methods=["post"], permission_classes=needs(RUN_ACTION_PERMISSIONS["pause"])
    )
    def pause(self, request, pk=None):
        """Hold the run: nothing new starts (ready steps wait, `paused`), running steps
        finish, approvals can still be decided."""
        return self._detail(run_pause(run=self.get_object(), user=request.user))

    @extend_schema(request=None, responses={200: RunDetailSerializer})
    @action(
        detail=True, methods=["post"], permission_classes=needs(RUN_ACTION_PERMISSIONS["resume"])
    )
    def resume(self, request, pk=None):
        """Let a paused run go on: what is ready starts."""
        return self._detail(run_resume(run=self.get_object(), user=request.user))

    @extend_schema(request=None, responses={201: RunDetailSerializer})
    @action(
        detail=True, methods=["post"], permission_classes=needs(RUN_ACTION_PERMISSIONS["rerun"])
    )
    def rerun(self, request, pk=None):
        """A new run of the same version with the same params."""
        run = run_rerun(run=self.get_object(), user=request.user)
        return self._detail(run, status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: RunDetailSerializer})
    @action(
        detail=True,
        methods=["post"],
        url_path=r"steps/(?P<key>[^/]+)/retry",
        permission_classes=needs(RUN_ACTION_PERMISSIONS["retry"]),
    )
    def retry(self, request, pk=None, key=None):
        """Run a failed step again, and everything after it."""
        return self._detail(step_retry(step=self._step(key), user=request.user))

    @extend_schema(request=None, responses={200: RunDetailSerializer})
    @action(
        detail=True,
        methods=["post"],
        url_path=r"steps/(?P<key>[^/]+)/approve",
        permission_classes=needs(RUN_ACTION_PERMISSIONS["approve"]),
    )
    def approve(self, request, pk=None, key=None):
        """Let a step waiting for approval run."""
        step = step_approve(step=self._step(key), user=request.user)
        return self._detail(step.run)

    @extend_schema(request=RejectSerializer, responses={200: RunDetailSerializer})
    @action(
        detail=True,
        methods=["post"],
        url_path=r"steps/(?P<key>[^/]+)/reject",
        permission_classes=needs(RUN_ACTION_PERMISSIONS["reject"]),
    )
    def reject(self, request, pk=None, key=None):
        """Refuse a step waiting for approval: it fails, and so does the run."""
        body = RejectSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        step = step_reject(
            step=self._step(key), user=request.user, reason=body.validated_data["reason"]
        )
        return self._detail(step.run)

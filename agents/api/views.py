from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.generics import ListAPIView
from rest_framework.response import Response

from agents.api.serializers import (
    AgentSerializer,
    BroadcastSerializer,
    MessageFilterSerializer,
    MessageSerializer,
    ScaleSerializer,
    SendSerializer,
    SkillSerializer,
)
from agents.liveness import agents_live
from agents.mailbox import user_sender
from agents.models import Agent
from agents.selectors import agent_list, message_list, skill_list
from agents.services import (
    agent_drain,
    agent_resume,
    agent_scale,
    agent_shutdown,
    message_broadcast,
    message_send,
)
from hive_core.api import ID_PATTERN, NewestFirstPagination, needs, query_params

CONTROL = needs("agents.change_agent")


class AgentViewSet(viewsets.ReadOnlyModelViewSet):
    """The registered agents with their live state; control actions need
    `agents.change_agent`."""

    serializer_class = AgentSerializer
    lookup_field = "name"

    def get_queryset(self):
        return agent_list()

    def get_serializer(self, *args, **kwargs):
        agents = args[0] if args else []
        agents = agents if isinstance(agents, list | tuple) else [agents]
        kwargs.setdefault("context", self.get_serializer_context())
        kwargs["context"]["live"] = agents_live([a.name for a in agents if isinstance(a, Agent)])
        return super().get_serializer(*args, **kwargs)

    def _control(self, service, **arguments) -> Response:
        """Run a control service on the agent; its AgentControlError (a Conflict, code
        `agent_unavailable`) is the API's 409 through the exception handler."""
        agent = self.get_object()
        result = service(agent=agent, **arguments)
        agent = result if isinstance(result, Agent) else agent
        data = self.get_serializer(agent).data
        # The status the service just wrote is the truth: the last heartbeat, up to a
        # beat old, may predate it (a resume would answer "draining").
        data["status"] = agent.status
        return Response(data)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"], permission_classes=CONTROL)
    def drain(self, request, name=None):
        """Stop taking new steps; running ones finish."""
        return self._control(agent_drain)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"], permission_classes=CONTROL)
    def resume(self, request, name=None):
        """Take steps again after a drain."""
        return self._control(agent_resume)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"], permission_classes=CONTROL)
    def shutdown(self, request, name=None):
        """Finish running steps, then exit."""
        return self._control(agent_shutdown)

    @extend_schema(request=ScaleSerializer)
    @action(detail=True, methods=["post"], permission_classes=CONTROL)
    def scale(self, request, name=None):
        """Set the number of steps the agent runs in parallel."""
        body = ScaleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._control(agent_scale, concurrency=body.validated_data["concurrency"])


class SkillListView(ListAPIView):
    """Every registered skill, its input schema, and the online agents offering it."""

    serializer_class = SkillSerializer
    pagination_class = None  # a handful of skills, listed whole

    def get_queryset(self):
        return skill_list()


SEND = needs("agents.add_message")


@extend_schema_view(list=extend_schema(parameters=[MessageFilterSerializer]))
class MessageViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Agent messages, newest first, by cursor; filter with `?agent=`, `?state=`
    (pending, handled, dead), `?kind=`, `?correlation_id=`. A user sees the messages
    they sent; staff and holders of `agents.view_message` see all. Sending needs
    `agents.add_message`."""

    serializer_class = MessageSerializer
    pagination_class = NewestFirstPagination
    lookup_value_regex = ID_PATTERN

    def get_permissions(self):
        if self.action in {"create", "broadcast"}:
            return [permission() for permission in SEND]
        return super().get_permissions()

    def get_queryset(self):
        if self.action != "list":
            return message_list(user=self.request.user)
        filters = MessageFilterSerializer(data=query_params(self.request))
        filters.is_valid(raise_exception=True)
        return message_list(user=self.request.user, **filters.validated_data)

    @extend_schema(request=SendSerializer, responses={201: MessageSerializer})
    def create(self, request):
        """Send a message to an agent (`to`) or to any one agent of a `role`."""
        body = SendSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        message = message_send(sender=user_sender(request.user), **body.validated_data)
        return Response(MessageSerializer(message).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=BroadcastSerializer, responses={201: MessageSerializer(many=True)})
    @action(detail=False, methods=["post"])
    def broadcast(self, request):
        """Send a copy to each online agent of a `role`."""
        body = BroadcastSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        messages = message_broadcast(sender=user_sender(request.user), **body.validated_data)
        return Response(MessageSerializer(messages, many=True).data, status=status.HTTP_201_CREATED)

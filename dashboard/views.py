"""The dashboard's pages. Each renders its live part alone with `?partial=1`: the page's
script fetches that again when an event says something on it changed (static/
dashboard/live.js), so what the page shows is always what the database says."""

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render

from agents.selectors import agent_status_counts, inbox_summary, message_list
from coordination.api.serializers import RunFilterSerializer
from coordination.models import Run
from coordination.selectors import (
    agent_cards,
    run_children,
    run_get,
    run_list,
    run_state_counts,
    run_visible_list,
    step_throughput,
)
from coordination.services import RUN_ACTION_PERMISSIONS
from dashboard.dag import dag_layout
from dashboard.selectors import event_last_seq, event_recent, process_health
from notifications.selectors import delivery_list, subscription_list

RUNS_SHOWN = 100


def _page(request, name: str, context: dict):
    """The whole page, or with ?partial=1 its live part only. The sequence number is
    read first: the state read after it is at least that new."""
    partial = request.GET.get("partial") == "1"
    template = f"dashboard/_{name}.html" if partial else f"dashboard/{name}.html"
    return render(request, template, context)


@login_required
def overview(request):
    seq = event_last_seq()
    agents = agent_status_counts()
    online = sum(n for status, n in agents.items() if status != "offline")
    return _page(request, "overview", {
        "seq": seq, "agents": agents, "online": online,
        "runs": run_state_counts(user=request.user), "throughput": step_throughput(),
        "events": event_recent(user=request.user), "processes": process_health(),
    })  # fmt: skip


@login_required
def agents(request):
    return _page(request, "agents", {"seq": event_last_seq(), "agents": agent_cards()})


@login_required
def runs(request):
    seq = event_last_seq()
    filters = RunFilterSerializer(
        data={k: v for k, v in request.GET.items() if v and k != "partial"}
    )
    given = filters.validated_data if filters.is_valid() else {}
    shown = run_list(
        user=request.user,
        state=given.get("state", ""),
        workflow=given.get("workflow", ""),
        command=given.get("command", ""),
        started_by=given.get("user", ""),
    )[:RUNS_SHOWN]
    return _page(request, "runs", {
        "seq": seq, "runs": list(shown), "filters": given, "errors": filters.errors,
        "states": Run.State.values, "query": request.GET.urlencode(),
    })  # fmt: skip


@login_required
def run_detail(request, pk: str):
    seq = event_last_seq()
    try:
        run = run_get(user=request.user, pk=int(pk))
    except Run.DoesNotExist:
        raise Http404(f"no run {pk}") from None
    steps = list(run.steps.all())
    return _page(request, "run", {
        "seq": seq, "run": run, "steps": steps,
        "children": list(run_children(run=run).filter(pk__in=run_visible_list(user=request.user))),
        "dag": dag_layout(run.workflow.spec["steps"], steps), "can": _run_actions(request.user),
    })  # fmt: skip


def _run_actions(user) -> dict[str, bool]:
    """The run actions `user` holds the permission of, by the API's own table: a
    button is shown only to those its API action would not refuse outright."""
    return {action: user.has_perm(perm) for action, perm in RUN_ACTION_PERMISSIONS.items()}


@login_required
def messages(request):
    return _page(request, "messages", {
        "seq": event_last_seq(), "inboxes": inbox_summary(),
        "dead": list(message_list(user=request.user, state="dead")[:50]),
        "recent": list(message_list(user=request.user)[:50]),
    })  # fmt: skip


@login_required
def notifications(request):
    """The user's subscriptions and the newest deliveries made for them (staff: all),
    server-rendered: subscriptions are managed in the API and the admin."""
    return render(request, "dashboard/notifications.html", {
        "subscriptions": list(subscription_list(user=request.user)),
        "deliveries": list(delivery_list(user=request.user)[:RUNS_SHOWN]),
    })  # fmt: skip


@login_required
def token(request):
    """The signed-in user's API token: when it expires, and a button that replaces it.
    The new key is shown once, in the answer to that POST (CSRF-checked); a GET never
    shows a key."""
    from rest_framework.authtoken.models import Token

    from hive_core.services import token_rotate
    from hive_core.tokens import token_body

    new = None
    if request.method == "POST":
        new = token_body(token_rotate(user=request.user))
    current = Token.objects.filter(user=request.user).first()
    context = {"new": new, "current": token_body(current) if current else None}
    return render(request, "dashboard/token.html", context)

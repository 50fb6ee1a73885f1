from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from agents.selectors import agent_list


@login_required
def overview(request):
    return render(request, "dashboard/overview.html", {"agents": agent_list()})

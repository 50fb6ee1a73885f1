"""Hostile input (issue 15 #10-#14, #17): crafted cursors, YAML alias bombs, runaway
templates, names with a trailing newline and forged log lines are refused cleanly, with
a 4xx or an error naming what was wrong, never a 500, a hang or a forged record."""

import base64

import pytest
from django.test import Client

from tests.security.conftest import auth


def _cursor(query: str) -> str:
    return base64.b64encode(query.encode()).decode()


# What DRF's cursor decoder let through to the query: a position that is not a row id
# (text, a float, a NUL, empty, larger than a 64-bit id) inside well-formed base64.
CRAFTED_CURSORS = [
    _cursor("p=abc"),
    _cursor("p=1e5"),
    _cursor("p=%00"),
    _cursor("p="),
    _cursor("p=-1"),
    _cursor("p=" + "9" * 30),
    _cursor("o=-1"),
    _cursor("r=x"),
    "not base64!",
    "%00",
]


@pytest.mark.parametrize("path", ["/api/v1/runs/", "/api/v1/messages/"])
@pytest.mark.parametrize("cursor", CRAFTED_CURSORS)
def test_a_crafted_cursor_is_a_400_naming_the_cursor(attackers, path, cursor):
    response = Client().get(path, {"cursor": cursor}, headers=auth(attackers["admin"]))
    assert response.status_code == 400, response.content
    assert response.json() == {
        "error": {
            "code": "invalid",
            "message": "cursor: Invalid cursor.",
            "fields": {"cursor": ["Invalid cursor."]},
        }
    }


@pytest.mark.parametrize("path", ["/api/v1/runs/", "/api/v1/messages/"])
def test_a_real_cursor_still_pages(attackers, path):
    valid = _cursor("p=5")
    response = Client().get(path, {"cursor": valid}, headers=auth(attackers["admin"]))
    assert response.status_code == 200, response.content

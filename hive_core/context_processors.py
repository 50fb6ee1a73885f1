"""Template context for every page."""

from django.conf import settings
from django.http.request import split_domain_port


def ops_links(request) -> dict:
    """Flower's address for the dashboard's menu: HIVE_FLOWER_URL, else this host on
    HIVE_FLOWER_PORT (as `hive up` and docker-compose.yml publish it)."""
    url = settings.HIVE_FLOWER_URL
    if not url:
        host, _ = split_domain_port(request.get_host())
        url = f"{request.scheme}://{host or 'localhost'}:{settings.HIVE_FLOWER_PORT}/"
    return {"flower_url": url}

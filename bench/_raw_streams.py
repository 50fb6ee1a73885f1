"""The baseline consumer: plain redis-py on the same Redis, no Django and no database.
XREADGROUP COUNT 100 BLOCK, XACK per batch, and a reply to entries that ask for one,
as Hive's inbox does minus the handler's transaction.

    python -m bench._raw_streams REDIS_URL STREAM
"""

import contextlib
import sys

import redis

GROUP = "raw"


def main(url: str, stream: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=None, decode_responses=True)
    with contextlib.suppress(redis.ResponseError):  # BUSYGROUP: it exists
        client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    while True:
        response = client.xreadgroup(GROUP, "raw-1", {stream: ">"}, count=100, block=1000)
        for _, entries in response or []:
            pipe = client.pipeline(transaction=False)
            pipe.xack(stream, GROUP, *[entry_id for entry_id, _ in entries])
            for _, fields in entries:
                if fields.get("reply"):
                    pipe.xadd(fields["reply"], {"cid": fields.get("cid", ""), "ok": 1})
            pipe.execute()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

"""A blocking subscriber (Django, Flask, scripts): prints events until Ctrl-C."""

from __future__ import annotations

import os
import sys

from courier_client import CourierClient, StreamPosition


def main(channel: str) -> None:
    url = os.environ.get("COURIER_URL", "http://127.0.0.1:8766")
    with CourierClient(url, token=lambda: os.environ["COURIER_TOKEN"]) as client:
        since = StreamPosition(sys.argv[2], int(sys.argv[3])) if len(sys.argv) > 3 else None
        try:
            for event in client.subscribe(channel, since=since):
                print(event.position, event.type, event.data)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "global")

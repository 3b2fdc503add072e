"""Publish events through a sidecar with requests.

    python publisher.py http://127.0.0.1:7700 match.updated 10

Each event is a FOGIS envelope; the Idempotency-Key makes a retried POST safe.
A 202 means the event is durable (in Redis, or spooled to disk while Redis is
down); anything else is an error the caller should retry.
"""
import json
import sys
import uuid
from datetime import datetime, timezone

import requests


def publish(sidecar: str, topic: str, payload: dict, token: str = "") -> dict:
    message_id = str(uuid.uuid4())
    envelope = {
        "message_id": message_id,
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "source": "match-list-processor",
        "version": "1.0",
        "type": "match_updates",
        "payload": payload,
    }
    headers = {"Content-Type": "application/json", "Idempotency-Key": message_id, "ce-type": "match_updates"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    for attempt in range(5):
        try:
            r = requests.post(f"{sidecar}/v1/publish/{topic}", data=json.dumps(envelope), headers=headers, timeout=5)
        except requests.ConnectionError:
            continue
        if r.status_code == 202:
            return r.json()
        if r.status_code < 500:
            raise RuntimeError(f"publish refused: {r.status_code} {r.text}")
    raise RuntimeError("sidecar unavailable")


def main() -> int:
    sidecar, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1
    for i in range(count):
        receipt = publish(sidecar, topic, {"match_id": 1000 + i})
        print(json.dumps(receipt), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

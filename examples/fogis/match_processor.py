"""Stand-in for match-list-processor: publishes match updates through its sidecar.

It POSTs the FOGIS envelope to its old calendar URL, /sync, which its sidecar now
answers (a proxy route), so the publisher code is unchanged apart from that URL.
"""
import json
import os
import sys
import time
import uuid
from datetime import datetime, timezone

import requests

SIDECAR = os.environ.get("PROCESSOR_SIDECAR", "http://127.0.0.1:7700")
INTERVAL = float(os.environ.get("PUBLISH_INTERVAL", "5"))
COUNT = int(os.environ.get("PUBLISH_COUNT", "0"))  # 0 = forever


def envelope(match_id: int) -> dict:
    return {
        "message_id": str(uuid.uuid4()),
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "source": "match-list-processor",
        "version": "1.0",
        "type": "match_updates",
        "payload": {"match_id": match_id, "changes": ["time"], "kickoff": "2026-12-01T18:00:00Z"},
    }


def main() -> int:
    n = 0
    while COUNT == 0 or n < COUNT:
        n += 1
        msg = envelope(1000 + n)
        r = requests.post(f"{SIDECAR}/sync", data=json.dumps(msg),
                          headers={"Content-Type": "application/json",
                                   "Idempotency-Key": msg["message_id"]}, timeout=5)
        print(f"published match {1000 + n}: {r.status_code} {r.text.strip()}", flush=True)
        if r.status_code != 202:
            return 1
        if COUNT == 0 or n < COUNT:
            time.sleep(INTERVAL)
    return 0


if __name__ == "__main__":
    sys.exit(main())

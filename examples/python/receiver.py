"""A webhook receiver for sidecar deliveries, in Flask.

It verifies the Standard Webhooks signature (webhook-id, webhook-timestamp,
webhook-signature; secret "whsec_<base64>") and deduplicates by webhook-id,
since delivery is at-least-once. Run:

    SIDECAR_WEBHOOK_SECRET=whsec_... PORT=5003 python receiver.py
"""
import base64
import hashlib
import hmac
import os
import threading
import time

from flask import Flask, jsonify, request

TOLERANCE = 5 * 60  # seconds: refuse replays of old deliveries

app = Flask(__name__)
_lock = threading.Lock()
_seen = {}  # webhook-id → body; in production, a table with a unique key
_duplicates = 0


def _key() -> bytes:
    secret = os.environ.get("SIDECAR_WEBHOOK_SECRET", "")
    if not secret.startswith("whsec_"):
        raise SystemExit("set SIDECAR_WEBHOOK_SECRET=whsec_<base64> (the sidecar's secret)")
    return base64.b64decode(secret[len("whsec_"):])


KEY = _key()


def verify(headers, body: bytes) -> bool:
    msg_id = headers.get("webhook-id", "")
    ts = headers.get("webhook-timestamp", "")
    if not msg_id or not ts.isdigit() or abs(time.time() - int(ts)) > TOLERANCE:
        return False
    expected = base64.b64encode(hmac.new(KEY, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    # The header may carry several space-separated signatures (key rotation).
    for sig in headers.get("webhook-signature", "").split():
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


@app.post("/manual-sync")
def manual_sync():
    global _duplicates
    body = request.get_data()
    if not verify(request.headers, body):
        return jsonify({"error": "bad signature"}), 401
    msg_id = request.headers["webhook-id"]
    with _lock:
        if msg_id in _seen:
            _duplicates += 1
            return jsonify({"status": "duplicate"}), 200  # 2xx: the sidecar acknowledges
        _seen[msg_id] = body.decode("utf-8", "replace")
    return jsonify({"status": "synced"}), 200


@app.get("/health")
def health():
    return jsonify({"status": "healthy"})


@app.get("/received")
def received():
    with _lock:
        return jsonify({"events": list(_seen.keys()), "duplicates": _duplicates})


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5003")))

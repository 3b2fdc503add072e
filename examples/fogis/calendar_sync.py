"""Stand-in for fogis-calendar-phonebook-sync: a Flask service on port 5003.

POST /manual-sync receives match updates from its sidecar (webhook delivery);
GET /health answers the compose healthcheck; GET /received lists what arrived.
"""
import os

from flask import Flask, jsonify, request

app = Flask(__name__)
received = []


@app.post("/manual-sync")
def manual_sync():
    received.append({"id": request.headers.get("webhook-id"), "body": request.get_json(silent=True)})
    print(f"sync for event {request.headers.get('webhook-id')} (attempt {request.headers.get('Sidecar-Attempt')})", flush=True)
    return jsonify({"status": "synced"}), 200


@app.get("/health")
def health():
    return jsonify({"status": "healthy"})


@app.get("/received")
def list_received():
    return jsonify(received)


if __name__ == "__main__":
    app.run(host=os.environ.get("HOST", "0.0.0.0"), port=int(os.environ.get("PORT", "5003")))

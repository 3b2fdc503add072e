"""Stub of fogis-api-client-service, the processor's source of matches.

GET /matches answers the match list (raw FOGIS match dicts, as the real
service does); GET /health answers 200. The list is set with
PUT /matches (a JSON list; stand-in control) or, for a demo, changes by
itself: with ROTATE_SECONDS > 0 the first match's kick-off time moves every
ROTATE_SECONDS, so the processor finds a change that often.
Port: PORT (default 8080, the real service's container port).
"""
import copy
import os
import threading
import time

from flask import Flask, jsonify, request

app = Flask(__name__)
lock = threading.Lock()
STARTED = time.time()
ROTATE = float(os.environ.get("ROTATE_SECONDS", "0"))

matches = [{
    "matchid": 6169105,
    "matchnr": "000024032",
    "speldatum": "2026-05-01",
    "avsparkstid": "15:00",
    "lag1lagid": 11111, "lag1namn": "IK Sirius", "lag1foreningid": 9001,
    "lag2lagid": 22222, "lag2namn": "Örgryte IS", "lag2foreningid": 9002,
    "anlaggningnamn": "Studenternas IP",
    "tavlingnamn": "Allsvenskan",
    "installd": False, "avbruten": False, "uppskjuten": False,
    "domaruppdraglista": [
        {"domarid": 1, "personnamn": "Anna Andersson", "domarrollnamn": "Huvuddomare"},
        {"domarid": 2, "personnamn": "Björn Berg", "domarrollnamn": "Assisterande domare"},
    ],
}]


@app.get("/matches")
def get_matches():
    with lock:
        out = copy.deepcopy(matches)
    if ROTATE > 0 and out:
        minutes = int((time.time() - STARTED) // ROTATE) % 60
        out[0]["avsparkstid"] = f"15:{minutes:02d}"
    return jsonify(out)


@app.put("/matches")
def put_matches():
    global matches
    body = request.get_json(force=True)
    if not isinstance(body, list):
        return jsonify({"error": "want a JSON list of matches"}), 400
    with lock:
        matches = body
    return jsonify({"matches": len(body)})


@app.get("/health")
def health():
    return jsonify({"status": "healthy"})


if __name__ == "__main__":
    app.run(host=os.environ.get("HOST", "0.0.0.0"), port=int(os.environ.get("PORT", "8080")))

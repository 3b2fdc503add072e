"""Stand-in for PitchConnect/fogis-calendar-phonebook-sync (Flask, port 5003),
as the sidecar and the processor see it. Only Google and FOGIS are stubbed:
a "sync" records the matches it was given (GET /standin/syncs).

Two versions of the real service, chosen with STANDIN_VERSION (a stand-in
setting; every other variable below is the real service's, with its default):

  current (default) -- commit 17bb2ca: no POST /sync (Flask's 404 page).
  legacy -- commit ff4f53b: POST /sync runs a whole FOGIS-to-Google sync
    synchronously (no time limit) and answers 200 {"status":"success",...},
    or 500 when the sync script fails. Its callback takes a list only, so
    what its own Redis subscriber passes (a dict) never syncs.

Both, as the real service at import time, before the HTTP port opens:
- read the Google OAuth token at GOOGLE_CALENDAR_TOKEN_FILE (default
  /app/credentials/tokens/calendar/token.json) once: without it every sync
  fails (POST /manual-sync answers 500, even for {"matches": []}) until the
  process is restarted with a token;
- with REDIS_ENABLED (default "true") connect to REDIS_URL (default
  redis://fogis-redis:6379) with the real client options, PING, and
  SUBSCRIBE, one command per channel, to fogis:matches:updates:v2,
  fogis:matches:updates:v1, fogis:matches:updates, fogis:processor:status and
  fogis:system:alerts. If Redis is down then, nothing retries. If the
  connection drops later, it retries once after 1 s; if that fails it never
  reconnects (the real one spins in a tight loop, ~140,000 log lines a
  second; this stand-in sleeps 50 ms a turn) and /redis-status still says
  connected. Only POST /redis-restart or a process restart recovers.

POST /manual-sync: JSON (any Content-Type) with a "matches" list -> the
callback; 400 without JSON or without "matches", 500 when the sync fails,
200 {"matches_processed","success","timestamp"} (Flask sorts keys).
GET /health: 500 without ./data (relative to the working directory), 200
"initializing" without a token, 200 "healthy" with one.
STANDIN_SYNC_SECONDS makes each match's sync (and a legacy /sync) take that
long; STANDIN_SYNC_EXIT, when not 0, makes the legacy /sync script fail.
"""
import hashlib
import json
import logging
import os
import socket
import sys
import threading
import time
from datetime import datetime
from typing import Dict, List, Union

import redis
from flask import Flask, jsonify, request

STANDIN_VERSION = os.environ.get("STANDIN_VERSION", "current")
LEGACY = STANDIN_VERSION == "legacy"
SYNC_SECONDS = float(os.environ.get("STANDIN_SYNC_SECONDS", "0"))

logging.basicConfig(level=getattr(logging, os.environ.get("LOG_LEVEL", "INFO").upper(), logging.INFO),
                    format="%(asctime)s - %(name)s - %(levelname)s - %(message)s", stream=sys.stdout)
logging.getLogger("werkzeug").setLevel(logging.WARNING)
logger = logging.getLogger("calendar_sync")

app = Flask(__name__)

# --- stand-in instrumentation --------------------------------------------------
lock = threading.Lock()
syncs = []     # one record per sync attempt
messages = []  # one record per Pub/Sub message received
context = threading.local()  # how the current callback was reached
running_syncs = 0
most_concurrent = 0


def record_sync(matches, success: bool, error=None):
    via = getattr(context, "via", "unknown")
    entry = {"via": via, "success": success, "error": error, "at": time.time(),
             "kickoffs": {str(m.get("matchid")): m.get("avsparkstid") for m in matches if isinstance(m, dict)}}
    entry.update(getattr(context, "extra", {}))
    with lock:
        syncs.append(entry)


def stub_sync(what: str):
    """The Google side of a sync: just takes STANDIN_SYNC_SECONDS."""
    global running_syncs, most_concurrent
    with lock:
        running_syncs += 1
        most_concurrent = max(most_concurrent, running_syncs)
    try:
        if SYNC_SECONDS > 0:
            time.sleep(SYNC_SECONDS)
    finally:
        with lock:
            running_syncs -= 1


# --- Google services (app.py initialize_google_services, at import) -----------
TOKEN_PATH = os.environ.get("GOOGLE_CALENDAR_TOKEN_FILE", "/app/credentials/tokens/calendar/token.json")
calendar_service = None


def initialize_google_services() -> bool:
    global calendar_service
    if not os.path.exists(TOKEN_PATH):
        logger.warning(f"OAuth token not found at {TOKEN_PATH}")
        return False
    try:
        with open(TOKEN_PATH) as f:
            json.load(f)
        calendar_service = object()  # stands for googleapiclient's Calendar service
        logger.info("✅ Google Calendar and People API services initialized")
        return True
    except Exception as e:
        logger.error(f"❌ Failed to initialize Google services: {e}")
        return False


initialize_google_services()


def sync_calendar(match: Dict) -> bool:
    stub_sync("match")
    return True


def calendar_sync_callback(data: Union[List[Dict], Dict]) -> bool:
    """The sync behind /manual-sync and the Redis subscriber."""
    matches = data.get("matches", []) if isinstance(data, dict) else data
    try:
        if not calendar_service:
            logger.error("❌ Calendar service not initialized")
            record_sync(matches if isinstance(matches, list) else [], False, "Calendar service not initialized")
            return False
        if LEGACY and isinstance(data, dict):
            # ff4f53b's callback iterates what it got: a dict's keys are strings.
            raise TypeError("string indices must be integers")
        if not isinstance(matches, list):
            logger.error(f"❌ Unexpected data type: {type(data)}")
            return False
        if not matches:
            logger.info("📋 No matches to process")
            record_sync([], True)
            return True
        processed = failed = 0
        for match in matches:
            try:
                match_id = str(match["matchid"])
                if sync_calendar(match):
                    processed += 1
                    logger.info(f"✅ Match {match_id}: Calendar sync successful")
                else:
                    failed += 1
            except Exception as e:
                failed += 1
                logger.error(f"❌ Error processing match: {e}")
        logger.info(f"📊 Redis sync complete: {processed} processed, {failed} failed")
        ok = processed > 0 or (processed == 0 and failed == 0)
        record_sync(matches, ok)
        return ok
    except Exception as e:
        logger.error(f"❌ Calendar sync callback failed: {e}")
        record_sync([], False, str(e))
        return False


# --- GET /health (app.py) ----------------------------------------------------------
@app.get("/health")
def health_check():
    try:
        if not os.path.exists("data"):
            logger.error("Data directory not accessible")
            return jsonify({"status": "error", "message": "Data directory not accessible"}), 500
        locations = [TOKEN_PATH, "/app/data/token.json", "/app/token.json"]
        found = next((p for p in locations if os.path.exists(p)), None)
        if found is None:
            return jsonify({
                "status": "initializing",
                "auth_status": "initializing",
                "message": "OAuth token not found - service may be starting up",
                "checked_locations": locations,
                "auth_url": "http://localhost:9083/authorize",
                "note": "If this persists after 60 seconds, authentication may be required",
            }), 200
        oauth_info = {"status": "authenticated", "location": found}
        try:
            with open(found) as f:
                token = json.load(f)
            if "refresh_token" in token:
                oauth_info["has_refresh_token"] = bool(token["refresh_token"])
        except Exception:
            pass
        return jsonify({
            "status": "healthy",
            "version": os.environ.get("VERSION", "dev"),
            "environment": os.environ.get("ENVIRONMENT", "development"),
            "auth_status": oauth_info["status"],
            "token_location": oauth_info["location"],
            "oauth_info": oauth_info,
        }), 200
    except Exception as e:
        return jsonify({"status": "error", "message": str(e)}), 500


# --- legacy POST /sync (ff4f53b app.py) ------------------------------------------
if LEGACY:
    @app.post("/sync")
    def fogis_sync():
        data = request.get_json(silent=True) or {}
        context.via, context.extra = "sync", http_extra()
        context.extra["request_body"] = request.get_data(as_text=True)
        stub_sync("full")  # subprocess.run(["python", "fogis_calendar_sync.py"]), no timeout
        code = int(os.environ.get("STANDIN_SYNC_EXIT", "0"))
        stdout = f"stub sync (delete={bool(data.get('delete'))})\n"
        record_sync([], code == 0, None if code == 0 else f"exit {code}")
        if code != 0:
            return jsonify({"status": "error", "message": "FOGIS sync failed", "error": "stub failure",
                            "output": stdout}), 500
        return jsonify({"status": "success", "message": "FOGIS sync completed successfully", "output": stdout}), 200


def http_extra() -> dict:
    return {"webhook_id": request.headers.get("webhook-id"), "attempt": request.headers.get("Sidecar-Attempt"),
            "content_type": request.headers.get("Content-Type")}


# --- Redis integration (src/redis_integration/) ----------------------------------
class RedisConfig:
    def __init__(self):
        self.url = os.getenv("REDIS_URL", "redis://fogis-redis:6379")
        self.enabled = os.getenv("REDIS_ENABLED", "true").lower() == "true"
        self.timeout = int(os.getenv("REDIS_TIMEOUT", "5"))
        self.channels = {
            "match_updates_v2": "fogis:matches:updates:v2",
            "match_updates_v1": "fogis:matches:updates:v1",
            "match_updates": "fogis:matches:updates",
            "processor_status": "fogis:processor:status",
            "system_alerts": "fogis:system:alerts",
        }


class RedisSubscriber:
    def __init__(self, config: RedisConfig, callback):
        self.config, self.callback = config, callback
        self.client = self.pubsub = self.thread = None
        self.running = False
        self.reconnects = self.errors = 0
        self.stuck = False  # stand-in: the listener lost its connection for good
        if config.enabled:
            self._connect()

    def _connect(self) -> bool:
        try:
            keepalive = {}
            for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6)):
                if hasattr(socket, name):
                    keepalive[getattr(socket, name)] = value
            self.client = redis.from_url(
                self.config.url, socket_timeout=None, socket_connect_timeout=5, socket_keepalive=True,
                socket_keepalive_options=keepalive or None, health_check_interval=30, decode_responses=True)
            self.client.ping()
            logger.info(f"✅ Connected to Redis: {self.config.url}")
            return True
        except Exception as e:
            logger.warning(f"⚠️ Redis connection failed: {e}")
            return False  # self.client stays set: /redis-status says connected

    def _reconnect(self) -> bool:
        try:
            for closable in (self.pubsub, self.client):
                try:
                    if closable:
                        closable.close()
                except Exception:
                    pass
            if not self._connect():
                return False
            self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            for channel in self.config.channels.values():
                self.pubsub.subscribe(channel)
                logger.info(f"📡 Resubscribed to channel: {channel}")
            return True
        except Exception as e:
            logger.error(f"❌ Reconnection failed: {e}")
            return False

    def start_subscription(self) -> bool:
        if not self.config.enabled or not self.client:
            return False
        try:
            self.pubsub = self.client.pubsub()
            for channel in self.config.channels.values():
                self.pubsub.subscribe(channel)
                logger.info(f"📡 Subscribed to channel: {channel}")
            self.running = True
            self.thread = threading.Thread(target=self._listen, daemon=True)
            self.thread.start()
            logger.info("✅ Redis subscription started")
            return True
        except Exception as e:
            logger.error(f"❌ Failed to start subscription: {e}")
            return False

    def _listen(self):
        delay = 1
        while self.running:
            try:
                if not self.stuck:
                    logger.info("🔄 Starting message listener...")
                for message in self.pubsub.listen():
                    if not self.running:
                        break
                    if message["type"] == "message":
                        self._handle(message)
                        delay = 1
                if self.running and not self.pubsub.subscribed:
                    # A failed _reconnect left the pubsub reset: listen() returns
                    # at once, for ever. The real loop spins without sleeping.
                    if not self.stuck:
                        logger.error("(stand-in) listener lost its subscription; the real service now "
                                     "loops here without sleeping and never reconnects")
                    self.stuck = True
                    time.sleep(0.05)
            except redis.ConnectionError as e:
                self.reconnects += 1
                logger.error(f"❌ Connection lost: {e}")
                logger.info(f"🔄 Reconnecting in {delay}s...")
                time.sleep(delay)
                delay = min(delay * 2, 60)
                self._reconnect()
            except Exception as e:
                self.errors += 1
                logger.error(f"❌ Unexpected error: {e}")
                time.sleep(delay)
                delay = min(delay * 2, 60)

    def _handle(self, message):
        entry = {"channel": message["channel"], "at": time.time(),
                 "data_sha256": hashlib.sha256(message["data"].encode()).hexdigest()}
        try:
            data = json.loads(message["data"])
            entry.update(message_id=data.get("message_id"), type=data.get("type"), timestamp=data.get("timestamp"))
            with lock:
                messages.append(entry)
            context.via, context.extra = "redis", {"message_id": data.get("message_id"),
                                                   "channel": message["channel"]}
            kind, version = data.get("type"), data.get("schema_version", "1.0")  # top level only
            if kind != "match_updates":
                logger.info(f"📨 Received {kind} message")
                return
            payload = data.get("payload", {})
            if not payload.get("metadata", {}).get("has_changes", False):
                logger.info("📋 No changes detected - skipping calendar sync")
                return
            if version == "2.0":
                logger.info("📨 Received Enhanced Schema v2.0 message")
                changes = payload.get("detailed_changes", [])
                high = any(c.get("priority") == "high" or c.get("category") in
                           ("time_change", "date_change", "venue_change", "referee_change") for c in changes)
                ok = self.callback({"matches": payload.get("matches", []), "schema_version": "2.0",
                                    "detailed_changes": changes, "high_priority": high})
            else:
                # The processor's messages land here: its schema_version is
                # inside payload, so this reads "1.0".
                logger.info(f"📨 Received Schema v{version} message")
                matches = payload.get("matches", [])
                logger.info(f"🗓️ Triggering calendar sync for {len(matches)} matches (v{version})")
                try:
                    ok = self.callback({"matches": matches, "schema_version": version,
                                        "detailed_changes": [], "high_priority": False})
                except TypeError:
                    ok = self.callback(matches)
            logger.info("✅ Calendar sync completed successfully" if ok else "❌ Calendar sync failed")
        except Exception as e:
            self.errors += 1
            logger.error(f"❌ Error handling message: {e}")
            with lock:
                if entry not in messages:
                    messages.append(entry)

    def stop_subscription(self):
        self.running = False
        if self.pubsub:
            try:
                self.pubsub.close()
            except Exception:
                pass
        if self.thread and self.thread.is_alive():
            self.thread.join(timeout=1)
        logger.info("🛑 Redis subscription stopped")

    def get_status(self) -> dict:
        return {"enabled": self.config.enabled, "connected": self.client is not None,
                "subscribed": self.running, "redis_available": True}


def now() -> str:
    return datetime.now().isoformat()


subscriber = None
try:
    logger.info("🔗 Initializing Redis integration...")
    config = RedisConfig()
    subscriber = RedisSubscriber(config, calendar_sync_callback)
    if config.enabled:
        subscriber.start_subscription()
    logger.info("✅ Redis integration initialized successfully")
except Exception as e:
    logger.error(f"❌ Failed to initialize Redis integration: {e}")


@app.get("/redis-status")
def redis_status():
    return jsonify({"success": True, "timestamp": now(), "redis_status": subscriber.get_status()}), 200


@app.get("/redis-stats")
def redis_stats():
    return jsonify({"success": True, "stats": {"subscription_active": subscriber.running,
                                               "channels": list(RedisConfig().channels.values()),
                                               "timestamp": now()}}), 200


@app.post("/redis-test")
def redis_test():
    return jsonify({"success": True, "test_results": subscriber.get_status()}), 200


@app.get("/redis-config")
def redis_config():
    c = RedisConfig()
    return jsonify({"success": True, "config": {"url": c.url, "enabled": c.enabled, "timeout": c.timeout,
                                                "channels": c.channels}, "timestamp": now()}), 200


@app.post("/redis-restart")
def redis_restart():
    global subscriber
    try:
        subscriber.stop_subscription()
        c = RedisConfig()
        subscriber = RedisSubscriber(c, calendar_sync_callback)
        if not c.enabled:
            return jsonify({"success": False, "message": "Redis is disabled"}), 400
        ok = subscriber.start_subscription()
        return jsonify({"success": ok, "message": "Redis subscription restarted" if ok else
                        "Failed to restart subscription", "timestamp": now()}), (200 if ok else 500)
    except Exception as e:
        return jsonify({"success": False, "error": str(e)}), 500


@app.post("/manual-sync")
def manual_sync():
    try:
        data = request.get_json(force=True, silent=True)
        if not data:
            return jsonify({"success": False, "error": "Missing JSON data in request"}), 400
        if "matches" not in data:
            return jsonify({"success": False, "error": "Missing 'matches' in request data"}), 400
        matches = data["matches"]
        context.via, context.extra = "manual-sync", http_extra()
        success = calendar_sync_callback(matches)
        return jsonify({"success": success, "matches_processed": len(matches),
                        "timestamp": now()}), (200 if success else 500)
    except Exception as e:
        return jsonify({"success": False, "error": str(e)}), 500


# --- stand-in instrumentation endpoints ---------------------------------------------
@app.get("/standin/syncs")
def standin_syncs():
    with lock:
        return jsonify({"syncs": syncs, "most_concurrent": most_concurrent})


@app.get("/standin/messages")
def standin_messages():
    with lock:
        return jsonify(messages)


@app.get("/standin/subscriber")
def standin_subscriber():
    s = subscriber
    return jsonify({"running": s.running, "stuck": s.stuck, "reconnects": s.reconnects, "errors": s.errors,
                    "subscribed": bool(s.pubsub and s.pubsub.subscribed)})


if __name__ == "__main__":
    host = os.environ.get("FLASK_HOST", "0.0.0.0")
    port = int(os.environ.get("FLASK_PORT", 5003))
    logger.info(f"Starting FOGIS Calendar & Phonebook Sync service ({STANDIN_VERSION} stand-in) on {host}:{port}")
    app.run(host=host, port=port, threaded=True)

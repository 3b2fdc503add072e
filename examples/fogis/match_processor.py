"""Stand-in for PitchConnect/match-list-processor, as the sidecar and the
calendar see it. Only the FOGIS side is stubbed: matches come from
GET {FOGIS_API_CLIENT_URL}/matches (fogis_api.py here) and nothing else
(WhatsApp, Drive, notifications) is done with them.

Two versions of the real service, chosen with STANDIN_VERSION (a stand-in
setting; every other variable below is the real service's, with its default):

  current (default) -- commit 9be6006: Redis pub/sub only. With
    REDIS_ENABLED=true (default false!) each cycle PUBLISHes
    processing_status "started"; when the match list changed it saves its
    state and then PUBLISHes match_updates and processing_status
    "completed" on REDIS_URL (default redis://fogis-redis:6379). The client
    is redis.from_url(REDIS_URL, decode_responses=True) + PING, made lazily
    at the first publish. A publish that fails is logged and dropped: no
    buffer, no retry, and the state was saved before it -- the update is
    never sent again.
  legacy -- commit 7f4d8dc: the same, plus, when changes were found, POST
    {PHONEBOOK_SYNC_SERVICE_URL}/sync with no body (timeout 30 s), success
    on exactly 200. With PROCESSOR_MODE=legacy and RUN_MODE=service
    (app_persistent): POST {PHONEBOOK_SYNC_SERVICE_URL}/sync at the start of
    every cycle and POST $CALENDAR_SYNC_URL with json={} (timeout 60 s) when
    new match ids appear, reading .json().get("status").

With CI, PYTEST_CURRENT_TEST set (or pytest/unittest imported) the real
service runs in "test mode": it fetches no matches (an empty list, no
network call), starts no health server and runs one cycle only. So does this
stand-in. Never run the processor with CI set.

The health server (the real one: FastAPI on port 8000) answers
/health, /health/simple, /health/dependencies and /; STANDIN_HEALTH_PORT moves
it. /standin/published and /standin/synced list what this process published
and POSTed (stand-in instrumentation, not in the real service).
"""
import json
import logging
import os
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis
import requests

STANDIN_VERSION = os.environ.get("STANDIN_VERSION", "current")
LEGACY = STANDIN_VERSION == "legacy"

# src/config.py (pydantic settings)
DATA_FOLDER = os.environ.get("DATA_FOLDER", "/data")
PREVIOUS_MATCHES_FILE = os.environ.get("PREVIOUS_MATCHES_FILE", "previous_matches.json")
FOGIS_API_CLIENT_URL = os.environ.get("FOGIS_API_CLIENT_URL", "http://fogis-api-client-service:8080")
WHATSAPP_AVATAR_SERVICE_URL = os.environ.get("WHATSAPP_AVATAR_SERVICE_URL", "http://whatsapp-avatar-service:5002")
GOOGLE_DRIVE_SERVICE_URL = os.environ.get("GOOGLE_DRIVE_SERVICE_URL", "http://google-drive-service:5000")
# Removed from src/config.py at 9be6006: the current service reads no calendar URL.
PHONEBOOK_SYNC_SERVICE_URL = os.environ.get("PHONEBOOK_SYNC_SERVICE_URL", "http://fogis-calendar-phonebook-sync:5003")
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOG_FORMAT = os.environ.get("LOG_FORMAT", "%(asctime)s - %(levelname)s - %(message)s")

# src/redis_integration/config.py
REDIS_URL = os.getenv("REDIS_URL", "redis://fogis-redis:6379")
REDIS_PUBSUB_ENABLED = os.getenv("REDIS_PUBSUB_ENABLED", "true").lower() in ("true", "1", "yes")
MATCH_UPDATES_CHANNEL = os.getenv("REDIS_MATCH_UPDATES_CHANNEL", "fogis:matches:updates")
PROCESSOR_STATUS_CHANNEL = os.getenv("REDIS_PROCESSOR_STATUS_CHANNEL", "fogis:processor:status")
SYSTEM_ALERTS_CHANNEL = os.getenv("REDIS_SYSTEM_ALERTS_CHANNEL", "fogis:system:alerts")

TEST_MODE = bool(os.environ.get("PYTEST_CURRENT_TEST") or os.environ.get("CI")
                 or "pytest" in sys.modules or "unittest" in sys.modules)

log = logging.getLogger("match_list_processor")
lock = threading.Lock()
published = []  # one record per publish attempt (stand-in instrumentation)
synced = []     # one record per HTTP sync call (legacy)


def utc_stamp() -> str:
    # message_formatter.py: datetime.utcnow().isoformat() + "Z"
    return datetime.utcnow().isoformat() + "Z"


# --- Redis publishing (src/redis_integration/) -------------------------------

class Publisher:
    """connection_manager.py + publisher.py: one lazily made client."""

    def __init__(self):
        self._client = None

    def client(self):
        if not REDIS_PUBSUB_ENABLED:
            return None
        if self._client is None:
            try:
                self._client = redis.from_url(REDIS_URL, decode_responses=True)
                self._client.ping()
                log.info(f"✅ Connected to Redis at {REDIS_URL}")
            except Exception as e:
                log.warning(f"⚠️ Failed to connect to Redis: {e}")
                self._client = None
        return self._client

    def publish(self, channel: str, message: str, what: str) -> bool:
        record = {"channel": channel, "message": message, "at": time.time(), "success": False}
        try:
            if not REDIS_PUBSUB_ENABLED:
                record.update(success=True, subscribers=0)
                return True
            client = self.client()
            if client is None:
                record["error"] = "Redis client not available"
                log.warning("⚠️ Redis client not available")
                return False
            try:
                subscribers = int(client.publish(channel, message))
            except Exception as e:
                record["error"] = str(e)
                log.error(f"❌ Failed to publish {what}: {e}")
                return False
            record.update(success=True, subscribers=subscribers, answered=time.time())
            data = json.loads(message)
            log.info("📨 PUBLISHING MESSAGE:")
            log.info(f"   Channel: {channel}")
            log.info(f"   Message ID: {data.get('message_id', 'N/A')}")
            if "matches" in data.get("payload", {}):
                log.info(f"   Matches: {len(data['payload']['matches'])} match(es)")
                log.info(f"   Detailed Changes: {len(data['payload']['detailed_changes'])} change(s)")
            log.info(f"   Subscribers: {subscribers}")
            log.info(f"✅ Published {what} to {subscribers} subscribers")
            return True
        finally:
            with lock:
                published.append(record)

    def status(self, status: str, details: dict) -> bool:
        # ProcessingStatusMessageFormatter.format_processing_status
        message = {
            "message_id": str(uuid.uuid4()),
            "timestamp": utc_stamp(),
            "source": "match-list-processor",
            "version": "1.0",
            "type": "processing_status",
            "payload": {"status": status, "timestamp": utc_stamp(), "details": details or {}},
        }
        return self.publish(PROCESSOR_STATUS_CHANNEL, json.dumps(message, ensure_ascii=False), "processing status")

    def match_updates(self, matches: list, changes: "Changes", metadata: dict) -> bool:
        # MatchUpdateMessageFormatter.format_match_updates: schema_version sits
        # inside payload; has_changes is always true and change_summary always
        # {} on the real path (a ChangesSummary object, not a dict).
        message = {
            "message_id": str(uuid.uuid4()),
            "timestamp": utc_stamp(),
            "source": "match-list-processor",
            "version": "1.0",
            "type": "match_updates",
            "payload": {
                "matches": matches,
                "schema_version": "2.0",
                "detailed_changes": changes.detailed,
                "high_priority": changes.high_priority,
                "metadata": {
                    "total_matches": len(matches),
                    "has_changes": True,
                    "change_summary": {},
                    "processing_timestamp": utc_stamp(),
                    **metadata,
                },
            },
        }
        return self.publish(MATCH_UPDATES_CHANNEL, json.dumps(message, ensure_ascii=False), "match updates")


# --- change detection (src/core/change_detector.py, change_categorization.py)

BASIC_FIELDS = ["speldatum", "avsparkstid", "lag1lagid", "lag1namn", "lag2lagid", "lag2namn",
                "anlaggningnamn", "installd", "avbruten", "uppskjuten"]
FIELD_CATEGORY = {"speldatum": "date_change", "avsparkstid": "time_change", "anlaggningnamn": "venue_change",
                  "lag1lagid": "team_change", "lag1namn": "team_change", "lag2lagid": "team_change",
                  "lag2namn": "team_change", "installd": "status_change", "avbruten": "status_change",
                  "uppskjuten": "status_change"}
STATUS_CATEGORY = {"installd": "cancellation", "uppskjuten": "postponement", "avbruten": "interruption"}
PRIORITY = {"cancellation": "critical", "new_assignment": "high", "referee_change": "high",
            "time_change": "high", "date_change": "high", "venue_change": "medium", "team_change": "medium",
            "postponement": "medium", "interruption": "medium", "status_change": "medium"}
STAKEHOLDERS = {"new_assignment": ["referees", "coordinators"], "referee_change": ["referees", "coordinators"],
                "team_change": ["teams", "coordinators"]}


def referees(match: dict) -> list:
    return [{"id": r.get("domarid"), "name": r.get("personnamn"), "role": r.get("domarrollnamn")}
            for r in match.get("domaruppdraglista", [])]


def detail(match: dict, category: str, field: str, prev, curr, description: str) -> dict:
    priority = PRIORITY.get(category, "low")
    try:  # same-day changes are critical
        if datetime.strptime(match.get("speldatum", ""), "%Y-%m-%d").date() == datetime.now(timezone.utc).date():
            priority = "critical"
    except (ValueError, TypeError):
        pass
    return {"match_id": match.get("matchid", "unknown"), "match_nr": match.get("matchnr"),
            "category": category, "priority": priority,
            "affected_stakeholders": STAKEHOLDERS.get(category, ["all"]), "field_name": field,
            "previous_value": prev, "current_value": curr, "change_description": description,
            "timestamp": datetime.now(timezone.utc).isoformat()}


def categorize(prev: dict, curr: dict) -> list:
    out = []
    before, after = referees(prev), referees(curr)
    if not before and after:
        out.append(detail(curr, "new_assignment", "domaruppdraglista", None, after,
                          f"New referee assignment: {len(after)} referees assigned"))
    elif before != after:
        out.append(detail(curr, "referee_change", "domaruppdraglista", before, after, "Referees changed"))
    for field in BASIC_FIELDS:
        if prev.get(field) != curr.get(field):
            category = FIELD_CATEGORY[field]
            if field in STATUS_CATEGORY and curr.get(field):
                category = STATUS_CATEGORY[field]
            out.append(detail(curr, category, field, prev.get(field), curr.get(field),
                              f"{field} changed from {prev.get(field)} to {curr.get(field)}"))
    return out


class Changes:
    def __init__(self, previous: list, current: list):
        prev = {str(m["matchid"]): m for m in previous}
        curr = {str(m["matchid"]): m for m in current}
        self.new = sorted(set(curr) - set(prev))
        self.removed = sorted(set(prev) - set(curr))
        self.updated = [k for k in sorted(set(prev) & set(curr))
                        if any(prev[k].get(f) != curr[k].get(f) for f in BASIC_FIELDS)
                        or {r.get("domarid") for r in prev[k].get("domaruppdraglista", [])}
                        != {r.get("domarid") for r in curr[k].get("domaruppdraglista", [])}]
        self.detailed = []
        for k in self.updated:
            self.detailed += categorize(prev[k], curr[k])
        for k in self.new:
            if curr[k].get("domaruppdraglista"):
                self.detailed += categorize({}, curr[k])
        self.high_priority = any(d["priority"] in ("critical", "high") for d in self.detailed)
        self.has_changes = bool(self.new or self.removed or self.updated)


def state_path() -> str:
    return os.path.join(DATA_FOLDER, PREVIOUS_MATCHES_FILE)


def load_previous() -> list:
    try:
        with open(state_path(), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return []  # no state yet: every match is new


def save_current(matches: list) -> None:
    os.makedirs(DATA_FOLDER, exist_ok=True)
    with open(state_path(), "w", encoding="utf-8") as f:
        json.dump(matches, f, indent=2, ensure_ascii=False)
    log.info(f"Saved {len(matches)} matches to {state_path()}")


def fetch_matches() -> list:
    # DockerNetworkApiClient.fetch_matches_list: any error is an empty list.
    if TEST_MODE:
        log.info("Test mode detected - returning empty matches list")
        return []
    url = f"{FOGIS_API_CLIENT_URL}/matches"
    log.info(f"Fetching matches list from: {url}...")
    try:
        r = requests.get(url, timeout=30)
        r.raise_for_status()
        data = r.json()
        return data if isinstance(data, list) else []
    except Exception as e:
        log.error(f"Failed to fetch matches from API: {e}")
        return []


# --- legacy HTTP calls (7f4d8dc) ----------------------------------------------

def record_sync(what: str, url: str, start: float, status=None, ok=False, error=None, body=None):
    with lock:
        synced.append({"call": what, "url": url, "status": status, "success": ok,
                       "error": error, "body": body, "at": start, "answered": time.time()})


def sync_contacts() -> bool:
    """services/phonebook_service.py: POST {base}/sync, no body, exactly 200."""
    url = f"{PHONEBOOK_SYNC_SERVICE_URL}/sync"
    log.info("Triggering contact sync with phonebook...")
    start = time.time()
    try:
        r = requests.post(url, timeout=30)
    except requests.exceptions.RequestException as e:
        log.error(f"Error triggering contact sync: {e}")
        record_sync("sync_contacts", url, start, error=str(e))
        return False
    if r.status_code == 200:
        log.info("Contact sync process completed successfully.")
        record_sync("sync_contacts", url, start, r.status_code, True, body=r.text)
        return True
    log.error(f"Contact sync process failed. Status: {r.status_code}, Response: {r.text}")
    record_sync("sync_contacts", url, start, r.status_code, False, body=r.text)
    return False


def trigger_calendar_sync() -> None:
    """app_persistent.py _trigger_calendar_sync: POST $CALENDAR_SYNC_URL json={}."""
    url = os.environ.get("CALENDAR_SYNC_URL", "http://fogis-calendar-phonebook-sync:5003/sync")
    log.info(f"Triggering calendar sync via: {url}")
    start = time.time()
    try:
        r = requests.post(url, json={}, timeout=60)
        if r.status_code == 200:
            result = r.json()
            log.info(f"✅ Calendar sync triggered successfully: {result.get('status', 'Success')}")
            record_sync("calendar_sync_url", url, start, r.status_code, True, body=r.text)
        else:
            log.error(f"❌ Calendar sync failed: {r.status_code} - {r.text}")
            record_sync("calendar_sync_url", url, start, r.status_code, False, body=r.text)
    except Exception as e:
        log.error(f"Error triggering calendar sync: {e}")
        record_sync("calendar_sync_url", url, start, error=str(e))


# --- processing cycles ---------------------------------------------------------

class Result:
    def __init__(self, processed: bool, matches: list, changes=None, errors=None):
        self.processed, self.matches, self.changes, self.errors = processed, matches, changes, errors or []


def unified_cycle() -> Result:
    """core/unified_processor.py run_processing_cycle: fetch, detect, save, trigger."""
    log.info("Starting unified processing cycle...")
    current = fetch_matches()
    if not current:
        log.warning("No matches fetched from API")
        return Result(False, [], errors=["No matches fetched from API"])
    changes = Changes(load_previous(), current)
    if not changes.has_changes:
        log.info("No changes detected - skipping processing")
        return Result(False, current, changes)
    log.info(f"Changes detected - new {len(changes.new)}, updated {len(changes.updated)}, removed {len(changes.removed)}")
    save_current(current)  # _process_changes saves {DATA_FOLDER}/{PREVIOUS_MATCHES_FILE}
    if LEGACY:
        if sync_contacts():
            log.info("Calendar sync triggered successfully")
        else:
            log.warning("Calendar sync failed")
    else:
        log.info("Downstream services triggered via Redis pub/sub")
    # The real service saves a second copy (data/previous_matches.json under
    # its working directory) here; both are written before anything is published.
    return Result(True, current, changes)


def with_redis(cycle):
    """redis_integration/app_integration.py: wraps run_processing_cycle."""
    pub = Publisher()
    details = {"processor_type": "UnifiedMatchProcessor"}

    def wrapped() -> Result:
        try:
            pub.status("started", details)
            result = cycle()
            if result.processed:
                ok = pub.match_updates(result.matches, result.changes, details)
                pub.status("completed", {"matches_processed": len(result.matches), "changes_detected": True,
                                         "match_publishing_success": ok, **details})
            else:
                log.info("No changes processed, skipping Redis publishing")
            return result
        except Exception as e:
            err = {"error_type": type(e).__name__, "error_message": str(e), **details}
            pub.status("failed", err)
            alert = {
                "message_id": str(uuid.uuid4()), "timestamp": utc_stamp(), "source": "match-list-processor",
                "version": "1.0", "type": "system_alert",
                "payload": {"alert_type": "processing_error", "severity": "error",
                            "message": f"Match processing failed: {e}", "timestamp": utc_stamp(), "details": err},
            }
            pub.publish(SYSTEM_ALERTS_CHANNEL, json.dumps(alert, ensure_ascii=False), "system alert")
            raise
    return wrapped


def persistent_cycle() -> Result:
    """app_persistent.py _process_matches (PROCESSOR_MODE=legacy, legacy version)."""
    if LEGACY and not sync_contacts():
        log.warning("Contact sync failed, but continuing with match processing.")
    previous = load_previous()
    current = fetch_matches()
    if not current:
        log.warning("Could not fetch current matches.")
        return Result(False, [], errors=["Could not fetch current matches."])
    changes = Changes(previous, current)
    if changes.new and LEGACY:
        log.info(f"Detected NEW matches: {len(changes.new)}")
        trigger_calendar_sync()
    save_current(current)
    return Result(changes.has_changes, current, changes)


# --- health server (src/web/health_server.py, services/health_service.py) ----

STARTED = time.time()


def dependencies() -> dict:
    deps = {"fogis-api-client": f"{FOGIS_API_CLIENT_URL}/health",
            "whatsapp-avatar-service": f"{WHATSAPP_AVATAR_SERVICE_URL}/health",
            "google-drive-service": f"{GOOGLE_DRIVE_SERVICE_URL}/health"}
    if LEGACY:
        deps["phonebook-sync-service"] = f"{PHONEBOOK_SYNC_SERVICE_URL}/health"
    out = {}
    for name, url in deps.items():
        start, status, error = time.time(), "healthy", None
        try:
            r = requests.get(url, timeout=5, headers={"User-Agent": "match-list-processor-health-check"})
            if r.status_code != 200:
                status, error = "unhealthy", f"HTTP {r.status_code}: {r.text[:100]}"
        except requests.exceptions.Timeout:
            status, error = "unhealthy", "Request timeout"
        except requests.exceptions.ConnectionError:
            status, error = "unhealthy", "Connection error"
        except Exception as e:
            status, error = "unknown", f"Unexpected error: {e}"
        out[name] = {"name": name, "url": url, "status": status,
                     "response_time_ms": (time.time() - start) * 1000, "error": error,
                     "last_checked": datetime.now(timezone.utc).isoformat()}
    return out


class Health(BaseHTTPRequestHandler):
    def reply(self, status: int, body) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        now = datetime.now(timezone.utc).isoformat()
        if self.path == "/health/simple":
            self.reply(200, {"service_name": "match-list-processor", "status": "healthy",
                             "uptime_seconds": time.time() - STARTED, "timestamp": now})
        elif self.path == "/health":
            deps = dependencies()
            healthy = sum(d["status"] == "healthy" for d in deps.values())
            status = "healthy" if healthy == len(deps) else "degraded" if healthy >= len(deps) * 0.5 else "unhealthy"
            self.reply(503 if status == "unhealthy" else 200,
                       {"service_name": "match-list-processor", "version": "1.0.0", "status": status,
                        "uptime_seconds": time.time() - STARTED, "timestamp": now, "dependencies": deps,
                        "details": {"data_folder": DATA_FOLDER}})
        elif self.path == "/health/dependencies":
            self.reply(200, {"dependencies": dependencies()})
        elif self.path == "/":
            self.reply(200, {"service": "match-list-processor", "version": "1.0.0", "health_endpoint": "/health",
                             "simple_health_endpoint": "/health/simple"})
        elif self.path == "/standin/published":
            with lock:
                self.reply(200, list(published))
        elif self.path == "/standin/synced":
            with lock:
                self.reply(200, list(synced))
        else:
            self.reply(404, {"detail": "Not Found"})

    def log_message(self, *args):
        pass


def main() -> int:
    logging.basicConfig(level=getattr(logging, LOG_LEVEL.upper(), logging.INFO), format=LOG_FORMAT,
                        stream=sys.stdout)
    run_mode = os.environ.get("RUN_MODE", "oneshot").lower()
    processor_mode = os.environ.get("PROCESSOR_MODE", "unified").lower()
    log.info(f"Match List Processor ({STANDIN_VERSION} stand-in) starting in {run_mode} mode "
             f"with {processor_mode} processor...")

    if processor_mode == "legacy":
        cycle = persistent_cycle  # no Redis publishing in the legacy apps
    else:
        cycle = unified_cycle
        if os.getenv("REDIS_ENABLED", "false").lower() == "true":
            cycle = with_redis(unified_cycle)
            log.info("✅ Redis pub/sub integration enabled")
        else:
            log.info("ℹ️  Redis pub/sub integration disabled (REDIS_ENABLED=false)")

    if not TEST_MODE:
        port = int(os.environ.get("STANDIN_HEALTH_PORT", "8000"))
        server = ThreadingHTTPServer(("0.0.0.0", port), Health)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        log.info(f"Starting health server on port {port}...")

    if run_mode != "service" or TEST_MODE:
        if TEST_MODE:
            log.info("Test mode detected - running service cycle once only")
        result = cycle()
        return 1 if result.errors and run_mode != "service" else 0

    interval = int(os.environ.get("SERVICE_INTERVAL", "300"))
    max_cycles = int(os.environ.get("MAX_SERVICE_CYCLES", "0"))
    log.info(f"Running as persistent service with {interval}s interval")
    cycles = 0
    while True:
        try:
            cycle()
            cycles += 1
            if max_cycles > 0 and cycles >= max_cycles:
                log.info(f"Reached maximum cycles ({max_cycles}), stopping service")
                return 0
            time.sleep(interval)
        except Exception as e:
            log.error(f"Error in service loop: {e}")
            time.sleep(30)


if __name__ == "__main__":
    sys.exit(main())

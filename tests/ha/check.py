"""Drive a real Home Assistant core against the daemon over a real Mosquitto.

Started by tests/ha/run.sh inside the venv that holds the pinned Home Assistant (see the
comment at the top of run.sh). Everything runs on 127.0.0.1 on free ports, in a temporary
directory removed at the end (kept with KEEP=1):

1. Mosquitto; Home Assistant core (`hass -c DIR`) with only `http:`, `api:` and `logger:`
   (warnings) in configuration.yaml and the MQTT integration as a config entry written into
   `.storage/core.config_entries` (what the UI's "Add integration → MQTT" would store); a user
   made with `hass --script auth`, logged in through the auth API for a token, so the states
   are read from `/api/states`.
2. The daemon on config/simulated.toml with an `[mqtt]` section (first with its battery's
   state of charge unknown, then, from the restart on, estimated), its state and runtime
   directories in the temporary one; then, over one run: HA discovers the device; the daemon
   is restarted (SIGTERM, start again); one sensor is made to fail (a reload with a `nack`
   fault at rate 1.0 on it) and to recover (a reload without it); the daemon stops.
3. A report: every WARNING/ERROR line HA logged that mentions MQTT, templates or the daemon's
   device (these fail the run), other HA warnings (shown, not counted), how many discovery
   configurations the daemon published, and each entity's states over time.

The run fails (exit 1) when such a warning appeared, or when, one publish interval (plus a
grace for HA, HA_TEST_GRACE, 3 s) after the daemon's start and restart, an entity is not what
the daemon's latest message on its topic says: unknown or unavailable although the message
had a value for it, or still a number although the message had none (a stale value where HA
should show unknown). After each reload the same, a grace after the daemon's first message
with the failing sensor's `up` OFF (ON), which HA must show too. Exit 2: the harness itself
could not run (HA did not start, no discovery, ...).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import paho.mqtt.client as paho

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = int(os.environ.get("HA_TEST_INTERVAL", "10"))
GRACE = float(os.environ.get("HA_TEST_GRACE", "3"))
FAULT_SENSOR = os.environ.get("HA_TEST_FAULT_SENSOR", "pi_5v")
CLIENT_ID = "power-monitord-hatest"
NODE = "power_monitord_hatest"
TOPIC_PREFIX = "power-monitord/hatest"
USER, PASSWORD = "tester", "tester-password"
# HA log lines that count: MQTT, templates, the daemon and its device.
RELEVANT = re.compile(r"mqtt|template|power.monitord|" + NODE, re.IGNORECASE)
NOT_A_VALUE = {"unknown", "unavailable", "", "None"}


class HarnessError(Exception):
    """The harness could not do its part (exit 2)."""


def log(msg: str) -> None:
    print(f"[ha-test {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, what: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise HarnessError(f"{what} did not listen on port {port} within {timeout:.0f} s")


def stop(proc: subprocess.Popen | None, what: str, timeout: float) -> None:
    """SIGTERM, then SIGKILL after `timeout`: this process only, by its PID."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log(f"{what} (pid {proc.pid}) did not stop in {timeout:.0f} s; killing it")
        proc.kill()
        proc.wait()


# --- MQTT: what the daemon publishes -------------------------------------------------------


@dataclass
class Observer:
    """Every message on the discovery prefix and under the daemon's topics, timed."""

    port: int
    messages: list[tuple[float, str, bytes, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.client = paho.Client(client_id="ha-test-observer")
        self.client.on_connect = lambda c, *_: c.subscribe(
            [("homeassistant/#", 1), (f"{TOPIC_PREFIX}/#", 1)]
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()

    def _on_message(self, _client, _userdata, msg) -> None:
        with self.lock:
            self.messages.append((time.monotonic(), msg.topic, bytes(msg.payload), msg.retain))

    def wait_for(self, message: tuple[str, bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any((m[1], m[2]) == message for m in self.snapshot()):
            if time.monotonic() > deadline:
                raise HarnessError(f"no {message} on the broker within {timeout:.0f} s")
            time.sleep(0.2)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> list[tuple[float, str, bytes, bool]]:
        with self.lock:
            return list(self.messages)

    def configs(self) -> dict[str, dict]:
        """The daemon's discovery configurations in force: topic → config."""
        current: dict[str, dict] = {}
        for _, topic, payload, _ in self.snapshot():
            parts = topic.split("/")
            if len(parts) == 5 and parts[2] == NODE and parts[4] == "config":
                if payload:
                    current[topic] = json.loads(payload)
                else:
                    current.pop(topic, None)
        return current

    def latest(self, topic: str, since: float, until: float) -> bytes | None:
        """The last message on `topic` received in the time."""
        found = None
        for t, top, payload, _ in self.snapshot():
            if top == topic and since <= t <= until:
                found = payload
        return found

    def wait_for_key(self, topic: str, key: str, value, since: float, until: float):
        """The time of the first message on `topic` after `since` with `key` = `value`
        (waiting until `until`), or None."""
        while True:
            for t, top, payload, _ in self.snapshot():
                if top == topic and t >= since and lookup(payload, key) == value:
                    return t
            if time.monotonic() > until:
                return None
            time.sleep(0.1)

    def bursts(self) -> list[tuple[float, int, int]]:
        """The daemon's discovery bursts: (time, configs, empty configs), a burst ending at a
        pause of a second."""
        out: list[list] = []
        for t, topic, payload, _ in self.snapshot():
            parts = topic.split("/")
            if not (len(parts) == 5 and parts[2] == NODE and parts[4] == "config"):
                continue
            if not out or t - out[-1][3] > 1.0:
                out.append([t, 0, 0, t])
            out[-1][1 if payload else 2] += 1
            out[-1][3] = t
        return [(b[0], b[1], b[2]) for b in out]


# --- Home Assistant -----------------------------------------------------------------------


class HomeAssistant:
    def __init__(self, venv_bin: Path, config: Path, broker_port: int) -> None:
        self.hass = str(venv_bin / "hass")
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.token = ""
        self.broker_port = broker_port

    def write_config(self) -> None:
        storage = self.config / ".storage"
        storage.mkdir(parents=True)
        (self.config / "configuration.yaml").write_text(
            "homeassistant:\n"
            "  name: power-monitord test\n"
            "  latitude: 52.37\n  longitude: 4.89\n  elevation: 0\n"
            "  unit_system: metric\n  time_zone: UTC\n  currency: EUR\n  country: NL\n"
            "http:\n"
            f"  server_host: 127.0.0.1\n  server_port: {self.port}\n"
            "api:\n"
            "logger:\n  default: warning\n"
        )
        # What the MQTT config flow stores (homeassistant/components/mqtt/config_flow.py,
        # async_step_broker: broker, port, discovery), in the config entries' store
        # (homeassistant/config_entries.py: STORAGE_KEY, STORAGE_VERSION 1, as_dict()).
        entry = {
            "entry_id": "0123456789abcdef0123456789abcdef",
            "version": 1,
            "minor_version": 1,
            "domain": "mqtt",
            "title": "127.0.0.1",
            "data": {"broker": "127.0.0.1", "port": self.broker_port, "discovery": True},
            "options": {},
            "pref_disable_new_entities": False,
            "pref_disable_polling": False,
            "source": "user",
            "unique_id": None,
            "disabled_by": None,
        }
        store = {
            "version": 1,
            "minor_version": 1,
            "key": "core.config_entries",
            "data": {"entries": [entry]},
        }
        (storage / "core.config_entries").write_text(json.dumps(store, indent=1))
        subprocess.run(
            [self.hass, "--script", "auth", "-c", str(self.config), "add", USER, PASSWORD],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def start(self) -> None:
        out = open(self.config / "hass.out", "wb")
        # Everything HA needs is installed from requirements.txt: should it still want a
        # package, it fails (and says so in its log) rather than fetch it.
        env = dict(os.environ, PIP_NO_INDEX="1", TZ="UTC")
        self.proc = subprocess.Popen(
            [self.hass, "-c", str(self.config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        wait_port(self.port, "Home Assistant", self.proc, 300)
        self.login()
        deadline = time.monotonic() + 300
        while True:
            config = self.get("/api/config")
            if config.get("state") == "RUNNING" and "mqtt" in config.get("components", []):
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"Home Assistant not running with MQTT: {config}")
            time.sleep(0.5)

    def login(self) -> None:
        """The auth API's login flow (username and password), then a token."""
        client = self.url + "/"
        flow = self.post_json(
            "/auth/login_flow",
            {"client_id": client, "handler": ["homeassistant", None], "redirect_uri": client},
        )
        done = self.post_json(
            f"/auth/login_flow/{flow['flow_id']}",
            {"client_id": client, "username": USER, "password": PASSWORD},
        )
        if done.get("type") != "create_entry":
            raise HarnessError(f"login failed: {done}")
        form = urllib.parse.urlencode(
            {"grant_type": "authorization_code", "code": done["result"], "client_id": client}
        ).encode()
        with urllib.request.urlopen(self.url + "/auth/token", form, timeout=30) as r:
            self.token = json.load(r)["access_token"]

    def post_json(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(
            self.url + path,
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def get(self, path: str):
        req = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def states(self) -> dict[str, str]:
        """The states of the daemon's entities: entity id → state."""
        return {
            s["entity_id"]: s["state"]
            for s in self.get("/api/states")
            if NODE in s["entity_id"]
        }

    def stop(self) -> None:
        stop(self.proc, "Home Assistant", 120)


# --- The daemon ---------------------------------------------------------------------------


class Daemon:
    def __init__(self, binary: Path, work: Path, broker_port: int) -> None:
        self.binary = binary
        self.work = work
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.config = work / "daemon.toml"
        base = (ROOT / "config" / "simulated.toml").read_text()
        mqtt = (
            "\n[mqtt]\n"
            f'broker = "mqtt://127.0.0.1:{broker_port}"\n'
            f'client_id = "{CLIENT_ID}"\n'
            f'topic_prefix = "{TOPIC_PREFIX}"\n'
            f'interval = "{INTERVAL}s"\n'
        )
        self.clean = base + mqtt
        self.faulty = with_fault(base, FAULT_SENSOR) + mqtt
        # The first start: the battery's state of charge unknown (no internal resistance, and
        # the house never rests), so its entities get null until the restart brings it.
        resistance = "internal_resistance_ohms = 0.01\n"
        if resistance not in base:
            raise HarnessError("config/simulated.toml's battery has no internal_resistance_ohms")
        self.unknown_soc = base.replace(resistance, "") + mqtt
        for name, text in (("clean", self.clean), ("faulty", self.faulty),
                           ("unknown-soc", self.unknown_soc)):
            path = work / f"daemon-{name}.toml"
            path.write_text(text)
            check = subprocess.run(
                [str(binary), "check-config", "-c", str(path)],
                capture_output=True,
                text=True,
                env=self.env(),
            )
            if check.returncode != 0:
                raise HarnessError(f"check-config refuses the {name} configuration:\n"
                                   f"{check.stdout}{check.stderr}")
        self.config.write_text(self.unknown_soc)
        parsed = tomllib.loads(self.clean)
        # The names every entity id of a sensor or battery has.
        self.names = [s["name"] for s in parsed.get("sensor", [])] + [
            f"battery_{b['name']}" for b in parsed.get("battery", [])
        ]
        self.out = open(work / "daemon.log", "ab")
        self.version = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()

    def env(self) -> dict[str, str]:
        (self.work / "state").mkdir(exist_ok=True)
        (self.work / "run").mkdir(exist_ok=True)
        return dict(
            os.environ,
            STATE_DIRECTORY=str(self.work / "state"),
            RUNTIME_DIRECTORY=str(self.work / "run"),
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(self.binary), "-c", str(self.config), "--listen", f"127.0.0.1:{self.port}"],
            stdout=self.out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env(),
        )
        wait_port(self.port, "the daemon", self.proc, 60)

    def reload(self, faulty: bool) -> None:
        self.config.write_text(self.faulty if faulty else self.clean)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        stop(self.proc, "the daemon", 30)

    def stop_cleanly(self, run: "Run") -> None:
        """Stop it; a SIGTERM must end it with status 0."""
        self.stop()
        if self.proc is not None and self.proc.returncode != 0:
            run.failures.append(f"the daemon exited with {self.proc.returncode} on SIGTERM")


def with_fault(config: str, sensor: str) -> str:
    """`config` with every transfer of `sensor` refused (a NACK at rate 1.0)."""
    m = re.search(r'^name = "' + re.escape(sensor) + r'"$', config, re.MULTILINE)
    if not m:
        raise HarnessError(f"no sensor {sensor} in config/simulated.toml")
    sim = config.find("[sensor.simulation]\n", m.end())
    nxt = config.find("[[sensor]]", m.end())
    if sim < 0 or (0 <= nxt < sim):
        raise HarnessError(f"sensor {sensor} has no [sensor.simulation] table")
    at = sim + len("[sensor.simulation]\n")
    return config[:at] + 'faults = [{ kind = "nack", rate = 1.0 }]\n' + config[at:]


# --- The run ------------------------------------------------------------------------------


@dataclass
class Entity:
    entity_id: str
    topic: str  # its state topic
    key: str  # its key in the state message


@dataclass
class Run:
    ha: HomeAssistant
    daemon: Daemon
    observer: Observer
    t0: float = 0.0  # the daemon's first start (monotonic)
    t0_wall: float = 0.0  # the same, on the wall clock (HA's log has that)
    timeline: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def rel(self, t: float) -> float:
        return t - self.t0

    def ha_time(self, ha_time: str) -> float:
        """A time of HA's log (UTC) as seconds from the daemon's start."""
        t = datetime.strptime(ha_time, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
        return t.timestamp() - self.t0_wall

    def phase(self, t: float) -> str:
        """The last phase begun at monotonic time `t`."""
        phase = "before the daemon"
        for at, what in self.events:
            if at <= t:
                phase = what
        return phase

    def mark(self, what: str) -> float:
        t = time.monotonic()
        self.events.append((t, what))
        log(f"+{self.rel(t):6.1f} s  {what}")
        return t

    def poll_states(self) -> None:
        """Twice a second, HA's state of each entity of the device: its changes are kept."""
        while not self.stopping.is_set():
            try:
                states = self.ha.states()
            except (OSError, ValueError):
                states = None
            t = time.monotonic()
            for entity_id, state in (states or {}).items():
                seen = self.timeline.setdefault(entity_id, [])
                if not seen or seen[-1][1] != state:
                    seen.append((t, state))
            self.stopping.wait(0.5)

    def entities(self) -> list[Entity]:
        out = []
        for topic, config in sorted(self.observer.configs().items()):
            component = topic.split("/")[1]
            m = re.search(r"value_json\.([\w.]+)", config.get("value_template", ""))
            key = m.group(1) if m else ""
            object_id = config.get("object_id") or config["unique_id"]
            out.append(Entity(f"{component}.{object_id}", config["state_topic"], key))
        return out

    def wait_for_discovery(self, timeout: float) -> list[Entity]:
        deadline = time.monotonic() + timeout
        while True:
            entities = self.entities()
            present = self.ha.states()
            missing = [e.entity_id for e in entities if e.entity_id not in present]
            if entities and not missing:
                ids = " ".join(present)
                absent = [n for n in self.daemon.names if f"_{n}_" not in ids]
                if absent:
                    raise HarnessError(f"no entity in HA names {absent}: {sorted(present)}")
                return entities
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"HA did not make entities of {len(entities)} discovery configs within "
                    f"{timeout:.0f} s; missing: {missing}"
                )
            time.sleep(0.5)

    def check_values(self, since: float, what: str, up: str | None = None) -> None:
        """One interval (and the grace) after `since`, each entity as the daemon's latest
        message on its topic says: a value where that message had one, no number (unknown)
        where it had none. With `up`: the fault sensor's `up` must be that, and the check is
        made a grace after the first message saying so (rather than after an interval, which
        a message sent just before the sensor changed could fill)."""
        at, upto = since + INTERVAL + GRACE, since + INTERVAL + GRACE / 2
        if up is not None:
            topic = f"{TOPIC_PREFIX}/sensor/{FAULT_SENSOR}/state"
            said = self.observer.wait_for_key(topic, "up", up.upper(), since, at)
            if said is None:
                self.failures.append(
                    f"{what}: the daemon did not publish {FAULT_SENSOR} up {up.upper()} "
                    f"within {INTERVAL + GRACE:.0f} s"
                )
                return
            at, upto = said + GRACE, said + 0.01
        time.sleep(max(0.0, at - time.monotonic()))
        if self.daemon.proc is not None and self.daemon.proc.poll() is not None:
            raise HarnessError(f"the daemon exited ({self.daemon.proc.returncode}) before the "
                               f"check after {what}; see daemon.log")
        states = self.ha.states()
        after = f"{at - since:.1f} s after"
        for e in self.entities():
            state = states.get(e.entity_id, "(missing)")
            latest = self.observer.latest(e.topic, since, upto)
            if latest is None:
                continue  # nothing published: nothing expected
            value = lookup(latest, e.key)
            if up is not None and e.entity_id.endswith(f"_{FAULT_SENSOR}_up") and state != up:
                self.failures.append(f"{what}: {e.entity_id} is {state!r} {after}, not {up!r}")
            elif value is not None and state in NOT_A_VALUE:
                self.failures.append(
                    f"{what}: {e.entity_id} is {state!r} {after}, though the daemon's "
                    f"latest message had {e.key} = {value}"
                )
            elif value is None and classify(state) == "number":
                self.failures.append(
                    f"{what}: {e.entity_id} still shows {state} {after}, though the daemon's "
                    f"latest message had no {e.key} (a stale value where HA should show "
                    "unknown)"
                )
        log(f"checked the states {after} {what}")


def lookup(message: bytes, key: str):
    """`key` (dotted) in a JSON message; None when absent or null."""
    try:
        value = json.loads(message)
        for part in key.split("."):
            value = value[part]
        return value
    except (ValueError, KeyError, TypeError):
        return None


def main() -> int:
    # A SIGTERM ends the run as Ctrl-C does: through the `finally` that stops what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    venv_bin = Path(sys.executable).parent
    binary = Path(os.environ.get("POWER_MONITORD_BIN", ROOT / "target/debug/power-monitord"))
    if not binary.is_file():
        print(f"no daemon binary at {binary} (set POWER_MONITORD_BIN)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="power-monitord-ha."))
    log(f"working in {work}")
    # A copy: a build that replaces the binary during the run does not change the daemon
    # that is restarted.
    shutil.copy2(binary, work / "power-monitord")
    broker = ha = daemon = observer = run = poller = None
    code = 2
    started = time.monotonic()
    try:
        broker_port = free_port()
        (work / "mosquitto.conf").write_text(
            f"listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_type error\nlog_type warning\n"
        )
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        broker = subprocess.Popen(
            [mosquitto, "-c", str(work / "mosquitto.conf")],
            stdout=open(work / "mosquitto.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        wait_port(broker_port, "mosquitto", broker, 10)
        observer = Observer(broker_port)
        observer.start()

        ha = HomeAssistant(venv_bin, work / "ha", broker_port)
        ha.write_config()
        t = time.monotonic()
        ha.start()
        # HA announces itself (its birth message) a few seconds after it runs, and the daemon
        # then publishes its discovery again: wait for it, so the daemon starts as it would
        # beside an HA that has been running for a while.
        observer.wait_for(("homeassistant/status", b"online"), 120)
        ha_start = time.monotonic() - t
        log(f"Home Assistant running, its MQTT connected, after {ha_start:.1f} s")
        daemon = Daemon(work / "power-monitord", work, broker_port)
        run = Run(ha, daemon, observer)
        poller = threading.Thread(target=run.poll_states, daemon=True)

        run.t0, run.t0_wall = time.monotonic(), time.time()
        run.mark("daemon started (its battery's state of charge unknown)")
        daemon.start()
        poller.start()
        entities = run.wait_for_discovery(60)
        run.mark(f"HA has all {len(entities)} entities of the device")
        run.check_values(run.t0, "the start")
        time.sleep(INTERVAL)

        t = run.mark("daemon stopped (SIGTERM)")
        daemon.stop_cleanly(run)
        time.sleep(2)
        t = run.mark("daemon started again (its battery's state of charge estimated now)")
        daemon.config.write_text(daemon.clean)
        daemon.start()
        run.check_values(t, "the restart")
        time.sleep(INTERVAL)

        t = run.mark(f"reload: {FAULT_SENSOR} refuses every transfer (nack, rate 1.0)")
        daemon.reload(faulty=True)
        run.check_values(t, f"{FAULT_SENSOR}'s fault", up="off")
        time.sleep(INTERVAL)
        t = run.mark(f"reload: {FAULT_SENSOR} without the fault")
        daemon.reload(faulty=False)
        run.check_values(t, f"{FAULT_SENSOR}'s recovery", up="on")

        run.mark("daemon stopped (SIGTERM)")
        daemon.stop_cleanly(run)
        time.sleep(3)
        run.mark("end")
        run.stopping.set()
        poller.join()
        code = report(run, work / "ha" / "home-assistant.log", ha_start)
    except (HarnessError, OSError) as e:
        log(f"harness error: {e}")
        code = 2
    finally:
        if run is not None:
            run.stopping.set()
        if daemon is not None:
            daemon.stop()
        if ha is not None:
            ha.stop()
        if observer is not None:
            observer.stop()
        stop(broker, "mosquitto", 10)
        log(f"run took {time.monotonic() - started:.0f} s")
        if os.environ.get("KEEP") == "1" or code == 2:
            (work / "power-monitord").unlink(missing_ok=True)  # the copy: 100 MB in debug
            log(f"kept {work} (HA's log: ha/home-assistant.log, the daemon's: daemon.log)")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return code


# --- The report ---------------------------------------------------------------------------

LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)$"
)


def ha_log_records(path: Path) -> list[tuple[str, str, str]]:
    """(time, level, message with its continuation lines) of every record."""
    records: list[list[str]] = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            m = LINE.match(line)
            if m:
                records.append([m.group(1), m.group(2), m.group(3)])
            elif records:
                records[-1][2] += "\n" + line
    return [(r[0], r[1], r[2]) for r in records]


def classify(state: str) -> str:
    if state in NOT_A_VALUE:
        return state or "(empty)"
    try:
        float(state)
        return "number"
    except ValueError:
        return state  # on/off


def report(run: Run, ha_log: Path, ha_start: float) -> int:
    print()
    print("=" * 100)
    print(f"Daemon: {run.daemon.version}")
    print(f"Home Assistant core started in {ha_start:.1f} s; publish interval {INTERVAL} s")
    print()
    print("Phases (seconds from the daemon's first start):")
    for t, what in run.events:
        print(f"  +{run.rel(t):6.1f}  {what}")

    # Discovery, as the broker saw it.
    msgs = run.observer.snapshot()
    configs = [(t, top, p) for t, top, p, _ in msgs
               if top.endswith("/config") and f"/{NODE}/" in top]
    in_force = run.observer.configs()
    by_component: dict[str, int] = {}
    for topic in in_force:
        by_component[topic.split("/")[1]] = by_component.get(topic.split("/")[1], 0) + 1
    print()
    print(
        f"Discovery: {len(in_force)} configurations in force ("
        + ", ".join(f"{n} {c}" for c, n in sorted(by_component.items()))
        + f"); {sum(1 for c in configs if c[2])} config messages and "
        f"{sum(1 for c in configs if not c[2])} empty ones (removals) over the run, in bursts:"
    )
    for t, full, empty in run.observer.bursts():
        print(f"  +{run.rel(t):6.1f}  {full:3d} configs, {empty:3d} empty  "
              f"(after: {run.phase(t)})")
    for t, topic, payload, retained in msgs:
        if topic == "homeassistant/status":
            print(f"  +{run.rel(t):6.1f}  HA's status: {payload.decode(errors='replace')}"
                  + (" (retained)" if retained else ""))

    # HA's log.
    relevant, other = [], []
    for when, level, message in ha_log_records(ha_log):
        if level in ("WARNING", "ERROR", "CRITICAL"):
            (relevant if RELEVANT.search(message) else other).append((when, level, message))
    print()
    print(f"HA warnings and errors about MQTT, templates or the device: {len(relevant)}")
    for summary, times in dedupe(relevant):
        print(f"  {len(times):3d} × {summary}")
        phases: dict[str, list[float]] = {}
        for when in times:
            rel = run.ha_time(when)
            phases.setdefault(run.phase(run.t0 + rel), []).append(rel)
        for phase, rels in phases.items():
            print(f"        {len(rels):3d} after {phase}: at "
                  + ", ".join(f"+{r:.1f}" for r in rels) + " s")
    print()
    print(f"Other HA warnings and errors (not counted): {len(other)}")
    for summary, times in dedupe(other):
        print(f"  {len(times):3d} × {summary}")

    daemon_log = (run.daemon.work / "daemon.log").read_text(errors="replace").splitlines()
    warnings = [line for line in daemon_log if re.search(r"\b(WARN|ERROR)\b", line)]
    print()
    print(f"The daemon's warnings and errors (not counted): {len(warnings)}")
    for line in warnings:
        print(f"  {line}")

    # Entities over time.
    print()
    print("Entities without a value (unknown, unavailable) in each phase:")
    for i, (start, what) in enumerate(run.events[:-1]):
        end = run.events[i + 1][0]
        if end - start < 1.0:
            continue  # HA had not made the entities yet
        late: list[tuple[float, str]] = []
        never: list[str] = []
        for entity_id, changes in run.timeline.items():
            before = [s for t, s in changes if t <= start]
            if before and classify(before[-1]) not in NOT_A_VALUE:
                continue  # had a value already
            valued = [t for t, s in changes if start < t < end and classify(s) not in NOT_A_VALUE]
            if valued:
                late.append((valued[0] - start, entity_id))
            else:
                never.append(entity_id)
        text = f"  +{run.rel(start):6.1f} {what}: "
        if late:
            slowest = max(late)
            text += (f"{len(late)} got a value within {slowest[0]:.1f} s "
                     f"(the last: {short(slowest[1])})")
        if never:
            text += ("; " if late else "") + (
                f"{len(never)} had none until the next phase: "
                + ", ".join(sorted(short(e) for e in never))
            )
        if not late and not never:
            text += "all had values"
        print(text)
    print()
    print("Entities over time (state classes; seconds from the daemon's first start):")
    for entity_id in sorted(run.timeline):
        changes, last = [], None
        for t, state in run.timeline[entity_id]:
            c = classify(state)
            if c != last:
                changes.append(f"+{run.rel(t):.1f} {c}")
                last = c
        values = [s for _, s in run.timeline[entity_id] if classify(s) not in NOT_A_VALUE]
        final = values[-1] if values else "-"
        print(f"  {short(entity_id):32s} "
              f"last value {final:>10s} | " + ", ".join(changes))

    print()
    problems = len(relevant) + len(run.failures)
    for f in run.failures:
        print(f"FAIL: {f}")
    for when, level, message in relevant[:1]:
        print(f"FAIL: HA logged {len(relevant)} warning(s)/error(s) about MQTT or the device")
    print(f"ha-test: {'FAILED' if problems else 'passed'} "
          f"({len(run.failures)} state check(s) failed, {len(relevant)} HA warning(s))")
    return 1 if problems else 0


def short(entity_id: str) -> str:
    return entity_id.split(".", 1)[1].replace(NODE + "_", "")


def dedupe(records: list[tuple[str, str, str]]) -> list[tuple[str, list[str]]]:
    """Identical messages once (tracebacks cut to their last line), with the times of HA's
    log they were logged at."""
    seen: dict[str, list[str]] = {}
    for when, level, message in records:
        lines = message.splitlines()
        text = lines[0]
        if len(lines) > 1:
            text += " … " + lines[-1].strip()
        seen.setdefault(f"{level} {text}", []).append(when)
    return list(seen.items())


if __name__ == "__main__":
    sys.exit(main())

"""A single-node Apache Kafka broker (KRaft combined mode) run from Maven-resolved jars.

The jars come from `deploy/local/pom.xml` through `mvn dependency:build-classpath` into the
normal ~/.m2 cache; the resolved class path is remembered under the state folder together with
a hash of the pom, so later starts need neither Maven nor the network.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from model.errors import ServiceError
from segmenter.local.common import (
    Origin,
    ServiceStatus,
    owned_pid,
    port_open,
    run_tool,
    start_daemon,
    stop_process,
    tails,
    wait_until_ready,
)
from streams.runtime.settings import Settings

SERVICE = "kafka"
BROKER_MAIN = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
HEAP = ("-Xms256m", "-Xmx1g")
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
_VERSION_LINE = re.compile(r"Kafka version: (\S+)")


@dataclass(frozen=True, slots=True)
class KafkaLayout:
    """Where the local broker keeps its files (all under <state dir>/kafka)."""

    root: Path

    @classmethod
    def for_settings(cls, settings: Settings) -> KafkaLayout:
        return cls(settings.state_dir / "kafka")

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.root / "log4j2.properties"

    @property
    def pid_file(self) -> Path:
        return self.root / "kafka.pid"

    @property
    def classpath_file(self) -> Path:
        return self.root / "classpath.txt"

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"

    @property
    def stdout_log(self) -> Path:
        return self.logs / "stdout.log"


def pom_path() -> Path:
    """deploy/local/pom.xml of this source tree."""
    root = Path(__file__).resolve().parents[2]
    pom = root / "deploy" / "local" / "pom.xml"
    if not pom.is_file():
        raise ServiceError(SERVICE, f"cannot find {pom}: run from a source checkout of Segmenter")
    return pom


def pom_kafka_version(pom: Path) -> str:
    """The Kafka version pinned by the pom's `kafka.version` property."""
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", _POM_NS)
    if node is None or not (node.text or "").strip():
        raise ServiceError(SERVICE, f"{pom} has no <kafka.version> property")
    return (node.text or "").strip()


def render_server_properties(settings: Settings, data_dir: Path) -> str:
    """The broker's KRaft combined-mode configuration (one node, loopback only).

    It depends only on the ports and the data folder: a change to it wipes the local data,
    because the controller's address is written into the formatted storage.
    """
    port, controller = settings.kafka_port, settings.kafka_controller_port
    lines = [
        "# Written by `segmenter local up`; edits are overwritten.",
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={data_dir}",
        # Segmenter creates its topics explicitly; auto-created ones (tests, tools) get one.
        "num.partitions=1",
        "default.replication.factor=1",
        "auto.create.topics.enable=true",
        "delete.topic.enable=true",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=10",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=10",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "log.retention.hours=24",
        "log.segment.bytes=67108864",
        "num.network.threads=2",
        "num.io.threads=4",
    ]
    return "\n".join(lines) + "\n"


def render_log4j2(logs_dir: Path) -> str:
    """A Log4j2 properties config: everything at INFO into logs/server.log."""
    return "\n".join(
        [
            "status = warn",
            "appender.file.type = RollingFile",
            "appender.file.name = FILE",
            f"appender.file.fileName = {logs_dir / 'server.log'}",
            f"appender.file.filePattern = {logs_dir / 'server.log.%i'}",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "appender.file.policies.type = Policies",
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size = 20MB",
            "appender.file.strategy.type = DefaultRolloverStrategy",
            "appender.file.strategy.max = 3",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.file.ref = FILE",
            "logger.kafka.name = kafka",
            "logger.kafka.level = INFO",
            "logger.state.name = state.change.logger",
            "logger.state.level = WARN",
            "",
        ]
    )


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise ServiceError(SERVICE, "`java` not found: install a JDK 17+ (Debian: openjdk-17-jre)")
    return java


def resolve_classpath(layout: KafkaLayout, pom: Path, *, log: bool = True) -> list[str]:
    """The broker's runtime class path: cached, else Maven offline, else Maven online."""
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    cached = _cached_classpath(layout.classpath_file, digest)
    if cached is not None:
        return cached
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(SERVICE, "`mvn` not found: install Apache Maven (Debian: maven)")
    out = layout.root / "classpath.mvn.txt"
    argv = [
        mvn,
        "-B",
        "-q",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        "dependency:build-classpath",
        "-Dmdep.includeScope=runtime",
        f"-Dmdep.outputFile={out}",
    ]
    try:
        run_tool(SERVICE, [argv[0], "-o", *argv[1:]], timeout=300)
    except ServiceError:
        if log:
            print(
                "kafka: fetching the Kafka jars with Maven into ~/.m2 (first run only) ...",
                flush=True,
            )
        run_tool(SERVICE, argv, timeout=900)
    entries = [p for p in out.read_text().strip().split(os.pathsep) if p]
    out.unlink(missing_ok=True)
    if not entries:
        raise ServiceError(SERVICE, "Maven resolved an empty class path")
    layout.classpath_file.write_text(digest + "\n" + "\n".join(entries) + "\n")
    return entries


def _cached_classpath(path: Path, digest: str) -> list[str] | None:
    try:
        first, *entries = path.read_text().splitlines()
    except (OSError, ValueError):
        return None
    if first != digest or not entries or not all(Path(e).is_file() for e in entries):
        return None
    return entries


def _prepare(settings: Settings, layout: KafkaLayout, classpath: list[str]) -> None:
    """Write the configs and format storage when the data folder is new or the config changed."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    config = render_server_properties(settings, layout.data)
    old = layout.config.read_text() if layout.config.is_file() else None
    formatted = (layout.data / "meta.properties").is_file()
    if formatted and old != config:
        print("kafka: the broker configuration changed; wiping the local broker's data", flush=True)
        shutil.rmtree(layout.data)
        formatted = False
    layout.config.write_text(config)
    layout.log4j.write_text(render_log4j2(layout.logs))
    if formatted:
        return
    layout.data.mkdir(parents=True, exist_ok=True)
    java = _java()
    base = [java, f"-Dlog4j2.configurationFile={layout.log4j}", "-cp", os.pathsep.join(classpath)]
    cluster_id = run_tool(SERVICE, [*base, STORAGE_TOOL, "random-uuid"]).strip().splitlines()[-1]
    run_tool(
        SERVICE,
        [*base, STORAGE_TOOL, "format", "--standalone", "-t", cluster_id, "-c", str(layout.config)],
    )


def broker_answers(bootstrap: str, timeout: float = 5.0) -> bool:
    """True when a Kafka broker at `bootstrap` answers a metadata request."""
    from aiokafka.admin import AIOKafkaAdminClient  # heavy import: only when needed

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000)
        )
        try:
            await asyncio.wait_for(admin.start(), timeout)
            await asyncio.wait_for(admin.describe_cluster(), timeout)
            return True
        except Exception:
            return False
        finally:
            await admin.close()

    return asyncio.run(probe())


def running_version(layout: KafkaLayout) -> str | None:
    """The version the running broker logged at start-up ("Kafka version: X"). A broker that
    has run for a while has rolled that line into server.log.1, .2, ...: newest file first."""
    rolled = sorted(layout.logs.glob(layout.server_log.name + ".*"),
                    key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else 1 << 30)
    for path in (layout.server_log, layout.stdout_log, *rolled):
        try:
            found = _VERSION_LINE.findall(path.read_text(errors="replace"))
        except OSError:
            continue
        if found:
            return str(found[-1])
    return None


def status(settings: Settings) -> ServiceStatus:
    layout = KafkaLayout.for_settings(settings)
    if settings.kafka_external:
        ok = broker_answers(settings.kafka_bootstrap)
        return ServiceStatus(SERVICE, Origin.EXTERNAL, settings.kafka_bootstrap, running=ok)
    address = f"127.0.0.1:{settings.kafka_port}"
    pid = owned_pid(layout.pid_file, str(layout.config))
    if pid is not None:
        return ServiceStatus(
            SERVICE,
            Origin.MANAGED,
            address,
            running=True,
            pid=pid,
            version=running_version(layout),
            log_file=layout.server_log,
        )
    if port_open("127.0.0.1", settings.kafka_port) and broker_answers(address):
        return ServiceStatus(SERVICE, Origin.FOREIGN, address, running=True)
    return ServiceStatus(
        SERVICE, Origin.NONE, address, running=False, version=pom_kafka_version(pom_path())
    )


def start(settings: Settings) -> ServiceStatus:
    """Start the local broker unless it (or another broker on the port) already runs."""
    current = status(settings)
    if settings.kafka_external:
        if not current.running:
            raise ServiceError(
                SERVICE, f"the external cluster at {settings.kafka_bootstrap} does not answer"
            )
        return current
    if current.running:
        return current
    layout = KafkaLayout.for_settings(settings)
    for port in (settings.kafka_port, settings.kafka_controller_port):
        if port_open("127.0.0.1", port):
            raise ServiceError(
                SERVICE,
                f"port {port} on 127.0.0.1 is taken by a program that is not Kafka; "
                "choose other ports with --kafka-port / SEGMENTER_KAFKA_PORT",
            )
    layout.root.mkdir(parents=True, exist_ok=True)
    classpath = resolve_classpath(layout, pom_path())
    _prepare(settings, layout, classpath)
    for log in (layout.server_log, layout.stdout_log):
        log.unlink(missing_ok=True)
    argv = [
        _java(),
        *HEAP,
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={layout.log4j}",
        f"-Dkafka.logs.dir={layout.logs}",
        "-cp",
        os.pathsep.join(classpath),
        BROKER_MAIN,
        str(layout.config),
    ]
    process = start_daemon(
        argv, pid_file=layout.pid_file, output=layout.stdout_log, cwd=layout.root
    )
    address = f"127.0.0.1:{settings.kafka_port}"
    try:
        wait_until_ready(
            SERVICE,
            ready=lambda: port_open("127.0.0.1", settings.kafka_port) and broker_answers(address),
            alive=lambda: process.poll() is None,
            timeout=settings.startup_timeout,
            logs=[layout.server_log, layout.stdout_log],
        )
    except ServiceError:
        stop_process(process.pid, timeout=10)
        layout.pid_file.unlink(missing_ok=True)
        raise
    return ServiceStatus(
        SERVICE,
        Origin.MANAGED,
        address,
        running=True,
        pid=process.pid,
        version=running_version(layout),
        log_file=layout.server_log,
        started_now=True,
    )


def stop(settings: Settings, timeout: float = 60.0) -> bool:
    """Stop the broker this project started; True if one was stopped."""
    if settings.kafka_external:
        return False
    layout = KafkaLayout.for_settings(settings)
    pid = owned_pid(layout.pid_file, str(layout.config))
    if pid is None:
        return False
    stop_process(pid, timeout)
    layout.pid_file.unlink(missing_ok=True)
    return True


def log_tail(settings: Settings) -> str:
    layout = KafkaLayout.for_settings(settings)
    return tails([layout.server_log, layout.stdout_log])

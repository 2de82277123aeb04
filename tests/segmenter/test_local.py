"""Local services: config rendering and pid-file handling (pure), then the real services."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from model.errors import ServiceError
from segmenter import local
from segmenter.commands.local import local as local_cli
from segmenter.local import kafka, redis
from segmenter.local.common import Origin, owned_pid, process_alive, wait_until_ready
from streams.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {k: v for k, v in pairs}


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """Some live process that is not ours to manage."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


# --- pure ---------------------------------------------------------------------------------------


def test_server_properties_is_a_single_node_kraft_combined_broker(tmp_path: Path) -> None:
    settings = Settings.from_env(env={}, kafka_port=19092, kafka_controller_port=19095)
    conf = properties(kafka.render_server_properties(settings, tmp_path / "data"))
    assert conf["process.roles"] == "broker,controller"
    assert conf["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19095"
    assert conf["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert conf["controller.quorum.bootstrap.servers"] == "127.0.0.1:19095"
    assert conf["controller.listener.names"] == "CONTROLLER"
    assert conf["log.dirs"] == str(tmp_path / "data")
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert conf[key] == "1", key
    assert conf["group.initial.rebalance.delay.ms"] == "0"


def test_server_properties_do_not_depend_on_topic_settings(tmp_path: Path) -> None:
    # A change to the config wipes the local broker's data, so only ports may change it.
    a = Settings.from_env(env={}, partitions=1, topic_prefix="a.")
    b = Settings.from_env(env={}, partitions=12, topic_prefix="b.")
    data = tmp_path / "data"
    assert kafka.render_server_properties(a, data) == kafka.render_server_properties(b, data)


def test_log4j2_config_writes_into_the_logs_folder(tmp_path: Path) -> None:
    conf = properties(kafka.render_log4j2(tmp_path).replace(" = ", "="))
    assert conf["appender.file.fileName"] == str(tmp_path / "server.log")
    assert conf["rootLogger.appenderRef.file.ref"] == conf["appender.file.name"]


def test_pom_pins_kafka_4_1_or_newer() -> None:
    version = kafka.pom_kafka_version(kafka.pom_path())
    major, minor = (int(part) for part in version.split(".")[:2])
    assert (major, minor) >= (4, 1)


def test_redis_conf_binds_loopback_with_an_append_only_file(tmp_path: Path) -> None:
    lines = redis.render_redis_conf(16400, tmp_path).splitlines()
    assert "bind 127.0.0.1" in lines and "port 16400" in lines
    assert 'save ""' in lines and "appendonly yes" in lines
    assert "appendfsync everysec" in lines
    assert f"dir {tmp_path}" in lines
    assert "set-proc-title no" in lines  # keeps the config path visible to `down`


def test_owned_pid_removes_a_pid_file_of_a_dead_process(tmp_path: Path) -> None:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    pid_file = tmp_path / "x.pid"
    pid_file.write_text(f"{done.pid}\n")
    assert owned_pid(pid_file, "anything") is None
    assert not pid_file.exists()


def test_owned_pid_ignores_a_live_process_that_is_not_ours(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    pid_file = tmp_path / "x.pid"
    pid_file.write_text(f"{sleeper.pid}\n")
    assert owned_pid(pid_file, str(tmp_path / "server.properties")) is None
    assert not pid_file.exists()
    assert process_alive(sleeper.pid)


def test_owned_pid_finds_our_process_by_its_command_line(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    pid_file = tmp_path / "x.pid"
    pid_file.write_text(f"{sleeper.pid}\n")
    assert owned_pid(pid_file, "time.sleep(60)") == sleeper.pid


def test_down_leaves_a_process_it_did_not_start_alone(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    settings = Settings.from_env(env={}, state_dir=tmp_path)
    for layout_pid in (
        kafka.KafkaLayout(tmp_path / "kafka").pid_file,
        redis.RedisLayout(tmp_path / "redis").pid_file,
    ):
        layout_pid.parent.mkdir(parents=True)
        layout_pid.write_text(f"{sleeper.pid}\n")
    assert local.down(settings) == []
    assert sleeper.poll() is None


def test_a_service_dying_at_start_fails_with_its_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("starting\nERROR port is on fire\n")
    with pytest.raises(ServiceError) as caught:
        wait_until_ready("kafka", ready=lambda: False, alive=lambda: False, timeout=5, logs=[log])
    assert "exited during start-up" in str(caught.value)
    assert "ERROR port is on fire" in caught.value.log_tail


def test_kafka_refuses_a_port_taken_by_something_else(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = Settings.from_env(
            env={}, state_dir=tmp_path, kafka_port=free_port(), kafka_controller_port=port
        )
        with pytest.raises(ServiceError, match=f"port {port}"):
            kafka.start(settings)
    assert not (tmp_path / "kafka" / "kafka.pid").exists()


def test_every_local_subcommand_has_help() -> None:
    runner = CliRunner()
    for name in ("up", "down", "status", "run"):
        result = runner.invoke(local_cli, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert "--kafka-port" in result.output


# --- real services ------------------------------------------------------------------------------


@pytest.mark.integration
def test_redis_lifecycle_in_its_own_state_folder(tmp_path: Path, redis_url: str) -> None:
    # redis_url: only to require that redis-server is installed (the test command ensures it)
    settings = Settings.from_env(env={}, state_dir=tmp_path, redis_port=free_port())
    [first] = local.up(settings, ["redis"])
    try:
        assert first.started_now and first.origin is Origin.MANAGED and first.pid
        assert first.version and first.version[0].isdigit()
        [again] = local.up(settings, ["redis"])
        assert not again.started_now and again.pid == first.pid
        [seen] = local.status(settings, ["redis"])
        assert seen.running and seen.origin is Origin.MANAGED and seen.pid == first.pid
    finally:
        stopped = local.down(settings, ["redis"])
    assert stopped == ["redis"]
    assert first.pid is not None and not process_alive(first.pid)
    [after] = local.status(settings, ["redis"])
    assert not after.running and after.origin is Origin.NONE
    assert local.down(settings, ["redis"]) == []


def _services_of_this_run(kafka_bootstrap: str, redis_url: str) -> Settings:
    host, _, port = kafka_bootstrap.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or "," in kafka_bootstrap:
        pytest.skip(f"Kafka at {kafka_bootstrap} is not a local broker")
    redis_port = int(redis_url.rsplit(":", 1)[-1].split("/")[0])
    return Settings.from_env(
        env={
            k: v
            for k, v in os.environ.items()
            if k not in ("SEGMENTER_KAFKA_BOOTSTRAP", "SEGMENTER_REDIS_URL")
        },
        kafka_port=int(port),
        redis_port=redis_port,
    )


@pytest.mark.integration
def test_status_and_up_reuse_the_running_broker(kafka_bootstrap: str, redis_url: str) -> None:
    settings = _services_of_this_run(kafka_bootstrap, redis_url)
    kafka_status, redis_status = local.status(settings)
    assert kafka_status.running and redis_status.running
    assert kafka_status.origin in (Origin.MANAGED, Origin.FOREIGN)
    if kafka_status.origin is Origin.MANAGED:
        assert kafka_status.version == kafka.pom_kafka_version(kafka.pom_path())
    [again] = local.up(settings, ["kafka"])
    assert not again.started_now and again.pid == kafka_status.pid


@pytest.mark.integration
def test_status_command_names_ports_and_version(kafka_bootstrap: str, redis_url: str) -> None:
    settings = _services_of_this_run(kafka_bootstrap, redis_url)
    env = {"SEGMENTER_KAFKA_BOOTSTRAP": None, "SEGMENTER_REDIS_URL": None}
    result = CliRunner().invoke(
        local_cli,
        [
            "status",
            "--kafka-port",
            str(settings.kafka_port),
            "--redis-port",
            str(settings.redis_port),
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert f"running on 127.0.0.1:{settings.kafka_port}" in result.output
    assert f"127.0.0.1:{settings.redis_port}" in result.output
    [kafka_status] = local.status(settings, ["kafka"])
    if kafka_status.origin is Origin.MANAGED:
        assert f"kafka {kafka_status.version}: running" in result.output


@pytest.mark.integration
def test_run_exports_the_addresses_and_leaves_running_services_up(
    kafka_bootstrap: str, redis_url: str
) -> None:
    settings = _services_of_this_run(kafka_bootstrap, redis_url)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SEGMENTER_KAFKA_BOOTSTRAP", "SEGMENTER_REDIS_URL")
    }
    env["SEGMENTER_KAFKA_PORT"] = str(settings.kafka_port)
    env["SEGMENTER_REDIS_PORT"] = str(settings.redis_port)
    child = "import os, sys; print(os.environ['SEGMENTER_KAFKA_BOOTSTRAP']); sys.exit(3)"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from segmenter.cli import main; main()",
            "local",
            "run",
            "--",
            sys.executable,
            "-c",
            child,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"127.0.0.1:{settings.kafka_port}" in done.stdout.splitlines()
    assert all(s.running for s in local.status(settings))


def test_running_version_is_found_after_the_start_up_line_rolled_into_a_backup(
        tmp_path: Path) -> None:
    layout = kafka.KafkaLayout(tmp_path)
    layout.logs.mkdir(parents=True)
    layout.server_log.write_text("INFO a busy broker's later lines\n")
    (layout.logs / "server.log.1").write_text("INFO Kafka version: 4.4.0 (restarted)\n")
    (layout.logs / "server.log.2").write_text("INFO Kafka version: 4.3.0 (an older start)\n")
    assert kafka.running_version(layout) == "4.4.0"
    layout.server_log.write_text("INFO Kafka version: 4.5.0\n")
    assert kafka.running_version(layout) == "4.5.0"

"""`segmenter dashboard`: the web dashboard over the Redis view and the Query API
(see docs/dashboard.md)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from connectors.common import install_stop_signals, run_command, setup_logging
from connectors.redis_view import DEFAULT_PREFIX
from model.errors import SegmenterError
from streams.runtime.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_PORT = 8050


@click.command()
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              envvar="SEGMENTER_DASHBOARD_PORT",
              help="Port to serve on, 0: any free one [SEGMENTER_DASHBOARD_PORT].")
@click.option("--bind", default=None, envvar="SEGMENTER_DASHBOARD_BIND",
              help="Address to listen on [SEGMENTER_DASHBOARD_BIND; else SEGMENTER_WEB_BIND, "
              "127.0.0.1]; keep loopback unless a token is set.")
@click.option("--redis-url", help="Redis URL of the view [SEGMENTER_REDIS_URL].")
@click.option("--prefix", envvar="SEGMENTER_REDIS_PREFIX", default=DEFAULT_PREFIX,
              show_default=True, help="Key prefix of the Redis view [SEGMENTER_REDIS_PREFIX].")
@click.option("--api-url", envvar="SEGMENTER_API_URL",
              help="The worker's Query API [SEGMENTER_API_URL; "
              "http://127.0.0.1:<SEGMENTER_WEB_PORT>].")
@click.option("--token", envvar="SEGMENTER_API_TOKEN",
              help="Bearer token required from browsers and sent to the Query API "
              "[SEGMENTER_API_TOKEN].")
@click.option("--rules", "rules_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Rule file whose definitions are shown while the Query API is down.")
@click.option("--outcomes", "outcomes_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of control-group outcome reports (<segment>.json, as `segmenter "
              "segments outcome SEGMENT --json --out DIR/SEGMENT.json` writes), shown on "
              "each segment's page.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="Log level [SEGMENTER_LOG_LEVEL].")
def dashboard(port: int, bind: str | None, redis_url: str | None, prefix: str, api_url: str | None,
              token: str | None, rules_path: Path | None, outcomes_dir: Path | None,
              log_level: str | None) -> None:
    """Serve the web dashboard until Ctrl-C / SIGTERM: segment sizes and flows, the live feed
    of changes, each customer's segments and why, the rules in force.

    Open the printed address; with a token, open it once with `?token=...` (a cookie keeps
    the session) or sign in on the page."""
    try:
        settings = Settings.from_env(redis_url=redis_url, log_level=log_level)
    except SegmenterError as exc:
        raise click.ClickException(str(exc)) from exc
    bind = bind or settings.web_bind
    setup_logging(settings.log_level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    from connectors.dashboard import DashboardOptions, create_dashboard_app, serve

    secret = settings.api_token if token is None else token
    if rules_path is not None and not rules_path.is_file():
        raise click.ClickException(f"no rule file {rules_path}")
    options = DashboardOptions(
        prefix=prefix, token=secret, rules_path=rules_path, outcomes_dir=outcomes_dir,
        api_url=api_url or f"http://127.0.0.1:{settings.web_port or 6066}")
    if bind not in ("127.0.0.1", "localhost", "::1") and not secret:
        log.warning("serving on %s without a token: anyone who reaches it sees the dashboard",
                    bind)

    async def main() -> None:
        import redis.asyncio as aioredis

        stop = asyncio.Event()
        install_stop_signals(stop)
        client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=5,
                                         socket_timeout=10, health_check_interval=30)
        try:
            app = create_dashboard_app(options, client)
            runner, bound = await serve(app, bind, port,
                                        header_timeout=settings.web_header_timeout)
            host = f"[{bind}]" if ":" in bind else bind
            click.echo(f"dashboard on http://{host}:{bound}/ (Redis view {prefix!r}, "
                       f"Query API {options.api_url})", err=True)
            try:
                await stop.wait()
            finally:
                await runner.cleanup()
        finally:
            await client.aclose()

    run_command(main)


if __name__ == "__main__":
    dashboard()

"""The `segmenter` console script. Each subcommand lives in segmenter/commands/<name>.py."""

from __future__ import annotations

import importlib

import click

from segmenter import __version__

# (module, attribute) of each subcommand; modules are imported lazily so that `segmenter --help`
# stays fast and a missing optional dependency only breaks its own command.
_COMMANDS: dict[str, tuple[str, str]] = {
    "local": ("segmenter.commands.local", "local"),
    "worker": ("segmenter.commands.worker", "worker"),
    "rules": ("segmenter.commands.rules", "rules"),
    "simulate": ("segmenter.commands.simulate", "simulate"),
    "backfill": ("segmenter.commands.backfill", "backfill"),
    "generate": ("segmenter.commands.generate", "generate"),
    "demo": ("segmenter.commands.demo", "demo"),
    "redis": ("segmenter.commands.redis", "redis"),
    "webhooks": ("segmenter.commands.webhooks", "webhooks"),
    "ingest": ("segmenter.commands.ingest", "ingest"),
    "import": ("segmenter.commands.importer", "import_cmd"),
    "dashboard": ("segmenter.commands.dashboard", "dashboard"),
    "export-events": ("segmenter.commands.export_events", "export_events_cmd"),
    "segments": ("segmenter.commands.segments", "segments"),
    "models": ("segmenter.commands.models", "models"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in _COMMANDS if self._load(name) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        spec = _COMMANDS.get(name)
        if spec is None:
            return None
        try:
            module = importlib.import_module(spec[0])
        except ModuleNotFoundError as exc:
            if exc.name == spec[0]:
                return None  # not written yet
            raise
        command = getattr(module, spec[1])
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="segmenter")
def main() -> None:
    """Segmenter: real-time customer segmentation on Apache Kafka."""


if __name__ == "__main__":  # `python -m segmenter.cli`
    main()

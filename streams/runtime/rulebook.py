"""The rule version in force in one worker process, shared by its tasks (pure)."""

from __future__ import annotations

from rules.ruleset import RuleSet
from streams.annotated import engine_for
from streams.engine import Engine


class Rulebook:
    """The engine of the version in force; every version seen (a customer evaluated under an
    older one needs it to exit segments the new one removed); a generation number that moves
    on each switch, so that tasks know to roll the new version out."""

    def __init__(self, rules: RuleSet) -> None:
        self.engine: Engine = engine_for(rules)
        self.versions: dict[str, RuleSet] = {rules.version: rules}
        self.quiet = False
        self.generation = 0

    @property
    def rules(self) -> RuleSet:
        return self.engine.rules

    def switch(self, rules: RuleSet, quiet: bool = False) -> bool:
        """Use `rules` from now on; False when that version is already in force."""
        if rules.version == self.engine.rules.version:
            return False
        self.engine = engine_for(rules, previous=self.engine.rules)
        self.versions[rules.version] = rules
        self.quiet = quiet
        self.generation += 1
        return True

"""Options read from the configs they fill, so a default shown by `--help` is the one that runs.

    @click.option("--jobs", default=config_default(ExtractConfig, "jobs"), show_default=True)
"""

from __future__ import annotations

import dataclasses


def config_default(config: type, name: str):
    """The default of dataclass `config`'s field `name` (a default_factory itself: click calls it)."""
    field = {f.name: f for f in dataclasses.fields(config)}[name]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory
    raise KeyError(f"{config.__name__}.{name} has no default")

"""What every package's click commands share: the Settings the top-level group resolved."""

from __future__ import annotations

import logging

import click

from core.config import Settings, get_settings


def settings_of(ctx: click.Context) -> Settings:
    """The (flag-overridden) Settings the top-level `fraudflow` group put in ctx.obj."""
    found = ctx.find_object(Settings)
    return found if found is not None else get_settings()


def quiet_kafka_client() -> None:
    """Silence kafka-python's INFO line per connect unless -v asked for DEBUG."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("kafka").setLevel(logging.WARNING)

"""``stem config``: the effective configuration and where each value came from, passwords
redacted. Connects to nothing, so it works when the servers are down."""

from __future__ import annotations

import typer

from stem_core.ops import ENV_ACTOR, STALE_AFTER_S, default_actor
from stem_core.settings import ENV_BACKEND_URL, ENV_BROKER_URL, ENV_NAMESPACE, SIGNING_ENV, data_home

from . import views
from .options import CommonOptions, common_options
from .output import emit


@common_options()
def config(
    *,
    opts: CommonOptions,
) -> None:
    """Show the effective broker/backend URLs (redacted), namespace, actor and their sources."""
    fmt = opts.fmt()
    settings = opts.settings()
    data = settings.to_dict()
    data.update({
        "signing": settings.signing.describe(),
        "actor": default_actor(),
        "actor_source": ENV_ACTOR if __import__("os").environ.get(ENV_ACTOR) else "$USER@hostname",
        "data_home": str(data_home()),
        "stale_after_default_s": STALE_AFTER_S,
        "liveness": "live while the last heartbeat is younger than its interval + max(1s, interval/2); "
                    f"{STALE_AFTER_S:g}s when a heartbeat names no interval; --stale-after overrides",
        "environment": [ENV_BROKER_URL, ENV_BACKEND_URL, ENV_NAMESPACE, ENV_ACTOR, "STEM_STALE_AFTER", "STEM_DEBUG",
                        *SIGNING_ENV],
    })
    rows = [{"setting": k, "value": ", ".join(v) if isinstance(v, list) else v} for k, v in data.items()]
    emit(data, fmt, lambda: views.records(rows, [("SETTING", "setting"), ("VALUE", "value")], ""), lambda: rows)


def register(app: typer.Typer) -> None:
    app.command("config")(config)


__all__ = ["config", "register"]

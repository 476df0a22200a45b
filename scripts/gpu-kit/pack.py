"""The GPU verification kit's files (wheels, and a tar of prebuilt test bundles), cut into carry
folders that fit one device call each, and put back together on the device.

    python scripts/gpu-kit/pack.py pack FILES_DIR KIT_DIR [--budget BYTES]    (here, after download)
    python scripts/gpu-kit/pack.py assemble KIT_DIR OUT_DIR                   (on the device)
    python scripts/gpu-kit/pack.py calls KIT_DIR                              (the run sequence)
    python scripts/gpu-kit/pack.py status KIT_DIR                             (which folders arrived)

A device call carries the working tree plus the named folders, 64 MiB in all, so every carry folder
`KIT_DIR/partK` holds at most ``budget`` bytes of pieces: a file larger than that is cut into pieces
of ``budget`` bytes (and a last, smaller one), then all pieces go into as few folders as
first-fit-decreasing manages. Every folder also holds `kit.json`, the whole plan (each file's
sha256 and size, each piece's folder), so the device can say which folders it has not received
(the machine was given back between calls) before it installs anything. Standard library only: it
runs on the device's Python before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20
CALL_LIMIT = 64 * MIB  # what one device call carries: working tree + carried folders
MAX_PIECE = 60 * MIB  # the brief's ceiling for one piece, whatever the tree's size
MARGIN = 1 * MIB  # room for kit.json and files added to the tree after packing
PLAN_FILE = "kit.json"


@dataclass(frozen=True)
class Piece:
    """Bytes [offset, offset + size) of kit file ``file``, stored as ``name`` in folder ``part``."""

    file: str
    name: str
    offset: int
    size: int
    part: int = 0


def cut(files: dict[str, int], budget: int) -> list[Piece]:
    """Every file (name -> size) as pieces of at most ``budget`` bytes; a file that fits stays whole."""
    if budget <= 0:
        raise ValueError(f"no room left for the kit in a call (budget {budget} bytes)")
    pieces = []
    for file, size in sorted(files.items()):
        if size <= budget:
            pieces.append(Piece(file, file, 0, size))
            continue
        for k, offset in enumerate(range(0, size, budget)):
            pieces.append(Piece(file, f"{file}.{k:03d}", offset, min(budget, size - offset)))
    return pieces


def group(pieces: list[Piece], budget: int) -> list[list[Piece]]:
    """The pieces in folders of at most ``budget`` bytes each, largest first into the first that has room."""
    folders: list[list[Piece]] = []
    free: list[int] = []
    for piece in sorted(pieces, key=lambda p: (-p.size, p.name)):
        if piece.size > budget:
            raise ValueError(f"{piece.name} ({piece.size} bytes) is larger than a folder ({budget} bytes)")
        k = next((i for i, room in enumerate(free) if room >= piece.size), None)
        if k is None:
            folders.append([])
            free.append(budget)
            k = len(folders) - 1
        folders[k].append(Piece(piece.file, piece.name, piece.offset, piece.size, part=k + 1))
        free[k] -= piece.size
    return folders


def tree_bytes(repo: Path) -> int:
    """Bytes of what a device call sends besides the carried folders: tracked and untracked, not
    ignored files, and shared/ (device README)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            check=True, capture_output=True).stdout.split(b"\0")
    total = sum((repo / name.decode()).stat().st_size for name in listed if name and (repo / name.decode()).is_file())
    shared = repo / "shared"
    if shared.is_dir() and not shared.is_symlink():
        total += sum(p.stat().st_size for p in shared.rglob("*") if p.is_file())
    return total


def sha256(path: Path) -> str:
    """The file's sha256, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def pack(files_dir: Path, kit: Path, budget: int) -> dict:
    """Write KIT/part1..partN (pieces + kit.json) for every file in ``files_dir``; returns the plan."""
    files = {p.name: p.stat().st_size for p in sorted(files_dir.iterdir()) if p.is_file()}
    if not files:
        raise SystemExit(f"gpu-kit: nothing to pack in {files_dir}")
    folders = group(cut(files, budget), budget)
    for old in kit.glob("part*"):
        shutil.rmtree(old)
    plan = {"budget": budget, "parts": len(folders),
            "files": {name: {"size": size, "sha256": sha256(files_dir / name), "pieces": []}
                      for name, size in files.items()}}
    for folder in folders:
        for piece in folder:
            plan["files"][piece.file]["pieces"].append(
                {"name": piece.name, "part": piece.part, "offset": piece.offset, "size": piece.size})
    for entry in plan["files"].values():
        entry["pieces"].sort(key=lambda p: p["offset"])
    for k, folder in enumerate(folders, 1):
        out = kit / f"part{k}"
        out.mkdir(parents=True)
        for piece in folder:
            with (files_dir / piece.file).open("rb") as src, (out / piece.name).open("wb") as dst:
                src.seek(piece.offset)
                dst.write(src.read(piece.size))
        (out / PLAN_FILE).write_text(json.dumps(plan, indent=1), encoding="utf-8")
    return plan


def read_plan(kit: Path) -> dict:
    """The plan from whichever carry folder arrived (they all hold the same kit.json)."""
    for path in sorted(kit.glob(f"part*/{PLAN_FILE}")):
        return json.loads(path.read_text(encoding="utf-8"))
    raise SystemExit(f"gpu-kit: no {kit}/part*/{PLAN_FILE} here: no carry folder of the kit has arrived "
                     "(was the machine given back between calls? start the call sequence again from part1)")


def missing_parts(kit: Path, plan: dict) -> list[int]:
    """Folder numbers with a piece absent or of the wrong size here."""
    missing = set()
    for entry in plan["files"].values():
        for piece in entry["pieces"]:
            path = kit / f"part{piece['part']}" / piece["name"]
            if not path.is_file() or path.stat().st_size != piece["size"]:
                missing.add(piece["part"])
    return sorted(missing)


def assemble(kit: Path, out: Path) -> list[Path]:
    """Every file of the plan rebuilt in ``out`` and checked against its sha256 (kept if already right)."""
    plan = read_plan(kit)
    missing = missing_parts(kit, plan)
    if missing:
        raise SystemExit(f"gpu-kit: carry folder(s) {', '.join(f'part{k}' for k in missing)} of {plan['parts']} "
                         "missing or incomplete here (the machine was given back between calls, or a call skipped "
                         "them): run the calls that carry them again, back to back, then this one")
    out.mkdir(parents=True, exist_ok=True)
    built = []
    for name, entry in sorted(plan["files"].items()):
        target = out / name
        if not (target.is_file() and target.stat().st_size == entry["size"] and sha256(target) == entry["sha256"]):
            with (out / (name + ".partial")).open("wb") as dst:
                for piece in entry["pieces"]:
                    with (kit / f"part{piece['part']}" / piece["name"]).open("rb") as src:
                        shutil.copyfileobj(src, dst, MIB)
            (out / (name + ".partial")).replace(target)
            if sha256(target) != entry["sha256"]:
                raise SystemExit(f"gpu-kit: {name} does not match its sha256 after reassembly: repack it here "
                                 "(bash scripts/gpu-kit/prepare.sh) and carry the folders again")
        built.append(target)
    return built


def calls(kit: Path) -> list[dict]:
    """The device calls, in order: each carries one folder; the last also runs the kit."""
    plan = read_plan(kit)
    n = plan["parts"]
    sequence = [{"carry": [f".gpu-kit/part{k}"], "command": f"bash scripts/gpu-kit/run.sh --receive {k}/{n}"}
                for k in range(1, n)]
    sequence.append({"carry": [f".gpu-kit/part{n}"], "command": "bash scripts/gpu-kit/run.sh"})
    return sequence


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("pack", help="cut FILES_DIR's files into KIT_DIR/part1..N")
    p.add_argument("files", type=Path)
    p.add_argument("kit", type=Path)
    p.add_argument("--budget", type=int, help="bytes per folder (default: 64 MiB - the tree - 1 MiB, at most 60 MiB)")
    p.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[2])
    a = sub.add_parser("assemble", help="rebuild the files from the folders that arrived")
    a.add_argument("kit", type=Path)
    a.add_argument("out", type=Path)
    c = sub.add_parser("calls", help="print the device calls to make")
    c.add_argument("kit", type=Path)
    r = sub.add_parser("status", help="say which carry folders have arrived here")
    r.add_argument("kit", type=Path)
    args = parser.parse_args(argv)
    if args.verb == "pack":
        tree = tree_bytes(args.repo)
        budget = args.budget or min(MAX_PIECE, CALL_LIMIT - tree - MARGIN)
        plan = pack(args.files, args.kit, budget)
        total = sum(f["size"] for f in plan["files"].values())
        print(f"gpu-kit: {len(plan['files'])} files, {total / MIB:.1f} MiB, in {plan['parts']} carry folders "
              f"of at most {budget / MIB:.1f} MiB (working tree {tree / MIB:.1f} MiB travels with each call)")
    elif args.verb == "assemble":
        for path in assemble(args.kit, args.out):
            print(path)
    elif args.verb == "status":
        plan = read_plan(args.kit)
        missing = missing_parts(args.kit, plan)
        here = [k for k in range(1, plan["parts"] + 1) if k not in missing]
        print(f"gpu-kit: carry folders here: {', '.join(f'part{k}' for k in here)}; still to come: "
              f"{', '.join(f'part{k}' for k in missing) or 'none'} (of {plan['parts']})")
    else:
        sequence = calls(args.kit)
        for k, call in enumerate(sequence, 1):
            # the last call installs, tests and benches (about 7 minutes on an H100, by estimate)
            print(f"call {k}: run(command={call['command']!r}, carry={json.dumps(call['carry'])}, timeout_s="
                  f"{600 if k == len(sequence) else 120})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

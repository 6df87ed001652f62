"""Regenerate the Python stubs in clients/ from protos/, or check that the committed ones are current.

    python3 dev.py gen            # rewrite clients/consofta/billing/v1/
    python3 dev.py gen --check    # exit 1 and name the files that differ

The generator versions are pinned in constraints.txt, so the output is reproducible byte for byte.
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
THIRD_PARTY = ROOT / "third_party" / "googleapis"
PACKAGE_DIR = Path("consofta") / "billing" / "v1"
OUT_DIR = ROOT / "clients"
# Hand-written files that live beside the generated ones and are not the generator's.
KEEP = {"py.typed"}


def generate(out_root: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    # mypy-protobuf's plugins sit beside this interpreter; name them so PATH does not matter.
    bin_dir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_ROOT}",
        f"-I{THIRD_PARTY}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        sys.exit("gen_stubs: protoc failed")


def _generated_files(root: Path) -> set[str]:
    pkg = root / PACKAGE_DIR
    return {p.name for p in pkg.iterdir() if p.is_file() and p.name not in KEEP} if pkg.exists() else set()


def main(argv: list[str]) -> int:
    check = "--check" in argv
    with tempfile.TemporaryDirectory() as tmp:
        tmp_root = Path(tmp)
        generate(tmp_root)
        fresh = _generated_files(tmp_root)
        committed = _generated_files(OUT_DIR)
        if check:
            differing = sorted(
                name
                for name in fresh | committed
                if name not in fresh
                or name not in committed
                or not filecmp.cmp(tmp_root / PACKAGE_DIR / name, OUT_DIR / PACKAGE_DIR / name, shallow=False)
            )
            if differing:
                print(
                    "gen_stubs: these stubs differ from protos/; run `python3 dev.py gen`:",
                    *differing,
                    sep="\n  ",
                    file=sys.stderr,
                )
                return 1
            print(f"gen_stubs: {len(fresh)} generated files match protos/")
            return 0
        target = OUT_DIR / PACKAGE_DIR
        target.mkdir(parents=True, exist_ok=True)
        for stale in committed - fresh:
            (target / stale).unlink()
        for name in sorted(fresh):
            shutil.copyfile(tmp_root / PACKAGE_DIR / name, target / name)
        print(f"gen_stubs: wrote {len(fresh)} files to {target.relative_to(ROOT)}")
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Checks that the library honours its `rust-version` with default features and with each
feature: resolves the dependencies with Cargo's MSRV-aware resolver (in a scratch copy, so
the committed Cargo.lock is untouched) and fails if any crate the library itself builds
declares a newer `rust-version`. clippy's `incompatible_msrv` lint (part of `cargo clippy
-D warnings` in .ci/run) checks the crate's own use of the standard library."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def version(v):
    parts = [int(x) for x in (v or "0").split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def closure(meta, root_id):
    """The normal (non-dev, non-build) dependencies reachable from the package."""
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    seen, stack = set(), [root_id]
    while stack:
        pkg = stack.pop()
        if pkg in seen:
            continue
        seen.add(pkg)
        for dep in nodes[pkg]["deps"]:
            if any(k["kind"] is None for k in dep["dep_kinds"]):
                stack.append(dep["pkg"])
    return seen


with tempfile.TemporaryDirectory() as scratch:
    for name in ("Cargo.toml", "src", "README.md"):
        src = os.path.join(root, name)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(scratch, name))
    # Only the library matters here: drop the dev-dependencies (their features would be
    # unified into the library's) and the targets that need files not copied.
    manifest = os.path.join(scratch, "Cargo.toml")
    text = open(manifest).read().split("[[bench]]")[0]
    head, _, rest = text.partition("[dev-dependencies]")
    rest = rest[rest.find("\n["):] if "\n[" in rest else ""
    open(manifest, "w").write(head + rest + "\n[lib]\npath = \"src/lib.rs\"\n")
    env = dict(os.environ, CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS="fallback")
    subprocess.run(["cargo", "generate-lockfile", "--quiet"], cwd=scratch, env=env, check=True)
    failed = False
    for features in (None, "tokio", "blake3", "axum", "tokio,blake3,axum"):
        args = ["cargo", "metadata", "--format-version", "1", "--no-default-features"]
        label = "no features"
        if features is None:
            args = ["cargo", "metadata", "--format-version", "1"]
            label = "default features"
        elif features:
            args += ["--features", features]
            label = f"features {features}"
        meta = json.loads(subprocess.run(args, cwd=scratch, env=env, check=True,
                                         capture_output=True, text=True).stdout)
        packages = {p["id"]: p for p in meta["packages"]}
        me = next(p for p in meta["packages"] if p["name"] == "tower-conditional")
        msrv = version(me["rust_version"])
        # cargo metadata resolves every target's dependencies; keep what the library uses.
        newest = max(
            (version(packages[i].get("rust_version")), packages[i]["name"], packages[i]["version"])
            for i in closure(meta, me["id"])
            if i != me["id"]
        )
        verdict = "ok" if newest[0] <= msrv else "TOO NEW"
        failed |= newest[0] > msrv
        print(f"msrv {me['rust_version']}, {label}: newest dependency {newest[1]} "
              f"{newest[2]} needs {'.'.join(map(str, newest[0]))}: {verdict}")
    sys.exit(1 if failed else 0)

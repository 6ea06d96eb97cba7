#!/usr/bin/env python3
"""Writes what the Debian packages carry besides the build: the copyright
file (this project's licence, then every crate linked into the binary with
its own licence, from `cargo metadata`) and a man page made from the
binary's --help text.

    extras.py PACKAGE BINARY OUT_DIR
"""
import gzip
import json
import subprocess
import sys
from pathlib import Path


def linked_crates(package):
    """Crates in the normal (not build or dev) dependency tree of PACKAGE."""
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked",
         "--filter-platform", host_triple()],
        check=True, capture_output=True, text=True).stdout)
    by_id = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    root = next(p["id"] for p in meta["packages"] if p["name"] == package)
    seen, todo = set(), [root]
    while todo:
        node = nodes[todo.pop()]
        for dep in node["deps"]:
            if any(k["kind"] is None for k in dep["dep_kinds"]) and dep["pkg"] not in seen:
                seen.add(dep["pkg"])
                todo.append(dep["pkg"])
    crates = [by_id[i] for i in seen if by_id[i].get("source")]
    return sorted(crates, key=lambda p: (p["name"], p["version"]))


def host_triple():
    out = subprocess.run(["rustc", "-vV"], check=True, capture_output=True, text=True).stdout
    return next(l.split(": ", 1)[1] for l in out.splitlines() if l.startswith("host: "))


def copyright(package, crates):
    lines = [
        f"{package}: part of Vigil, a monitoring and alerting system.",
        "",
        "Copyright: Copyright (C) 2026 the Vigil authors",
        "License: Apache-2.0",
        " On Debian systems the full text of the Apache License 2.0 is in",
        " /usr/share/common-licenses/Apache-2.0.",
        "",
        f"The {package} binary links the following crates from crates.io, each",
        "under its own licence as its authors declare it (SPDX expressions):",
        "",
    ]
    width = max(len(f"{c['name']} {c['version']}") for c in crates)
    for c in crates:
        name = f"{c['name']} {c['version']}"
        lic = c.get("license") or f"see {c.get('license_file') or 'its repository'}"
        lines.append(f"  {name:<{width}}  {lic}")
    lines.append("")
    lines.append("The full texts of the MIT, BSD, ISC, Zlib, Unicode and other licences")
    lines.append("named above are in each crate's source at crates.io.")
    return "\n".join(lines) + "\n"


def man_page(package, binary):
    help_text = subprocess.run([binary, "--help"], check=True, capture_output=True,
                               text=True).stdout
    version = subprocess.run([binary, "--version"], check=True, capture_output=True,
                             text=True).stdout.split("\n", 1)[0]
    about = help_text.split("\n", 1)[0].strip()

    def roff(text):
        out = []
        for line in text.splitlines():
            line = line.replace("\\", "\\e").replace("-", "\\-")
            if line.startswith((".", "'")):
                line = "\\&" + line
            out.append(line)
        return "\n".join(out)

    config = package.removeprefix("vigil-")
    return f""".TH {package.upper()} 1 "" "{roff(version)}" "Vigil"
.SH NAME
{package} \\- {roff(about)}
.SH SYNOPSIS
.B {package}
[\\fIOPTIONS\\fR]
.SH DESCRIPTION
.nf
{roff(help_text.split(chr(10), 1)[1].strip())}
.fi
.SH FILES
.TP
.I /etc/vigil/{config}.toml
The configuration; every option and its default is in
/usr/share/doc/{package}/docs/configuration.md.
.TP
.I /var/lib/vigil/{config}
The data folder.
.TP
.I /lib/systemd/system/{package}.service
The systemd unit.
.SH SEE ALSO
/usr/share/doc/{package}/README.md, /usr/share/doc/{package}/docs/
"""


def main():
    package, binary, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "copyright").write_text(copyright(package, linked_crates(package)))
    with gzip.GzipFile(out_dir / f"{package}.1.gz", "wb", mtime=0) as f:
        f.write(man_page(package, binary).encode())


main()

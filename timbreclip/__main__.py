from timbreclip.cli import entry

raise SystemExit(entry())

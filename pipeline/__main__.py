# The core holds no command line (it imports no stage): point at the one that does.
raise SystemExit("vidstore's command line is `vidstore ...` (or `python -m stages ...`), not `python -m pipeline`")

#!/bin/sh
# /usr/bin/maskwatch from the Debian package. maskwatch and its Python dependencies (wheels for
# CPython 3.11) live in /opt/maskwatch/lib, apart from Debian's own Python modules; -s keeps a
# user's ~/.local packages out. exec keeps the PID, which systemd's Type=notify relies on.
PYTHONPATH=/opt/maskwatch/lib
export PYTHONPATH
exec /usr/bin/python3 -s -m edge "$@"

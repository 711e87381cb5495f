#!/usr/bin/env bash
# A throwaway PostgreSQL on 127.0.0.1 for tests (Debian's `postgresql`, run as the `postgres`
# user when called as root): `start DIR` initialises DIR, starts the server on a free port and
# prints its URL; `stop DIR` stops it and removes DIR.
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?state directory}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[[ -x $bindir/initdb ]] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
as_pg() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case $cmd in
  start)
    mkdir -p "$dir"
    [[ $(id -u) -eq 0 ]] && chown postgres "$dir"
    as_pg "$bindir/initdb" -D "$dir/data" -U test --auth=trust >"$dir/initdb.log" 2>&1
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-h 127.0.0.1 -p $port -k $dir" start >/dev/null
    as_pg "$bindir/createdb" -h 127.0.0.1 -p "$port" -U test index >/dev/null
    echo "postgres://test@127.0.0.1:$port/index"
    ;;
  stop)
    as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
esac

#!/bin/sh
# Validate the conformance scripts themselves against nbdkit 1.32 (Debian bookworm):
# starts a writable and a read-only nbdkit memory export on free ports, runs every script with
# --peer nbdkit (which relaxes only the checks where nbdkit deliberately differs), stops both servers.
#   sh run_against_nbdkit.sh            # exit status 0 when every script reports "N passed, 0 failed"
set -u
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
export PYTHONDONTWRITEBYTECODE=1
free_port() {
    $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
logs=$(mktemp -d /tmp/nbdkit-conformance.XXXXXX)
rw_port=$(free_port)
ro_port=$(free_port)
nbdkit -f -i 127.0.0.1 -p "$rw_port" memory 64M 2>"$logs/rw.log" &
rw_pid=$!
nbdkit -f -r -i 127.0.0.1 -p "$ro_port" memory 16M 2>"$logs/ro.log" &
ro_pid=$!
trap 'kill "$rw_pid" "$ro_pid" 2>/dev/null; wait "$rw_pid" "$ro_pid" 2>/dev/null' EXIT INT TERM
for port in "$rw_port" "$ro_port"; do
    i=0
    until $py -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 1).close()" 2>/dev/null; do
        i=$((i + 1)); [ $i -gt 50 ] && { echo "nbdkit on port $port did not start"; exit 1; }
        sleep 0.1
    done
done
status=0
uri="nbd://127.0.0.1:$rw_port/"
ro_uri="nbd://127.0.0.1:$ro_port/"
for script in test_handshake.py test_bad_requests.py test_data.py; do
    $py "$here/$script" --uri "$uri" --ro-uri "$ro_uri" --peer nbdkit || status=1
done
$py "$here/test_raw_socket.py" --host 127.0.0.1 --port "$rw_port" --export "" --peer nbdkit || status=1
echo "nbdkit logs (every bad request should appear there as rejected): $logs"
exit $status

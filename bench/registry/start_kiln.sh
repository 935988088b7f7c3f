#!/usr/bin/env bash
# Reset command for run.sh: an empty, freshly started kiln registry on 127.0.0.1:PORT.
#
# usage: start_kiln.sh [--fresh] PORT STORAGE_DIR
#        start_kiln.sh --stop PORT
# The last line printed on stdout is the PID. KILN_BIN overrides the binary
# [default: target/release/kiln of this checkout].
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${KILN_BIN:-$here/../../target/release/kiln}
fresh=0 stop=0
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --fresh) fresh=1 ;;
    --stop) stop=1 ;;
    *) echo "start_kiln.sh: unknown option $1" >&2; exit 1 ;;
  esac
  shift
done
port=$1
run_dir=/tmp/kiln-registry-$port
pid_file=$run_dir/registry.pid
mkdir -p "$run_dir"

if [[ -f $pid_file ]]; then
  pid=$(cat "$pid_file")
  if [[ -r /proc/$pid/comm && $(cat "/proc/$pid/comm") == kiln ]]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
    [[ -d /proc/$pid ]] && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
fi
[[ $stop -eq 1 ]] && exit 0

storage=$2
if [[ $fresh -eq 1 ]]; then
  if [[ -d $storage && -n $(ls -A "$storage") && ! -f $storage/registry.db ]]; then
    echo "start_kiln.sh: refusing to wipe $storage: not a kiln registry root" >&2; exit 1
  fi
  rm -rf "$storage"
fi
mkdir -p "$storage"
cat > "$run_dir/config.toml" <<CONF
[http]
addr = "127.0.0.1:$port"
[log]
level = "warn"
[gc]
interval = 0
CONF
"$bin" registry serve --config "$run_dir/config.toml" --root "$storage" >"$run_dir/stdout" 2>"$run_dir/log" &
pid=$!
echo "$pid" > "$pid_file"
for _ in $(seq 100); do
  grep -q listening "$run_dir/stdout" 2>/dev/null && break
  sleep 0.05
done
grep -q listening "$run_dir/stdout" || { echo "start_kiln.sh: kiln did not start, see $run_dir/log" >&2; exit 1; }
echo "$pid"

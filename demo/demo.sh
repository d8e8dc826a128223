#!/usr/bin/env bash
# cryo demo: checkpoint a running counter, kill it, restore it, watch it count on;
# then checkpoint a TCP server with a client connected, and see the client's
# next request answered by the restored server.
# Run by `make demo`, after bin/cryo and bin/targets/* are built.
set -euo pipefail
cd "$(dirname "$0")/.."

CRYO=bin/cryo
OUT=demo/out
IMG=$OUT/img
LOG=$OUT/counter.log
PID=""

cleanup() {
	# Stop the counter we started or restored, by its pid, whatever happened.
	if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
		kill "$PID" 2>/dev/null || true
	fi
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }

rm -rf "$OUT"
mkdir -p "$IMG"

step "Start a counter that prints 'count N' every 100 ms"
# In its own session, with only stdin/stdout/stderr open: whatever else the
# calling shell holds (pipes of a terminal multiplexer, a CI runner...) is not
# the counter's business.
(
	for fd in /proc/$BASHPID/fd/*; do
		fd=${fd##*/}
		if ((fd > 2)); then eval "exec $fd>&-"; fi
	done
	exec setsid bin/targets/counter </dev/null >>"$LOG" 2>&1
) &
PID=$!
disown "$PID" # no "Killed" job report from bash when the dump kills it
sleep 1
echo "counter runs as pid $PID; its last lines:"
tail -n 3 "$LOG"

step "Checkpoint it: cryo dump -t $PID -D $IMG (this also kills it)"
$CRYO dump -t "$PID" -D "$IMG" -o "$OUT/dump.log"
last_before=$(grep '^count ' "$LOG" | tail -n 1)
lines_before=$(wc -l <"$LOG")

step "The process is gone"
if ps -p "$PID" >/dev/null; then
	echo "pid $PID is still running: the dump did not kill it" >&2
	exit 1
fi
echo "ps -p $PID: no such process"

step "What the images hold: cryo show $IMG"
$CRYO show "$IMG" >"$OUT/show.txt"
head -n 20 "$OUT/show.txt"

step "Restore it in the background: cryo restore -D $IMG -d"
$CRYO restore -D "$IMG" -d -o "$OUT/restore.log"
sleep 1
ps -p "$PID" -o pid,stat,comm

step "It counts on from where it stopped"
first_after=$(tail -n +"$((lines_before + 1))" "$LOG" | grep '^count ' | head -n 1)
echo "last count before the dump: ${last_before#count }"
echo "first count after restore:  ${first_after#count }"
tail -n 3 "$LOG"

step "Stop the restored counter (kill $PID)"
kill "$PID"
PID=""

# Act two: a server with a client connected across the checkpoint.
PORT=$((20000 + RANDOM % 20000))
step "Start a TCP server on 127.0.0.1:$PORT that counts the requests it answers"
(
	for fd in /proc/$BASHPID/fd/*; do
		fd=${fd##*/}
		if ((fd > 2)); then eval "exec $fd>&-"; fi
	done
	exec setsid python3 demo/tcpserver.py "$PORT" </dev/null >>"$OUT/server.log" 2>&1
) &
PID=$!
disown "$PID"
for _ in $(seq 50); do grep -q listening "$OUT/server.log" 2>/dev/null && break; sleep 0.1; done

step "Connect a client (this shell, fd 7) and ask twice"
exec 7<>"/dev/tcp/127.0.0.1/$PORT"
for q in one two; do
	echo "$q" >&7
	read -r -u 7 answer
	echo "client got: $answer"
done

step "Checkpoint the server with its connection: cryo dump -t $PID --tcp-established"
$CRYO dump -t "$PID" -D "$OUT/img2" --tcp-established -o "$OUT/dump2.log"
ps -p "$PID" >/dev/null && { echo "server still running" >&2; exit 1; }
echo "server gone; the client's connection stays open (the network lock holds its packets)"

step "Restore it: cryo restore -D $OUT/img2 -d --tcp-established"
$CRYO restore -D "$OUT/img2" -d --tcp-established -o "$OUT/restore2.log"

step "The client's next request, on the same connection, is answered by the restored server"
echo three >&7
read -r -t 10 -u 7 answer
echo "client got: $answer"
[[ "$answer" == "answer 3 to three" ]] || { echo "want: answer 3 to three" >&2; exit 1; }
exec 7>&-

step "Stop the restored server (kill $PID) and clean up"
kill "$PID"
PID=""
rm -rf "$OUT"
echo "done"

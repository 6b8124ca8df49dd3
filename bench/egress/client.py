"""Egress benchmark client: connect latency and bulk throughput to one
server, run the same way bare and inside `warden run` (bench/egress/run.sh).
Prints one JSON line."""
import json, socket, statistics, struct, sys, time

host, port = sys.argv[1], int(sys.argv[2])
connects, mib = int(sys.argv[3]), int(sys.argv[4])

# Closed with a reset (SO_LINGER 0), so that thousands of connections
# leave no TIME_WAIT behind to slow the next rounds' port search.
LINGER_0 = struct.pack("ii", 1, 0)
lat = []
for _ in range(connects):
    t = time.perf_counter_ns()
    s = socket.create_connection((host, port))
    lat.append(time.perf_counter_ns() - t)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
    s.close()
lat.sort()

chunk = b"x" * (1 << 20)
s = socket.create_connection((host, port))
s.sendall(b"B")  # bulk: the server counts until EOF and answers
t = time.perf_counter()
for _ in range(mib):
    s.sendall(chunk)
s.shutdown(socket.SHUT_WR)
got = s.makefile().readline().strip()
secs = time.perf_counter() - t
assert got == str(mib << 20), got
print(json.dumps({
    "connect_p50_us": lat[len(lat) // 2] / 1000,
    "connect_p99_us": lat[int(len(lat) * 0.99)] / 1000,
    "connect_mean_us": statistics.mean(lat) / 1000,
    "throughput_mib_s": mib / secs,
}))

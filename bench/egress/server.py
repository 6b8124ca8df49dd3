"""Egress benchmark server: accepts forever; a connection that starts with
b"B" is read to EOF and answered with its byte count, others are closed by
the client at once."""
import socket, sys, threading

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(4096)

def bulk(c):
    try:
        serve(c)
    except OSError:
        pass  # the latency round's connections end with a reset
    finally:
        c.close()


def serve(c):
    n = 0
    buf = bytearray(1 << 20)
    first = c.recv(1)
    if first != b"B":
        c.close()
        return
    while True:
        k = c.recv_into(buf)
        if not k:
            break
        n += k
    c.sendall(f"{n}\n".encode())
    c.close()

while True:
    c, _ = srv.accept()
    threading.Thread(target=bulk, args=(c,), daemon=True).start()

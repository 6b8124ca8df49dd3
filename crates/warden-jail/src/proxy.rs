//! The supervisor's proxy for `net:http` and `net:https` grants. A connect
//! such a grant opens is made by the supervisor to the real destination;
//! the program is handed instead one end of a loopback TCP connection
//! whose other end a proxy thread holds. For HTTP the thread reads every
//! request head (httparse) and forwards it, and its body by its framing,
//! only when its Host names a granted host pinned at that address; for
//! TLS it reads the ClientHello and forwards the stream only when its
//! server name does. Anything else — no or another Host, an absolute URL
//! for another host, CONNECT, an upgrade, ambiguous framing (both
//! Content-Length and Transfer-Encoding, or several lengths), a
//! ClientHello without a server name — closes the connection, and the
//! report's entry for it says why.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use warden_egress::{EgressPlan, Proxy};

/// The longest request head or ClientHello read before deciding.
const MAX_HEAD: usize = 64 << 10;
/// How long the program has to send its first request or ClientHello.
const FIRST_BYTES: Duration = Duration::from_secs(30);

/// A TLS record holding a fatal `access_denied` alert (RFC 8446 §6).
const ACCESS_DENIED_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49];

/// Connection refusals found by proxy threads: (record index, reason).
pub(crate) type Refusals = Arc<Mutex<Vec<(usize, String)>>>;

#[derive(Debug)]
pub(crate) struct Hub {
    listener: TcpListener,
    pub refusals: Refusals,
}

impl Hub {
    /// A listener on the supervisor's own loopback (the jail's network
    /// namespace has its own: the program cannot reach it).
    pub fn new() -> io::Result<Hub> {
        Ok(Hub {
            listener: TcpListener::bind(("127.0.0.1", 0))?,
            refusals: Arc::default(),
        })
    }

    /// Starts carrying `upstream` (connected to `ip`) for the connection
    /// recorded at `record`, and returns the end to hand to the program.
    pub fn carry(
        &self,
        upstream: TcpStream,
        ip: IpAddr,
        kind: Proxy,
        plan: EgressPlan,
        record: usize,
    ) -> io::Result<TcpStream> {
        let (program_end, ours) = pair(&self.listener)?;
        let refusals = self.refusals.clone();
        std::thread::Builder::new()
            .name("warden-proxy".into())
            .spawn(move || {
                let result = match kind {
                    Proxy::Http => http(ours, upstream, ip, &plan),
                    Proxy::Tls => tls(ours, upstream, ip, &plan),
                };
                if let Err(why) = result {
                    refusals
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((record, why));
                }
            })?;
        Ok(program_end)
    }
}

/// Both ends of a new connection to `listener` (on loopback).
pub(crate) fn pair(listener: &TcpListener) -> io::Result<(TcpStream, TcpStream)> {
    let near = TcpStream::connect(listener.local_addr()?)?;
    let want: SocketAddr = near.local_addr()?;
    // Any other local process may connect to the listener too: only the
    // connection just made is ours.
    loop {
        let (far, peer) = listener.accept()?;
        if peer == want {
            return Ok((near, far));
        }
    }
}

/// Copies `from` to `to` until EOF, then ends `to`'s writing side.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

fn close(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

/// TLS: the first record must be a ClientHello naming a granted server.
pub(crate) fn tls(
    program: TcpStream,
    upstream: TcpStream,
    ip: IpAddr,
    plan: &EgressPlan,
) -> Result<(), String> {
    let _ = program.set_read_timeout(Some(FIRST_BYTES));
    let mut hello = Vec::with_capacity(1024);
    let name = match read_client_hello(&program, &mut hello) {
        Ok(name) => name,
        Err(why) => {
            close(&program, &upstream);
            return Err(why);
        }
    };
    if let Err(why) = plan.decide_host(&name, ip, Proxy::Tls) {
        // A fatal access_denied alert: the client's TLS library names
        // the refusal instead of a bare reset.
        let _ = (&program).write_all(&ACCESS_DENIED_ALERT);
        close(&program, &upstream);
        return Err(why);
    }
    let _ = program.set_read_timeout(None);
    let mut up = upstream;
    if up.write_all(&hello).is_err() {
        close(&program, &up);
        return Ok(());
    }
    let (Ok(p2), Ok(u2)) = (program.try_clone(), up.try_clone()) else {
        close(&program, &up);
        return Ok(());
    };
    let back = std::thread::spawn(move || pump(u2, p2));
    pump(program, up);
    let _ = back.join();
    Ok(())
}

/// Reads the first TLS record into `buf` and returns the server name of
/// the ClientHello it holds.
fn read_client_hello(mut s: &TcpStream, buf: &mut Vec<u8>) -> Result<String, String> {
    let mut header = [0u8; 5];
    s.read_exact(&mut header)
        .map_err(|e| format!("no TLS ClientHello ({e})"))?;
    buf.extend_from_slice(&header);
    if header[0] != 22 {
        return Err("not TLS: the first bytes are no handshake record".into());
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if len > 16 << 10 {
        return Err("malformed TLS record".into());
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)
        .map_err(|e| format!("TLS ClientHello cut short ({e})"))?;
    buf.extend_from_slice(&body);
    server_name(&body).ok_or_else(|| "TLS ClientHello without a server name (SNI)".to_string())
}

/// The host_name of the server_name extension of a ClientHello handshake
/// message (RFC 8446 §4.1.2, RFC 6066 §3), if the record holds it whole.
fn server_name(msg: &[u8]) -> Option<String> {
    let mut r = Reader(msg);
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    let n = r.u24()?;
    let body = r.take(n)?;
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    let session = usize::from(r.u8()?);
    r.take(session)?;
    let suites = usize::from(r.u16()?);
    r.take(suites)?;
    let compression = usize::from(r.u8()?);
    r.take(compression)?;
    let extensions = usize::from(r.u16()?);
    let mut ext = Reader(r.take(extensions)?);
    while !ext.0.is_empty() {
        let kind = ext.u16()?;
        let n = usize::from(ext.u16()?);
        let data = ext.take(n)?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(data);
        let n = usize::from(list.u16()?);
        let mut names = Reader(list.take(n)?);
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let n = usize::from(names.u16()?);
            let name = names.take(n)?;
            if name_type == 0 {
                return std::str::from_utf8(name).ok().map(str::to_owned);
            }
        }
        return None;
    }
    None
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
}

/// How a request's body is framed.
#[derive(Debug, PartialEq)]
enum Body {
    Length(u64),
    Chunked,
}

/// HTTP/1.x: each request checked before it is forwarded.
pub(crate) fn http(
    program: TcpStream,
    upstream: TcpStream,
    ip: IpAddr,
    plan: &EgressPlan,
) -> Result<(), String> {
    let (Ok(p2), Ok(u2)) = (program.try_clone(), upstream.try_clone()) else {
        close(&program, &upstream);
        return Ok(());
    };
    // The answers, copied back; the program's writing side is ended
    // here, after a refusal's 403 when there is one.
    let back = std::thread::spawn(move || {
        let (mut from, mut to) = (u2, p2);
        let _ = io::copy(&mut from, &mut to);
    });
    let _ = program.set_read_timeout(Some(FIRST_BYTES));
    let mut reader = BufReader::new(program.try_clone().map_err(|e| e.to_string())?);
    let mut up = upstream;
    let result = loop {
        let head = match read_head(&mut reader) {
            Ok(Some(h)) => h,
            Ok(None) => break Ok(()), // the program is done
            Err(why) => break Err(why),
        };
        let _ = program.set_read_timeout(None);
        let body = match check_request(&head, ip, plan) {
            Ok(b) => b,
            Err(why) => break Err(why),
        };
        if up.write_all(&head).is_err() {
            break Ok(());
        }
        if forward_body(&mut reader, &mut up, body).is_err() {
            break Ok(());
        }
    };
    match &result {
        Ok(()) => {
            let _ = up.shutdown(Shutdown::Write);
            let _ = back.join();
            let _ = program.shutdown(Shutdown::Write);
        }
        Err(why) => {
            // The upstream connection ends first, so that nothing more of
            // it reaches the program after the refusal; then the program
            // is told why, as an HTTP answer, and the connection closes.
            let _ = up.shutdown(Shutdown::Both);
            let _ = back.join();
            let _ = (&program).write_all(forbidden(why).as_bytes());
            close(&program, &up);
        }
    }
    result
}

/// The answer to a refused request.
fn forbidden(why: &str) -> String {
    let body = format!("warden: request refused: {why}\n");
    format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// One request head, through its empty line; `None` at a clean EOF.
fn read_head(r: &mut BufReader<TcpStream>) -> Result<Option<Vec<u8>>, String> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r
            .by_ref()
            .take((MAX_HEAD - head.len()) as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("reading the request: {e}"))?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err("request head cut short".into())
            };
        }
        head.extend_from_slice(&line);
        if head.len() > MAX_HEAD {
            return Err(format!("request head over {MAX_HEAD} bytes"));
        }
        // Blank lines before a request are allowed (RFC 9112 §2.2).
        if head == b"\r\n" || head == b"\n" {
            head.clear();
            continue;
        }
        if line == b"\r\n" || line == b"\n" {
            return Ok(Some(head));
        }
    }
}

/// The request's verdict and body framing.
fn check_request(head: &[u8], ip: IpAddr, plan: &EgressPlan) -> Result<Body, String> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("malformed request head".into()),
        Err(e) => return Err(format!("malformed request head ({e})")),
    }
    let method = req.method.unwrap_or("");
    if method.eq_ignore_ascii_case("CONNECT") {
        return Err("CONNECT is not carried (grant net:connect for a tunnel)".into());
    }
    let mut host: Option<&str> = None;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        let value =
            std::str::from_utf8(h.value).map_err(|_| format!("header {} is not text", h.name))?;
        if h.name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err("more than one Host header".into());
            }
            host = Some(value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value
                .trim()
                .parse()
                .map_err(|_| "malformed Content-Length".to_string())?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length headers".into());
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or("").trim();
            if !last.eq_ignore_ascii_case("chunked") || chunked {
                return Err(format!("Transfer-Encoding {value:?} is not carried"));
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            return Err("protocol upgrades are not carried".into());
        }
    }
    let host = host.ok_or_else(|| "request without a Host header".to_string())?;
    // An absolute URL must name the Host's host.
    let path = req.path.unwrap_or("");
    if let Some(rest) = path
        .strip_prefix("http://")
        .or_else(|| path.strip_prefix("HTTP://"))
    {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        if !authority.eq_ignore_ascii_case(host.trim()) {
            return Err(format!(
                "request for {} under Host {}",
                warden_egress::printable_host(authority),
                warden_egress::printable_host(host)
            ));
        }
    } else if !path.starts_with('/') && path != "*" {
        return Err("request target is neither a path nor an http URL".into());
    }
    plan.decide_host(host, ip, Proxy::Http)?;
    match (length, chunked) {
        (Some(_), true) => Err("both Content-Length and Transfer-Encoding".into()),
        (Some(n), false) => Ok(Body::Length(n)),
        (None, true) => Ok(Body::Chunked),
        (None, false) => Ok(Body::Length(0)),
    }
}

fn forward_body(r: &mut BufReader<TcpStream>, up: &mut TcpStream, body: Body) -> io::Result<()> {
    match body {
        Body::Length(n) => {
            let copied = io::copy(&mut r.by_ref().take(n), up)?;
            if copied < n {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok(())
        }
        Body::Chunked => loop {
            let mut line = Vec::new();
            r.by_ref().take(4096).read_until(b'\n', &mut line)?;
            if !line.ends_with(b"\n") {
                return Err(io::ErrorKind::InvalidData.into());
            }
            up.write_all(&line)?;
            let text = std::str::from_utf8(&line).map_err(|_| io::ErrorKind::InvalidData)?;
            let size = text.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16).map_err(|_| io::ErrorKind::InvalidData)?;
            if size == 0 {
                // Trailers, through the empty line.
                loop {
                    let mut t = Vec::new();
                    r.by_ref().take(MAX_HEAD as u64).read_until(b'\n', &mut t)?;
                    up.write_all(&t)?;
                    if t == b"\r\n" || t == b"\n" || t.is_empty() {
                        return Ok(());
                    }
                }
            }
            let copied = io::copy(&mut r.by_ref().take(size + 2), up)?;
            if copied < size + 2 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as a TLS client writes it, naming `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let mut sni = Vec::new();
        sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni.extend_from_slice(name.as_bytes());
        let mut ext = Vec::new();
        ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]); // versions
        ext.extend_from_slice(&0u16.to_be_bytes());
        ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        ext.extend_from_slice(&sni);
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0);
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]);
        body.extend_from_slice(&[0x01, 0x00]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut msg = vec![1];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        msg
    }

    #[test]
    fn the_server_name_is_read_from_a_client_hello_and_junk_is_none() {
        assert_eq!(
            server_name(&client_hello("api.example")).as_deref(),
            Some("api.example")
        );
        let hello = client_hello("api.example");
        for cut in 0..hello.len() {
            let _ = server_name(&hello[..cut]); // never panics
        }
        assert_eq!(server_name(&[2, 0, 0, 0]), None);
        assert_eq!(server_name(&[]), None);
    }

    fn plan() -> EgressPlan {
        let hosts =
            warden_egress::HostsFile::parse("11.22.33.44 api.example other.example\n").unwrap();
        let caps: Vec<warden_policy::Capability> = vec![
            "net:http:api.example".parse().unwrap(),
            "net:connect:other.example:80".parse().unwrap(),
        ];
        EgressPlan::from_capabilities(&caps, &hosts).unwrap()
    }

    #[test]
    fn requests_are_checked_for_host_target_and_framing() {
        let ip: IpAddr = "11.22.33.44".parse().unwrap();
        let p = plan();
        let ok = |head: &str| check_request(head.as_bytes(), ip, &p);
        assert_eq!(
            ok("GET / HTTP/1.1\r\nHost: api.example\r\n\r\n"),
            Ok(Body::Length(0))
        );
        assert_eq!(
            ok("POST /x HTTP/1.1\r\nHost: API.example:80\r\nContent-Length: 5\r\n\r\n"),
            Ok(Body::Length(5))
        );
        assert_eq!(
            ok("POST /x HTTP/1.1\r\nHost: api.example\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(Body::Chunked)
        );
        for bad in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: other.example\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: api.example\r\nHost: other.example\r\n\r\n",
            "GET http://other.example/ HTTP/1.1\r\nHost: api.example\r\n\r\n",
            "CONNECT other.example:443 HTTP/1.1\r\nHost: api.example\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: api.example\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: api.example\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: api.example\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: api.example\r\nTransfer-Encoding: gzip\r\n\r\n",
        ] {
            assert!(ok(bad).is_err(), "{bad:?} passed");
        }
        assert_eq!(
            ok("GET http://api.example/x HTTP/1.1\r\nHost: api.example\r\n\r\n"),
            Ok(Body::Length(0))
        );
    }
}

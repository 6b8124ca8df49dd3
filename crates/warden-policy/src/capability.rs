//! Capability strings: parsing, canonical display, subsumption.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::value::{
    excerpt, format_duration, format_size, parse_count, parse_duration, parse_percent, parse_size,
    ValueError,
};

/// The longest capability string accepted, in bytes.
pub const MAX_CAPABILITY_LEN: usize = 4096;

/// A typed permission. Everything not granted is denied.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Capability {
    /// `fs:read:PATH` — read files under PATH.
    FsRead(PathBuf),
    /// `fs:write:PATH` — read and write files under PATH.
    FsWrite(PathBuf),
    /// `net:connect:HOST:PORT` — open connections.
    NetConnect {
        /// Which hosts.
        host: HostPattern,
        /// Which ports.
        port: PortPattern,
    },
    /// `net:connect:udp:HOST:PORT` — send UDP datagrams to HOST:PORT
    /// (a connected UDP socket).
    NetConnectUdp {
        /// Which hosts.
        host: HostPattern,
        /// Which ports.
        port: PortPattern,
    },
    /// `net:http:HOST` — HTTP and HTTPS to HOST through the mediating
    /// proxy (the Host header, or the TLS SNI, must name HOST).
    NetHttp(HostPattern),
    /// `net:https:HOST` — HTTPS only (TLS whose SNI names HOST).
    NetHttps(HostPattern),
    /// `net:dns` — resolve names through the run's DNS stub, which answers
    /// the names the run's other net grants name, and records every query
    /// (the rest are NXDOMAIN and net violations).
    NetDns,
    /// `env:NAME` — see the named environment variable.
    Env(String),
    /// `secret:NAME` — lease the named secret (a file in the sandbox).
    Secret(String),
    /// `secret:NAME:env` — lease it, and also give its value as an
    /// environment variable.
    SecretEnv(String),
    /// `module:call:NAME` — call the named module.
    ModuleCall(String),
    /// `clock:read` — read the wall and monotonic clocks (wasm guests;
    /// native programs always have the kernel's clocks).
    ClockRead,
    /// `random:read` — read random bytes (wasm guests; native programs
    /// always have `getrandom`).
    RandomRead,
    /// `log:write` — write levelled log records through the host.
    LogWrite,
    /// `kv:read:NS` — read keys of the key-value namespace NS (`*`: every
    /// namespace).
    KvRead(String),
    /// `kv:write:NS` — read, write and delete keys of namespace NS.
    KvWrite(String),
    /// `mem:limit:SIZE` — memory limit in bytes.
    MemLimit(u64),
    /// `cpu:limit:PERCENT` — CPU share in percent of one core.
    CpuLimit(u32),
    /// `time:limit:DURATION` — wall-clock limit.
    TimeLimit(Duration),
    /// `proc:limit:N` — maximum number of processes.
    ProcLimit(u32),
    /// `net:limit:bytes:SIZE`, `net:limit:connections:N`,
    /// `net:limit:idle:DURATION` — bounds on the run's network use.
    NetLimit(NetLimit),
}

/// A bound on a run's network use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetLimit {
    /// Bytes moved by all connections, both ways together.
    Bytes(u64),
    /// Connections made.
    Connections(u64),
    /// Longest a connection may carry no data either way.
    Idle(Duration),
}

/// Which hosts a network capability covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// `*` — every host.
    Any,
    /// `*.SUFFIX` — every host strictly below SUFFIX (not SUFFIX itself).
    Suffix(String),
    /// An exact host name, lower-case, without a trailing dot.
    Name(String),
    /// An exact IP address (IPv6 written `[::1]`).
    Ip(IpAddr),
}

/// Which ports a `net:connect` capability covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortPattern {
    /// `*` — every port.
    Any,
    /// One port, 1-65535.
    Port(u16),
}

/// A capability string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    /// The empty string.
    #[error("empty capability")]
    Empty,
    /// Longer than [`MAX_CAPABILITY_LEN`].
    #[error("capability is too long ({len} bytes; at most {MAX_CAPABILITY_LEN})")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Not one of the known capability kinds.
    #[error(
        "unknown capability {input:?}: expected fs:read, fs:write, net:connect, net:http, env, secret, module:call, clock:read, random:read, log:write, kv:read, kv:write, mem:limit, cpu:limit, time:limit or proc:limit"
    )]
    Unknown {
        /// The input (possibly shortened).
        input: String,
    },
    /// A known kind with a bad argument.
    #[error("malformed capability {input:?}: {reason}")]
    Malformed {
        /// The input (possibly shortened).
        input: String,
        /// What is wrong with it.
        reason: MalformedReason,
    },
}

/// Why a capability of a known kind is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedReason {
    /// `fs:read` without a path.
    #[error("missing path")]
    MissingPath,
    /// A path with a NUL byte.
    #[error("path contains a NUL byte")]
    NulInPath,
    /// `fs:exec:…` and the like.
    #[error("unknown fs access {0:?}: expected read or write")]
    UnknownFsAccess(String),
    /// `net:udp:…` and the like.
    #[error("unknown net access {0:?}: expected connect, http, https, dns or limit")]
    UnknownNetAccess(String),
    /// `net:limit:WHAT:…` with WHAT other than bytes, connections, idle.
    #[error("unknown net limit {0:?}: expected net:limit:bytes:SIZE, net:limit:connections:N or net:limit:idle:DURATION")]
    UnknownNetLimit(String),
    /// `module:load:…` and the like.
    #[error("unknown module access {0:?}: expected call")]
    UnknownModuleAccess(String),
    /// `kv:delete:…` and the like.
    #[error("unknown kv access {0:?}: expected read or write")]
    UnknownKvAccess(String),
    /// `clock:write`, `log:read:x` and the like.
    #[error("expected exactly {expected:?}")]
    ExpectedExactly {
        /// The only spelling of this capability.
        expected: &'static str,
    },
    /// `mem:max:…` and the like.
    #[error("unknown {kind} operation {op:?}: expected limit")]
    UnknownLimitOp {
        /// `mem`, `cpu`, `time` or `proc`.
        kind: &'static str,
        /// What was given instead of `limit`.
        op: String,
    },
    /// No host.
    #[error("missing host")]
    MissingHost,
    /// `net:connect:HOST` without a port.
    #[error("missing port: expected HOST:PORT, e.g. example.com:443 or *:443")]
    MissingPort,
    /// A host that is neither `*`, `*.suffix`, a domain name nor an IP address.
    #[error("invalid host {host:?}: {why}")]
    InvalidHost {
        /// The host (possibly shortened).
        host: String,
        /// Why it is invalid.
        why: &'static str,
    },
    /// A port that is neither `*` nor 1-65535.
    #[error("invalid port {0:?}: expected a number from 1 to 65535 or *")]
    InvalidPort(String),
    /// No name after `env:`, `secret:` or `module:call:`.
    #[error("missing name")]
    MissingName,
    /// A name with characters outside its alphabet.
    #[error("invalid {what} name {name:?}: expected {expected}")]
    InvalidName {
        /// `environment variable`, `secret` or `module`.
        what: &'static str,
        /// The name (possibly shortened).
        name: String,
        /// The accepted alphabet.
        expected: &'static str,
    },
    /// A limit without a value.
    #[error("missing value")]
    MissingValue,
    /// A limit with a bad value.
    #[error(transparent)]
    Value(#[from] ValueError),
}

const ENV_ALPHABET: &str = "[A-Za-z_][A-Za-z0-9_]*";
const SECRET_ALPHABET: &str =
    "ASCII letters, digits, '_', '-', '.' and '/', not starting with '-', '.' or '/'";
const MODULE_ALPHABET: &str =
    "ASCII letters, digits, '_', '-' and '.', not starting with '-' or '.'";
const KV_NAMESPACE_ALPHABET: &str =
    "ASCII letters, digits, '_', '-' and '.', not starting with '-' or '.', or *";
const MAX_NAME_LEN: usize = 256;

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn valid_name(name: &str, extra: &[u8]) -> bool {
    name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || extra.contains(&b))
}

impl FromStr for Capability {
    type Err = CapabilityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(CapabilityError::Empty);
        }
        if s.len() > MAX_CAPABILITY_LEN {
            return Err(CapabilityError::TooLong { len: s.len() });
        }
        let malformed = |reason: MalformedReason| CapabilityError::Malformed {
            input: excerpt(s),
            reason,
        };
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        let has_rest = s.len() > kind.len();
        match kind {
            "fs" => {
                let (access, path) = split_arg(rest);
                let write = match access {
                    "read" => false,
                    "write" => true,
                    other => {
                        return Err(malformed(MalformedReason::UnknownFsAccess(excerpt(other))))
                    }
                };
                let path = parse_path(path).map_err(malformed)?;
                Ok(if write {
                    Capability::FsWrite(path)
                } else {
                    Capability::FsRead(path)
                })
            }
            "net" => {
                let (access, arg) = split_arg(rest);
                match access {
                    "connect" => match arg.strip_prefix("udp:") {
                        Some(udp) => {
                            let (host, port) = parse_host_port(udp).map_err(malformed)?;
                            Ok(Capability::NetConnectUdp { host, port })
                        }
                        None => {
                            let (host, port) = parse_host_port(arg).map_err(malformed)?;
                            Ok(Capability::NetConnect { host, port })
                        }
                    },
                    "http" => Ok(Capability::NetHttp(
                        parse_host(arg, false).map_err(malformed)?,
                    )),
                    "dns" if arg.is_empty() && !rest.contains(':') => Ok(Capability::NetDns),
                    "https" => Ok(Capability::NetHttps(
                        parse_host(arg, false).map_err(malformed)?,
                    )),
                    "limit" => {
                        let (what, value) = split_arg(arg);
                        if value.is_empty() && matches!(what, "bytes" | "connections" | "idle") {
                            return Err(malformed(MalformedReason::MissingValue));
                        }
                        let value_err = |e: ValueError| malformed(MalformedReason::Value(e));
                        let limit = match what {
                            "bytes" => NetLimit::Bytes(parse_size(value).map_err(value_err)?),
                            "connections" => NetLimit::Connections(
                                parse_count(value, u32::MAX.into()).map_err(value_err)?,
                            ),
                            "idle" => NetLimit::Idle(parse_duration(value).map_err(value_err)?),
                            other => {
                                return Err(malformed(MalformedReason::UnknownNetLimit(excerpt(
                                    other,
                                ))))
                            }
                        };
                        Ok(Capability::NetLimit(limit))
                    }
                    other => Err(malformed(MalformedReason::UnknownNetAccess(excerpt(other)))),
                }
            }
            "env" => {
                let name = named(rest, has_rest).map_err(malformed)?;
                if !valid_env_name(name) || name.len() > MAX_NAME_LEN {
                    return Err(malformed(MalformedReason::InvalidName {
                        what: "environment variable",
                        name: excerpt(name),
                        expected: ENV_ALPHABET,
                    }));
                }
                Ok(Capability::Env(name.to_owned()))
            }
            "secret" => {
                let name = named(rest, has_rest).map_err(malformed)?;
                let (name, env) = match name.strip_suffix(":env") {
                    Some(n) if !n.is_empty() => (n, true),
                    _ => (name, false),
                };
                if !valid_name(name, b"-./") {
                    return Err(malformed(MalformedReason::InvalidName {
                        what: "secret",
                        name: excerpt(name),
                        expected: SECRET_ALPHABET,
                    }));
                }
                Ok(if env {
                    Capability::SecretEnv(name.to_owned())
                } else {
                    Capability::Secret(name.to_owned())
                })
            }
            "module" => {
                let (access, name) = split_arg(rest);
                if access != "call" {
                    return Err(malformed(MalformedReason::UnknownModuleAccess(excerpt(
                        access,
                    ))));
                }
                if name.is_empty() {
                    return Err(malformed(MalformedReason::MissingName));
                }
                if !valid_name(name, b"-.") {
                    return Err(malformed(MalformedReason::InvalidName {
                        what: "module",
                        name: excerpt(name),
                        expected: MODULE_ALPHABET,
                    }));
                }
                Ok(Capability::ModuleCall(name.to_owned()))
            }
            "clock" | "random" | "log" => {
                let (cap, expected) = match kind {
                    "clock" => (Capability::ClockRead, "clock:read"),
                    "random" => (Capability::RandomRead, "random:read"),
                    _ => (Capability::LogWrite, "log:write"),
                };
                if s != expected {
                    return Err(malformed(MalformedReason::ExpectedExactly { expected }));
                }
                Ok(cap)
            }
            "kv" => {
                let (access, namespace) = split_arg(rest);
                let write = match access {
                    "read" => false,
                    "write" => true,
                    other => {
                        return Err(malformed(MalformedReason::UnknownKvAccess(excerpt(other))))
                    }
                };
                if namespace.is_empty() {
                    return Err(malformed(MalformedReason::MissingName));
                }
                if namespace != "*" && !valid_name(namespace, b"-.") {
                    return Err(malformed(MalformedReason::InvalidName {
                        what: "kv namespace",
                        name: excerpt(namespace),
                        expected: KV_NAMESPACE_ALPHABET,
                    }));
                }
                let namespace = namespace.to_owned();
                Ok(if write {
                    Capability::KvWrite(namespace)
                } else {
                    Capability::KvRead(namespace)
                })
            }
            "mem" | "cpu" | "time" | "proc" => {
                let (op, value) = split_arg(rest);
                let kind_name = match kind {
                    "mem" => "mem",
                    "cpu" => "cpu",
                    "time" => "time",
                    _ => "proc",
                };
                if op != "limit" {
                    return Err(malformed(MalformedReason::UnknownLimitOp {
                        kind: kind_name,
                        op: excerpt(op),
                    }));
                }
                if value.is_empty() {
                    return Err(malformed(MalformedReason::MissingValue));
                }
                let value_err = |e: ValueError| malformed(MalformedReason::Value(e));
                Ok(match kind_name {
                    "mem" => Capability::MemLimit(parse_size(value).map_err(value_err)?),
                    "cpu" => Capability::CpuLimit(parse_percent(value).map_err(value_err)?),
                    "time" => Capability::TimeLimit(parse_duration(value).map_err(value_err)?),
                    _ => {
                        let n = parse_count(value, u32::MAX.into()).map_err(value_err)?;
                        Capability::ProcLimit(u32::try_from(n).unwrap_or(u32::MAX))
                    }
                })
            }
            _ => Err(CapabilityError::Unknown { input: excerpt(s) }),
        }
    }
}

/// Splits `access:argument`; a missing `:` yields an empty argument.
fn split_arg(rest: &str) -> (&str, &str) {
    rest.split_once(':').unwrap_or((rest, ""))
}

fn named(rest: &str, has_rest: bool) -> Result<&str, MalformedReason> {
    if !has_rest || rest.is_empty() {
        Err(MalformedReason::MissingName)
    } else {
        Ok(rest)
    }
}

fn parse_path(path: &str) -> Result<PathBuf, MalformedReason> {
    if path.is_empty() {
        return Err(MalformedReason::MissingPath);
    }
    if path.contains('\0') {
        return Err(MalformedReason::NulInPath);
    }
    Ok(normalize(Path::new(path)))
}

fn parse_host_port(arg: &str) -> Result<(HostPattern, PortPattern), MalformedReason> {
    if arg.is_empty() {
        return Err(MalformedReason::MissingHost);
    }
    let (host, port) = if arg.starts_with('[') {
        match arg.find(']') {
            Some(close) => {
                let (host, after) = arg.split_at(close + 1);
                match after.strip_prefix(':') {
                    Some(port) => (host, port),
                    None if after.is_empty() => return Err(MalformedReason::MissingPort),
                    None => {
                        return Err(MalformedReason::InvalidHost {
                            host: excerpt(arg),
                            why: "expected a port after the bracketed IPv6 address",
                        })
                    }
                }
            }
            None => (arg, ""),
        }
    } else {
        match arg.rsplit_once(':') {
            Some(split) => split,
            None => return Err(MalformedReason::MissingPort),
        }
    };
    let host = parse_host(host, true)?;
    Ok((host, parse_port(port)?))
}

fn parse_port(port: &str) -> Result<PortPattern, MalformedReason> {
    if port == "*" {
        return Ok(PortPattern::Any);
    }
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MalformedReason::InvalidPort(excerpt(port)));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(PortPattern::Port(p)),
        _ => Err(MalformedReason::InvalidPort(excerpt(port))),
    }
}

fn parse_host(host: &str, with_port: bool) -> Result<HostPattern, MalformedReason> {
    let invalid = |why| MalformedReason::InvalidHost {
        host: excerpt(host),
        why,
    };
    if host.is_empty() {
        return Err(MalformedReason::MissingHost);
    }
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| invalid("missing ']' after the IPv6 address"))?;
        let ip = Ipv6Addr::from_str(inner).map_err(|_| invalid("not a valid IPv6 address"))?;
        return Ok(HostPattern::Ip(IpAddr::V6(ip)));
    }
    if host.contains(':') {
        return Err(invalid(if with_port {
            "IPv6 addresses must be written in brackets, e.g. [::1]"
        } else {
            "net:http takes a host only (no port); IPv6 addresses must be written in brackets"
        }));
    }
    if let Some(suffix) = host.strip_prefix("*.") {
        let name = hostname(suffix).map_err(invalid)?;
        return Ok(HostPattern::Suffix(name));
    }
    if host.contains('*') {
        return Err(invalid(
            "a wildcard must be the whole host (*) or the whole first label (*.example.com)",
        ));
    }
    if let Ok(ip) = Ipv4Addr::from_str(host) {
        return Ok(HostPattern::Ip(IpAddr::V4(ip)));
    }
    hostname(host).map(HostPattern::Name).map_err(invalid)
}

/// Validates and canonicalises a domain name (lower-case, no trailing dot).
fn hostname(name: &str) -> Result<String, &'static str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err("a domain name must have 1 to 253 characters");
    }
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each label of a domain name must have 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only ASCII letters, digits, '-', '_' and '.' are allowed (use punycode for international names)");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label may not start or end with '-'");
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a valid IPv4 address or domain name");
    }
    Ok(name.to_ascii_lowercase())
}

/// Lexically normalises a path: folds `.` and `..` (never above `/`),
/// removes repeated and trailing separators. A relative path keeps leading
/// `..`; an empty relative result is `.`. No I/O, symlinks are not resolved.
pub fn normalize(path: &Path) -> PathBuf {
    let mut parts: Vec<Component<'_>> = Vec::new();
    let mut prefix = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => prefix.push(component.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => match parts.last() {
                Some(Component::Normal(_)) => {
                    parts.pop();
                }
                _ if path.has_root() => {}
                _ => parts.push(component),
            },
            Component::Normal(_) => parts.push(component),
        }
    }
    let mut out = prefix;
    for part in parts {
        out.push(part.as_os_str());
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

fn normalized(path: &Path) -> Cow<'_, Path> {
    let clean = !path.as_os_str().is_empty()
        && path
            .components()
            .all(|c| !matches!(c, Component::CurDir | Component::ParentDir));
    if clean {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normalize(path))
    }
}

/// True if `inner` is `outer` or below it, component-wise and after lexical
/// normalisation of both (so `/ab` is not below `/a`, nor `/a/../b`).
fn path_covers(outer: &Path, inner: &Path) -> bool {
    normalized(inner).starts_with(normalized(outer))
}

/// True if domain `name` is strictly below domain `suffix` (`a.b.c` below `b.c`).
fn is_below(name: &str, suffix: &str) -> bool {
    name.strip_suffix(suffix)
        .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
}

impl HostPattern {
    /// True if every host matched by `other` is matched by `self`.
    pub fn covers(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (HostPattern::Any, _) => true,
            (HostPattern::Suffix(s), HostPattern::Name(t)) => is_below(t, s),
            (HostPattern::Suffix(s), HostPattern::Suffix(t)) => t == s || is_below(t, s),
            (HostPattern::Name(a), HostPattern::Name(b)) => a == b,
            (HostPattern::Ip(a), HostPattern::Ip(b)) => a == b,
            _ => false,
        }
    }
}

impl PortPattern {
    /// True if every port matched by `other` is matched by `self`.
    pub fn covers(&self, other: &PortPattern) -> bool {
        match (self, other) {
            (PortPattern::Any, _) => true,
            (PortPattern::Port(a), PortPattern::Port(b)) => a == b,
            (PortPattern::Port(_), PortPattern::Any) => false,
        }
    }
}

impl Capability {
    /// True if `self` grants at least everything `other` grants.
    ///
    /// `fs:write:/a` covers `fs:read` and `fs:write` of `/a` and below;
    /// `fs:read:/a` covers `fs:read` of `/a` and below (component-wise);
    /// `*.ex.com` covers `api.ex.com` (not `ex.com`), `*` covers every host,
    /// port `*` every port; `env`, `secret` and `module:call` match exactly
    /// (`secret:N:env` also covers `secret:N`, not the other way round);
    /// `kv:write:NS` covers `kv:read:NS`, namespace `*` every namespace;
    /// a limit covers a smaller or equal limit of the same kind.
    /// `net:connect` and `net:http` are distinct channels and never cover each other.
    pub fn subsumes(&self, other: &Capability) -> bool {
        use Capability as C;
        match (self, other) {
            (C::FsWrite(a), C::FsRead(b) | C::FsWrite(b)) | (C::FsRead(a), C::FsRead(b)) => {
                path_covers(a, b)
            }
            (C::NetConnect { host: h1, port: p1 }, C::NetConnect { host: h2, port: p2 })
            | (C::NetConnectUdp { host: h1, port: p1 }, C::NetConnectUdp { host: h2, port: p2 }) => {
                h1.covers(h2) && p1.covers(p2)
            }
            (C::NetHttp(a), C::NetHttp(b) | C::NetHttps(b)) | (C::NetHttps(a), C::NetHttps(b)) => {
                a.covers(b)
            }
            (C::Env(a), C::Env(b))
            | (C::Secret(a), C::Secret(b))
            | (C::SecretEnv(a), C::Secret(b) | C::SecretEnv(b))
            | (C::ModuleCall(a), C::ModuleCall(b)) => a == b,
            (C::KvWrite(a), C::KvRead(b) | C::KvWrite(b)) | (C::KvRead(a), C::KvRead(b)) => {
                a == "*" || a == b
            }
            (C::NetDns, C::NetDns)
            | (C::ClockRead, C::ClockRead)
            | (C::RandomRead, C::RandomRead)
            | (C::LogWrite, C::LogWrite) => true,
            (C::MemLimit(a), C::MemLimit(b)) => b <= a,
            (C::CpuLimit(a), C::CpuLimit(b)) | (C::ProcLimit(a), C::ProcLimit(b)) => b <= a,
            (C::TimeLimit(a), C::TimeLimit(b)) => b <= a,
            (C::NetLimit(NetLimit::Bytes(a)), C::NetLimit(NetLimit::Bytes(b)))
            | (C::NetLimit(NetLimit::Connections(a)), C::NetLimit(NetLimit::Connections(b))) => {
                b <= a
            }
            (C::NetLimit(NetLimit::Idle(a)), C::NetLimit(NetLimit::Idle(b))) => b <= a,
            _ => false,
        }
    }

    /// True for `mem:limit`, `cpu:limit`, `time:limit` and `proc:limit`.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            Capability::MemLimit(_)
                | Capability::CpuLimit(_)
                | Capability::TimeLimit(_)
                | Capability::ProcLimit(_)
                | Capability::NetLimit(_)
        )
    }

    /// The path of an `fs:` capability.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Capability::FsRead(p) | Capability::FsWrite(p) => Some(p),
            _ => None,
        }
    }

    /// Makes a relative `fs:` path absolute against `base` (lexically
    /// normalised, never above `/`); other capabilities are returned as they are.
    pub fn with_base(self, base: &Path) -> Capability {
        match self {
            Capability::FsRead(p) => Capability::FsRead(normalize(&base.join(p))),
            Capability::FsWrite(p) => Capability::FsWrite(normalize(&base.join(p))),
            other => other,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Suffix(s) => write!(f, "*.{s}"),
            HostPattern::Name(n) => f.write_str(n),
            HostPattern::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

impl fmt::Display for PortPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortPattern::Any => f.write_str("*"),
            PortPattern::Port(p) => write!(f, "{p}"),
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capability::FsRead(p) => write!(f, "fs:read:{}", p.display()),
            Capability::FsWrite(p) => write!(f, "fs:write:{}", p.display()),
            Capability::NetConnect { host, port } => write!(f, "net:connect:{host}:{port}"),
            Capability::NetConnectUdp { host, port } => {
                write!(f, "net:connect:udp:{host}:{port}")
            }
            Capability::NetHttp(host) => write!(f, "net:http:{host}"),
            Capability::NetHttps(host) => write!(f, "net:https:{host}"),
            Capability::NetDns => f.write_str("net:dns"),
            Capability::Env(n) => write!(f, "env:{n}"),
            Capability::Secret(n) => write!(f, "secret:{n}"),
            Capability::SecretEnv(n) => write!(f, "secret:{n}:env"),
            Capability::ModuleCall(n) => write!(f, "module:call:{n}"),
            Capability::ClockRead => f.write_str("clock:read"),
            Capability::RandomRead => f.write_str("random:read"),
            Capability::LogWrite => f.write_str("log:write"),
            Capability::KvRead(ns) => write!(f, "kv:read:{ns}"),
            Capability::KvWrite(ns) => write!(f, "kv:write:{ns}"),
            Capability::MemLimit(b) => write!(f, "mem:limit:{}", format_size(*b)),
            Capability::CpuLimit(p) => write!(f, "cpu:limit:{p}%"),
            Capability::TimeLimit(d) => write!(f, "time:limit:{}", format_duration(*d)),
            Capability::ProcLimit(n) => write!(f, "proc:limit:{n}"),
            Capability::NetLimit(NetLimit::Bytes(b)) => {
                write!(f, "net:limit:bytes:{}", format_size(*b))
            }
            Capability::NetLimit(NetLimit::Connections(n)) => {
                write!(f, "net:limit:connections:{n}")
            }
            Capability::NetLimit(NetLimit::Idle(d)) => {
                write!(f, "net:limit:idle:{}", format_duration(*d))
            }
        }
    }
}

impl Serialize for Capability {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Capability {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

//! A run's egress plan: its `net:connect` grants, with every granted name
//! resolved once before the run starts. A connection is then judged by its
//! address and port alone, against those pinned addresses: what a name
//! resolves to later (a rebinding DNS answer) changes nothing for the run.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use warden_policy::{Capability, HostPattern, PortPattern};

use crate::{canonical, classify, may_connect, AddrClass};

/// The environment variable naming a hosts-format file that the supervisor
/// resolves granted names from, instead of the system's resolver: for
/// tests and for hosts whose egress names are pinned by their operator.
pub const HOSTS_ENV: &str = "WARDEN_EGRESS_HOSTS";

/// Most addresses kept for one name (a name with hundreds of records
/// would otherwise make every decision slow).
const MAX_ADDRS_PER_NAME: usize = 16;

/// Resolves a host name to its addresses.
pub trait Resolve {
    fn resolve(&self, name: &str) -> io::Result<Vec<IpAddr>>;
}

/// The system's resolver (getaddrinfo, through the standard library).
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: &str) -> io::Result<Vec<IpAddr>> {
        let mut addrs: Vec<IpAddr> = (name, 0)
            .to_socket_addrs()?
            .map(|a| canonical(a.ip()))
            .collect();
        dedup(&mut addrs);
        Ok(addrs)
    }
}

/// A hosts-format file (`ADDRESS NAME [NAME…]`, `#` comments), read once.
#[derive(Debug, Default)]
pub struct HostsFile {
    names: BTreeMap<String, Vec<IpAddr>>,
}

impl HostsFile {
    pub fn read(path: &Path) -> Result<HostsFile, EgressError> {
        let text = std::fs::read_to_string(path).map_err(|source| EgressError::Hosts {
            path: path.to_path_buf(),
            line: 0,
            why: source.to_string(),
        })?;
        HostsFile::parse(&text).map_err(|(line, why)| EgressError::Hosts {
            path: path.to_path_buf(),
            line,
            why,
        })
    }

    /// Parses hosts-file text; an error names its 1-based line.
    pub fn parse(text: &str) -> Result<HostsFile, (usize, String)> {
        let mut names: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let Some(addr) = words.next() else { continue };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| (i + 1, format!("{addr:?} is not an IP address")))?;
            let mut any = false;
            for name in words {
                any = true;
                let entry = names.entry(name.to_ascii_lowercase()).or_default();
                entry.push(canonical(ip));
                dedup(entry);
            }
            if !any {
                return Err((i + 1, format!("{addr} has no host name after it")));
            }
        }
        Ok(HostsFile { names })
    }
}

impl Resolve for HostsFile {
    fn resolve(&self, name: &str) -> io::Result<Vec<IpAddr>> {
        self.names
            .get(name)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not in the egress hosts file"))
    }
}

fn dedup(addrs: &mut Vec<IpAddr>) {
    let mut seen = Vec::with_capacity(addrs.len());
    addrs.retain(|a| {
        let new = !seen.contains(a);
        seen.push(*a);
        new
    });
}

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("egress hosts file {path}{}: {why}", if *line > 0 { format!(":{line}") } else { String::new() })]
    Hosts {
        path: PathBuf,
        line: usize,
        why: String,
    },
}

/// A granted name and the addresses it was resolved to for this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub name: String,
    pub addrs: Vec<IpAddr>,
}

/// How a connection a `net:http`/`net:https` grant opens is carried: by
/// the supervisor's proxy, which checks the name the program asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    /// HTTP/1.x: every request's Host header (port 80).
    Http,
    /// TLS: the ClientHello's server name (port 443).
    Tls,
}

#[derive(Debug, Clone)]
struct Rule {
    host: HostPattern,
    port: PortPattern,
    udp: bool,
    /// `Some` for the rules of `net:http`/`net:https` grants.
    proxy: Option<Proxy>,
    /// The grant as written, for the report.
    grant: String,
}

/// Whether a connection may be made, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed by `grant`; `name` is the granted name the address was
    /// pinned for (none for an address literal or `*`); `proxy` when the
    /// grant is `net:http`/`net:https` (see [`EgressPlan::decide_host`]).
    Allowed {
        grant: String,
        name: Option<String>,
        proxy: Option<Proxy>,
    },
    /// Refused, with a one-line reason.
    Refused(String),
}

/// The `net:connect` grants of one run, with their names resolved.
#[derive(Debug, Clone, Default)]
pub struct EgressPlan {
    rules: Vec<Rule>,
    pinned: Vec<Pinned>,
    /// Names resolved during the run through the DNS stub (below a
    /// `*.suffix` grant, or under `*`), shared with the stub's thread.
    later: std::sync::Arc<std::sync::Mutex<Vec<Pinned>>>,
    /// What the report should say about the plan (a name that did not
    /// resolve, an address a name resolved to that is never reachable).
    pub warnings: Vec<String>,
}

impl EgressPlan {
    /// The plan for `capabilities`, or `None` when they grant no egress.
    /// Names are resolved by `resolver`, once each; a name that does not
    /// resolve, or resolves only to addresses never reachable, is kept with
    /// no addresses and a warning (the run goes on without it).
    pub fn from_capabilities(
        capabilities: &[Capability],
        resolver: &dyn Resolve,
    ) -> Option<EgressPlan> {
        let mut plan = EgressPlan::default();
        let dns = capabilities.contains(&Capability::NetDns);
        for cap in capabilities {
            let rules: &[(PortPattern, bool, Option<Proxy>)] = match cap {
                Capability::NetConnect { port, .. } => &[(*port, false, None)],
                Capability::NetConnectUdp { port, .. } => &[(*port, true, None)],
                Capability::NetHttp(_) => &[
                    (PortPattern::Port(80), false, Some(Proxy::Http)),
                    (PortPattern::Port(443), false, Some(Proxy::Tls)),
                ],
                Capability::NetHttps(_) => &[(PortPattern::Port(443), false, Some(Proxy::Tls))],
                _ => continue,
            };
            let host = match cap {
                Capability::NetConnect { host, .. }
                | Capability::NetConnectUdp { host, .. }
                | Capability::NetHttp(host)
                | Capability::NetHttps(host) => host,
                _ => continue,
            };
            for &(port, udp, proxy) in rules {
                plan.rules.push(Rule {
                    host: host.clone(),
                    port,
                    udp,
                    proxy,
                    grant: cap.to_string(),
                });
            }
        }
        // `net:dns` alone: a stub with nothing to answer, that still
        // records what the program asked for.
        if plan.rules.is_empty() && !dns {
            return None;
        }
        let names: Vec<(String, String)> = plan
            .rules
            .iter()
            .filter_map(|r| match &r.host {
                HostPattern::Name(n) => Some((n.clone(), r.grant.clone())),
                _ => None,
            })
            .collect();
        for (name, grant) in names {
            if plan.pinned.iter().any(|p| p.name == name) {
                continue;
            }
            let addrs = match resolver.resolve(&name) {
                Ok(addrs) => addrs,
                Err(e) => {
                    plan.warnings.push(format!(
                        "{grant}: {name} did not resolve ({e}); no connection to it is possible in this run"
                    ));
                    Vec::new()
                }
            };
            let mut kept = Vec::new();
            for ip in addrs {
                match may_connect(ip, false) {
                    Ok(()) if kept.len() < MAX_ADDRS_PER_NAME => kept.push(ip),
                    Ok(()) => {}
                    Err(class) => plan.warnings.push(format!(
                        "{grant}: {name} resolves to {ip}, {}; not used",
                        describe(class)
                    )),
                }
            }
            plan.pinned.push(Pinned { name, addrs: kept });
        }
        Some(plan)
    }

    /// The resolver a run uses: the hosts file named by [`HOSTS_ENV`],
    /// else the system's.
    pub fn run_resolver() -> Result<Box<dyn Resolve + Send + Sync>, EgressError> {
        match std::env::var_os(HOSTS_ENV) {
            Some(path) if !path.is_empty() => Ok(Box::new(HostsFile::read(Path::new(&path))?)),
            _ => Ok(Box::new(SystemResolver)),
        }
    }

    /// The plan for `capabilities` with names resolved as a run resolves
    /// them: from the hosts file named by [`HOSTS_ENV`] when it is set,
    /// else by the system's resolver.
    pub fn for_run(capabilities: &[Capability]) -> Result<Option<EgressPlan>, EgressError> {
        let resolver = EgressPlan::run_resolver()?;
        Ok(EgressPlan::from_capabilities(capabilities, &*resolver))
    }

    /// The grants' host and port patterns.
    pub(crate) fn rules(&self) -> impl Iterator<Item = (&HostPattern, PortPattern)> {
        self.rules.iter().map(|r| (&r.host, r.port))
    }

    /// The names resolved through the stub so far.
    pub(crate) fn resolved_later(&self) -> std::sync::MutexGuard<'_, Vec<Pinned>> {
        self.later.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The granted names and the addresses pinned for them.
    pub fn pinned(&self) -> &[Pinned] {
        &self.pinned
    }

    /// `/etc/hosts` lines for the jail: each granted name at the addresses
    /// pinned for it, so that the program's resolver finds exactly those.
    pub fn hosts_lines(&self) -> String {
        let mut out = String::new();
        for p in &self.pinned {
            for ip in &p.addrs {
                out.push_str(&format!("{ip}\t{}\n", p.name));
            }
        }
        out
    }

    /// Whether a TCP connection to `ip`:`port` may be made.
    pub fn decide(&self, ip: IpAddr, port: u16) -> Verdict {
        self.decide_proto(ip, port, false)
    }

    /// Whether a connection to `ip`:`port` may be made, over UDP
    /// (`net:connect:udp:` grants) or TCP (`net:connect:`).
    pub fn decide_proto(&self, ip: IpAddr, port: u16, udp: bool) -> Verdict {
        let ip = canonical(ip);
        let mut class_refusal = None;
        // A plain net:connect grant first: it needs no proxy.
        let plain = self.rules.iter().filter(|r| r.proxy.is_none());
        let proxied = self.rules.iter().filter(|r| r.proxy.is_some());
        for rule in plain.chain(proxied).filter(|r| r.udp == udp) {
            let port_ok = match rule.port {
                PortPattern::Any => true,
                PortPattern::Port(p) => p == port,
            };
            if !port_ok {
                continue;
            }
            let (covered, named, name) = match &rule.host {
                HostPattern::Ip(a) => (canonical(*a) == ip, true, None),
                HostPattern::Name(n) => (
                    self.pinned
                        .iter()
                        .any(|p| &p.name == n && p.addrs.contains(&ip)),
                    false,
                    Some(n.clone()),
                ),
                // `*` opens public addresses; the name is the stub's, if
                // it answered one for this address.
                HostPattern::Any => (true, false, self.resolved_below(None, ip)),
                // A name below a suffix is known only through the DNS
                // stub's answers in this run: an address alone never
                // matches it.
                HostPattern::Suffix(s) => match self.resolved_below(Some(s), ip) {
                    Some(name) => (true, false, Some(name)),
                    None => (false, false, None),
                },
            };
            if !covered {
                continue;
            }
            match may_connect(ip, named) {
                Ok(()) => {
                    return Verdict::Allowed {
                        grant: rule.grant.clone(),
                        name,
                        proxy: rule.proxy,
                    }
                }
                Err(class) => class_refusal.get_or_insert((class, rule.grant.clone())),
            };
        }
        let shown = Dest(ip, port);
        Verdict::Refused(match class_refusal {
            Some((class, grant)) => {
                format!(
                    "{shown} is {}, which {grant} does not open",
                    describe(class)
                )
            }
            None if classify(ip).reach() == crate::Reach::Never => {
                format!("{shown} is {}, never reachable", describe(classify(ip)))
            }
            None if udp => format!("no net:connect:udp grant covers {shown}"),
            None => format!("no net:connect grant covers {shown}"),
        })
    }
}

/// A destination a run may reach, as a forwarder serves it: an address,
/// a port, and whether over UDP.
pub type Endpoint = (IpAddr, u16, bool);

impl EgressPlan {
    /// Every destination the grants open, for a backend that must listen
    /// on each one (the gVisor backend's forwarder): named hosts at their
    /// pinned addresses, address literals of an allowed class; for a TCP
    /// grant of any host (`*`) or of names below a suffix (`*.suffix`),
    /// the unspecified address `::` at its port — one listener for every
    /// destination on that port, each connection judged on its own — which
    /// then stands for the listed addresses on that port too. A grant it
    /// cannot list — any port (`*`), UDP to any host or below a suffix —
    /// is the error, named.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, String> {
        let mut out: Vec<Endpoint> = Vec::new();
        let mut any_host: Vec<u16> = Vec::new();
        for rule in &self.rules {
            let PortPattern::Port(port) = rule.port else {
                return Err(format!("{}: any port (*)", rule.grant));
            };
            let addrs: Vec<IpAddr> = match &rule.host {
                HostPattern::Name(n) => self
                    .pinned
                    .iter()
                    .filter(|p| &p.name == n)
                    .flat_map(|p| p.addrs.iter().copied())
                    .collect(),
                HostPattern::Ip(a) if may_connect(canonical(*a), true).is_ok() => {
                    vec![canonical(*a)]
                }
                HostPattern::Ip(_) => Vec::new(),
                HostPattern::Any | HostPattern::Suffix(_) if !rule.udp => {
                    any_host.push(port);
                    vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)]
                }
                HostPattern::Any => return Err(format!("{}: UDP to any host (*)", rule.grant)),
                HostPattern::Suffix(_) => {
                    return Err(format!("{}: UDP to names below a suffix (*.)", rule.grant))
                }
            };
            for ip in addrs {
                if !out.contains(&(ip, port, rule.udp)) {
                    out.push((ip, port, rule.udp));
                }
            }
        }
        out.retain(|&(ip, port, udp)| udp || ip.is_unspecified() || !any_host.contains(&port));
        Ok(out)
    }
}

impl EgressPlan {
    /// Whether the proxy may carry a request for `host` (a Host header or
    /// a TLS server name, as the program sent it) over a connection to
    /// `ip`: a `net:http`/`net:https` grant of that kind must name the
    /// host, and `ip` must be an address pinned for it in this run — so a
    /// granted address cannot be used to reach another name it serves.
    /// Returns the deciding grant, or why not.
    pub fn decide_host(&self, host: &str, ip: IpAddr, proxy: Proxy) -> Result<String, String> {
        let ip = canonical(ip);
        let host = normal_host(host, proxy);
        let what = match proxy {
            Proxy::Http => "Host",
            Proxy::Tls => "TLS server name",
        };
        let Some(host) = host else {
            return Err(format!("{what} is missing or malformed"));
        };
        for rule in self.rules.iter().filter(|r| r.proxy == Some(proxy)) {
            let ok = match &rule.host {
                HostPattern::Name(n) => {
                    *n == host
                        && self
                            .pinned
                            .iter()
                            .any(|p| p.name == host && p.addrs.contains(&ip))
                }
                HostPattern::Suffix(_) => {
                    rule.host.covers(&HostPattern::Name(host.clone()))
                        && self
                            .resolved_later()
                            .iter()
                            .any(|p| p.name == host && p.addrs.contains(&ip))
                }
                HostPattern::Any => true,
                HostPattern::Ip(a) => {
                    host.parse::<IpAddr>()
                        .is_ok_and(|h| canonical(h) == canonical(*a))
                        && canonical(*a) == ip
                }
            };
            if ok {
                return Ok(rule.grant.clone());
            }
        }
        Err(format!(
            "{what} {} is not granted for {ip} ({})",
            crate::printable_host(&host),
            match proxy {
                Proxy::Http => "net:http",
                Proxy::Tls => "net:http or net:https",
            }
        ))
    }
}

/// `host` as a grant names it: lower case, no trailing dot, no port (an
/// HTTP Host may carry one: it must be the proxied port's default or
/// absent), IPv6 without brackets. `None` when it is not a host.
fn normal_host(host: &str, proxy: Proxy) -> Option<String> {
    let host = host.trim();
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        (inner, after.strip_prefix(':'))
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) if !n.contains(':') => (n, Some(p)),
            _ => (host, None),
        }
    };
    if let Some(port) = port {
        let default = if proxy == Proxy::Http { "80" } else { "443" };
        if port != default {
            return None;
        }
    }
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'));
    valid.then_some(name)
}

/// An address and port as written in a capability (`[::1]:80`).
struct Dest(IpAddr, u16);

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}:{}", self.1),
            IpAddr::V6(v6) => write!(f, "[{v6}]:{}", self.1),
        }
    }
}

fn describe(class: AddrClass) -> &'static str {
    class.describe()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[&str]) -> Vec<Capability> {
        list.iter().map(|c| c.parse().expect(c)).collect()
    }

    fn hosts() -> HostsFile {
        HostsFile::parse(
            "# test\n11.22.33.44 api.example  api2.example\n2a00:1::5 api.example\n\
             10.0.0.7 intranet.example\n127.0.0.1 sneaky.example\n169.254.169.254 meta.example\n",
        )
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn no_net_grant_no_plan() {
        assert!(EgressPlan::from_capabilities(&caps(&["fs:read:/tmp"]), &hosts()).is_none());
    }

    #[test]
    fn a_granted_name_reaches_its_pinned_addresses_on_its_port_only() {
        let plan = EgressPlan::from_capabilities(&caps(&["net:connect:api.example:443"]), &hosts())
            .unwrap();
        assert_eq!(
            plan.pinned(),
            &[Pinned {
                name: "api.example".into(),
                addrs: vec![ip("11.22.33.44"), ip("2a00:1::5")]
            }]
        );
        assert!(
            matches!(plan.decide(ip("11.22.33.44"), 443), Verdict::Allowed { name: Some(n), .. } if n == "api.example")
        );
        assert!(matches!(
            plan.decide(ip("::ffff:11.22.33.44"), 443),
            Verdict::Allowed { .. }
        ));
        assert!(matches!(
            plan.decide(ip("2a00:1::5"), 443),
            Verdict::Allowed { .. }
        ));
        for (addr, port) in [("11.22.33.44", 80), ("11.22.33.45", 443), ("8.8.8.8", 443)] {
            let Verdict::Refused(why) = plan.decide(ip(addr), port) else {
                panic!("{addr}:{port} allowed")
            };
            assert!(why.starts_with("no net:connect grant covers"), "{why}");
        }
        assert_eq!(
            plan.hosts_lines(),
            "11.22.33.44\tapi.example\n2a00:1::5\tapi.example\n"
        );
    }

    #[test]
    fn names_resolving_to_forbidden_addresses_pin_nothing() {
        let plan = EgressPlan::from_capabilities(
            &caps(&[
                "net:connect:sneaky.example:80",
                "net:connect:meta.example:80",
                "net:connect:intranet.example:80",
                "net:connect:missing.example:80",
            ]),
            &hosts(),
        )
        .unwrap();
        assert!(plan.pinned().iter().all(|p| p.addrs.is_empty()));
        assert_eq!(plan.warnings.len(), 4, "{:?}", plan.warnings);
        assert!(plan.warnings[0].contains("loopback"), "{:?}", plan.warnings);
        assert!(plan.warnings[3].contains("did not resolve"));
        for a in ["127.0.0.1", "169.254.169.254", "10.0.0.7"] {
            assert!(matches!(plan.decide(ip(a), 80), Verdict::Refused(_)), "{a}");
        }
    }

    #[test]
    fn literals_private_only_when_named_and_never_the_forbidden_classes() {
        let plan = EgressPlan::from_capabilities(
            &caps(&[
                "net:connect:10.0.0.7:5432",
                "net:connect:*:443",
                "net:connect:169.254.169.254:80",
                "net:connect:[::1]:80",
            ]),
            &hosts(),
        )
        .unwrap();
        assert!(matches!(
            plan.decide(ip("10.0.0.7"), 5432),
            Verdict::Allowed { name: None, .. }
        ));
        // `*` opens public addresses, not private or worse ones.
        assert!(matches!(
            plan.decide(ip("8.8.8.8"), 443),
            Verdict::Allowed { .. }
        ));
        let Verdict::Refused(why) = plan.decide(ip("10.0.0.8"), 443) else {
            panic!()
        };
        assert!(why.contains("private"), "{why}");
        for (a, word) in [
            ("169.254.169.254", "metadata"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
        ] {
            let port = if a == "::ffff:127.0.0.1" { 443 } else { 80 };
            let Verdict::Refused(why) = plan.decide(ip(a), port) else {
                panic!("{a} allowed")
            };
            assert!(why.contains(word), "{why}");
        }
    }

    #[test]
    fn udp_grants_open_udp_only_and_tcp_grants_tcp_only() {
        let plan = EgressPlan::from_capabilities(
            &caps(&[
                "net:connect:udp:api.example:53",
                "net:connect:api.example:443",
            ]),
            &hosts(),
        )
        .unwrap();
        assert!(matches!(
            plan.decide_proto(ip("11.22.33.44"), 53, true),
            Verdict::Allowed { .. }
        ));
        assert!(matches!(
            plan.decide_proto(ip("11.22.33.44"), 53, false),
            Verdict::Refused(_)
        ));
        assert!(
            matches!(plan.decide_proto(ip("11.22.33.44"), 443, true), Verdict::Refused(w) if w.contains("udp"))
        );
        assert!(matches!(
            plan.decide(ip("11.22.33.44"), 443),
            Verdict::Allowed { .. }
        ));
        assert_eq!(plan.pinned().len(), 1, "one name, resolved once");
    }

    #[test]
    fn a_hosts_file_with_a_bad_line_names_it() {
        assert_eq!(HostsFile::parse("1.2.3.4 a\nnope b\n").unwrap_err().0, 2);
        assert_eq!(HostsFile::parse("1.2.3.4\n").unwrap_err().0, 1);
    }

    #[test]
    fn http_grants_open_their_names_ports_through_the_proxy_only_for_that_name() {
        let plan = EgressPlan::from_capabilities(
            &caps(&[
                "net:http:api.example",
                "net:https:intranet.example",
                "net:https:10.0.0.7",
                "net:connect:api2.example:8080",
            ]),
            &hosts(),
        )
        .unwrap();
        let proxied = |addr: &str, port| match plan.decide(ip(addr), port) {
            Verdict::Allowed { proxy, .. } => proxy,
            Verdict::Refused(why) => panic!("{addr}:{port} refused: {why}"),
        };
        assert_eq!(proxied("11.22.33.44", 80), Some(Proxy::Http));
        assert_eq!(proxied("11.22.33.44", 443), Some(Proxy::Tls));
        // A plain grant wins where both cover the address.
        assert_eq!(proxied("11.22.33.44", 8080), None);
        // A private address only through a grant naming the address
        // (intranet.example resolves to it, and is not kept); TLS only.
        assert_eq!(proxied("10.0.0.7", 443), Some(Proxy::Tls));
        assert!(matches!(
            plan.decide(ip("10.0.0.7"), 80),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            plan.decide(ip("11.22.33.44"), 22),
            Verdict::Refused(_)
        ));

        let a = ip("11.22.33.44");
        assert!(plan.decide_host("api.example", a, Proxy::Http).is_ok());
        assert!(plan.decide_host("API.Example.:80", a, Proxy::Http).is_ok());
        assert!(plan.decide_host("api.example", a, Proxy::Tls).is_ok());
        // api2.example shares the address but is granted net:connect only.
        let why = plan
            .decide_host("api2.example", a, Proxy::Http)
            .unwrap_err();
        assert!(why.contains("Host api2.example is not granted"), "{why}");
        assert!(plan
            .decide_host("api.example:8080", a, Proxy::Http)
            .is_err());
        assert!(plan.decide_host("", a, Proxy::Http).is_err());
        assert!(plan.decide_host("evil.example", a, Proxy::Tls).is_err());
        // A granted name over another name's address is refused.
        assert!(plan.decide_host("intranet.example", a, Proxy::Tls).is_err());
        assert!(plan
            .decide_host("intranet.example", ip("10.0.0.7"), Proxy::Tls)
            .is_err());
        assert!(plan
            .decide_host("10.0.0.7", ip("10.0.0.7"), Proxy::Tls)
            .is_ok());
        // net:https does not open plain HTTP.
        assert!(plan
            .decide_host("10.0.0.7", ip("10.0.0.7"), Proxy::Http)
            .is_err());
    }

    #[test]
    fn net_dns_alone_makes_a_plan_that_opens_nothing() {
        let plan = EgressPlan::from_capabilities(&caps(&["net:dns"]), &hosts()).unwrap();
        assert!(plan.pinned().is_empty());
        assert!(matches!(
            plan.decide(ip("11.22.33.44"), 443),
            Verdict::Refused(_)
        ));
        assert_eq!(plan.endpoints(), Ok(Vec::new()));
    }

    #[test]
    fn endpoints_list_each_pinned_address_and_one_listener_per_wildcard_port() {
        let any = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let plan = EgressPlan::from_capabilities(
            &caps(&[
                "net:connect:api.example:8443",
                "net:connect:api.example:443",
                "net:connect:*:443",
                "net:http:*.example.org",
            ]),
            &hosts(),
        )
        .unwrap();
        let mut got = plan.endpoints().unwrap();
        got.sort();
        let api = plan
            .pinned()
            .iter()
            .find(|p| p.name == "api.example")
            .unwrap()
            .addrs
            .clone();
        let mut want: Vec<Endpoint> = api.iter().map(|&a| (a, 8443, false)).collect();
        want.extend([(any, 443, false), (any, 80, false)]);
        want.sort();
        assert_eq!(got, want);
        for grant in [
            "net:connect:api.example:*",
            "net:connect:udp:*:53",
            "net:connect:udp:*.example.org:53",
        ] {
            let plan = EgressPlan::from_capabilities(&caps(&[grant]), &hosts()).unwrap();
            assert!(plan.endpoints().unwrap_err().contains(grant), "{grant}");
        }
    }
}

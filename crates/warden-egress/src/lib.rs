//! Which destination addresses a run's network grants can ever reach
//! (issue 17, the first piece): every IPv4 and IPv6 address is put in a
//! class, and the class says whether a connection there may be made at
//! all, may be made only when a grant names the address itself, or never.
//!
//! IPv6 forms that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`,
//! IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`)
//! are classed by the IPv4 address they carry, so that `::ffff:127.0.0.1`
//! is loopback and `64:ff9b::a9fe:a9fe` is the metadata service, not a
//! public address.
//!
//! [`EgressPlan`] turns a run's `net:connect` grants into the addresses and
//! ports its connections may go to: names are resolved once, before the
//! run, and every later connection is judged against those addresses only.
//!
//! [`RunNames`] serves connections Warden makes on a run's behalf (the WASM
//! `http` host): each name resolved at most once per run, when first asked,
//! and only the addresses its class allows handed out.
#![forbid(unsafe_code)]

mod dns;
mod names;
mod plan;

pub use dns::Query as DnsQuery;

pub use names::{Reachable, RunNames, Unreachable};

pub use plan::{
    EgressError, EgressPlan, Endpoint, HostsFile, Pinned, Proxy, Resolve, SystemResolver, Verdict,
    HOSTS_ENV,
};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A name from the network (a Host header, a TLS server name) fit for a
/// report: printable, and cut at 255 bytes.
pub fn printable_host(name: &str) -> String {
    let cut: String = name.chars().take(255).collect();
    cut.escape_debug().to_string()
}

/// What an address is, for egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    /// Globally routable: reachable when a grant's host resolves to it.
    Public,
    /// RFC 1918, RFC 4193 unique-local, 100.64.0.0/10 shared address
    /// space: reachable only when a grant names the address (or its
    /// literal) itself, never through a name that resolves to it.
    Private,
    /// The host's own loopback (127.0.0.0/8, ::1): never.
    Loopback,
    /// Link-local (169.254.0.0/16, fe80::/10): never.
    LinkLocal,
    /// A cloud instance-metadata service (169.254.169.254, fd00:ec2::254,
    /// 100.100.100.200): never, even when named.
    Metadata,
    /// Unspecified, multicast, broadcast, "this network", reserved,
    /// documentation and benchmarking ranges: never.
    Unroutable,
}

/// How an address may be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Through any grant whose host resolves to it.
    Granted,
    /// Only through a grant that names this address.
    OnlyNamed,
    /// Never.
    Never,
}

impl AddrClass {
    pub fn reach(self) -> Reach {
        match self {
            AddrClass::Public => Reach::Granted,
            AddrClass::Private => Reach::OnlyNamed,
            AddrClass::Loopback
            | AddrClass::LinkLocal
            | AddrClass::Metadata
            | AddrClass::Unroutable => Reach::Never,
        }
    }

    /// The class as a phrase: `a host loopback address`.
    pub fn describe(self) -> &'static str {
        match self {
            AddrClass::Public => "a public address",
            AddrClass::Private => "a private address (reachable only through a grant naming it)",
            AddrClass::Loopback => "a host loopback address",
            AddrClass::LinkLocal => "a link-local address",
            AddrClass::Metadata => "a cloud metadata address",
            AddrClass::Unroutable => "an unroutable or reserved address",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AddrClass::Public => "public",
            AddrClass::Private => "private",
            AddrClass::Loopback => "loopback",
            AddrClass::LinkLocal => "link-local",
            AddrClass::Metadata => "metadata",
            AddrClass::Unroutable => "unroutable",
        }
    }
}

/// `ip` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) written as
/// the IPv4 address it is: the form grants and pinned names are compared in.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The class of `ip`.
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Whether a connection to `ip` may be made for a grant; `named`: the
/// grant names this address itself (a literal), rather than a host name
/// that resolved to it.
pub fn may_connect(ip: IpAddr, named: bool) -> Result<(), AddrClass> {
    let class = classify(ip);
    match (class.reach(), named) {
        (Reach::Granted, _) | (Reach::OnlyNamed, true) => Ok(()),
        _ => Err(class),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    const METADATA: [[u8; 4]; 2] = [[169, 254, 169, 254], [100, 100, 100, 200]];
    if METADATA.contains(&ip.octets()) {
        return AddrClass::Metadata;
    }
    let unroutable: [([u8; 4], u32); 10] = [
        ([0, 0, 0, 0], 8),       // "this network"
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // TEST-NET-1
        ([198, 51, 100, 0], 24), // TEST-NET-2
        ([203, 0, 113, 0], 24),  // TEST-NET-3
        ([198, 18, 0, 0], 15),   // benchmarking
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, and the broadcast address
        ([192, 88, 99, 0], 24),  // deprecated 6to4 relay anycast
        ([255, 255, 255, 255], 32),
    ];
    if ip.is_loopback() {
        AddrClass::Loopback
    } else if in_v4(ip, [169, 254, 0, 0], 16) {
        AddrClass::LinkLocal
    } else if unroutable.iter().any(|&(net, p)| in_v4(ip, net, p)) {
        AddrClass::Unroutable
    } else if ip.is_private() || in_v4(ip, [100, 64, 0, 0], 10) {
        AddrClass::Private
    } else {
        AddrClass::Public
    }
}

/// The IPv4 address an IPv6 address carries, if it is one of the forms
/// that reach an IPv4 host.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        // IPv4-mapped ::ffff:a.b.c.d and IPv4-compatible ::a.b.c.d
        // (but not :: and ::1 themselves).
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(last),
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(last),
        // NAT64, the well-known prefix 64:ff9b::/96.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(last),
        // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
        [0x2002, a, b, ..] => Some(Ipv4Addr::new(
            (a >> 8) as u8,
            a as u8,
            (b >> 8) as u8,
            b as u8,
        )),
        _ => None,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let s = ip.segments();
    if ip
        == "fd00:ec2::254"
            .parse::<Ipv6Addr>()
            .unwrap_or(Ipv6Addr::UNSPECIFIED)
    {
        return AddrClass::Metadata;
    }
    if ip.is_loopback() {
        AddrClass::Loopback
    } else if s[0] & 0xffc0 == 0xfe80 {
        AddrClass::LinkLocal
    } else if ip.is_unspecified()
        || ip.is_multicast()
        // documentation 2001:db8::/32, discard-only 100::/64, Teredo
        // 2001::/32 (tunnels to arbitrary IPv4 hosts), ORCHID and site-local
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0)
        || (s[0] == 0x2001 && s[1] == 0)
        || (s[0] == 0x2001 && s[1] & 0xfff0 == 0x0010)
        || s[0] & 0xffc0 == 0xfec0
    {
        AddrClass::Unroutable
    } else if s[0] & 0xfe00 == 0xfc00 {
        AddrClass::Private
    } else if s[0] & 0xe000 == 0x2000 {
        // Global unicast 2000::/3.
        AddrClass::Public
    } else {
        AddrClass::Unroutable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(text: &str) -> AddrClass {
        classify(text.parse().expect("an address"))
    }

    #[test]
    fn ipv4_classes() {
        for (addr, want) in [
            ("93.184.216.34", AddrClass::Public),
            ("8.8.8.8", AddrClass::Public),
            ("127.0.0.1", AddrClass::Loopback),
            ("127.255.0.9", AddrClass::Loopback),
            ("10.1.2.3", AddrClass::Private),
            ("172.16.0.1", AddrClass::Private),
            ("172.31.255.255", AddrClass::Private),
            ("172.32.0.1", AddrClass::Public),
            ("192.168.1.1", AddrClass::Private),
            ("100.64.0.1", AddrClass::Private),
            ("100.128.0.1", AddrClass::Public),
            ("169.254.169.254", AddrClass::Metadata),
            ("100.100.100.200", AddrClass::Metadata),
            ("169.254.1.1", AddrClass::LinkLocal),
            ("0.0.0.0", AddrClass::Unroutable),
            ("0.1.2.3", AddrClass::Unroutable),
            ("224.0.0.1", AddrClass::Unroutable),
            ("239.255.255.250", AddrClass::Unroutable),
            ("255.255.255.255", AddrClass::Unroutable),
            ("240.0.0.1", AddrClass::Unroutable),
            ("192.0.2.1", AddrClass::Unroutable),
            ("198.18.0.1", AddrClass::Unroutable),
            ("198.51.100.7", AddrClass::Unroutable),
            ("203.0.113.7", AddrClass::Unroutable),
        ] {
            assert_eq!(class(addr), want, "{addr}");
        }
    }

    #[test]
    fn ipv6_classes_and_the_ipv4_they_carry() {
        for (addr, want) in [
            ("2606:4700::1111", AddrClass::Public),
            ("::1", AddrClass::Loopback),
            ("::", AddrClass::Unroutable),
            ("fe80::1", AddrClass::LinkLocal),
            ("febf::1", AddrClass::LinkLocal),
            ("fd00:ec2::254", AddrClass::Metadata),
            ("fd12:3456::1", AddrClass::Private),
            ("fc00::1", AddrClass::Private),
            ("ff02::1", AddrClass::Unroutable),
            ("2001:db8::1", AddrClass::Unroutable),
            ("2001:0:4136:e378::1", AddrClass::Unroutable),
            ("fec0::1", AddrClass::Unroutable),
            ("100::1", AddrClass::Unroutable),
            // IPv4 inside IPv6: classed as the IPv4 address.
            ("::ffff:127.0.0.1", AddrClass::Loopback),
            ("::ffff:169.254.169.254", AddrClass::Metadata),
            ("::ffff:10.0.0.1", AddrClass::Private),
            ("::ffff:8.8.8.8", AddrClass::Public),
            ("::127.0.0.1", AddrClass::Loopback),
            ("64:ff9b::a9fe:a9fe", AddrClass::Metadata),
            ("64:ff9b::7f00:1", AddrClass::Loopback),
            ("2002:7f00:1::1", AddrClass::Loopback),
            ("2002:a9fe:a9fe::", AddrClass::Metadata),
            ("2002:0808:0808::1", AddrClass::Public),
        ] {
            assert_eq!(class(addr), want, "{addr}");
        }
    }

    #[test]
    fn what_may_be_connected_to() {
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert_eq!(may_connect(ip("8.8.8.8"), false), Ok(()));
        // A private address only when the grant names it.
        assert_eq!(may_connect(ip("10.0.0.5"), false), Err(AddrClass::Private));
        assert_eq!(may_connect(ip("10.0.0.5"), true), Ok(()));
        // Never, named or not.
        for never in [
            "127.0.0.1",
            "::1",
            "169.254.169.254",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "fe80::1",
        ] {
            assert!(may_connect(ip(never), true).is_err(), "{never}");
            assert!(may_connect(ip(never), false).is_err(), "{never}");
        }
    }
}

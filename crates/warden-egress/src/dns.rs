//! The answers of a run's DNS stub: granted names only, each resolved once
//! per run by the supervisor (so a rebinding answer later changes
//! nothing), every other name NXDOMAIN. The stub's socket lives in the
//! jail backend; this is the part that reads a query and writes the reply.

use std::net::IpAddr;

use simple_dns::rdata::{RData, A, AAAA};
use simple_dns::{Name, Packet, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};
use warden_policy::HostPattern;

use crate::plan::{EgressPlan, Pinned, Resolve};
use crate::{canonical, may_connect};

/// TTL of the stub's answers: the run's addresses never change, but a
/// resolver that caches for long keeps nothing it should not.
const TTL: u32 = 60;

/// Names resolved through the stub at most (per run); past that, new
/// names are refused.
const MAX_NAMES: usize = 256;

/// What the stub did with one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub name: String,
    /// `A`, `AAAA` or another type's number.
    pub qtype: String,
    /// Answered (a granted name) or refused (NXDOMAIN).
    pub answered: bool,
    /// Why it was refused.
    pub reason: Option<&'static str>,
}

/// A lower-case name without its trailing dot.
fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn below(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len() + 1
        && name.ends_with(suffix)
        && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
}

impl EgressPlan {
    /// Whether a grant names `name` (exactly, by a `*.suffix` it is below,
    /// or `*`), TCP or UDP.
    fn grants_name(&self, name: &str) -> bool {
        self.rules().any(|(host, _)| match host {
            HostPattern::Name(n) => n == name,
            HostPattern::Suffix(s) => below(name, s),
            HostPattern::Any => true,
            HostPattern::Ip(_) => false,
        })
    }

    /// The addresses of granted `name`: pinned before the run, or resolved
    /// now by `resolver` (once: later queries get the same answer) and
    /// pinned for the rest of the run.
    fn addresses_of(&self, name: &str, resolver: &dyn Resolve) -> Option<Vec<IpAddr>> {
        if let Some(p) = self.pinned().iter().find(|p| p.name == name) {
            return Some(p.addrs.clone());
        }
        let mut later = self.resolved_later();
        if let Some(p) = later.iter().find(|p| p.name == name) {
            return Some(p.addrs.clone());
        }
        if later.len() >= MAX_NAMES {
            return None;
        }
        let addrs: Vec<IpAddr> = resolver
            .resolve(name)
            .unwrap_or_default()
            .into_iter()
            .map(canonical)
            .filter(|ip| may_connect(*ip, false).is_ok())
            .take(16)
            .collect();
        later.push(Pinned {
            name: name.to_string(),
            addrs: addrs.clone(),
        });
        Some(addrs)
    }

    /// Whether `ip` is an address a name below `suffix` (or any name, for
    /// `None`) was resolved to through the stub in this run.
    pub(crate) fn resolved_below(&self, suffix: Option<&str>, ip: IpAddr) -> Option<String> {
        self.resolved_later()
            .iter()
            .find(|p| suffix.is_none_or(|s| below(&p.name, s)) && p.addrs.contains(&ip))
            .map(|p| p.name.clone())
    }

    /// The reply to DNS query `packet` (a UDP payload), and what was asked;
    /// `None` for bytes that are not a query (nothing is answered).
    pub fn answer(&self, packet: &[u8], resolver: &dyn Resolve) -> Option<(Vec<u8>, Query)> {
        let query = Packet::parse(packet).ok()?;
        let question = query.questions.first()?.clone();
        let name = normal(&question.qname.to_string());
        let qtype = match question.qtype {
            QTYPE::TYPE(TYPE::A) => "A".to_string(),
            QTYPE::TYPE(TYPE::AAAA) => "AAAA".to_string(),
            QTYPE::TYPE(other) => format!("{}", u16::from(other)),
            _ => "other".to_string(),
        };
        let mut reply = Packet::new_reply(query.id());
        reply.questions.push(question.clone());
        let granted = self.grants_name(&name);
        let (addrs, reason) = match granted.then(|| self.addresses_of(&name, resolver)) {
            None => (None, Some("no grant names it")),
            Some(None) => (None, Some("the run resolved too many names already")),
            Some(Some(a)) if a.is_empty() => (
                None,
                Some("it resolves to no address the run may reach (loopback, private, metadata or none)"),
            ),
            Some(Some(a)) => (Some(a), None),
        };
        match &addrs {
            None => *reply.rcode_mut() = RCODE::NameError,
            Some(addrs) => {
                let owner = Name::new_unchecked(&name);
                for ip in addrs {
                    let rdata = match (ip, &question.qtype) {
                        (IpAddr::V4(v4), QTYPE::TYPE(TYPE::A)) => RData::A(A::from(*v4)),
                        (IpAddr::V6(v6), QTYPE::TYPE(TYPE::AAAA)) => RData::AAAA(AAAA::from(*v6)),
                        _ => continue,
                    };
                    reply
                        .answers
                        .push(ResourceRecord::new(owner.clone(), CLASS::IN, TTL, rdata));
                }
            }
        }
        let bytes = reply.build_bytes_vec().ok()?;
        Some((
            bytes,
            Query {
                name,
                qtype,
                answered: addrs.is_some(),
                reason,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::HostsFile;
    use crate::Verdict;
    use warden_policy::Capability;

    fn query(name: &str, qtype: TYPE) -> Vec<u8> {
        let mut q = Packet::new_query(7);
        q.questions.push(simple_dns::Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(qtype),
            simple_dns::QCLASS::CLASS(CLASS::IN),
            false,
        ));
        q.build_bytes_vec().unwrap()
    }

    fn answers(reply: &[u8]) -> (RCODE, Vec<String>) {
        let p = Packet::parse(reply).unwrap();
        let addrs = p
            .answers
            .iter()
            .map(|a| match &a.rdata {
                RData::A(a) => std::net::Ipv4Addr::from(a.address).to_string(),
                RData::AAAA(a) => std::net::Ipv6Addr::from(a.address).to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        (p.rcode(), addrs)
    }

    #[test]
    fn granted_names_answer_once_resolved_and_others_are_nxdomain() {
        let caps: Vec<Capability> = ["net:connect:*.example.com:443", "net:connect:api.test:80"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        let hosts = HostsFile::parse(
            "11.22.33.44 api.test\n11.22.33.45 a.example.com\n2a00:1::7 a.example.com\n\
             127.0.0.1 local.example.com\n",
        )
        .unwrap();
        let plan = EgressPlan::from_capabilities(&caps, &hosts).unwrap();
        let (reply, q) = plan
            .answer(&query("A.Example.com.", TYPE::A), &hosts)
            .unwrap();
        assert_eq!(
            answers(&reply),
            (RCODE::NoError, vec!["11.22.33.45".into()])
        );
        assert!(q.answered && q.name == "a.example.com" && q.qtype == "A");
        let (reply, _) = plan
            .answer(&query("a.example.com", TYPE::AAAA), &hosts)
            .unwrap();
        assert_eq!(answers(&reply).1, vec!["2a00:1::7".to_string()]);
        // The name is pinned now: a connection to its address is allowed.
        assert!(matches!(
            plan.decide("11.22.33.45".parse().unwrap(), 443),
            Verdict::Allowed { name: Some(n), .. } if n == "a.example.com"
        ));
        // The suffix itself, other names, loopback answers: nothing.
        for name in ["example.com", "evil.test", "local.example.com"] {
            let (reply, q) = plan.answer(&query(name, TYPE::A), &hosts).unwrap();
            assert_eq!(answers(&reply), (RCODE::NameError, vec![]), "{name}");
            assert!(!q.answered && q.reason.is_some(), "{q:?}");
        }
        let (_, q) = plan.answer(&query("evil.test", TYPE::A), &hosts).unwrap();
        assert!(!q.answered);
        // Pinned before the run: answered from the pin.
        let (reply, _) = plan.answer(&query("api.test", TYPE::A), &hosts).unwrap();
        assert_eq!(answers(&reply).1, vec!["11.22.33.44".to_string()]);
        // Junk is not answered at all.
        assert!(plan.answer(b"\x00\x01garbage", &hosts).is_none());
    }
}

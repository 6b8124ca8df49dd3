//! Host names of one run, each resolved at most once — when a connection
//! first asks for it — and pinned for the rest of the run, with every
//! address judged by its class before it is handed out. For connections
//! Warden makes itself on a run's behalf (the WASM `http` host): whoever
//! connects must connect to exactly the addresses [`RunNames::reach`]
//! returned, so that what the name resolves to later (a rebinding DNS
//! answer) changes nothing for the run.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

use crate::plan::{EgressError, EgressPlan, HostsFile, Pinned, Resolve};
use crate::{canonical, may_connect, AddrClass};

/// Most addresses kept for one name.
const MAX_ADDRS_PER_NAME: usize = 16;

/// Most names one run may resolve (then every new name fails): a guest
/// cannot grow the table without bound.
pub const MAX_NAMES_PER_RUN: usize = 256;

/// What a name resolved to, the first time it was asked in the run.
#[derive(Debug, Clone)]
enum Lookup {
    Found(Vec<IpAddr>),
    Failed(String),
}

/// The names a run has resolved, and the resolver it resolves them with.
pub struct RunNames {
    resolver: Box<dyn Resolve + Send + Sync>,
    pinned: Mutex<BTreeMap<String, Lookup>>,
}

impl std::fmt::Debug for RunNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunNames").finish_non_exhaustive()
    }
}

/// Where a connection to a host may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachable {
    /// The addresses it may go to, in the resolver's order (IPv4-mapped
    /// IPv6 addresses written as IPv4); never empty.
    pub addrs: Vec<IpAddr>,
    /// Addresses the name also resolved to that are never used, with their
    /// class (only on the call that resolved it).
    pub dropped: Vec<(IpAddr, AddrClass)>,
}

/// Why a connection to a host may not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreachable {
    /// The name did not resolve (now, or when it was first asked in this
    /// run): a failure, not a refusal.
    #[error("{name} did not resolve ({why})")]
    NotResolved { name: String, why: String },
    /// Every address of the host is of a class the connection may not
    /// reach: a refusal.
    #[error("{}", refusal(host, addrs))]
    Refused {
        host: String,
        addrs: Vec<(IpAddr, AddrClass)>,
    },
}

fn refusal(host: &str, addrs: &[(IpAddr, AddrClass)]) -> String {
    match addrs {
        [(ip, class)] if ip.to_string() == host => {
            format!(
                "{ip} is {}, which may not be connected to",
                class.describe()
            )
        }
        _ => {
            let each: Vec<String> = addrs
                .iter()
                .map(|(ip, class)| format!("{ip} ({})", class.describe()))
                .collect();
            format!(
                "{host} resolves only to {}, which may not be connected to",
                each.join(", ")
            )
        }
    }
}

impl RunNames {
    /// Names resolved by `resolver`.
    pub fn new(resolver: Box<dyn Resolve + Send + Sync>) -> RunNames {
        RunNames {
            resolver,
            pinned: Mutex::new(BTreeMap::new()),
        }
    }

    /// Names resolved as a jailed run resolves them: from the hosts file
    /// named by [`crate::HOSTS_ENV`] when it is set (read now), else by the
    /// system's resolver.
    pub fn for_run() -> Result<RunNames, EgressError> {
        Ok(RunNames::new(EgressPlan::run_resolver()?))
    }

    /// Names resolved from the hosts file at `path` (read now).
    pub fn from_hosts_file(path: &Path) -> Result<RunNames, EgressError> {
        Ok(RunNames::new(Box::new(HostsFile::read(path)?)))
    }

    /// The addresses a connection to `host` may go to. `host` is an IP
    /// address (IPv6 with or without brackets) or a name; `named`: a grant
    /// names that address itself (then a private address may be reached;
    /// for a name it does not matter — a name never opens a private
    /// address). A name is resolved the first time it is asked in this
    /// run, and that answer (or failure) is the answer for the rest of it.
    /// Loopback, link-local, metadata and unroutable addresses are never
    /// handed out.
    pub fn reach(&self, host: &str, named: bool) -> Result<Reachable, Unreachable> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return match may_connect(ip, named) {
                Ok(()) => Ok(Reachable {
                    addrs: vec![canonical(ip)],
                    dropped: Vec::new(),
                }),
                Err(class) => Err(Unreachable::Refused {
                    host: ip.to_string(),
                    addrs: vec![(ip, class)],
                }),
            };
        }
        let name = bare.to_ascii_lowercase();
        let (lookup, fresh) = self.lookup(&name);
        let addrs = match lookup {
            Lookup::Found(addrs) => addrs,
            Lookup::Failed(why) => return Err(Unreachable::NotResolved { name, why }),
        };
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for ip in addrs {
            match may_connect(ip, false) {
                Ok(()) => kept.push(ip),
                Err(class) => dropped.push((ip, class)),
            }
        }
        if kept.is_empty() {
            return Err(Unreachable::Refused {
                host: name,
                addrs: dropped,
            });
        }
        Ok(Reachable {
            addrs: kept,
            dropped: if fresh { dropped } else { Vec::new() },
        })
    }

    /// The names resolved so far and their addresses (every address, the
    /// refused ones included; none for a name that did not resolve).
    pub fn resolved(&self) -> Vec<Pinned> {
        self.table()
            .iter()
            .map(|(name, lookup)| Pinned {
                name: name.clone(),
                addrs: match lookup {
                    Lookup::Found(a) => a.clone(),
                    Lookup::Failed(_) => Vec::new(),
                },
            })
            .collect()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Lookup>> {
        self.pinned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pinned answer for `name`, resolving it if it is new (with the
    /// table locked: a name is resolved once even when two connections ask
    /// for it at the same time); and whether it was resolved just now.
    fn lookup(&self, name: &str) -> (Lookup, bool) {
        let mut table = self.table();
        if let Some(found) = table.get(name) {
            return (found.clone(), false);
        }
        if table.len() >= MAX_NAMES_PER_RUN {
            return (
                Lookup::Failed(format!("a run resolves at most {MAX_NAMES_PER_RUN} names")),
                false,
            );
        }
        let lookup = match self.resolver.resolve(name) {
            Ok(addrs) => {
                let mut out: Vec<IpAddr> = Vec::new();
                for ip in addrs.into_iter().map(canonical) {
                    if !out.contains(&ip) && out.len() < MAX_ADDRS_PER_NAME {
                        out.push(ip);
                    }
                }
                if out.is_empty() {
                    Lookup::Failed("no addresses".into())
                } else {
                    Lookup::Found(out)
                }
            }
            Err(e) => Lookup::Failed(e.to_string()),
        };
        table.insert(name.to_string(), lookup.clone());
        (lookup, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// Answers from a table that can change between calls, counting them.
    struct Changing {
        calls: Arc<AtomicU32>,
        answers: Answers,
    }

    impl Resolve for Changing {
        fn resolve(&self, name: &str) -> std::io::Result<Vec<IpAddr>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.answers
                .lock()
                .unwrap()
                .get(name)
                .cloned()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"))
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    type Answers = Arc<Mutex<BTreeMap<String, Vec<IpAddr>>>>;

    fn changing(pairs: &[(&str, &[&str])]) -> (RunNames, Arc<AtomicU32>, Answers) {
        let calls = Arc::new(AtomicU32::new(0));
        let answers = Arc::new(Mutex::new(
            pairs
                .iter()
                .map(|(n, a)| (n.to_string(), a.iter().map(|s| ip(s)).collect()))
                .collect(),
        ));
        let names = RunNames::new(Box::new(Changing {
            calls: calls.clone(),
            answers: answers.clone(),
        }));
        (names, calls, answers)
    }

    #[test]
    fn a_name_is_resolved_once_and_a_rebinding_answer_changes_nothing() {
        let (names, calls, answers) = changing(&[("api.test", &["11.22.33.44"])]);
        let first = names.reach("api.test", false).unwrap();
        assert_eq!(first.addrs, [ip("11.22.33.44")]);
        // The name now points at the metadata service, then at another
        // public address: the run keeps its first answer.
        for later in ["169.254.169.254", "8.8.8.8"] {
            answers
                .lock()
                .unwrap()
                .insert("api.test".into(), vec![ip(later)]);
            assert_eq!(names.reach("API.test", false).unwrap(), first);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A failure is pinned too.
        assert!(matches!(
            names.reach("gone.test", false),
            Err(Unreachable::NotResolved { .. })
        ));
        answers
            .lock()
            .unwrap()
            .insert("gone.test".into(), vec![ip("8.8.8.8")]);
        assert!(names.reach("gone.test", false).is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(names.resolved().len(), 2);
    }

    #[test]
    fn names_never_open_forbidden_or_private_addresses() {
        let (names, _, _) = changing(&[
            ("localhost", &["127.0.0.1", "::1"]),
            ("meta.test", &["169.254.169.254"]),
            ("intranet.test", &["10.0.0.7"]),
            ("mixed.test", &["127.0.0.1", "11.22.33.44"]),
            ("mapped.test", &["::ffff:127.0.0.1"]),
        ]);
        for (name, word) in [
            ("localhost", "loopback"),
            ("meta.test", "metadata"),
            ("intranet.test", "private"),
            ("mapped.test", "loopback"),
        ] {
            // Named or not: a name is not an address.
            for named in [false, true] {
                let err = names.reach(name, named).unwrap_err();
                assert!(matches!(err, Unreachable::Refused { .. }), "{name}");
                assert!(err.to_string().contains(word), "{err}");
                assert!(err.to_string().starts_with(name), "{err}");
            }
        }
        let mixed = names.reach("mixed.test", false).unwrap();
        assert_eq!(mixed.addrs, [ip("11.22.33.44")]);
        assert_eq!(mixed.dropped, [(ip("127.0.0.1"), AddrClass::Loopback)]);
        // Said once, when it was resolved.
        assert!(names.reach("mixed.test", false).unwrap().dropped.is_empty());
    }

    #[test]
    fn literals_are_checked_by_class_and_private_ones_need_naming() {
        let (names, calls, _) = changing(&[]);
        assert_eq!(
            names.reach("11.22.33.44", false).unwrap().addrs,
            [ip("11.22.33.44")]
        );
        assert_eq!(
            names.reach("[2a00:1::5]", false).unwrap().addrs,
            [ip("2a00:1::5")]
        );
        assert!(names.reach("10.0.0.7", false).is_err());
        assert_eq!(
            names.reach("10.0.0.7", true).unwrap().addrs,
            [ip("10.0.0.7")]
        );
        for never in [
            "127.0.0.1",
            "[::1]",
            "::ffff:127.0.0.1",
            "[::ffff:7f00:1]",
            "169.254.169.254",
            "[fd00:ec2::254]",
            "0.0.0.0",
            "[fe80::1]",
        ] {
            let err = names.reach(never, true).unwrap_err();
            assert!(
                err.to_string().contains("may not be connected to"),
                "{never}: {err}"
            );
        }
        let err = names.reach("127.0.0.1", true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "127.0.0.1 is a host loopback address, which may not be connected to"
        );
        // Literals are never looked up.
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn names_from_a_hosts_file() {
        let dir = std::env::temp_dir().join(format!("warden-egress-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hosts");
        std::fs::write(&path, "11.22.33.44 api.test\n").unwrap();
        let names = RunNames::from_hosts_file(&path).unwrap();
        // Read once: rewriting the file changes nothing for these names.
        std::fs::write(&path, "169.254.169.254 api.test\n").unwrap();
        assert_eq!(
            names.reach("api.test", false).unwrap().addrs,
            [ip("11.22.33.44")]
        );
        assert!(matches!(
            names.reach("other.test", false),
            Err(Unreachable::NotResolved { .. })
        ));
        std::fs::write(&path, "bad line\n").unwrap();
        assert!(RunNames::from_hosts_file(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

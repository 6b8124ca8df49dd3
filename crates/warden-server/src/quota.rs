//! Per-tenant quotas (`serve.quotas` in `warden.yaml`): runs at once, runs
//! per minute and CPU seconds per hour, checked after authentication (and
//! RBAC) and before a run is queued. Kept in memory: a restart forgets the
//! last minute's and hour's runs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use warden_engine::config::{Quota, Quotas};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// A refusal: which quota, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverQuota {
    /// `concurrent_runs`, `runs_per_minute`, `cpu_seconds_per_hour`.
    pub quota: &'static str,
    pub tenant: String,
    pub limit: u64,
    /// Seconds until a slot frees (at least 1).
    pub retry_after: u64,
}

impl std::fmt::Display for OverQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.quota {
            "concurrent_runs" => write!(
                f,
                "tenant {} has {} runs in progress, its concurrent_runs quota",
                self.tenant, self.limit
            ),
            "runs_per_minute" => write!(
                f,
                "tenant {} started {} runs in the last minute, its runs_per_minute quota",
                self.tenant, self.limit
            ),
            q => write!(
                f,
                "tenant {} reached its {q} quota of {}",
                self.tenant, self.limit
            ),
        }
    }
}

#[derive(Default)]
struct Usage {
    running: u32,
    started: VecDeque<Instant>,
    /// (when a run ended, its CPU milliseconds)
    cpu: VecDeque<(Instant, u64)>,
}

impl Usage {
    fn forget_before(&mut self, now: Instant) {
        while self
            .started
            .front()
            .is_some_and(|t| now.duration_since(*t) >= MINUTE)
        {
            self.started.pop_front();
        }
        while self
            .cpu
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= HOUR)
        {
            self.cpu.pop_front();
        }
    }

    fn idle(&self) -> bool {
        self.running == 0 && self.started.is_empty() && self.cpu.is_empty()
    }
}

/// The quotas in force and each tenant's use of them.
pub struct Tracker {
    quotas: Quotas,
    usage: Mutex<HashMap<String, Usage>>,
}

/// A run admitted under its tenant's quotas; gives its concurrency slot
/// back when dropped.
pub struct Slot {
    tracker: Arc<Tracker>,
    tenant: String,
    started: Instant,
}

fn ceil_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl Tracker {
    pub fn new(quotas: Quotas) -> Arc<Tracker> {
        Arc::new(Tracker {
            quotas,
            usage: Mutex::new(HashMap::new()),
        })
    }

    pub fn quota_of(&self, tenant: &str) -> Quota {
        self.quotas.of(tenant)
    }

    fn usage(&self) -> MutexGuard<'_, HashMap<String, Usage>> {
        // A panic while holding it cannot leave the counts half-changed
        // in a way that matters more than refusing every run would.
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a run of `tenant` at `now`, or says which quota refuses it.
    pub fn admit(self: &Arc<Self>, tenant: &str, now: Instant) -> Result<Slot, OverQuota> {
        let quota = self.quota_of(tenant);
        let mut all = self.usage();
        let usage = all.entry(tenant.to_string()).or_default();
        usage.forget_before(now);
        let over = |quota: &'static str, limit: u64, retry_after: u64| OverQuota {
            quota,
            tenant: tenant.to_string(),
            limit,
            retry_after: retry_after.max(1),
        };
        if let Some(n) = quota.concurrent_runs {
            if usage.running >= n.get() {
                return Err(over("concurrent_runs", n.get().into(), 1));
            }
        }
        if let Some(n) = quota.runs_per_minute {
            if usage.started.len() >= n.get() as usize {
                // The slot frees when the oldest start of the window
                // leaves it.
                let oldest = usage.started.front().copied().unwrap_or(now);
                let left = MINUTE.saturating_sub(now.duration_since(oldest));
                return Err(over("runs_per_minute", n.get().into(), ceil_secs(left)));
            }
        }
        if let Some(n) = quota.cpu_seconds_per_hour {
            let limit_ms = n.get().saturating_mul(1000);
            let mut used: u64 = usage.cpu.iter().map(|(_, ms)| *ms).sum();
            if used >= limit_ms {
                // Until enough of the hour's use has left the window.
                let mut frees = now;
                for (t, ms) in &usage.cpu {
                    used = used.saturating_sub(*ms);
                    frees = *t + HOUR;
                    if used < limit_ms {
                        break;
                    }
                }
                return Err(over(
                    "cpu_seconds_per_hour",
                    n.get(),
                    ceil_secs(frees.saturating_duration_since(now)),
                ));
            }
        }
        usage.running += 1;
        usage.started.push_back(now);
        Ok(Slot {
            tracker: self.clone(),
            tenant: tenant.to_string(),
            started: now,
        })
    }

    /// Runs of `tenant` admitted now.
    pub fn running(&self, tenant: &str) -> u32 {
        self.usage().get(tenant).map_or(0, |u| u.running)
    }
}

impl Slot {
    /// The run was not started after all (the worker queue was full): its
    /// start does not count against runs_per_minute.
    pub fn unstart(&self) {
        let mut all = self.tracker.usage();
        if let Some(u) = all.get_mut(&self.tenant) {
            if let Some(i) = u.started.iter().rposition(|t| *t == self.started) {
                u.started.remove(i);
            }
        }
    }

    /// The run used `cpu_ms` of CPU (its report's `cpu_ms`), charged to
    /// its tenant's hour when a CPU quota applies.
    pub fn charge_cpu(&self, cpu_ms: u64, now: Instant) {
        if self
            .tracker
            .quota_of(&self.tenant)
            .cpu_seconds_per_hour
            .is_none()
            || cpu_ms == 0
        {
            return;
        }
        let mut all = self.tracker.usage();
        if let Some(u) = all.get_mut(&self.tenant) {
            u.cpu.push_back((now, cpu_ms));
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut all = self.tracker.usage();
        if let Some(u) = all.get_mut(&self.tenant) {
            u.running = u.running.saturating_sub(1);
            u.forget_before(Instant::now());
            if u.idle() {
                all.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::{NonZeroU32, NonZeroU64};

    fn ledger(q: Quota) -> Arc<Tracker> {
        Tracker::new(Quotas {
            default: Quota::default(),
            tenants: [("acme".to_string(), q)].into(),
        })
    }

    #[test]
    fn concurrency_frees_when_a_slot_is_dropped() {
        let l = ledger(Quota {
            concurrent_runs: NonZeroU32::new(1),
            ..Quota::default()
        });
        let now = Instant::now();
        let first = l.admit("acme", now).expect("first");
        let e = l.admit("acme", now).err().expect("second refused");
        assert_eq!((e.quota, e.retry_after), ("concurrent_runs", 1));
        assert!(e.to_string().contains("acme"), "{e}");
        // Another tenant has no quota.
        let _other = l.admit("other", now).expect("other tenant");
        drop(first);
        assert_eq!(l.running("acme"), 0);
        l.admit("acme", now).expect("after the first ended");
    }

    #[test]
    fn runs_per_minute_says_when_the_oldest_leaves() {
        let l = ledger(Quota {
            runs_per_minute: NonZeroU32::new(2),
            ..Quota::default()
        });
        let t0 = Instant::now();
        drop(l.admit("acme", t0).expect("1"));
        drop(l.admit("acme", t0 + Duration::from_secs(10)).expect("2"));
        let e = l
            .admit("acme", t0 + Duration::from_millis(20_500))
            .err()
            .expect("3 refused");
        assert_eq!((e.quota, e.retry_after), ("runs_per_minute", 40));
        l.admit("acme", t0 + Duration::from_secs(61))
            .expect("later");
        // A start given back does not count.
        let l = ledger(Quota {
            runs_per_minute: NonZeroU32::new(1),
            ..Quota::default()
        });
        let s = l.admit("acme", t0).expect("1");
        s.unstart();
        drop(s);
        l.admit("acme", t0).expect("again");
    }

    #[test]
    fn cpu_per_hour_counts_finished_runs() {
        let l = ledger(Quota {
            cpu_seconds_per_hour: NonZeroU64::new(2),
            ..Quota::default()
        });
        let t0 = Instant::now();
        let s = l.admit("acme", t0).expect("1");
        s.charge_cpu(1500, t0);
        let keep = l.admit("acme", t0).expect("under");
        keep.charge_cpu(600, t0 + Duration::from_secs(100));
        drop((s, keep));
        let e = l
            .admit("acme", t0 + Duration::from_secs(200))
            .err()
            .expect("over");
        assert_eq!(e.quota, "cpu_seconds_per_hour");
        assert_eq!(e.retry_after, 3400);
        l.admit("acme", t0 + HOUR).expect("an hour later");
    }
}

//! What the run reached of its limits, from the kernel's counters (the
//! cgroup's `pids.events` and OOM kills, SIGXFSZ kills seen by the jail's
//! init, `/tmp`'s usage at the end) and the supervisor's (output), for the
//! report's `limits_reached` and `discarded`.

use std::path::Path;

use warden_core::{human_bytes, Discarded, EffectiveLimits, LimitReached, Status};

use crate::cgroup::LimitCounters;
use crate::child::Found;

/// What one run observed, as far as its limits go.
pub(crate) struct Seen<'a> {
    pub limits: &'a EffectiveLimits,
    pub status: Status,
    /// The program was stopped (killed) rather than ending by itself.
    pub stopped: bool,
    /// The program itself was killed by the OOM killer.
    pub program_oom_killed: bool,
    pub counters: Option<LimitCounters>,
    pub found: Option<Found>,
    /// Bytes written to stdout and stderr, and those within the limit.
    pub output_written: u64,
    pub output_kept: u64,
    pub truncated: bool,
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub(crate) fn limits_reached(seen: &Seen<'_>) -> Vec<LimitReached> {
    let l = seen.limits;
    let mut reached = Vec::new();
    let counters = seen.counters.unwrap_or_default();
    if counters.oom_kills > 0 || seen.status == Status::MemoryLimit {
        let kills = counters.oom_kills.max(1);
        let effect = if seen.program_oom_killed {
            format!(
                "{} by the kernel's OOM killer, the program among them",
                plural(kills, "process killed", "processes killed")
            )
        } else {
            format!(
                "{} by the kernel's OOM killer; the program went on",
                plural(kills, "process killed", "processes killed")
            )
        };
        reached.push(LimitReached::new(
            "memory",
            human_bytes(l.memory_bytes),
            effect,
            kills,
            seen.program_oom_killed,
        ));
    }
    if counters.forks_refused > 0 {
        reached.push(LimitReached::new(
            "pids",
            plural(u64::from(l.pids), "process", "processes"),
            plural(counters.forks_refused, "fork refused", "forks refused"),
            counters.forks_refused,
            false,
        ));
    }
    if seen.truncated {
        let dropped = seen.output_written.saturating_sub(seen.output_kept);
        let cut = if dropped > 0 {
            format!("output truncated ({dropped} bytes dropped)")
        } else {
            "output truncated".to_string()
        };
        let effect = if seen.stopped {
            format!("{cut}, program stopped")
        } else {
            cut
        };
        reached.push(LimitReached::new(
            "output",
            human_bytes(l.output_bytes),
            effect,
            1,
            seen.stopped,
        ));
    }
    if let Some(found) = seen.found {
        let mut effects = Vec::new();
        if found.xfsz_kills > 0 {
            effects.push(format!(
                "{} by SIGXFSZ",
                plural(found.xfsz_kills, "process killed", "processes killed")
            ));
        }
        if found.at_cap > 0 {
            effects.push(format!(
                "{} in /tmp left at exactly the cap (cut short?)",
                plural(found.at_cap, "file", "files")
            ));
        }
        if !effects.is_empty() {
            reached.push(LimitReached::new(
                "file_size",
                human_bytes(l.file_size_bytes),
                effects.join(", "),
                found.xfsz_kills + found.at_cap,
                false,
            ));
        }
        if found.tmp_full {
            reached.push(LimitReached::new(
                "tmpfs",
                human_bytes(l.tmpfs_bytes),
                format!(
                    "/tmp full at the end ({} used): writes failed with ENOSPC",
                    human_bytes(found.tmp_used)
                ),
                1,
                false,
            ));
        }
    }
    reached
}

/// Files left in the scratch working directory, when there is one and
/// init looked at it.
pub(crate) fn discarded(scratch: Option<&Path>, found: Option<Found>) -> Option<Discarded> {
    let (dir, found) = (scratch?, found?);
    Some(Discarded {
        files: found.scratch_files,
        bytes: found.scratch_bytes,
        dir: dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(limits: &EffectiveLimits) -> Seen<'_> {
        Seen {
            limits,
            status: Status::Exited,
            stopped: false,
            program_oom_killed: false,
            counters: None,
            found: None,
            output_written: 0,
            output_kept: 0,
            truncated: false,
        }
    }

    #[test]
    fn each_counter_is_one_entry_with_its_count() {
        let limits = EffectiveLimits::default();
        assert!(limits_reached(&seen(&limits)).is_empty());
        let mut s = seen(&limits);
        s.counters = Some(LimitCounters {
            oom_kills: 2,
            forks_refused: 212,
        });
        s.found = Some(Found {
            xfsz_kills: 1,
            at_cap: 1,
            tmp_full: true,
            tmp_used: 64 << 20,
            ..Found::default()
        });
        let r = limits_reached(&s);
        let names: Vec<&str> = r.iter().map(|r| &*r.limit).collect();
        assert_eq!(names, ["memory", "pids", "file_size", "tmpfs"]);
        assert_eq!(r[1].detail, "64 processes: 212 forks refused");
        assert_eq!(r[1].count, 212);
        assert_eq!(r[0].count, 2);
        assert!(
            r[0].detail.contains("the program went on"),
            "{}",
            r[0].detail
        );
        assert_eq!(r[2].count, 2);
        assert!(
            r[3].detail.starts_with("64 MiB: /tmp full"),
            "{}",
            r[3].detail
        );
    }

    #[test]
    fn output_cut_names_the_dropped_bytes() {
        let limits = EffectiveLimits::default();
        let mut s = seen(&limits);
        s.truncated = true;
        s.stopped = true;
        s.output_written = 100 << 20;
        s.output_kept = 64 << 20;
        let r = limits_reached(&s);
        assert_eq!(
            r[0].detail,
            format!(
                "64 MiB: output truncated ({} bytes dropped), program stopped",
                36 << 20
            )
        );
        assert!(r[0].stopped);
    }
}

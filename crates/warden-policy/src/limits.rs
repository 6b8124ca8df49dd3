//! Resource limits of a policy.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::capability::{Capability, NetLimit};
use crate::value::{
    format_duration, format_size, parse_count, parse_duration, parse_percent, parse_size,
    ValueError,
};

/// Resource limits. `None` means the policy sets no limit (the caller fills
/// in its defaults).
#[derive(Default, Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Memory in bytes (`memory`, `mem:limit`).
    pub memory: Option<u64>,
    /// CPU time (`cpu_time`).
    pub cpu_time: Option<Duration>,
    /// Wall-clock time (`wall_time`, `time:limit`).
    pub wall_time: Option<Duration>,
    /// Number of processes (`pids`, `proc:limit`).
    pub pids: Option<u32>,
    /// CPU share in percent of one core (`cpu`, `cpu:limit`).
    pub cpu_percent: Option<u32>,
    /// Bytes of captured output (`output`).
    pub output: Option<u64>,
    /// Largest file the code may write, in bytes (`file_size`).
    pub file_size: Option<u64>,
    /// Open file descriptors (`open_files`).
    pub open_files: Option<u64>,
    /// Size of the scratch tmpfs in bytes (`tmpfs`).
    pub tmpfs: Option<u64>,
    /// Bytes the run's network connections may move, both ways together
    /// (`net_bytes`, `net:limit:bytes`).
    pub net_bytes: Option<u64>,
    /// Connections the run may make (`net_connections`,
    /// `net:limit:connections`).
    pub net_connections: Option<u64>,
    /// How long a connection may go without data either way before it is
    /// cut (`net_idle`, `net:limit:idle`).
    pub net_idle: Option<Duration>,
}

/// One field of [`Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitField {
    /// `memory`.
    Memory,
    /// `cpu_time`.
    CpuTime,
    /// `wall_time`.
    WallTime,
    /// `pids`.
    Pids,
    /// `cpu`.
    Cpu,
    /// `output`.
    Output,
    /// `file_size`.
    FileSize,
    /// `open_files`.
    OpenFiles,
    /// `tmpfs`.
    Tmpfs,
    /// `net_bytes`.
    NetBytes,
    /// `net_connections`.
    NetConnections,
    /// `net_idle`.
    NetIdle,
}

/// The value of one limit, typed by its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LimitValue {
    /// A size in bytes.
    Bytes(u64),
    /// A duration.
    Time(Duration),
    /// A count.
    Count(u64),
    /// A percentage of one core.
    Percent(u32),
}

impl fmt::Display for LimitValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitValue::Bytes(b) => f.write_str(&format_size(*b)),
            LimitValue::Time(d) => f.write_str(&format_duration(*d)),
            LimitValue::Count(n) => write!(f, "{n}"),
            LimitValue::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl LimitField {
    /// Every limit, in the order of [`Limits`]' fields.
    pub const ALL: [LimitField; 12] = [
        LimitField::Memory,
        LimitField::CpuTime,
        LimitField::WallTime,
        LimitField::Pids,
        LimitField::Cpu,
        LimitField::Output,
        LimitField::FileSize,
        LimitField::OpenFiles,
        LimitField::Tmpfs,
        LimitField::NetBytes,
        LimitField::NetConnections,
        LimitField::NetIdle,
    ];

    /// The key of this limit in a policy's `limits` mapping.
    pub fn key(self) -> &'static str {
        match self {
            LimitField::Memory => "memory",
            LimitField::CpuTime => "cpu_time",
            LimitField::WallTime => "wall_time",
            LimitField::Pids => "pids",
            LimitField::Cpu => "cpu",
            LimitField::Output => "output",
            LimitField::FileSize => "file_size",
            LimitField::OpenFiles => "open_files",
            LimitField::Tmpfs => "tmpfs",
            LimitField::NetBytes => "net_bytes",
            LimitField::NetConnections => "net_connections",
            LimitField::NetIdle => "net_idle",
        }
    }

    /// The limit whose `limits` key is `key`.
    pub fn from_key(key: &str) -> Option<LimitField> {
        LimitField::ALL.into_iter().find(|f| f.key() == key)
    }

    /// Parses a value written for this limit.
    pub fn parse(self, text: &str) -> Result<LimitValue, ValueError> {
        Ok(match self {
            LimitField::Memory
            | LimitField::Output
            | LimitField::FileSize
            | LimitField::Tmpfs
            | LimitField::NetBytes => LimitValue::Bytes(parse_size(text)?),
            LimitField::NetConnections => LimitValue::Count(parse_count(text, u32::MAX.into())?),
            LimitField::NetIdle => LimitValue::Time(parse_duration(text)?),
            LimitField::CpuTime | LimitField::WallTime => LimitValue::Time(parse_duration(text)?),
            LimitField::Pids => LimitValue::Count(parse_count(text, u32::MAX.into())?),
            LimitField::OpenFiles => LimitValue::Count(parse_count(text, u64::MAX)?),
            LimitField::Cpu => LimitValue::Percent(parse_percent(text)?),
        })
    }

    /// The limit a limit capability sets, if it is one.
    pub fn of_capability(cap: &Capability) -> Option<(LimitField, LimitValue)> {
        match cap {
            Capability::MemLimit(b) => Some((LimitField::Memory, LimitValue::Bytes(*b))),
            Capability::CpuLimit(p) => Some((LimitField::Cpu, LimitValue::Percent(*p))),
            Capability::TimeLimit(d) => Some((LimitField::WallTime, LimitValue::Time(*d))),
            Capability::ProcLimit(n) => Some((LimitField::Pids, LimitValue::Count(u64::from(*n)))),
            Capability::NetLimit(NetLimit::Bytes(b)) => {
                Some((LimitField::NetBytes, LimitValue::Bytes(*b)))
            }
            Capability::NetLimit(NetLimit::Connections(n)) => {
                Some((LimitField::NetConnections, LimitValue::Count(*n)))
            }
            Capability::NetLimit(NetLimit::Idle(d)) => {
                Some((LimitField::NetIdle, LimitValue::Time(*d)))
            }
            _ => None,
        }
    }
}

/// Bounds every limit must meet, wherever it is written (a flag, a
/// policy's `limits`, a limit capability): `policy check` and `run` refuse
/// the same values.
pub mod bounds {
    use std::time::Duration;

    /// Smallest memory limit.
    pub const MIN_MEMORY: u64 = 1 << 20;
    /// Shortest wall-clock or CPU-time limit: deadlines and the report
    /// count whole milliseconds.
    pub const MIN_DURATION: Duration = Duration::from_millis(1);
    /// Longest wall-clock or CPU-time limit.
    pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
    /// Most processes and threads (pids.max takes at most the kernel's
    /// PID_MAX_LIMIT, 4194304, with the jail's init).
    pub const MAX_PIDS: u64 = 1 << 21;
    /// Fewest open files (a program needs its three standard streams).
    pub const MIN_OPEN_FILES: u64 = 4;
    /// Most open files (the kernel's default `fs.nr_open`).
    pub const MAX_OPEN_FILES: u64 = 1 << 20;
}

impl LimitField {
    /// Whether `value` is within this limit's [`bounds`]; the message names
    /// the limit as `name`.
    pub fn check_bounds(self, value: LimitValue, name: &str) -> Result<(), String> {
        use bounds::*;
        let fail = |why: String| Err(format!("{name} {why}"));
        match (self, value) {
            (LimitField::Memory, LimitValue::Bytes(b)) if b < MIN_MEMORY => {
                fail("must be at least 1MiB".into())
            }
            (
                LimitField::CpuTime | LimitField::WallTime | LimitField::NetIdle,
                LimitValue::Time(d),
            ) if d < MIN_DURATION => fail("must be at least 1ms".into()),
            (
                LimitField::CpuTime | LimitField::WallTime | LimitField::NetIdle,
                LimitValue::Time(d),
            ) if d > MAX_DURATION => fail("may be at most 365 days".into()),
            (LimitField::Pids, LimitValue::Count(0))
            | (LimitField::Tmpfs, LimitValue::Bytes(0))
            | (LimitField::Cpu, LimitValue::Percent(0)) => fail("must be greater than zero".into()),
            (LimitField::Pids, LimitValue::Count(n)) if n > MAX_PIDS => {
                fail(format!("may be at most {MAX_PIDS}"))
            }
            (LimitField::OpenFiles, LimitValue::Count(n)) if n < MIN_OPEN_FILES => {
                fail(format!("must be at least {MIN_OPEN_FILES}"))
            }
            (LimitField::OpenFiles, LimitValue::Count(n)) if n > MAX_OPEN_FILES => {
                fail(format!("may be at most {MAX_OPEN_FILES}"))
            }
            _ => Ok(()),
        }
    }
}

impl Limits {
    /// Checks every set limit against [`bounds`], naming a limit as its
    /// command-line flag would (`wall-time`, `open-files`).
    pub fn check_bounds(&self) -> Result<(), String> {
        for field in LimitField::ALL {
            if let Some(value) = self.get(field) {
                field.check_bounds(value, &field.key().replace('_', "-"))?;
            }
        }
        Ok(())
    }

    /// The value of `field`, if set.
    pub fn get(&self, field: LimitField) -> Option<LimitValue> {
        match field {
            LimitField::Memory => self.memory.map(LimitValue::Bytes),
            LimitField::CpuTime => self.cpu_time.map(LimitValue::Time),
            LimitField::WallTime => self.wall_time.map(LimitValue::Time),
            LimitField::Pids => self.pids.map(|n| LimitValue::Count(n.into())),
            LimitField::Cpu => self.cpu_percent.map(LimitValue::Percent),
            LimitField::Output => self.output.map(LimitValue::Bytes),
            LimitField::FileSize => self.file_size.map(LimitValue::Bytes),
            LimitField::OpenFiles => self.open_files.map(LimitValue::Count),
            LimitField::Tmpfs => self.tmpfs.map(LimitValue::Bytes),
            LimitField::NetBytes => self.net_bytes.map(LimitValue::Bytes),
            LimitField::NetConnections => self.net_connections.map(LimitValue::Count),
            LimitField::NetIdle => self.net_idle.map(LimitValue::Time),
        }
    }

    /// Sets `field`; a value of the wrong type for the field is ignored
    /// (values come from [`LimitField::parse`], which always matches).
    pub fn set(&mut self, field: LimitField, value: LimitValue) {
        match (field, value) {
            (LimitField::Memory, LimitValue::Bytes(b)) => self.memory = Some(b),
            (LimitField::CpuTime, LimitValue::Time(d)) => self.cpu_time = Some(d),
            (LimitField::WallTime, LimitValue::Time(d)) => self.wall_time = Some(d),
            (LimitField::Pids, LimitValue::Count(n)) => {
                self.pids = Some(u32::try_from(n).unwrap_or(u32::MAX))
            }
            (LimitField::Cpu, LimitValue::Percent(p)) => self.cpu_percent = Some(p),
            (LimitField::Output, LimitValue::Bytes(b)) => self.output = Some(b),
            (LimitField::FileSize, LimitValue::Bytes(b)) => self.file_size = Some(b),
            (LimitField::OpenFiles, LimitValue::Count(n)) => self.open_files = Some(n),
            (LimitField::Tmpfs, LimitValue::Bytes(b)) => self.tmpfs = Some(b),
            (LimitField::NetBytes, LimitValue::Bytes(b)) => self.net_bytes = Some(b),
            (LimitField::NetConnections, LimitValue::Count(n)) => self.net_connections = Some(n),
            (LimitField::NetIdle, LimitValue::Time(d)) => self.net_idle = Some(d),
            _ => {}
        }
    }

    /// Field-wise: `self`'s value where set, else `fallback`'s.
    pub fn or(&self, fallback: &Limits) -> Limits {
        Limits {
            memory: self.memory.or(fallback.memory),
            cpu_time: self.cpu_time.or(fallback.cpu_time),
            wall_time: self.wall_time.or(fallback.wall_time),
            pids: self.pids.or(fallback.pids),
            cpu_percent: self.cpu_percent.or(fallback.cpu_percent),
            output: self.output.or(fallback.output),
            file_size: self.file_size.or(fallback.file_size),
            open_files: self.open_files.or(fallback.open_files),
            tmpfs: self.tmpfs.or(fallback.tmpfs),
            net_bytes: self.net_bytes.or(fallback.net_bytes),
            net_connections: self.net_connections.or(fallback.net_connections),
            net_idle: self.net_idle.or(fallback.net_idle),
        }
    }

    /// The limits where `self` is above `ceiling`, each as
    /// `"memory 512MiB exceeds 256MiB"`. A limit unset on either side counts
    /// as within (the caller fills defaults before comparing).
    pub fn exceeding(&self, ceiling: &Limits) -> Vec<String> {
        LimitField::ALL
            .into_iter()
            .filter_map(|field| match (self.get(field), ceiling.get(field)) {
                (Some(mine), Some(max)) if mine > max => {
                    Some(format!("{} {mine} exceeds {max}", field.key()))
                }
                _ => None,
            })
            .collect()
    }

    /// True if no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn or_is_field_wise() {
        let child = Limits {
            memory: Some(1),
            ..Limits::default()
        };
        let parent = Limits {
            memory: Some(2),
            pids: Some(3),
            ..Limits::default()
        };
        assert_eq!(
            child.or(&parent),
            Limits {
                memory: Some(1),
                pids: Some(3),
                ..Limits::default()
            }
        );
    }

    #[test]
    fn exceeding_names_fields_and_values() {
        let mine = Limits {
            memory: Some(512 << 20),
            cpu_time: Some(Duration::from_secs(1)),
            cpu_percent: Some(200),
            pids: Some(10),
            ..Limits::default()
        };
        let ceiling = Limits {
            memory: Some(256 << 20),
            cpu_time: Some(Duration::from_secs(2)),
            cpu_percent: Some(50),
            open_files: Some(3),
            ..Limits::default()
        };
        assert_eq!(
            mine.exceeding(&ceiling),
            vec![
                "memory 512MiB exceeds 256MiB".to_owned(),
                "cpu 200% exceeds 50%".to_owned()
            ]
        );
        assert!(ceiling.exceeding(&ceiling).is_empty());
        assert!(Limits::default().exceeding(&ceiling).is_empty());
    }
}

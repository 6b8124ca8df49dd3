//! cgroup v1: one directory per controller hierarchy (memory, pids, cpu,
//! cpuacct), which may be co-mounted.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use warden_core::EffectiveLimits;

use std::os::fd::OwnedFd;

use super::{
    check_writable, clean_stale_in, kill_procs, open_for_join, own_dir, pids_max, read_keyed,
    read_u64, remove_dir_patiently, write, CgroupDriver, CgroupMount, JailCgroup, LimitCounters,
};

const CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "cpuacct"];
const CFS_PERIOD_US: u64 = 100_000;

pub struct V1Driver {
    /// Warden's parent directory in each controller's hierarchy, in
    /// CONTROLLERS order (co-mounted controllers share a path).
    parents: [PathBuf; 4],
}

impl V1Driver {
    pub(crate) fn new(mounts: &[CgroupMount], own_cgroups: &str) -> Result<Self, String> {
        let mut parents: Vec<PathBuf> = Vec::new();
        for controller in CONTROLLERS {
            let mount = mounts
                .iter()
                .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == controller))
                .ok_or_else(|| format!("the {controller} controller is not mounted"))?;
            let own = own_cgroups
                .lines()
                .find_map(|l| {
                    let mut parts = l.splitn(3, ':');
                    let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
                    ctrls.split(',').any(|c| c == controller).then_some(path)
                })
                .unwrap_or("/");
            let parent = own_dir(mount, own).join("warden");
            match fs::create_dir(&parent) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("cannot create {}: {e}", parent.display())),
            }
            check_writable(&parent)?;
            parents.push(parent);
        }
        let parents: [PathBuf; 4] = parents
            .try_into()
            .map_err(|_| "internal: controller count".to_string())?;
        Ok(V1Driver { parents })
    }

    fn distinct_parents(&self) -> Vec<&Path> {
        self.parents_for(&[true; 4])
    }

    /// Parent directories of the controllers marked in `wanted`, with
    /// co-mounted controllers (e.g. cpu,cpuacct) counted once.
    fn parents_for(&self, wanted: &[bool; 4]) -> Vec<&Path> {
        let mut v: Vec<&Path> = Vec::new();
        for (p, want) in self.parents.iter().zip(wanted) {
            if *want && !v.contains(&p.as_path()) {
                v.push(p);
            }
        }
        v
    }
}

impl CgroupDriver for V1Driver {
    fn mechanism(&self) -> &'static str {
        "cgroup_v1"
    }

    fn create(&self, name: &str, limits: &EffectiveLimits) -> io::Result<Box<dyn JailCgroup>> {
        // Every cgroup directory costs a mkdir, a join and an rmdir per run:
        // the cpu group is made only when a CPU share needs it. cpuacct is
        // always made, so that cpu_ms is right even for a killed run.
        let wanted = [true, true, limits.cpu_percent.is_some(), true];
        let dirs: Vec<PathBuf> = self
            .parents_for(&wanted)
            .iter()
            .map(|p| p.join(name))
            .collect();
        let mut group = V1Cgroup {
            memory: self.parents[0].join(name),
            pids: self.parents[1].join(name),
            cpu: self.parents[2].join(name),
            cpuacct: self.parents[3].join(name),
            dirs: Vec::new(),
        };
        for dir in dirs {
            fs::create_dir(&dir)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
            group.dirs.push(dir);
        }
        // From here on a failure drops `group`, whose Drop is not relied on:
        // callers call remove(); do it here on error.
        if let Err(e) = group.apply(limits) {
            let _ = group.remove();
            return Err(e);
        }
        Ok(Box::new(group))
    }

    fn clean_stale(&self) {
        for parent in self.distinct_parents() {
            clean_stale_in(parent);
        }
    }
}

/// What a v1 group's socket buffers may hold beside its memory limit.
fn socket_budget(memory_bytes: u64) -> u64 {
    (memory_bytes / 32).max(2 << 20)
}

struct V1Cgroup {
    memory: PathBuf,
    pids: PathBuf,
    cpu: PathBuf,
    cpuacct: PathBuf,
    dirs: Vec<PathBuf>,
}

impl V1Cgroup {
    fn apply(&self, limits: &EffectiveLimits) -> io::Result<()> {
        write(
            &self.memory.join("memory.limit_in_bytes"),
            limits.memory_bytes.to_string(),
        )?;
        // Count swap too, so the limit cannot be dodged by swapping out.
        let memsw = self.memory.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            write(&memsw, limits.memory_bytes.to_string())?;
        }
        let _ = write(&self.memory.join("memory.swappiness"), "0");
        // v1 charges socket buffers (TCP, and UDP through the same socket
        // accounting) to a counter of their own, and only once it has a
        // limit: without one, a program on loopback held a gigabyte in
        // unread send queues under a 32 MiB limit. Sockets get 1/32 of the
        // memory limit on top of it (so the two stay within 5% of it), and
        // at least 2 MiB: below that loopback TCP stalls on drops.
        let tcp = self.memory.join("memory.kmem.tcp.limit_in_bytes");
        if tcp.exists() {
            write(&tcp, socket_budget(limits.memory_bytes).to_string())?;
        }
        write(&self.pids.join("pids.max"), pids_max(limits.pids))?;
        if let Some(pct) = limits.cpu_percent {
            write(
                &self.cpu.join("cpu.cfs_period_us"),
                CFS_PERIOD_US.to_string(),
            )?;
            let quota = (CFS_PERIOD_US * pct as u64 / 100).max(1000);
            write(&self.cpu.join("cpu.cfs_quota_us"), quota.to_string())?;
        }
        Ok(())
    }
}

impl JailCgroup for V1Cgroup {
    fn join_handles(&self) -> io::Result<Vec<OwnedFd>> {
        self.dirs
            .iter()
            .map(|d| open_for_join(&d.join("tasks")))
            .collect()
    }

    fn cpu_usage_ns(&self) -> Option<u64> {
        read_u64(&self.cpuacct.join("cpuacct.usage"))
    }

    fn peak_memory_bytes(&self) -> Option<u64> {
        // Socket buffers are counted apart in v1: add their peak (an upper
        // bound of what the group held at once).
        let sockets = read_u64(&self.memory.join("memory.kmem.tcp.max_usage_in_bytes"));
        read_u64(&self.memory.join("memory.max_usage_in_bytes")).map(|m| m + sockets.unwrap_or(0))
    }

    fn limit_counters(&self) -> LimitCounters {
        LimitCounters {
            oom_kills: read_keyed(&self.memory.join("memory.oom_control"), "oom_kill").unwrap_or(0),
            forks_refused: read_keyed(&self.pids.join("pids.events"), "max").unwrap_or(0),
        }
    }

    fn kill_all(&self) {
        kill_procs(&self.pids);
    }

    fn remove(&self) -> io::Result<()> {
        let mut first_err = None;
        for dir in &self.dirs {
            if let Err(e) = remove_dir_patiently(dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

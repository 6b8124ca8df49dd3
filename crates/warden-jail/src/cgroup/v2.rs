//! cgroup v2: one unified hierarchy. Warden needs the memory, pids and cpu
//! controllers enabled for its parent group, which requires our own group
//! to be delegated to us (or to be the root).

use std::fs;
use std::io;
use std::path::PathBuf;

use warden_core::EffectiveLimits;

use std::os::fd::OwnedFd;

use super::{
    check_writable, clean_stale_in, kill_procs, open_for_join, own_dir, pids_max, read_keyed,
    read_u64, remove_dir_patiently, write, CgroupDriver, CgroupMount, JailCgroup, LimitCounters,
};

const NEEDED: [&str; 3] = ["memory", "pids", "cpu"];
const CPU_PERIOD_US: u64 = 100_000;

pub struct V2Driver {
    parent: PathBuf,
}

impl V2Driver {
    pub(crate) fn new(mounts: &[CgroupMount], own_cgroups: &str) -> Result<Self, String> {
        let mount = mounts
            .iter()
            .find(|m| m.fstype == "cgroup2")
            .ok_or("no cgroup2 filesystem is mounted")?;
        let own = own_cgroups
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/");
        Self::at(own_dir(mount, own))
    }

    /// Uses `own` (our own group's directory) as the delegation point.
    pub(crate) fn at(own: PathBuf) -> Result<Self, String> {
        let available = super::read_text(own.join("cgroup.controllers"))
            .map_err(|e| format!("cannot read {}/cgroup.controllers: {e}", own.display()))?;
        for c in NEEDED {
            if !available.split_whitespace().any(|a| a == c) {
                return Err(format!(
                    "the {c} controller is not available in {} (it may be bound to cgroup v1)",
                    own.display()
                ));
            }
        }
        let parent = own.join("warden");
        match fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", parent.display())),
        }
        check_writable(&parent)?;
        let enable = "+memory +pids +cpu";
        // Our own group may hold processes (the "no internal processes"
        // rule then forbids enabling controllers below it, except at the
        // root): say so rather than silently losing the limits.
        write(&own.join("cgroup.subtree_control"), enable).map_err(|e| {
            format!(
                "cannot enable controllers below {} ({e}); run warden in a delegated cgroup whose processes live in a leaf",
                own.display()
            )
        })?;
        write(&parent.join("cgroup.subtree_control"), enable)
            .map_err(|e| format!("cannot enable controllers in {}: {e}", parent.display()))?;
        Ok(V2Driver { parent })
    }
}

impl CgroupDriver for V2Driver {
    fn mechanism(&self) -> &'static str {
        "cgroup_v2"
    }

    fn create(&self, name: &str, limits: &EffectiveLimits) -> io::Result<Box<dyn JailCgroup>> {
        let dir = self.parent.join(name);
        fs::create_dir(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        let group = V2Cgroup { dir };
        if let Err(e) = group.apply(limits) {
            let _ = group.remove();
            return Err(e);
        }
        Ok(Box::new(group))
    }

    fn clean_stale(&self) {
        clean_stale_in(&self.parent);
    }
}

struct V2Cgroup {
    dir: PathBuf,
}

impl V2Cgroup {
    fn apply(&self, limits: &EffectiveLimits) -> io::Result<()> {
        write(
            &self.dir.join("memory.max"),
            limits.memory_bytes.to_string(),
        )?;
        let swap = self.dir.join("memory.swap.max");
        if swap.exists() {
            write(&swap, "0")?;
        }
        write(&self.dir.join("pids.max"), pids_max(limits.pids))?;
        if let Some(pct) = limits.cpu_percent {
            let quota = (CPU_PERIOD_US * pct as u64 / 100).max(1000);
            write(
                &self.dir.join("cpu.max"),
                format!("{quota} {CPU_PERIOD_US}"),
            )?;
        }
        Ok(())
    }
}

impl JailCgroup for V2Cgroup {
    fn join_handles(&self) -> io::Result<Vec<OwnedFd>> {
        // v2 has no per-thread move for a process; cgroup.procs it is.
        Ok(vec![open_for_join(&self.dir.join("cgroup.procs"))?])
    }

    fn cpu_usage_ns(&self) -> Option<u64> {
        read_keyed(&self.dir.join("cpu.stat"), "usage_usec").map(|us| us * 1000)
    }

    fn peak_memory_bytes(&self) -> Option<u64> {
        read_u64(&self.dir.join("memory.peak"))
    }

    fn limit_counters(&self) -> LimitCounters {
        LimitCounters {
            oom_kills: read_keyed(&self.dir.join("memory.events"), "oom_kill").unwrap_or(0),
            forks_refused: read_keyed(&self.dir.join("pids.events"), "max").unwrap_or(0),
        }
    }

    fn kill_all(&self) {
        // cgroup.kill (5.14+) kills atomically, including forking children.
        if write(&self.dir.join("cgroup.kill"), "1").is_err() {
            kill_procs(&self.dir);
        }
    }

    fn remove(&self) -> io::Result<()> {
        remove_dir_patiently(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan test: on a directory laid out like a delegated cgroup2
    /// group, the driver enables controllers and writes each limit.
    #[test]
    fn writes_limits_into_a_delegated_tree() {
        let root = std::env::temp_dir().join(format!("warden-v2-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let driver = V2Driver::at(root.clone()).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
            "+memory +pids +cpu"
        );
        let limits = EffectiveLimits {
            cpu_percent: Some(50),
            ..EffectiveLimits::default()
        };
        // A real cgroupfs creates the control files; a plain directory
        // accepts them as new files, which is what we read back.
        let group = driver.create("1-abc", &limits);
        let dir = root.join("warden/1-abc");
        assert!(group.is_ok(), "{:?}", group.err());
        assert_eq!(
            fs::read_to_string(dir.join("memory.max")).unwrap(),
            (512u64 << 20).to_string()
        );
        // 64 for the program, one for the jail's init.
        assert_eq!(fs::read_to_string(dir.join("pids.max")).unwrap(), "65");
        assert_eq!(
            fs::read_to_string(dir.join("cpu.max")).unwrap(),
            "50000 100000"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn refuses_when_controllers_are_bound_elsewhere() {
        let root = std::env::temp_dir().join(format!("warden-v2-test2-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("cgroup.controllers"), "hugetlb\n").unwrap();
        let err = V2Driver::at(root.clone()).err().unwrap();
        assert!(err.contains("memory controller is not available"), "{err}");
        fs::remove_dir_all(&root).unwrap();
    }
}

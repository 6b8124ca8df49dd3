//! The container's cgroup at `linux.cgroupsPath`, on cgroup v1 (one
//! directory per mounted hierarchy) or v2 (one directory), with the
//! spec's resources written into it. This host has v1 controllers beside
//! an empty v2 mount: v2 is used only when it carries the memory
//! controller.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxResources,
};

use crate::OciError;

/// The container's cgroup directories.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Cgroup {
    /// (controllers, directory): for v1 each hierarchy's, for v2 one with
    /// `["unified"]`.
    pub dirs: Vec<(Vec<String>, PathBuf)>,
    pub v2: bool,
}

/// The cgroup path the container gets, relative to each hierarchy's root:
/// `linux.cgroupsPath` as given (`/a/b`, or `a/b`), systemd's
/// `slice:prefix:name` form as the directory systemd would make
/// (`/slice/prefix-name.scope`; systemd itself is not asked), else
/// `/warden-oci/ID`.
pub fn relative_path(given: Option<&Path>, id: &str) -> PathBuf {
    let Some(given) = given.filter(|p| !p.as_os_str().is_empty()) else {
        return PathBuf::from("/warden-oci").join(id);
    };
    let text = given.to_string_lossy();
    if !text.starts_with('/') {
        let parts: Vec<&str> = text.split(':').collect();
        if parts.len() == 3 {
            let slice = if parts[0].is_empty() {
                "system.slice"
            } else {
                parts[0]
            };
            let unit = if parts[2].ends_with(".slice") {
                parts[2].to_string()
            } else if parts[1].is_empty() {
                format!("{}.scope", parts[2])
            } else {
                format!("{}-{}.scope", parts[1], parts[2])
            };
            return PathBuf::from("/").join(slice).join(unit);
        }
    }
    PathBuf::from("/").join(given.strip_prefix("/").unwrap_or(given))
}

/// A device rule as the v1 controller reads it: `TYPE MAJOR:MINOR ACCESS`.
fn device_rule(r: &LinuxDeviceCgroup) -> Result<String, OciError> {
    let typ = match r.typ() {
        None | Some(LinuxDeviceType::A) => "a",
        Some(LinuxDeviceType::B) => "b",
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => "c",
        Some(LinuxDeviceType::P) => {
            return Err(OciError::Config(
                "config.json: linux.resources.devices: type \"p\" (a FIFO) has no device rule"
                    .into(),
            ))
        }
    };
    let access = r.access().as_deref().unwrap_or("rwm");
    let access = if access.is_empty() { "rwm" } else { access };
    if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(OciError::Config(format!(
            "config.json: linux.resources.devices: access {access:?} is not a subset of \"rwm\""
        )));
    }
    let number = |n: Option<i64>, what: &str| match n {
        None | Some(-1) => Ok("*".to_string()),
        Some(n) if (0..=u32::MAX as i64).contains(&n) => Ok(n.to_string()),
        Some(n) => Err(OciError::Config(format!(
            "config.json: linux.resources.devices: {what} {n} is out of range"
        ))),
    };
    if typ == "a" && r.major().is_none() && r.minor().is_none() {
        return Ok("a".into());
    }
    Ok(format!(
        "{typ} {}:{} {access}",
        number(r.major(), "major")?,
        number(r.minor(), "minor")?
    ))
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), OciError> {
    let path = dir.join(file);
    std::fs::write(&path, value)
        .map_err(|e| OciError::Io(format!("write {value:?} to {}", path.display()), e))
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> OciError {
    move |e| OciError::Io(what, e)
}

impl Cgroup {
    /// Makes the directories at `rel` in every hierarchy and writes
    /// `resources` into them.
    pub fn create(rel: &Path, resources: Option<&LinuxResources>) -> Result<Cgroup, OciError> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(io("read /proc/self/mountinfo".into()))?;
        let mounts = warden_jail::cgroup_mounts(&mountinfo);
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        if rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(OciError::Config(format!(
                "config.json: linux.cgroupsPath: {} leaves the cgroup hierarchy",
                rel.display()
            )));
        }
        let unified = mounts.iter().find(|m| m.fstype == "cgroup2").filter(|m| {
            std::fs::read_to_string(m.mount_point.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
        });
        let cgroup = match unified {
            Some(m) => Cgroup {
                dirs: vec![(vec!["unified".into()], m.mount_point.join(rel))],
                v2: true,
            },
            None => {
                let mut dirs: Vec<(Vec<String>, PathBuf)> = Vec::new();
                for m in mounts.iter().filter(|m| m.fstype == "cgroup") {
                    let controllers: Vec<String> = m
                        .options
                        .iter()
                        .filter(|o| !matches!(o.as_str(), "rw" | "ro") && !o.contains('='))
                        .cloned()
                        .collect();
                    if controllers.is_empty()
                        || dirs.iter().any(|(_, d)| d.starts_with(&m.mount_point))
                    {
                        continue;
                    }
                    dirs.push((controllers, m.mount_point.join(rel)));
                }
                if dirs.is_empty() {
                    return Err(OciError::Unsupported(
                        "no cgroup hierarchy is mounted".into(),
                    ));
                }
                Cgroup { dirs, v2: false }
            }
        };
        for (controllers, dir) in &cgroup.dirs {
            std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
            if controllers.iter().any(|c| c == "cpuset") {
                inherit_cpuset(dir)?;
            }
        }
        // Device rules always (none given is deny-all but the standard
        // devices); the rest as given.
        let applied = match resources {
            Some(r) if r.devices().is_some() => cgroup.apply(r),
            Some(r) => cgroup.devices(&[]).and_then(|()| cgroup.apply(r)),
            None => cgroup.devices(&[]),
        };
        if let Err(e) = applied {
            cgroup.remove();
            return Err(e);
        }
        Ok(cgroup)
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| self.v2 || c.iter().any(|n| n == controller))
            .map(|(_, d)| d.as_path())
    }

    /// The directory of `controller`, or an error naming the spec field
    /// that asks for it: a limit the host cannot enforce is refused, not
    /// dropped.
    fn need(&self, controller: &str, field: &str) -> Result<&Path, OciError> {
        self.dir(controller).ok_or_else(|| {
            OciError::Unsupported(format!(
                "config.json: linux.resources.{field}: the {controller} cgroup controller is not mounted on this host"
            ))
        })
    }

    /// Writes the resources given (`update` passes only what changes: the
    /// device rules are rewritten only when it names them).
    pub fn apply(&self, r: &LinuxResources) -> Result<(), OciError> {
        if let Some(rules) = r.devices() {
            self.devices(rules)?;
        }
        if let Some(m) = r.memory() {
            self.memory(m)?;
        }
        if let Some(p) = r.pids() {
            let dir = self.need("pids", "pids")?;
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            };
            write(dir, "pids.max", &v)?;
        }
        if let Some(c) = r.cpu() {
            self.cpu(c)?;
        }
        if let Some(b) = r.block_io() {
            self.block_io(b)?;
        }
        if let Some(n) = r.network() {
            if self.v2 && (n.class_id().is_some() || n.priorities().is_some()) {
                return Err(OciError::Unsupported(
                    "config.json: linux.resources.network: cgroup v2 has no net_cls/net_prio"
                        .into(),
                ));
            }
            if let Some(id) = n.class_id() {
                write(
                    self.need("net_cls", "network.classID")?,
                    "net_cls.classid",
                    &id.to_string(),
                )?;
            }
            for p in n.priorities().iter().flatten() {
                if p.name().is_empty() || p.name().contains(|c: char| c.is_whitespace()) {
                    return Err(OciError::Config(format!(
                        "config.json: linux.resources.network.priorities: bad interface name {:?}",
                        p.name()
                    )));
                }
                write(
                    self.need("net_prio", "network.priorities")?,
                    "net_prio.ifpriomap",
                    &format!("{} {}", p.name(), p.priority()),
                )?;
            }
        }
        for h in r.hugepage_limits().iter().flatten() {
            // The page size names a file: digits and a unit only.
            let size = h.page_size();
            let digits = size.trim_end_matches(['K', 'M', 'G', 'B']);
            if digits.is_empty()
                || !digits.bytes().all(|b| b.is_ascii_digit())
                || !size.ends_with("B")
            {
                return Err(OciError::Config(format!(
                    "config.json: linux.resources.hugepageLimits: bad pageSize {size:?}"
                )));
            }
            let dir = self.need("hugetlb", "hugepageLimits")?;
            let file = if self.v2 {
                format!("hugetlb.{size}.max")
            } else {
                format!("hugetlb.{size}.limit_in_bytes")
            };
            if !dir.join(&file).exists() {
                return Err(OciError::Unsupported(format!(
                    "config.json: linux.resources.hugepageLimits: no {size} huge pages on this host"
                )));
            }
            write(dir, &file, &h.limit().to_string())?;
        }
        Ok(())
    }

    /// The device rules, in order, after a default deny (unless the first
    /// rule is itself a wildcard, which sets the default), then the
    /// devices every container has (null, zero, full, random, urandom,
    /// tty, console, ptmx, pts and tun, as runc): on v1 the devices
    /// controller. v2's devices are an eBPF program, not yet attached.
    fn devices(&self, rules: &[LinuxDeviceCgroup]) -> Result<(), OciError> {
        let mut lines = rules
            .iter()
            .map(|r| Ok((r.allow(), device_rule(r)?)))
            .collect::<Result<Vec<_>, OciError>>()?;
        // A first rule that is a wildcard ("a") sets the default itself.
        if lines.first().map(|(_, l)| l.as_str()) != Some("a") {
            lines.insert(0, (false, "a".to_string()));
        }
        for d in [
            "c *:* m",
            "b *:* m",
            "c 1:3 rwm",
            "c 1:5 rwm",
            "c 1:7 rwm",
            "c 1:8 rwm",
            "c 1:9 rwm",
            "c 5:0 rwm",
            "c 5:1 rwm",
            "c 5:2 rwm",
            "c 136:* rwm",
            "c 10:200 rwm",
        ] {
            lines.push((true, d.to_string()));
        }
        if self.v2 {
            return Ok(());
        }
        let dir = self.need("devices", "devices")?;
        for (allow, line) in lines {
            let file = if allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            write(dir, file, &line)?;
        }
        Ok(())
    }

    fn memory(&self, m: &LinuxMemory) -> Result<(), OciError> {
        let wanted = m.limit().is_some()
            || m.swap().is_some()
            || m.reservation().is_some()
            || m.swappiness().is_some()
            || m.kernel().is_some()
            || m.kernel_tcp().is_some()
            || m.disable_oom_killer() == Some(true);
        if !wanted {
            return Ok(());
        }
        let dir = self.need("memory", "memory")?;
        let (limit, swap, reserve) = if self.v2 {
            ("memory.max", "memory.swap.max", "memory.low")
        } else {
            (
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                "memory.soft_limit_in_bytes",
            )
        };
        let value = |v: i64| {
            if v < 0 {
                if self.v2 {
                    "max".to_string()
                } else {
                    "-1".to_string()
                }
            } else {
                v.to_string()
            }
        };
        if let Some(l) = m.limit() {
            write(dir, limit, &value(l))?;
        }
        if let Some(s) = m.swap() {
            // v1's memsw is memory+swap; v2's swap.max is swap alone.
            let s = if self.v2 && s > 0 {
                s - m.limit().unwrap_or(0).max(0)
            } else {
                s
            };
            if dir.join(swap).exists() {
                write(dir, swap, &value(s))?;
            } else if s > 0 && Some(s) != m.limit() {
                // Swap equal to the limit is no swap at all: nothing to
                // refuse on a host without swap accounting.
                return Err(OciError::Unsupported(
                    "config.json: linux.resources.memory.swap: swap accounting is off on this host"
                        .into(),
                ));
            }
        }
        if let Some(l) = m.reservation() {
            write(dir, reserve, &value(l))?;
        }
        if !self.v2 {
            if let Some(s) = m.swappiness() {
                if s > 100 {
                    return Err(OciError::Config(format!(
                        "config.json: linux.resources.memory.swappiness: {s} is over 100"
                    )));
                }
                write(dir, "memory.swappiness", &s.to_string())?;
            }
            if m.disable_oom_killer() == Some(true) {
                write(dir, "memory.oom_control", "1")?;
            }
            // Kernel memory (deprecated in the spec): the kernel has
            // accepted and ignored this limit since 5.16; TCP buffers are
            // still limited.
            if let Some(k) = m.kernel() {
                if dir.join("memory.kmem.limit_in_bytes").exists() {
                    write(dir, "memory.kmem.limit_in_bytes", &value(k))?;
                }
            }
            if let Some(k) = m.kernel_tcp() {
                write(dir, "memory.kmem.tcp.limit_in_bytes", &value(k))?;
            }
        }
        Ok(())
    }

    fn cpu(&self, c: &LinuxCpu) -> Result<(), OciError> {
        if c.shares().is_some() || c.quota().is_some() || c.period().is_some() {
            let dir = self.need("cpu", "cpu")?;
            if self.v2 {
                if let Some(shares) = c.shares() {
                    // runc's conversion of shares (2..262144) to weight (1..10000).
                    let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
                    write(dir, "cpu.weight", &weight.to_string())?;
                }
                if c.quota().is_some() || c.period().is_some() {
                    let quota = c
                        .quota()
                        .filter(|q| *q > 0)
                        .map_or("max".to_string(), |q| q.to_string());
                    write(
                        dir,
                        "cpu.max",
                        &format!("{quota} {}", c.period().unwrap_or(100_000)),
                    )?;
                }
            } else {
                if let Some(shares) = c.shares() {
                    write(dir, "cpu.shares", &shares.to_string())?;
                }
                if let Some(period) = c.period() {
                    write(dir, "cpu.cfs_period_us", &period.to_string())?;
                }
                if let Some(quota) = c.quota() {
                    write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
                }
            }
        }
        if c.realtime_period().is_some() || c.realtime_runtime().is_some() {
            if self.v2 {
                return Err(OciError::Unsupported(
                    "config.json: linux.resources.cpu.realtimeRuntime: cgroup v2 has no real-time budget"
                        .into(),
                ));
            }
            let dir = self.need("cpu", "cpu.realtimeRuntime")?;
            if let Some(p) = c.realtime_period() {
                write(dir, "cpu.rt_period_us", &p.to_string())?;
            }
            if let Some(r) = c.realtime_runtime() {
                write(dir, "cpu.rt_runtime_us", &r.to_string())?;
            }
        }
        let cpus = c.cpus().as_ref().filter(|s| !s.is_empty());
        let mems = c.mems().as_ref().filter(|s| !s.is_empty());
        if cpus.is_some() || mems.is_some() {
            let dir = self.need("cpuset", "cpu.cpus")?;
            if let Some(cpus) = cpus {
                write(dir, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = mems {
                write(dir, "cpuset.mems", mems)?;
            }
        }
        Ok(())
    }

    fn block_io(&self, b: &LinuxBlockIo) -> Result<(), OciError> {
        let throttles = [
            ("read_bps_device", "rbps", b.throttle_read_bps_device()),
            ("write_bps_device", "wbps", b.throttle_write_bps_device()),
            ("read_iops_device", "riops", b.throttle_read_iops_device()),
            ("write_iops_device", "wiops", b.throttle_write_iops_device()),
        ];
        let any_throttle = throttles.iter().any(|(_, _, d)| d.is_some());
        if b.weight().is_none() && !any_throttle {
            return Ok(());
        }
        let dir = if self.v2 {
            self.need("io", "blockIO")?
        } else {
            self.need("blkio", "blockIO")?
        };
        if let Some(w) = b.weight() {
            let (file, value) = if self.v2 {
                (
                    "io.weight",
                    format!(
                        "default {}",
                        1 + (u32::from(w).saturating_sub(10) * 9999) / 990
                    ),
                )
            } else if dir.join("blkio.weight").exists() {
                ("blkio.weight", w.to_string())
            } else {
                ("blkio.bfq.weight", w.to_string())
            };
            if !dir.join(file).exists() {
                return Err(OciError::Unsupported(
                    "config.json: linux.resources.blockIO.weight: no proportional I/O scheduler on this host"
                        .into(),
                ));
            }
            write(dir, file, &value)?;
        }
        for (v1, v2, devices) in throttles {
            for d in devices.iter().flatten() {
                let (file, line) = if self.v2 {
                    (
                        "io.max".to_string(),
                        format!("{}:{} {v2}={}", d.major(), d.minor(), d.rate()),
                    )
                } else {
                    (
                        format!("blkio.throttle.{v1}"),
                        format!("{}:{} {}", d.major(), d.minor(), d.rate()),
                    )
                };
                write(dir, &file, &line)?;
            }
        }
        Ok(())
    }

    /// Puts `pid` into every directory.
    pub fn add(&self, pid: i32) -> Result<(), OciError> {
        for (_, dir) in &self.dirs {
            write(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// The freezer's directory, when there is one.
    pub fn freezer(&self) -> Option<PathBuf> {
        self.dir("freezer").map(Path::to_path_buf)
    }

    pub fn remove(&self) {
        remove_dirs(&self.paths());
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.clone()).collect()
    }
}

/// An empty cpuset group cannot take tasks: its cpus and mems come from
/// the nearest parent that has them, level by level.
fn inherit_cpuset(dir: &Path) -> Result<(), OciError> {
    let mut chain = Vec::new();
    let mut d = dir;
    while let Some(parent) = d.parent() {
        chain.push(d.to_path_buf());
        if !parent.join("cpuset.cpus").exists() {
            break;
        }
        d = parent;
    }
    for d in chain.iter().rev() {
        let Some(parent) = d.parent() else { continue };
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = std::fs::read_to_string(d.join(file)).unwrap_or_default();
            if own.trim().is_empty() {
                let theirs = std::fs::read_to_string(parent.join(file)).unwrap_or_default();
                if !theirs.trim().is_empty() {
                    write(d, file, theirs.trim())?;
                }
            }
        }
    }
    Ok(())
}

/// The pids in the directory's `cgroup.procs` (the first that reads).
pub fn procs(dirs: &[PathBuf]) -> Vec<i32> {
    for dir in dirs {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            return text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        }
    }
    Vec::new()
}

/// Freezes (`true`) or thaws the group at `freezer`.
pub fn set_frozen(freezer: &Path, frozen: bool) -> Result<(), OciError> {
    if freezer.join("cgroup.freeze").exists() {
        write(freezer, "cgroup.freeze", if frozen { "1" } else { "0" })
    } else {
        let want = if frozen { "FROZEN" } else { "THAWED" };
        write(freezer, "freezer.state", want)?;
        // v1 freezing takes a moment (FREEZING until every task is
        // stopped), and a task forking as it is frozen can keep the group
        // FREEZING: the state is asked for again each round, and every
        // 25th round the group is thawed and frozen afresh (as runc does),
        // for up to about five seconds.
        for round in 1..=1000u32 {
            let now = std::fs::read_to_string(freezer.join("freezer.state")).unwrap_or_default();
            if now.trim() == want {
                return Ok(());
            }
            if frozen && round % 25 == 0 {
                write(freezer, "freezer.state", "THAWED")?;
            }
            write(freezer, "freezer.state", want)?;
            std::thread::sleep(std::time::Duration::from_millis(if round < 100 {
                1
            } else {
                5
            }));
        }
        Err(OciError::Unsupported(format!(
            "{} did not reach the state asked for",
            freezer.display()
        )))
    }
}

pub fn frozen(freezer: &Path) -> bool {
    if let Ok(v) = std::fs::read_to_string(freezer.join("cgroup.freeze")) {
        return v.trim() == "1";
    }
    std::fs::read_to_string(freezer.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
}

/// Removes the groups (each must be empty: their tasks are gone).
pub fn remove_dirs(dirs: &[PathBuf]) {
    for dir in dirs {
        // A group whose last task just exited may still be busy a moment.
        for _ in 0..50 {
            match std::fs::remove_dir(dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_follow_runc() {
        assert_eq!(relative_path(None, "c1"), PathBuf::from("/warden-oci/c1"));
        assert_eq!(
            relative_path(Some(Path::new("/default/c1")), "c1"),
            PathBuf::from("/default/c1")
        );
        assert_eq!(
            relative_path(Some(Path::new("system.slice:cri-containerd:abc")), "abc"),
            PathBuf::from("/system.slice/cri-containerd-abc.scope")
        );
        assert_eq!(
            relative_path(Some(Path::new("rel/path")), "x"),
            PathBuf::from("/rel/path")
        );
    }
}

//! Capability sets from `process.capabilities`: the bounding set is cut to
//! the spec's before the uid changes, the others are set after it, exactly
//! (what a set does not name is not held).

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

/// Capability numbers as the kernel has them (linux/capability.h).
fn number(c: &Capability) -> u32 {
    use Capability::*;
    match c {
        Chown => 0,
        DacOverride => 1,
        DacReadSearch => 2,
        Fowner => 3,
        Fsetid => 4,
        Kill => 5,
        Setgid => 6,
        Setuid => 7,
        Setpcap => 8,
        LinuxImmutable => 9,
        NetBindService => 10,
        NetBroadcast => 11,
        NetAdmin => 12,
        NetRaw => 13,
        IpcLock => 14,
        IpcOwner => 15,
        SysModule => 16,
        SysRawio => 17,
        SysChroot => 18,
        SysPtrace => 19,
        SysPacct => 20,
        SysAdmin => 21,
        SysBoot => 22,
        SysNice => 23,
        SysResource => 24,
        SysTime => 25,
        SysTtyConfig => 26,
        Mknod => 27,
        Lease => 28,
        AuditWrite => 29,
        AuditControl => 30,
        Setfcap => 31,
        MacOverride => 32,
        MacAdmin => 33,
        Syslog => 34,
        WakeAlarm => 35,
        BlockSuspend => 36,
        AuditRead => 37,
        Perfmon => 38,
        Bpf => 39,
        CheckpointRestore => 40,
    }
}

/// The five sets as bit masks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

fn mask(set: &Option<Capabilities>) -> u64 {
    set.iter().flatten().fold(0, |m, c| m | 1u64 << number(c))
}

impl Sets {
    /// The spec's sets; no `capabilities` at all is none held.
    pub fn of(c: Option<&LinuxCapabilities>) -> Result<Sets, String> {
        let Some(c) = c else {
            return Ok(Sets::default());
        };
        Ok(Sets {
            bounding: mask(c.bounding()),
            effective: mask(c.effective()),
            permitted: mask(c.permitted()),
            inheritable: mask(c.inheritable()),
            ambient: mask(c.ambient()),
        })
    }
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

fn prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> Result<(), String> {
    // SAFETY: integer-only prctl.
    let r = unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if r < 0 {
        Err(format!(
            "prctl({option}): {}",
            std::io::Error::last_os_error()
        ))
    } else {
        Ok(())
    }
}

/// Drops from the bounding set what the spec's does not hold.
pub fn drop_bounding(s: &Sets) -> Result<(), String> {
    for cap in 0..=last_cap() {
        if s.bounding & (1 << cap) == 0 {
            prctl(libc::PR_CAPBSET_DROP, cap.into(), 0)
                .map_err(|e| format!("drop capability {cap} from the bounding set: {e}"))?;
        }
    }
    Ok(())
}

/// Keeps the permitted set through the coming setresuid.
pub fn keep_across_setuid() -> Result<(), String> {
    prctl(libc::PR_SET_KEEPCAPS, 1, 0)
}

/// Sets effective, permitted, inheritable exactly, then raises ambient.
pub fn set(s: &Sets) -> Result<(), String> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let word = |m: u64, i: usize| (m >> (32 * i)) as u32;
    let data: [Data; 2] = [0, 1].map(|i| Data {
        effective: word(s.effective, i),
        permitted: word(s.permitted | s.effective | s.ambient, i),
        inheritable: word(s.inheritable | s.ambient, i),
    });
    // SAFETY: header and data are the kernel's v3 layout; capset reads them.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if r < 0 {
        return Err(format!("capset: {}", std::io::Error::last_os_error()));
    }
    prctl(libc::PR_SET_KEEPCAPS, 0, 0)?;
    for cap in 0..=last_cap() {
        if s.ambient & (1 << cap) != 0 {
            prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap.into(),
            )
            .map_err(|e| format!("raise ambient capability {cap}: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_masks_of_the_named_capabilities() {
        let caps: LinuxCapabilities = serde_json::from_value(serde_json::json!({
            "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHECKPOINT_RESTORE"],
            "effective": ["CAP_KILL"],
        }))
        .unwrap();
        let s = Sets::of(Some(&caps)).unwrap();
        assert_eq!(s.bounding, (1 << 5) | (1 << 10) | (1 << 40));
        assert_eq!(s.effective, 1 << 5);
        assert_eq!(s.ambient, 0);
        assert_eq!(Sets::of(None).unwrap(), Sets::default());
    }
}

//! `warden-oci`: Warden's jail as an OCI runtime with runc's command line,
//! so that containerd's `io.containerd.runc.v2` shim — and Kubernetes
//! through a RuntimeClass — starts containers in it. See docs/oci.md.

pub mod caps;
pub mod cgroups;
pub mod container;
mod devices;
mod gvisor;
mod hooks;
mod init;
mod monitor;
pub mod mounts;
pub mod seccomp;
pub mod spec;
pub mod state;

/// Why a command failed; each is one line, and the runtime exits 1 as
/// runc does.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Config(String),
    #[error("container with id {0} already exists")]
    Exists(String),
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("{0}")]
    State(String),
    #[error("{0}")]
    Create(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// The body of the `oci_config` fuzz target: any bytes as a `config.json`
/// — parsed, checked, its mount options read and its seccomp profile
/// compiled — must give an answer, never a panic; a compiled program's
/// every jump must land inside it and end in a return.
pub fn fuzz_one(data: &[u8]) {
    let Ok(spec) = spec::parse(data) else { return };
    let _ = spec::check(&spec);
    for m in spec.mounts().iter().flatten() {
        let _ = mounts::parse_options(m.options().as_deref().unwrap_or(&[]));
    }
    let _ = caps::Sets::of(
        spec.process()
            .as_ref()
            .and_then(|p| p.capabilities().as_ref()),
    );
    if let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        if let Ok(c) = seccomp::compile(profile) {
            let n = c.program.len();
            assert!(n <= 4096);
            assert_eq!(c.program[n - 1].code, (libc::BPF_RET | libc::BPF_K) as u16);
            for (i, ins) in c.program.iter().enumerate() {
                let class = ins.code & 0x07;
                if class == libc::BPF_JMP as u16 {
                    let targets = if ins.code == (libc::BPF_JMP | libc::BPF_JA) as u16 {
                        vec![ins.k as usize]
                    } else {
                        vec![ins.jt as usize, ins.jf as usize]
                    };
                    for t in targets {
                        assert!(i + 1 + t < n, "jump out of the program at {i}");
                    }
                }
            }
        }
    }
}

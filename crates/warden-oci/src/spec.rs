//! The bundle's `config.json` (OCI runtime-spec 1.2), read with the
//! `oci-spec` crate's types and checked before anything is made: a bad
//! field is named by its path (`linux.namespaces[2].type`), so that a
//! caller sees which one, and nothing is left behind.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::OciError;

/// The largest `config.json` read (runc has no limit; a hostile bundle
/// should not make the runtime read gigabytes).
const MAX_CONFIG: u64 = 16 << 20;

/// A bundle: its directory, parsed config, and the absolute rootfs path.
#[derive(Debug)]
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    pub rootfs: PathBuf,
}

impl Bundle {
    pub fn load(dir: &Path) -> Result<Bundle, OciError> {
        let dir = std::fs::canonicalize(dir)
            .map_err(|e| OciError::Config(format!("bundle {}: {e}", dir.display())))?;
        let path = dir.join("config.json");
        let text = read_capped(&path)?;
        let spec = parse(&text)?;
        let rootfs = rootfs_of(&dir, &spec)?;
        validate(&spec)?;
        Ok(Bundle { dir, spec, rootfs })
    }
}

fn read_capped(path: &Path) -> Result<Vec<u8>, OciError> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .map_err(|e| OciError::Config(format!("{}: {e}", path.display())))?;
    let mut text = Vec::new();
    file.take(MAX_CONFIG + 1)
        .read_to_end(&mut text)
        .map_err(|e| OciError::Config(format!("{}: {e}", path.display())))?;
    if text.len() as u64 > MAX_CONFIG {
        return Err(OciError::Config(format!(
            "{}: larger than {} MiB",
            path.display(),
            MAX_CONFIG >> 20
        )));
    }
    Ok(text)
}

/// Parses `config.json`, naming the field a type error is in.
pub fn parse(text: &[u8]) -> Result<Spec, OciError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            OciError::Config(format!("config.json: {inner}"))
        } else {
            OciError::Config(format!("config.json: {path}: {inner}"))
        }
    })
}

fn rootfs_of(bundle: &Path, spec: &Spec) -> Result<PathBuf, OciError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| OciError::Config("config.json: root: missing".into()))?;
    let path = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let meta = std::fs::metadata(&path)
        .map_err(|e| OciError::Config(format!("config.json: root.path {}: {e}", path.display())))?;
    if !meta.is_dir() {
        return Err(OciError::Config(format!(
            "config.json: root.path {}: not a directory",
            path.display()
        )));
    }
    std::fs::canonicalize(&path)
        .map_err(|e| OciError::Config(format!("config.json: root.path {}: {e}", path.display())))
}

/// [`validate`], for callers holding a parsed spec (the fuzz target).
pub fn check(spec: &Spec) -> Result<(), OciError> {
    validate(spec)
}

/// What serde cannot see: required fields, values that must be absolute,
/// namespaces named twice, mappings without a user namespace.
fn validate(spec: &Spec) -> Result<(), OciError> {
    let bad =
        |field: &str, why: &str| Err(OciError::Config(format!("config.json: {field}: {why}")));
    if !spec.version().starts_with("1.") {
        return bad(
            "ociVersion",
            &format!("{:?} is not a 1.x version", spec.version()),
        );
    }
    let Some(process) = spec.process() else {
        return bad("process", "missing (a container needs a process to run)");
    };
    match process.args() {
        Some(args) if !args.is_empty() && !args[0].is_empty() => {}
        _ => return bad("process.args", "missing or empty"),
    }
    if !process.cwd().is_absolute() {
        return bad("process.cwd", "must be an absolute path");
    }
    for (i, e) in process.env().iter().flatten().enumerate() {
        if !e.contains('=') || e.starts_with('=') || e.contains('\0') {
            return bad(&format!("process.env[{i}]"), "must be NAME=VALUE");
        }
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if !m.destination().is_absolute() {
            return bad(
                &format!("mounts[{i}].destination"),
                &format!("{} is not an absolute path", m.destination().display()),
            );
        }
    }
    if let Some(linux) = spec.linux() {
        let mut seen = HashSet::new();
        let mut user = false;
        for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
            if !seen.insert(ns.typ()) {
                return bad(
                    &format!("linux.namespaces[{i}].type"),
                    &format!("{} named twice", ns.typ()),
                );
            }
            if ns.typ() == LinuxNamespaceType::User {
                user = true;
            }
            if let Some(p) = ns.path() {
                if !p.is_absolute() {
                    return bad(
                        &format!("linux.namespaces[{i}].path"),
                        "must be an absolute path",
                    );
                }
            }
        }
        let mapped = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
            || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
        if mapped && !user {
            return bad(
                "linux.uidMappings",
                "mappings need a user namespace in linux.namespaces",
            );
        }
        let has = |t: LinuxNamespaceType| seen.contains(&t);
        for key in linux.sysctl().iter().flatten().map(|(k, _)| k) {
            let k = key.replace('/', ".");
            if k.is_empty() || k.split('.').any(|p| p.is_empty() || p == "..") {
                return bad("linux.sysctl", &format!("bad key {key:?}"));
            }
            // As runc: only sysctls of a namespace the container has its
            // own of; any other would change the host.
            let ipc = matches!(
                k.as_str(),
                "kernel.msgmax"
                    | "kernel.msgmnb"
                    | "kernel.msgmni"
                    | "kernel.sem"
                    | "kernel.shmall"
                    | "kernel.shmmax"
                    | "kernel.shmmni"
                    | "kernel.shm_rmid_forced"
            ) || k.starts_with("fs.mqueue.");
            let allowed = if ipc {
                has(LinuxNamespaceType::Ipc)
            } else if k.starts_with("net.") {
                has(LinuxNamespaceType::Network)
            } else if k == "kernel.hostname" || k == "kernel.domainname" {
                has(LinuxNamespaceType::Uts)
            } else {
                false
            };
            if !allowed {
                return bad(
                    "linux.sysctl",
                    &format!("{key} is not a sysctl of a namespace the container has its own of: it would change the host"),
                );
            }
        }
        if let Some(path) = linux.cgroups_path() {
            if path
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            {
                return bad("linux.cgroupsPath", "must not hold ..");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": ["/bin/true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}
        })
    }

    fn check(v: &serde_json::Value) -> Result<(), String> {
        let spec = parse(&serde_json::to_vec(v).unwrap()).map_err(|e| e.to_string())?;
        validate(&spec).map_err(|e| e.to_string())
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(check(&minimal()), Ok(()));
        let cases: &[(&str, serde_json::Value, &str)] = &[
            (
                "/linux/namespaces/0/type",
                "nonsense".into(),
                "linux.namespaces[0].type",
            ),
            ("/process/args", serde_json::json!([]), "process.args"),
            ("/process/cwd", "relative".into(), "process.cwd"),
            ("/process/user/uid", "root".into(), "process.user.uid"),
            ("/ociVersion", "2.0.0".into(), "ociVersion"),
            (
                "/process/env",
                serde_json::json!(["NOEQUALS"]),
                "process.env[0]",
            ),
            (
                "/linux/namespaces/1/type",
                "pid".into(),
                "linux.namespaces[1].type",
            ),
            (
                "/linux/cgroupsPath",
                "/a/../../b".into(),
                "linux.cgroupsPath",
            ),
        ];
        for (pointer, value, named) in cases {
            let mut v = minimal();
            let (parent, last) = pointer.rsplit_once('/').unwrap();
            let slot = v.pointer_mut(parent).unwrap();
            match last.parse::<usize>() {
                Ok(i) if slot.is_array() => slot[i] = value.clone(),
                _ => slot[last] = value.clone(),
            }
            let err = check(&v).unwrap_err();
            assert!(err.contains(named), "{pointer}: {err}");
        }
        let mut v = minimal();
        v.as_object_mut().unwrap().remove("process");
        assert!(check(&v).unwrap_err().contains("process"));
        let mut v = minimal();
        v["linux"]["sysctl"] = serde_json::json!({"kernel.core_pattern": "|/evil"});
        assert!(check(&v).unwrap_err().contains("would change the host"));
        v["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"});
        assert!(check(&v).unwrap_err().contains("net.ipv4.ip_forward"));
        v["linux"]["namespaces"] =
            serde_json::json!([{"type": "pid"}, {"type": "network"}, {"type": "ipc"}]);
        v["linux"]["sysctl"] = serde_json::json!({"net/ipv4/ip_forward": "1", "kernel.shmmax": "1", "fs.mqueue.queues_max": "9"});
        assert_eq!(check(&v), Ok(()));
        v["linux"]["sysctl"] = serde_json::json!({"net..x": "1"});
        assert!(check(&v).is_err());
        let mut v = minimal();
        v["linux"]["uidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
        assert!(check(&v).unwrap_err().contains("user namespace"));
        assert!(parse(b"{not json")
            .unwrap_err()
            .to_string()
            .contains("config.json"));
    }
}

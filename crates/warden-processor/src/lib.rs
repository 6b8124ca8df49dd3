//! Warden's processors: the `processor.yaml` manifest, the canonical digest
//! of a processor directory, and the content-addressed registry in the
//! state directory.
//!
//! A processor is a directory holding `processor.yaml` and its files. The
//! CLI's `warden processor check|add|list|show|rm` and `warden invoke` are
//! built on this crate; the ledger entries and signatures are theirs.
//!
//! ```no_run
//! use std::path::Path;
//! use warden_processor::{read_processor, render_all, Registry};
//!
//! let (tree, manifest) = read_processor(Path::new("./hello")).map_err(|d| render_all(&d)).unwrap();
//! let registry = Registry::open(Path::new("/var/lib/warden")).unwrap();
//! let record = registry.add(&tree, &manifest, None, None).unwrap();
//! let loaded = registry.load(&registry.resolve("hello").unwrap()).unwrap();
//! assert_eq!(loaded.tree.digest(), record.digest);
//! ```
#![forbid(unsafe_code)]

mod manifest;
mod registry;
mod tree;

pub use manifest::{
    check_dir, check_manifest, check_name, check_relative_path, check_tree, parse_manifest,
    read_processor, render_all, Diagnostic, Kind, Language, Manifest, Sbom, MANIFEST_FILE,
    MAX_CAPABILITIES, MAX_DESCRIPTION_CHARS, MAX_MANIFEST_BYTES, MAX_NAME_LEN, MAX_PATH_LEN,
    MAX_SBOM_BYTES, MAX_TAGS, MAX_TAG_LEN,
};
pub use registry::{
    LoadedProcessor, Record, Registry, RegistryError, Summary, MAX_SIGNATURE_BYTES,
};
pub use tree::{
    File, Tree, TreeError, MAX_DEPTH, MAX_DIRS, MAX_FILES, MAX_PATH_BYTES, MAX_TOTAL_BYTES,
};

#[cfg(test)]
mod tests;

/// One fuzzing step: feeds `data` (as lossy UTF-8) to [`parse_manifest`]
/// and [`check_manifest`] and checks their invariants.
///
/// # Panics
///
/// Only if an invariant is broken, which is a bug in this crate: the two
/// disagree, a failed parse has no diagnostic, a diagnostic spans several
/// lines or has no place, or a parsed manifest's name, version or entry
/// would not parse again.
pub fn fuzz_one(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = parse_manifest(&text, "fuzz.yaml");
    let diagnostics = check_manifest(&text, "fuzz.yaml");
    match &parsed {
        Ok(manifest) => {
            assert!(diagnostics.is_empty(), "parsed, yet {diagnostics:?}");
            assert!(check_name(&manifest.name).is_ok());
            assert!(check_relative_path(&manifest.entry).is_ok());
            assert_eq!(
                manifest.version.to_string().parse::<semver::Version>().ok(),
                Some(manifest.version.clone())
            );
            assert_eq!(
                manifest.language.is_some(),
                manifest.kind == Kind::Script,
                "language iff script: {manifest:?}"
            );
            assert!(manifest.limits.check_bounds().is_ok());
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "failed without a diagnostic");
            assert_eq!(
                errors, &diagnostics,
                "parse_manifest and check_manifest disagree"
            );
            for d in errors {
                let line = d.render();
                assert!(!line.contains('\n'), "multi-line diagnostic {line:?}");
                let at = d.location.expect("manifest diagnostics have a place");
                assert!(at.line >= 1 && at.column >= 1, "bad location {d:?}");
            }
        }
    }
}

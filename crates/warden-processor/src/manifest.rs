//! `processor.yaml`: parsing and checking a processor's manifest.
//!
//! [`parse_manifest`] checks the manifest on its own (syntax, types,
//! values); [`check_tree`] and [`check_dir`] also check it against the
//! processor's files (the entry exists, is a regular file and, for a native
//! processor, is executable; the SBOM is a CycloneDX JSON document).
//! Every problem is reported with its place, `processor.yaml:4:8: error: …`,
//! as `warden policy check` does, using warden-policy's located YAML tree
//! (anchors, aliases, deep nesting and huge node counts are refused there).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use warden_policy::{
    parse_yaml, Capability, LimitField, LimitValue, Limits, Location, YamlNode, YamlNodeKind,
};

use crate::tree::{Tree, TreeError};

/// The manifest's file name, at the top of a processor directory.
pub const MANIFEST_FILE: &str = "processor.yaml";
/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 64 << 10;
/// Longest processor name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest `description`, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 4096;
/// Most `capabilities` entries.
pub const MAX_CAPABILITIES: usize = 1024;
/// Most `tags`.
pub const MAX_TAGS: usize = 64;
/// Longest tag.
pub const MAX_TAG_LEN: usize = 64;
/// Longest `entry` or `sbom` path, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Largest SBOM file accepted, in bytes.
pub const MAX_SBOM_BYTES: usize = 16 << 20;

const KEYS: [&str; 11] = [
    "name",
    "version",
    "kind",
    "language",
    "entry",
    "capabilities",
    "limits",
    "description",
    "sbom",
    "tags",
    "confidential",
];

/// What kind of code a processor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A script run by an interpreter (`language` says which).
    Script,
    /// A native executable.
    Native,
    /// A WebAssembly module.
    Wasm,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Script, Kind::Native, Kind::Wasm];

    /// `script`, `native` or `wasm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Script => "script",
            Kind::Native => "native",
            Kind::Wasm => "wasm",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown kind {}: expected script, native or wasm",
                    excerpt(s)
                )
            })
    }
}

/// The interpreter of a script processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Python 3.
    Python,
    /// Node.js.
    Node,
    /// PHP.
    Php,
    /// POSIX shell.
    Sh,
}

impl Language {
    const ALL: [Language; 4] = [
        Language::Python,
        Language::Node,
        Language::Php,
        Language::Sh,
    ];

    /// `python`, `node`, `php` or `sh`.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Node => "node",
            Language::Php => "php",
            Language::Sh => "sh",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Language {
    type Err = String;
    fn from_str(s: &str) -> Result<Language, String> {
        Language::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown language {}: expected python, node, php or sh",
                    excerpt(s)
                )
            })
    }
}

/// The software bill of materials a manifest names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sbom {
    /// Its path in the processor directory, as written (`/`-separated).
    pub path: String,
    /// `sha256:HEX` of its bytes; `None` until checked against the files
    /// ([`parse_manifest`] alone cannot know it).
    pub sha256: Option<String>,
}

/// A checked `processor.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// `[a-z0-9][a-z0-9._-]{0,63}`.
    pub name: String,
    /// Semantic version 2.0.
    pub version: semver::Version,
    /// Script, native or WebAssembly.
    pub kind: Kind,
    /// The interpreter: `Some` exactly when `kind` is script.
    pub language: Option<Language>,
    /// The file that runs: a relative `/`-separated path without `.`,
    /// `..` or empty components.
    pub entry: String,
    /// The capabilities requested, in source order, as `--allow` takes
    /// them; limit capabilities (`mem:limit:…` and the like) are folded
    /// into `limits`, as a policy does.
    pub capabilities: Vec<Capability>,
    /// The limits requested: `limits` and limit capabilities, with the
    /// keys, value syntax and bounds of a policy's `limits`.
    pub limits: Limits,
    /// A description, at most [`MAX_DESCRIPTION_CHARS`] characters.
    pub description: Option<String>,
    /// The SBOM, if named.
    pub sbom: Option<Sbom>,
    /// Short labels, e.g. for authorization conditions.
    pub tags: Vec<String>,
    /// What is `classification: confidential` in the ledger: `argv` (the
    /// ledger's own field) and JSON pointers into the input (`/input/...`).
    /// Such a value is recorded as a salted commitment; its plaintext is
    /// kept apart, encrypted, and can be shredded without touching proofs.
    pub confidential: Vec<String>,
}

impl Manifest {
    /// `NAME@VERSION`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The limits as `key -> value` in a policy's syntax
    /// (`memory -> 256MiB`), for display and records.
    pub fn limit_map(&self) -> BTreeMap<String, String> {
        LimitField::ALL
            .into_iter()
            .filter_map(|f| Some((f.key().to_owned(), self.limits.get(f)?.to_string())))
            .collect()
    }
}

/// One problem in a manifest. Manifests have no warnings: every
/// diagnostic is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as given (usually `DIR/processor.yaml`).
    pub origin: String,
    /// Where in it (1-based), if the problem has a place.
    pub location: Option<Location>,
    /// What is wrong, one line.
    pub message: String,
}

impl Diagnostic {
    /// `processor.yaml:4:8: error: MESSAGE`, or `ORIGIN: error: MESSAGE`
    /// for a problem without a place (e.g. an unreadable directory).
    pub fn render(&self) -> String {
        match self.location {
            Some(at) => format!("{}:{at}: error: {}", self.origin, self.message),
            None => format!("{}: error: {}", self.origin, self.message),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// Renders diagnostics one per line.
pub fn render_all(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(Diagnostic::render)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses and checks a manifest's text on its own; `origin` names it in
/// diagnostics. The entry and SBOM are checked for form only (see
/// [`check_tree`]); `sbom.sha256` is `None`.
pub fn parse_manifest(source: &str, origin: &str) -> Result<Manifest, Vec<Diagnostic>> {
    let (diagnostics, manifest) = analyze(source, origin);
    match manifest {
        Some(m) if diagnostics.is_empty() => Ok(m),
        _ => Err(non_empty(diagnostics, origin)),
    }
}

/// Every problem of a manifest's text, sorted by place: empty exactly
/// when [`parse_manifest`] succeeds.
pub fn check_manifest(source: &str, origin: &str) -> Vec<Diagnostic> {
    match parse_manifest(source, origin) {
        Ok(_) => Vec::new(),
        Err(d) => d,
    }
}

/// Checks the manifest of a tree already read into memory
/// ([`Tree::read`]): its `processor.yaml`, then the entry and SBOM against
/// the tree's files. `origin` names the manifest in diagnostics. The
/// SBOM's sha256 is filled in.
pub fn check_tree(tree: &Tree, origin: &str) -> Result<Manifest, Vec<Diagnostic>> {
    let one = |location, message: String| {
        vec![Diagnostic {
            origin: origin.to_owned(),
            location,
            message,
        }]
    };
    let Some(file) = tree.file(MANIFEST_FILE) else {
        return Err(one(
            None,
            format!("no {MANIFEST_FILE} at the top of the processor directory"),
        ));
    };
    if file.bytes().len() > MAX_MANIFEST_BYTES {
        return Err(one(Some(START), too_large(file.bytes().len())));
    }
    let Ok(source) = std::str::from_utf8(file.bytes()) else {
        return Err(one(
            Some(START),
            format!("{MANIFEST_FILE} is not valid UTF-8"),
        ));
    };
    let (mut diagnostics, manifest) = analyze(source, origin);
    let Some(mut manifest) = manifest else {
        return Err(non_empty(diagnostics, origin));
    };
    // The places of `entry` and `sbom`, for the checks against the files.
    let places = top_level_places(source);
    let at = |key: &str| places.get(key).copied().or(Some(START));
    let mut push = |location, message| {
        diagnostics.push(Diagnostic {
            origin: origin.to_owned(),
            location,
            message,
        })
    };
    match tree.file(&manifest.entry) {
        None => push(
            at("entry"),
            format!(
                "entry {} is not a file in the processor directory",
                excerpt(&manifest.entry)
            ),
        ),
        Some(f) if manifest.kind == Kind::Native && !f.executable() => push(
            at("entry"),
            format!(
                "entry {} of a native processor is not executable (chmod +x it)",
                excerpt(&manifest.entry)
            ),
        ),
        Some(_) => {}
    }
    if let Some(sbom) = &mut manifest.sbom {
        match tree.file(&sbom.path) {
            None => push(
                at("sbom"),
                format!(
                    "sbom {} is not a file in the processor directory",
                    excerpt(&sbom.path)
                ),
            ),
            Some(f) => match check_sbom(f.bytes()) {
                Ok(()) => sbom.sha256 = Some(format!("sha256:{}", f.sha256())),
                Err(why) => push(at("sbom"), format!("sbom {}: {why}", excerpt(&sbom.path))),
            },
        }
    }
    if diagnostics.is_empty() {
        Ok(manifest)
    } else {
        diagnostics.sort_by_key(|d| d.location);
        Err(diagnostics)
    }
}

/// Reads the processor directory `dir` ([`Tree::read`]: every file once,
/// no symlinks) and checks its manifest ([`check_tree`]). A directory that
/// cannot be read as a tree gives one diagnostic without a place.
pub fn check_dir(dir: &Path) -> Result<Manifest, Vec<Diagnostic>> {
    read_processor(dir).map(|(_, manifest)| manifest)
}

/// [`check_dir`], also returning the tree that was read, for
/// [`crate::Registry::add`]: the files checked are the files stored.
pub fn read_processor(dir: &Path) -> Result<(Tree, Manifest), Vec<Diagnostic>> {
    let origin = dir.join(MANIFEST_FILE).display().to_string();
    let tree = Tree::read(dir).map_err(|e: TreeError| {
        vec![Diagnostic {
            origin: dir.display().to_string(),
            location: None,
            message: e.to_string(),
        }]
    })?;
    let manifest = check_tree(&tree, &origin)?;
    Ok((tree, manifest))
}

/// Whether `bytes` are a CycloneDX JSON document.
fn check_sbom(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() > MAX_SBOM_BYTES {
        return Err(format!(
            "is too large ({} bytes; at most {MAX_SBOM_BYTES})",
            bytes.len()
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("is not valid JSON: {}", one_line(&e.to_string())))?;
    match value.get("bomFormat") {
        Some(serde_json::Value::String(f)) if f == "CycloneDX" => Ok(()),
        Some(other) => Err(format!(
            "is not a CycloneDX document (bomFormat is {}, expected \"CycloneDX\")",
            excerpt(&other.to_string())
        )),
        None => Err("is not a CycloneDX document (no \"bomFormat\": \"CycloneDX\")".to_owned()),
    }
}

/// The sha256 of `bytes` as `sha256:HEX`.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

const START: Location = Location { line: 1, column: 1 };

fn too_large(len: usize) -> String {
    format!("manifest is too large ({len} bytes; at most {MAX_MANIFEST_BYTES})")
}

fn non_empty(mut diagnostics: Vec<Diagnostic>, origin: &str) -> Vec<Diagnostic> {
    if diagnostics.is_empty() {
        // Not reached: no manifest is only returned with a diagnostic.
        diagnostics.push(Diagnostic {
            origin: origin.to_owned(),
            location: Some(START),
            message: "invalid manifest".to_owned(),
        });
    }
    diagnostics
}

/// Where each top-level key's value starts, for the checks against files
/// (the source has already parsed once, so this cannot fail).
fn top_level_places(source: &str) -> HashMap<String, Location> {
    let mut places = HashMap::new();
    if let Ok(Some(YamlNode {
        kind: YamlNodeKind::Mapping(entries),
        ..
    })) = parse_yaml(source)
    {
        for (key, value) in entries {
            if let YamlNodeKind::Scalar { text, .. } = key.kind {
                places.entry(text).or_insert(value.location);
            }
        }
    }
    places
}

/// The analysis shared by [`parse_manifest`] and [`check_tree`]: all
/// diagnostics (sorted), and the manifest if its required fields parsed.
fn analyze(source: &str, origin: &str) -> (Vec<Diagnostic>, Option<Manifest>) {
    let mut a = Analysis {
        origin,
        diagnostics: Vec::new(),
    };
    let manifest = a.run(source);
    let mut diagnostics = a.diagnostics;
    diagnostics.sort_by_key(|d| d.location);
    (diagnostics, manifest)
}

struct Analysis<'o> {
    origin: &'o str,
    diagnostics: Vec<Diagnostic>,
}

/// Fields as far as they parsed.
#[derive(Default)]
struct Fields {
    name: Option<String>,
    version: Option<semver::Version>,
    kind: Option<(Kind, Location)>,
    language: Option<(Language, Location)>,
    entry: Option<String>,
    capabilities: Vec<Capability>,
    limits: Limits,
    description: Option<String>,
    sbom: Option<Sbom>,
    tags: Vec<String>,
    confidential: Vec<String>,
    /// Every limit setting: field, value, place, how it was written.
    limit_settings: Vec<(LimitField, LimitValue, Location, String)>,
}

impl Analysis<'_> {
    fn error(&mut self, location: Location, message: String) {
        self.diagnostics.push(Diagnostic {
            origin: self.origin.to_owned(),
            location: Some(location),
            message,
        });
    }

    fn run(&mut self, source: &str) -> Option<Manifest> {
        if source.len() > MAX_MANIFEST_BYTES {
            self.error(START, too_large(source.len()));
            return None;
        }
        let root = match parse_yaml(source) {
            Ok(Some(root)) => root,
            Ok(None) => {
                self.error(
                    START,
                    "manifest is empty: expected a mapping with name, version, kind and entry"
                        .to_owned(),
                );
                return None;
            }
            Err(e) => {
                // warden-policy's tree speaks of policies.
                let message = e
                    .message
                    .replace("a policy", "a processor manifest")
                    .replace("policy has", "the manifest has");
                self.error(e.location, message);
                return None;
            }
        };
        let YamlNodeKind::Mapping(entries) = &root.kind else {
            self.error(
                root.location,
                format!(
                    "a processor manifest must be a YAML mapping with keys {}; found {}",
                    KEYS.join(", "),
                    root.describe()
                ),
            );
            return None;
        };
        let mut fields = Fields::default();
        let mut seen: HashMap<&str, Location> = HashMap::new();
        for (key, value) in entries {
            let Some(name) = self.key_name(key, &mut seen) else {
                continue;
            };
            match name {
                "name" => fields.name = self.name(value),
                "version" => fields.version = self.version(value),
                "kind" => {
                    fields.kind = self
                        .parsed(value, "kind", "script, native or wasm")
                        .map(|k| (k, value.location))
                }
                "language" => {
                    fields.language = self
                        .parsed(value, "language", "python, node, php or sh")
                        .map(|l| (l, value.location))
                }
                "entry" => fields.entry = self.path(value, "entry"),
                "capabilities" => self.capabilities(value, &mut fields),
                "limits" => self.limits(value, &mut fields),
                "description" => fields.description = self.description(value),
                "sbom" => {
                    fields.sbom = self
                        .path(value, "sbom")
                        .map(|path| Sbom { path, sha256: None })
                }
                "tags" => fields.tags = self.tags(value),
                "confidential" => fields.confidential = self.confidential(value),
                other => {
                    let message = unknown_key(other);
                    self.error(key.location, message);
                }
            }
        }
        self.fold_limits(&mut fields);
        for required in ["name", "version", "kind", "entry"] {
            if !seen.contains_key(required) {
                self.error(root.location, format!("missing required key {required:?}"));
            }
        }
        match (fields.kind, fields.language) {
            (Some((Kind::Script, at)), None) if !seen.contains_key("language") => self.error(
                at,
                "a script processor needs a language: python, node, php or sh".to_owned(),
            ),
            (Some((kind, _)), Some((_, at))) if kind != Kind::Script => self.error(
                at,
                format!("language applies to script processors only, not to kind {kind}"),
            ),
            _ => {}
        }
        Some(Manifest {
            name: fields.name?,
            version: fields.version?,
            kind: fields.kind?.0,
            language: fields.language.map(|(l, _)| l),
            entry: fields.entry?,
            capabilities: fields.capabilities,
            limits: fields.limits,
            description: fields.description,
            sbom: fields.sbom,
            tags: fields.tags,
            confidential: fields.confidential,
        })
    }

    fn key_name<'n>(
        &mut self,
        key: &'n YamlNode,
        seen: &mut HashMap<&'n str, Location>,
    ) -> Option<&'n str> {
        let YamlNodeKind::Scalar { text, .. } = &key.kind else {
            self.error(
                key.location,
                format!("mapping keys must be strings; found {}", key.describe()),
            );
            return None;
        };
        if let Some(first) = seen.get(text.as_str()) {
            let message = format!("duplicate key {} (first at {first})", excerpt(text));
            self.error(key.location, message);
            return None;
        }
        seen.insert(text, key.location);
        Some(text)
    }

    /// The text of a non-null scalar, or `None` with a diagnostic.
    fn scalar<'n>(&mut self, value: &'n YamlNode, what: &str, expected: &str) -> Option<&'n str> {
        match &value.kind {
            YamlNodeKind::Scalar { text, .. } if !value.is_null() => Some(text),
            _ => {
                self.error(
                    value.location,
                    format!("{what} must be {expected}; found {}", value.describe()),
                );
                None
            }
        }
    }

    fn parsed<T: FromStr<Err = String>>(
        &mut self,
        value: &YamlNode,
        what: &str,
        choices: &str,
    ) -> Option<T> {
        let text = self.scalar(value, what, &format!("one of {choices}"))?;
        match text.parse() {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(value.location, e);
                None
            }
        }
    }

    fn name(&mut self, value: &YamlNode) -> Option<String> {
        let text = self.scalar(value, "name", "a string")?;
        match check_name(text) {
            Ok(()) => Some(text.to_owned()),
            Err(why) => {
                self.error(value.location, why);
                None
            }
        }
    }

    fn version(&mut self, value: &YamlNode) -> Option<semver::Version> {
        let text = self.scalar(value, "version", "a semantic version such as 1.0.0")?;
        match semver::Version::parse(text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(
                    value.location,
                    format!(
                        "version {} is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.0.0): {e}",
                        excerpt(text)
                    ),
                );
                None
            }
        }
    }

    fn path(&mut self, value: &YamlNode, what: &str) -> Option<String> {
        let text = self.scalar(value, what, "a relative path in the processor directory")?;
        match check_relative_path(text) {
            Ok(()) => Some(text.to_owned()),
            Err(why) => {
                self.error(value.location, format!("{what} {}: {why}", excerpt(text)));
                None
            }
        }
    }

    fn description(&mut self, value: &YamlNode) -> Option<String> {
        let text = self.scalar(value, "description", "a string")?;
        let chars = text.chars().count();
        if chars > MAX_DESCRIPTION_CHARS {
            self.error(
                value.location,
                format!(
                    "description is too long ({chars} characters; at most {MAX_DESCRIPTION_CHARS})"
                ),
            );
            return None;
        }
        Some(text.to_owned())
    }

    /// The items of a list, or `None` with a diagnostic (null is empty).
    fn list<'n>(&mut self, value: &'n YamlNode, what: &str, max: usize) -> Option<&'n [YamlNode]> {
        match &value.kind {
            _ if value.is_null() => Some(&[]),
            YamlNodeKind::Sequence(items) if items.len() > max => {
                self.error(
                    value.location,
                    format!("too many {what} ({}; at most {max})", items.len()),
                );
                None
            }
            YamlNodeKind::Sequence(items) => Some(items),
            _ => {
                self.error(
                    value.location,
                    format!(
                        "{what} must be a list of strings; found {}",
                        value.describe()
                    ),
                );
                None
            }
        }
    }

    fn capabilities(&mut self, value: &YamlNode, fields: &mut Fields) {
        let Some(items) = self.list(value, "capabilities", MAX_CAPABILITIES) else {
            return;
        };
        let mut first: HashMap<String, Location> = HashMap::new();
        for item in items {
            let text = match &item.kind {
                YamlNodeKind::Scalar { text, .. } if !item.is_null() => text,
                YamlNodeKind::Mapping(entries) if entries.len() == 1 => {
                    let (k, v) = &entries[0];
                    let hint = match (&k.kind, &v.kind) {
                        (YamlNodeKind::Scalar { text: k, .. }, YamlNodeKind::Scalar { .. })
                            if v.is_null() =>
                        {
                            format!(" (\"{k}:\" with nothing after it is a YAML key: write the whole capability)")
                        }
                        (
                            YamlNodeKind::Scalar { text: k, .. },
                            YamlNodeKind::Scalar { text: v, .. },
                        ) => {
                            format!(" (did you mean \"{k}:{v}\"? remove the space after the colon)")
                        }
                        _ => String::new(),
                    };
                    self.error(
                        item.location,
                        format!("a capability must be a string; found a mapping{hint}"),
                    );
                    continue;
                }
                _ => {
                    self.error(
                        item.location,
                        format!("a capability must be a string; found {}", item.describe()),
                    );
                    continue;
                }
            };
            let capability = match text.parse::<Capability>() {
                Ok(c) => c,
                Err(e) => {
                    self.error(item.location, e.to_string());
                    continue;
                }
            };
            let shown = capability.to_string();
            if let Some(at) = first.get(&shown) {
                self.error(
                    item.location,
                    format!("duplicate capability {shown} (first at {at})"),
                );
                continue;
            }
            first.insert(shown.clone(), item.location);
            if let Some(path) = capability.path() {
                if !path.is_absolute() {
                    self.error(
                        item.location,
                        format!(
                            "capability {shown}: a processor requests absolute paths (relative to what would be the caller's choice)"
                        ),
                    );
                    continue;
                }
            }
            match LimitField::of_capability(&capability) {
                Some((field, value)) => {
                    fields
                        .limit_settings
                        .push((field, value, item.location, shown))
                }
                None => fields.capabilities.push(capability),
            }
        }
    }

    fn limits(&mut self, value: &YamlNode, fields: &mut Fields) {
        let entries = match &value.kind {
            _ if value.is_null() => return,
            YamlNodeKind::Mapping(entries) => entries,
            _ => {
                return self.error(
                    value.location,
                    format!(
                        "limits must be a mapping of limit names to values; found {}",
                        value.describe()
                    ),
                )
            }
        };
        let mut seen = HashMap::new();
        for (key, value) in entries {
            let Some(name) = self.key_name(key, &mut seen) else {
                continue;
            };
            let Some(field) = LimitField::from_key(name) else {
                let keys: Vec<&str> = LimitField::ALL.iter().map(|f| f.key()).collect();
                let message = unknown_in("limit", name, &keys);
                self.error(key.location, message);
                continue;
            };
            match &value.kind {
                YamlNodeKind::Scalar { text, .. } if !value.is_null() => match field.parse(text) {
                    Ok(parsed) => {
                        let source = format!("{name}: {text}");
                        fields
                            .limit_settings
                            .push((field, parsed, value.location, source));
                    }
                    Err(e) => self.error(value.location, format!("invalid {name} limit: {e}")),
                },
                _ => self.error(
                    value.location,
                    format!(
                        "limit {name} must be a single value; found {}",
                        value.describe()
                    ),
                ),
            }
        }
    }

    /// As a policy does: bounds, then one value per limit (a later,
    /// different setting is a conflict).
    fn fold_limits(&mut self, fields: &mut Fields) {
        let mut settings = std::mem::take(&mut fields.limit_settings);
        settings.sort_by_key(|s| s.2);
        let mut first: HashMap<LimitField, (LimitValue, Location, String)> = HashMap::new();
        for (field, value, location, source) in settings {
            if let Err(why) = field.check_bounds(value, &format!("limit {}", field.key())) {
                self.error(location, format!("{why} ({source})"));
                continue;
            }
            match first.get(&field) {
                None => {
                    fields.limits.set(field, value);
                    first.insert(field, (value, location, source));
                }
                Some((earlier, _, _)) if *earlier == value => {}
                Some((_, at, earlier_source)) => {
                    let message = format!(
                        "conflicting {} limit: {source} contradicts {earlier_source} at {at}",
                        field.key()
                    );
                    self.error(location, message);
                }
            }
        }
    }

    /// `confidential: [argv, /input/card/number]`.
    fn confidential(&mut self, value: &YamlNode) -> Vec<String> {
        let Some(items) = self.list(value, "confidential", MAX_TAGS) else {
            return Vec::new();
        };
        let mut out: Vec<String> = Vec::new();
        for item in items {
            let Some(text) = self.scalar(item, "a confidential field", "a string") else {
                continue;
            };
            if let Err(why) = check_confidential(text) {
                self.error(item.location, why);
                continue;
            }
            if out.iter().any(|o| o == text) {
                self.error(
                    item.location,
                    format!("duplicate confidential field {text:?}"),
                );
                continue;
            }
            out.push(text.to_owned());
        }
        out
    }

    fn tags(&mut self, value: &YamlNode) -> Vec<String> {
        let Some(items) = self.list(value, "tags", MAX_TAGS) else {
            return Vec::new();
        };
        let mut tags: Vec<String> = Vec::new();
        let mut first: HashMap<&str, Location> = HashMap::new();
        for item in items {
            let Some(text) = self.scalar(item, "a tag", "a string") else {
                continue;
            };
            if let Err(why) = check_tag(text) {
                self.error(item.location, why);
                continue;
            }
            if let Some(at) = first.get(text) {
                self.error(
                    item.location,
                    format!("duplicate tag {text:?} (first at {at})"),
                );
                continue;
            }
            first.insert(text, item.location);
            tags.push(text.to_owned());
        }
        tags
    }
}

/// Whether `field` names something the ledger can keep confidential:
/// `argv`, or an RFC 6901 JSON pointer into the input, `/input/...`.
pub fn check_confidential(field: &str) -> Result<(), String> {
    if field == "argv" {
        return Ok(());
    }
    let Some(pointer) = field
        .strip_prefix("/input")
        .or_else(|| field.strip_prefix("/output"))
    else {
        return Err(format!(
            "confidential field {:?}: expected argv or a JSON pointer into the input (/input/...) or the output (/output/...)",
            excerpt(field)
        ));
    };
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(format!(
            "confidential field {:?}: not a JSON pointer",
            excerpt(field)
        ));
    }
    // RFC 6901: `~` only as `~0` or `~1`.
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "confidential field {:?}: `~` must be written ~0 (and `/` ~1)",
                excerpt(field)
            ));
        }
        if c.is_control() {
            return Err(format!(
                "confidential field {:?}: a control character",
                excerpt(field)
            ));
        }
    }
    if field.len() > 256 {
        return Err("confidential field: longer than 256 bytes".into());
    }
    Ok(())
}

/// Whether `name` is a valid processor name: `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn check_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid name {}: expected 1-{MAX_NAME_LEN} lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
            excerpt(name)
        ))
    }
}

/// Whether `tag` is a valid tag: `[a-z0-9][a-z0-9._:/-]{0,63}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let bytes = tag.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._:/-".contains(b));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {}: expected 1-{MAX_TAG_LEN} lowercase letters, digits, '.', '_', ':', '/' or '-', starting with a letter or digit",
            excerpt(tag)
        ))
    }
}

/// Whether `path` names a file inside a processor directory: relative,
/// `/`-separated, no empty, `.` or `..` component, no control character.
pub fn check_relative_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("is empty".to_owned());
    }
    if path.len() > MAX_PATH_LEN {
        return Err(format!("is longer than {MAX_PATH_LEN} bytes"));
    }
    if path.starts_with('/') {
        return Err("must be relative to the processor directory, not absolute".to_owned());
    }
    if path.chars().any(char::is_control) {
        return Err("contains a control character".to_owned());
    }
    for component in path.split('/') {
        match component {
            ".." => return Err("must not contain '..'".to_owned()),
            "." | "" => {
                return Err(
                    "must be a plain path (no '.' or empty components, no trailing '/')".to_owned(),
                )
            }
            _ => {}
        }
    }
    Ok(())
}

/// `"text"`, cut to 64 characters, for messages.
pub(crate) fn excerpt(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn unknown_key(key: &str) -> String {
    unknown_in("key", key, &KEYS)
}

/// "unknown key "entyr": did you mean "entry"?" or a list of the keys.
fn unknown_in(what: &str, key: &str, known: &[&str]) -> String {
    let nearest = known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .min()
        .filter(|(d, k)| *d <= 2.max(k.len() / 3));
    match nearest {
        Some((_, k)) => format!("unknown {what} {}: did you mean {k:?}?", excerpt(key)),
        None => format!(
            "unknown {what} {}: expected one of {}",
            excerpt(key),
            known.join(", ")
        ),
    }
}

/// Levenshtein distance; the first argument is cut to 64 characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

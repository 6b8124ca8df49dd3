//! Tests on real files in temporary directories.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest as _, Sha256};

use super::*;

/// A unique directory under the system's temporary directory, removed
/// (read-only parts included) when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "warden-processor-{label}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `path` (parents made) with `bytes` and `mode`.
    fn write(&self, path: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let full = self.0.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, bytes).unwrap();
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode)).unwrap();
        full
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        make_writable(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn make_writable(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                make_writable(&entry.path());
            }
        }
    }
}

const PYTHON_MANIFEST: &str = "\
name: csv-stats
version: 1.2.3
kind: script
language: python
entry: main.py
description: Summarizes a CSV file.
capabilities:
  - fs:read:/data
  - net:http:api.example.com
  - mem:limit:128MiB
limits:
  wall_time: 5s
  pids: 16
tags: [team:data, csv]
";

fn python_dir() -> TempDir {
    let dir = TempDir::new("python");
    dir.write("processor.yaml", PYTHON_MANIFEST.as_bytes(), 0o644);
    dir.write("main.py", b"print('hello')\n", 0o644);
    dir.write("lib/util.py", b"X = 1\n", 0o644);
    dir
}

fn wasm_manifest(name: &str, version: &str) -> String {
    format!("name: {name}\nversion: {version}\nkind: wasm\nentry: x.wasm\n")
}

fn wasm_dir(name: &str, version: &str) -> TempDir {
    let dir = TempDir::new("wasm");
    dir.write(
        "processor.yaml",
        wasm_manifest(name, version).as_bytes(),
        0o644,
    );
    dir.write("x.wasm", b"\0asm\x01\0\0\0", 0o644);
    dir
}

fn rendered(source: &str) -> Vec<String> {
    match parse_manifest(source, "processor.yaml") {
        Ok(m) => panic!("parsed: {m:?}"),
        Err(d) => d.iter().map(Diagnostic::render).collect(),
    }
}

// ---- manifests ----

#[test]
fn python_script_manifest() {
    let dir = python_dir();
    let m = check_dir(dir.path()).unwrap_or_else(|d| panic!("{}", render_all(&d)));
    assert_eq!(m.name, "csv-stats");
    assert_eq!(m.version, semver::Version::new(1, 2, 3));
    assert_eq!(m.kind, Kind::Script);
    assert_eq!(m.language, Some(Language::Python));
    assert_eq!(m.entry, "main.py");
    assert_eq!(m.description.as_deref(), Some("Summarizes a CSV file."));
    assert_eq!(m.tags, ["team:data", "csv"]);
    let caps: Vec<String> = m.capabilities.iter().map(ToString::to_string).collect();
    assert_eq!(caps, ["fs:read:/data", "net:http:api.example.com"]);
    assert_eq!(m.id(), "csv-stats@1.2.3");
    // The limits mean exactly what a policy's mean.
    let policy = warden_policy::parse_policy(
        "grants:\n  - mem:limit:128MiB\nlimits:\n  wall_time: 5s\n  pids: 16\n",
        "p.yaml",
    )
    .unwrap();
    assert_eq!(m.limits, policy.limits);
    assert_eq!(m.limits.memory, Some(128 << 20));
    let map = m.limit_map();
    assert_eq!(map["memory"], "128MiB");
    assert_eq!(map["wall_time"], "5s");
    assert_eq!(map["pids"], "16");
}

#[test]
fn native_binary_manifest() {
    let dir = TempDir::new("native");
    dir.write(
        "processor.yaml",
        b"name: true\nversion: 0.1.0-rc.1+build.5\nkind: native\nentry: bin/true\nlimits:\n  memory: 64MiB\n",
        0o644,
    );
    let bytes = std::fs::read("/bin/true").unwrap();
    dir.write("bin/true", &bytes, 0o755);
    let (tree, m) = read_processor(dir.path()).unwrap_or_else(|d| panic!("{}", render_all(&d)));
    assert_eq!(m.kind, Kind::Native);
    assert_eq!(m.language, None);
    assert_eq!(m.version.to_string(), "0.1.0-rc.1+build.5");
    assert!(tree.file("bin/true").unwrap().executable());
    assert_eq!(tree.file("bin/true").unwrap().bytes(), bytes.as_slice());

    // Not executable: refused at the entry's place.
    std::fs::set_permissions(
        dir.path().join("bin/true"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let errors = check_dir(dir.path()).unwrap_err();
    let origin = dir.path().join("processor.yaml").display().to_string();
    assert_eq!(
        render_all(&errors),
        format!("{origin}:4:8: error: entry \"bin/true\" of a native processor is not executable (chmod +x it)")
    );
}

#[test]
fn wasm_manifest_and_entry_checks() {
    let dir = wasm_dir("hello", "1.0.0");
    let m = check_dir(dir.path()).unwrap();
    assert_eq!((m.kind, m.entry.as_str()), (Kind::Wasm, "x.wasm"));
    assert!(m.capabilities.is_empty() && m.limits.is_empty() && m.sbom.is_none());

    std::fs::remove_file(dir.path().join("x.wasm")).unwrap();
    let origin = dir.path().join("processor.yaml").display().to_string();
    assert_eq!(
        render_all(&check_dir(dir.path()).unwrap_err()),
        format!("{origin}:4:8: error: entry \"x.wasm\" is not a file in the processor directory")
    );
    // A directory is not a file either.
    std::fs::create_dir(dir.path().join("x.wasm")).unwrap();
    dir.write("x.wasm/inner", b"", 0o644);
    assert!(render_all(&check_dir(dir.path()).unwrap_err()).contains("4:8: error: entry"));

    let empty = TempDir::new("empty");
    let errors = check_dir(empty.path()).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].location.is_none());
    assert!(
        errors[0]
            .render()
            .ends_with(": error: no processor.yaml at the top of the processor directory"),
        "{}",
        errors[0].render()
    );
}

#[test]
fn manifest_errors_have_line_and_column() {
    let base = "name: a\nversion: 1.0.0\nkind: wasm\nentry: x.wasm\n";
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{base}entyr: y\n"),
            "processor.yaml:5:1: error: unknown key \"entyr\": did you mean \"entry\"?",
        ),
        (
            format!("{base}colour: red\n"),
            "processor.yaml:5:1: error: unknown key \"colour\": expected one of name, version, kind, language, entry, capabilities, limits, description, sbom, tags",
        ),
        (
            base.replace("name: a", "name: Hello"),
            "processor.yaml:1:7: error: invalid name \"Hello\": expected 1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
        ),
        (
            base.replace("name: a", &format!("name: {}", "a".repeat(65))),
            "processor.yaml:1:7: error: invalid name",
        ),
        (
            base.replace("1.0.0", "1.0"),
            "processor.yaml:2:10: error: version \"1.0\" is not a semantic version",
        ),
        (
            base.replace("kind: wasm", "kind: elf"),
            "processor.yaml:3:7: error: unknown kind \"elf\": expected script, native or wasm",
        ),
        (
            base.replace("kind: wasm", "kind: script"),
            "processor.yaml:3:7: error: a script processor needs a language: python, node, php or sh",
        ),
        (
            format!("{base}language: python\n"),
            "processor.yaml:5:11: error: language applies to script processors only, not to kind wasm",
        ),
        (
            base.replace("kind: wasm", "kind: script\nlanguage: ruby"),
            "processor.yaml:4:11: error: unknown language \"ruby\": expected python, node, php or sh",
        ),
        (
            base.replace("x.wasm", "../x.wasm"),
            "processor.yaml:4:8: error: entry \"../x.wasm\": must not contain '..'",
        ),
        (
            base.replace("x.wasm", "/bin/sh"),
            "processor.yaml:4:8: error: entry \"/bin/sh\": must be relative to the processor directory, not absolute",
        ),
        (
            base.replace("x.wasm", "./x.wasm"),
            "processor.yaml:4:8: error: entry \"./x.wasm\": must be a plain path",
        ),
        (
            base.replace("entry: x.wasm\n", "entry:\n"),
            "processor.yaml:4:6: error: entry must be a relative path in the processor directory; found null",
        ),
        (
            base.replace("name: a\n", ""),
            "processor.yaml:1:1: error: missing required key \"name\"",
        ),
        (
            format!("{base}name: b\n"),
            "processor.yaml:5:1: error: duplicate key \"name\" (first at 1:1)",
        ),
        (
            format!("{base}capabilities:\n  - fs:read:/data\n  - fs:raed:/x\n"),
            "processor.yaml:7:5: error: ",
        ),
        (
            format!("{base}capabilities:\n  - fs:read:data\n"),
            "processor.yaml:6:5: error: capability fs:read:data: a processor requests absolute paths",
        ),
        (
            format!("{base}capabilities:\n  - env: HOME\n"),
            "processor.yaml:6:5: error: a capability must be a string; found a mapping (did you mean \"env:HOME\"? remove the space after the colon)",
        ),
        (
            format!("{base}capabilities:\n  - env:HOME\n  - env:HOME\n"),
            "processor.yaml:7:5: error: duplicate capability env:HOME (first at 6:5)",
        ),
        (
            format!("{base}capabilities: fs:read:/x\n"),
            "processor.yaml:5:15: error: capabilities must be a list of strings; found a scalar",
        ),
        (
            format!("{base}limits:\n  memroy: 1GiB\n"),
            "processor.yaml:6:3: error: unknown limit \"memroy\": did you mean \"memory\"?",
        ),
        (
            format!("{base}limits:\n  memory: lots\n"),
            "processor.yaml:6:11: error: invalid memory limit: ",
        ),
        (
            format!("{base}limits:\n  memory: 0\n"),
            "processor.yaml:6:11: error: limit memory must be at least 1MiB (memory: 0)",
        ),
        (
            format!("{base}capabilities:\n  - mem:limit:64MiB\nlimits:\n  memory: 128MiB\n"),
            "processor.yaml:8:11: error: conflicting memory limit: memory: 128MiB contradicts mem:limit:64MiB at 6:5",
        ),
        (
            format!("{base}limits: [1]\n"),
            "processor.yaml:5:9: error: limits must be a mapping of limit names to values; found a list",
        ),
        (
            format!("{base}tags: [ok, Bad Tag]\n"),
            "processor.yaml:5:12: error: invalid tag \"Bad Tag\"",
        ),
        (
            format!("{base}tags: [a, a]\n"),
            "processor.yaml:5:11: error: duplicate tag \"a\" (first at 5:8)",
        ),
        (
            format!("{base}description: {}\n", "d".repeat(MAX_DESCRIPTION_CHARS + 1)),
            "processor.yaml:5:14: error: description is too long (4097 characters; at most 4096)",
        ),
        (
            format!("{base}sbom: /etc/bom.json\n"),
            "processor.yaml:5:7: error: sbom \"/etc/bom.json\": must be relative",
        ),
        (
            format!("{base}tags: &t [a]\ndescription: *t\n"),
            "processor.yaml:5:10: error: YAML anchors and aliases are not allowed in a processor manifest",
        ),
        (
            "- a\n- b\n".to_owned(),
            "processor.yaml:1:1: error: a processor manifest must be a YAML mapping with keys name, version, kind, language, entry, capabilities, limits, description, sbom, tags, confidential; found a list",
        ),
        (
            "# nothing\n".to_owned(),
            "processor.yaml:1:1: error: manifest is empty",
        ),
        (
            format!("{base}---\nname: b\n"),
            "processor.yaml:5:1: error: a processor manifest must be a single YAML document",
        ),
        (
            format!("{base}{}", "#".repeat(MAX_MANIFEST_BYTES)),
            "processor.yaml:1:1: error: manifest is too large",
        ),
        (
            format!("{base}limits: {}{}\n", "[".repeat(20), "]".repeat(20)),
            "processor.yaml:5:",
        ),
    ];
    for (source, expected) in cases {
        let got = rendered(&source);
        assert!(
            got.iter().any(|line| line.starts_with(expected)),
            "for {source:?}\nexpected a line starting with {expected:?}\ngot {got:#?}"
        );
        assert_eq!(check_manifest(&source, "processor.yaml").len(), got.len());
    }
}

#[test]
fn every_error_is_reported_in_order() {
    let got = rendered("name: Bad\nversion: x\nkind: wasm\nentry: /x\nfoo: 1\n");
    let places: Vec<&str> = got
        .iter()
        .map(|l| l.split(": error").next().unwrap())
        .collect();
    assert_eq!(
        places,
        [
            "processor.yaml:1:7",
            "processor.yaml:2:10",
            "processor.yaml:4:8",
            "processor.yaml:5:1"
        ]
    );
}

#[test]
fn sbom_is_checked_and_its_digest_recorded() {
    let dir = wasm_dir("with-sbom", "1.0.0");
    let manifest = format!(
        "{}sbom: sbom/bom.json\n",
        wasm_manifest("with-sbom", "1.0.0")
    );
    dir.write("processor.yaml", manifest.as_bytes(), 0o644);
    let bom = br#"{"bomFormat": "CycloneDX", "specVersion": "1.5", "components": []}"#;
    dir.write("sbom/bom.json", bom, 0o644);
    let m = check_dir(dir.path()).unwrap_or_else(|d| panic!("{}", render_all(&d)));
    let sbom = m.sbom.unwrap();
    assert_eq!(sbom.path, "sbom/bom.json");
    assert_eq!(
        sbom.sha256.unwrap(),
        format!("sha256:{}", hex::encode(Sha256::digest(bom)))
    );
    // parse_manifest alone cannot know the digest.
    assert_eq!(
        parse_manifest(&manifest, "p").unwrap().sbom.unwrap().sha256,
        None
    );

    let origin = dir.path().join("processor.yaml").display().to_string();
    for (bytes, why) in [
        (&b"{not json"[..], "is not valid JSON: "),
        (
            &br#"{"bomFormat": "SPDX"}"#[..],
            "is not a CycloneDX document (bomFormat is \"\\\"SPDX\\\"\", expected \"CycloneDX\")",
        ),
        (
            &br#"[1, 2]"#[..],
            "is not a CycloneDX document (no \"bomFormat\": \"CycloneDX\")",
        ),
    ] {
        dir.write("sbom/bom.json", bytes, 0o644);
        let got = render_all(&check_dir(dir.path()).unwrap_err());
        let expected = format!("{origin}:5:7: error: sbom \"sbom/bom.json\": {why}");
        assert!(got.starts_with(&expected), "{got}\nexpected {expected}");
    }
    std::fs::remove_file(dir.path().join("sbom/bom.json")).unwrap();
    assert_eq!(
        render_all(&check_dir(dir.path()).unwrap_err()),
        format!(
            "{origin}:5:7: error: sbom \"sbom/bom.json\" is not a file in the processor directory"
        )
    );
}

#[test]
fn hostile_manifests_are_refused_quickly() {
    let start = std::time::Instant::now();
    let bomb = format!(
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n{}",
        wasm_manifest("a", "1.0.0")
    );
    assert!(rendered(&bomb)[0].contains("anchors and aliases"));
    let deep = format!("name: {}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(parse_manifest(&deep, "p").is_err());
    let deep_block = "- ".repeat(30_000);
    assert!(parse_manifest(&deep_block, "p").is_err());
    let many = format!(
        "{}capabilities:\n{}",
        wasm_manifest("a", "1.0.0"),
        "  - env:A\n".repeat(MAX_CAPABILITIES + 1)
    );
    assert!(rendered(&many)[0].contains("too many capabilities"));
    fuzz_one(&[0xff, 0xfe, b':', b'\n', 0]);
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn fuzz_one_on_seeds() {
    let seeds: Vec<Vec<u8>> = vec![
        PYTHON_MANIFEST.as_bytes().to_vec(),
        wasm_manifest("x", "1.0.0").into_bytes(),
        b"name: [".to_vec(),
        b"\xff\xfe".to_vec(),
        b"".to_vec(),
        b"kind: script\nlanguage: sh\n".to_vec(),
        b"limits:\n  cpu: 50%\n  open_files: 2\n".to_vec(),
    ];
    for seed in seeds {
        fuzz_one(&seed);
        for cut in 0..seed.len() {
            fuzz_one(&seed[..cut]);
        }
    }
}

// ---- trees ----

fn line(bytes: &[u8], mode: &str, path: &str) -> String {
    format!(
        "{} {} {mode} {path}\n",
        hex::encode(Sha256::digest(bytes)),
        bytes.len()
    )
}

#[test]
fn listing_is_canonical() {
    let dir = TempDir::new("listing");
    dir.write("b", b"bee", 0o644);
    dir.write("a/b", b"nested", 0o600);
    dir.write("a.b", b"", 0o644);
    dir.write("run", b"#!/bin/sh\n", 0o700);
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let tree = Tree::read(dir.path()).unwrap();
    // Sorted by path bytes: "a.b" < "a/b" ('.' is 0x2e, '/' 0x2f).
    let expected = [
        line(b"", "644", "a.b"),
        line(b"nested", "644", "a/b"),
        line(b"bee", "644", "b"),
        line(b"#!/bin/sh\n", "755", "run"),
    ]
    .concat();
    assert_eq!(tree.listing(), expected);
    assert_eq!(
        tree.digest(),
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(expected.as_bytes()))
        )
    );
    assert_eq!(tree.digest_hex().len(), 64);
    assert_eq!(tree.total_bytes(), 3 + 6 + 10);
    let from_memory = Tree::from_files([
        ("run".to_owned(), true, b"#!/bin/sh\n".to_vec()),
        ("b".to_owned(), false, b"bee".to_vec()),
        ("a/b".to_owned(), false, b"nested".to_vec()),
        ("a.b".to_owned(), false, Vec::new()),
    ])
    .unwrap();
    assert_eq!(from_memory, tree);
}

#[test]
fn digest_depends_on_content_and_mode_only() {
    let one = TempDir::new("order1");
    let two = TempDir::new("order2");
    let files = [("x/1", &b"one"[..]), ("y", b"two"), ("x/z/3", b"three")];
    for (path, bytes) in files {
        one.write(path, bytes, 0o644);
    }
    for (path, bytes) in files.iter().rev() {
        two.write(path, bytes, 0o664);
    }
    let digest = Tree::read(one.path()).unwrap().digest().to_owned();
    assert_eq!(Tree::read(two.path()).unwrap().digest(), digest);

    two.write("y", b"twO", 0o644);
    let changed = Tree::read(two.path()).unwrap().digest().to_owned();
    assert_ne!(changed, digest);
    two.write("y", b"two", 0o644);
    assert_eq!(Tree::read(two.path()).unwrap().digest(), digest);
    two.write("y", b"two", 0o744);
    assert_ne!(Tree::read(two.path()).unwrap().digest(), digest);
    two.write("y", b"two", 0o645);
    assert_ne!(Tree::read(two.path()).unwrap().digest(), digest);
    two.write("y", b"two", 0o640);
    assert_eq!(Tree::read(two.path()).unwrap().digest(), digest);
    std::fs::rename(two.path().join("y"), two.path().join("w")).unwrap();
    assert_ne!(Tree::read(two.path()).unwrap().digest(), digest);
}

#[test]
fn symlinks_and_special_files_are_refused() {
    let dir = python_dir();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("lib/passwd")).unwrap();
    let err = Tree::read(dir.path()).unwrap_err();
    assert!(matches!(err, TreeError::Symlink { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: is a symbolic link; a processor directory may hold only regular files and directories",
            dir.path().join("lib/passwd").display()
        )
    );
    assert!(
        render_all(&check_dir(dir.path()).unwrap_err()).contains("lib/passwd: is a symbolic link")
    );
    std::fs::remove_file(dir.path().join("lib/passwd")).unwrap();

    // A symlink to a directory, and the top itself a symlink.
    std::os::unix::fs::symlink(dir.path().join("lib"), dir.path().join("lib2")).unwrap();
    assert!(matches!(
        Tree::read(dir.path()),
        Err(TreeError::Symlink { .. })
    ));
    std::fs::remove_file(dir.path().join("lib2")).unwrap();
    let link = TempDir::new("link");
    let top = link.path().join("top");
    std::os::unix::fs::symlink(dir.path(), &top).unwrap();
    assert!(matches!(Tree::read(&top), Err(TreeError::Symlink { .. })));
    assert!(Tree::read(dir.path()).is_ok());

    let fifo = dir.path().join("lib/pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    if made {
        let err = Tree::read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("lib/pipe: is a FIFO"), "{err}");
    }
}

#[test]
fn unlistable_names_are_refused() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = TempDir::new("names");
    dir.write("ok", b"", 0o644);
    let bad = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    std::fs::write(&bad, b"").unwrap();
    let err = Tree::read(dir.path()).unwrap_err();
    assert!(err.to_string().contains("not valid UTF-8"), "{err}");
    std::fs::remove_file(&bad).unwrap();
    dir.write("two\nlines", b"", 0o644);
    let err = Tree::read(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("two\\nlines: file name contains a control character"),
        "{err}"
    );

    for bad in ["", "/abs", "a//b", "a/./b", "../x", "x\ty"] {
        assert!(
            Tree::from_files([(bad.to_owned(), false, Vec::new())]).is_err(),
            "{bad:?}"
        );
    }
    let err = Tree::from_files([
        ("a".to_owned(), false, Vec::new()),
        ("a/b".to_owned(), false, Vec::new()),
    ])
    .unwrap_err();
    assert!(
        err.to_string().contains("both a file and a directory"),
        "{err}"
    );
    assert!(Tree::from_files([
        ("a".to_owned(), false, Vec::new()),
        ("a".to_owned(), true, Vec::new()),
    ])
    .is_err());
}

#[test]
fn tree_caps() {
    let dir = TempDir::new("many");
    for i in 0..=MAX_FILES {
        std::fs::write(dir.path().join(format!("f{i}")), b"").unwrap();
    }
    let err = Tree::read(dir.path()).unwrap_err();
    assert!(matches!(err, TreeError::TooManyFiles { .. }), "{err}");

    let deep = TempDir::new("deep");
    let mut path = deep.path().to_path_buf();
    for _ in 0..=MAX_DEPTH {
        path.push("d");
    }
    std::fs::create_dir_all(&path).unwrap();
    let err = Tree::read(deep.path()).unwrap_err();
    assert!(matches!(err, TreeError::TooDeep { .. }), "{err}");
    path.pop();
    std::fs::remove_dir(path.join("d")).unwrap();
    assert!(Tree::read(deep.path()).is_ok());
}

/// The shell one-liner of docs/processors.md, between its markers.
fn documented_one_liner() -> String {
    let doc = include_str!("../../../docs/processors.md");
    let start = doc
        .find("<!-- digest-one-liner -->")
        .expect("marker in docs/processors.md");
    let block = &doc[start..];
    let body = block.split("```sh\n").nth(1).unwrap();
    body.split("\n```").next().unwrap().to_owned()
}

#[test]
fn documented_shell_one_liner_matches() {
    let have = |tool: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !["sha256sum", "find", "sort", "stat", "cut", "sed"]
        .iter()
        .all(|t| have(t))
    {
        eprintln!("skipped: coreutils/findutils missing");
        return;
    }
    let dir = python_dir();
    dir.write("with space/and-dash", b"x y\n", 0o644);
    dir.write("-leading", b"dash", 0o755);
    dir.write("a.b", b"", 0o644);
    dir.write("a/b", b"\\n not a newline", 0o600);
    dir.write("ünïcode/ф", "текст".as_bytes(), 0o644);
    dir.write("bin/tool", b"\x7fELF", 0o711);
    dir.write("grp-exec", b"g", 0o654);
    let tree = Tree::read(dir.path()).unwrap();
    let script = documented_one_liner();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim_end(),
        tree.digest(),
        "listing:\n{}",
        tree.listing()
    );
}

// ---- registry ----

fn state() -> TempDir {
    TempDir::new("state")
}

fn add_dir(registry: &Registry, dir: &TempDir) -> Record {
    let (tree, manifest) =
        read_processor(dir.path()).unwrap_or_else(|d| panic!("{}", render_all(&d)));
    registry.add(&tree, &manifest, None, None).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn add_list_resolve_remove() {
    let state = state();
    let registry = Registry::open(state.path()).unwrap();
    assert_eq!(mode(registry.root()), 0o700);
    assert!(registry.list().unwrap().is_empty());

    let dir = python_dir();
    let (tree, manifest) = read_processor(dir.path()).unwrap();
    let record = registry
        .add(&tree, &manifest, Some("key:abc"), Some(b"{\"payload\":1}"))
        .unwrap();
    assert_eq!(record.id(), "csv-stats@1.2.3");
    assert_eq!(record.digest, tree.digest());
    assert_eq!(record.signer.as_deref(), Some("key:abc"));
    assert_eq!(record.summary.kind, Kind::Script);
    assert_eq!(record.summary.language, Some(Language::Python));
    assert_eq!(record.summary.entry, "main.py");
    assert_eq!(
        record.summary.capabilities,
        ["fs:read:/data", "net:http:api.example.com"]
    );
    assert_eq!(record.summary.limits["memory"], "128MiB");
    assert_eq!(record.summary.files, 3);
    assert!(record.added_at.ends_with('Z') && record.added_at.len() == 20);

    // Layout and modes.
    let object = registry.object_dir(&record.digest).unwrap();
    assert_eq!(
        object,
        registry
            .root()
            .join("objects/sha256")
            .join(record.digest_hex())
    );
    assert_eq!(mode(&object), 0o555);
    assert_eq!(mode(&object.join("lib")), 0o555);
    assert_eq!(mode(&object.join("main.py")), 0o444);
    let index = registry.root().join("index/csv-stats/1.2.3.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
    assert_eq!(json["digest"], record.digest.as_str());
    assert_eq!(
        std::fs::read(
            registry
                .root()
                .join(format!("objects/sha256/{}.sig", record.digest_hex()))
        )
        .unwrap(),
        b"{\"payload\":1}"
    );

    // Idempotent.
    assert_eq!(registry.add(&tree, &manifest, None, None).unwrap(), record);
    assert_eq!(
        registry
            .add(&tree, &manifest, Some("key:abc"), Some(b"{\"payload\":1}"))
            .unwrap(),
        record
    );
    let err = registry
        .add(
            &tree,
            &manifest,
            Some("key:other"),
            Some(b"{\"payload\":2}"),
        )
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::SignatureConflict { .. }),
        "{err}"
    );

    // Conflicting digest for the same name@version.
    dir.write("main.py", b"print('changed')\n", 0o644);
    let (changed, changed_manifest) = read_processor(dir.path()).unwrap();
    let err = registry
        .add(&changed, &changed_manifest, None, None)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "csv-stats@1.2.3 is already registered with digest {}; remove it first (this tree is {})",
            record.digest,
            changed.digest()
        )
    );

    // More versions, and resolution.
    let mut versions = Vec::new();
    for v in ["1.10.0", "1.9.0", "2.0.0-rc.1"] {
        let d = wasm_dir("csv-stats", v);
        versions.push(add_dir(&registry, &d));
    }
    let other = add_dir(&registry, &wasm_dir("other", "0.0.1"));
    let ids: Vec<String> = registry.list().unwrap().iter().map(Record::id).collect();
    assert_eq!(
        ids,
        [
            "csv-stats@1.2.3",
            "csv-stats@1.9.0",
            "csv-stats@1.10.0",
            "csv-stats@2.0.0-rc.1",
            "other@0.0.1"
        ]
    );
    assert_eq!(registry.resolve("csv-stats").unwrap().version, "1.10.0");
    assert_eq!(registry.resolve("csv-stats@1.2.3").unwrap(), record);
    assert_eq!(
        registry.resolve("csv-stats@2.0.0-rc.1").unwrap().version,
        "2.0.0-rc.1"
    );
    assert_eq!(
        registry
            .resolve(&format!("csv-stats@{}", record.digest))
            .unwrap(),
        record
    );
    assert_eq!(registry.resolve(&record.digest).unwrap(), record);
    assert_eq!(registry.resolve("other").unwrap(), other);
    // Only a pre-release left: it is chosen.
    let rc = add_dir(&registry, &wasm_dir("beta", "0.1.0-alpha"));
    assert_eq!(registry.resolve("beta").unwrap(), rc);

    for (spec, why) in [
        (
            "csv-stats@3.0.0",
            "no processor csv-stats@3.0.0 in the registry",
        ),
        ("nothing", "no processor nothing in the registry"),
        ("Bad", "invalid processor reference \"Bad\": invalid name"),
        (
            "csv-stats@1.2",
            "invalid processor reference \"csv-stats@1.2\": \"1.2\" is not a semantic version",
        ),
        (
            "csv-stats@sha256:12",
            "invalid processor reference \"csv-stats@sha256:12\": a digest is",
        ),
    ] {
        let err = registry.resolve(spec).unwrap_err().to_string();
        assert!(err.starts_with(why), "{spec}: {err}");
    }
    let wrong_name = format!("other@{}", record.digest);
    assert!(matches!(
        registry.resolve(&wrong_name),
        Err(RegistryError::NotFound { .. })
    ));

    // Load verifies and returns the bytes and the object path.
    let loaded = registry.load(&record).unwrap();
    assert_eq!(loaded.tree.digest(), record.digest);
    assert_eq!(loaded.dir, object);
    assert_eq!(loaded.entry_path(), object.join("main.py"));
    assert_eq!(loaded.entry_bytes(), b"print('hello')\n");
    assert_eq!(loaded.manifest, manifest);
    assert_eq!(loaded.signature.as_deref(), Some(&b"{\"payload\":1}"[..]));

    // Remove: the record goes, then the object (no other user).
    let removed = registry.remove("csv-stats", "1.2.3").unwrap();
    assert_eq!(removed, record);
    assert!(!index.exists());
    assert!(!object.exists());
    assert!(!registry
        .root()
        .join(format!("objects/sha256/{}.sig", record.digest_hex()))
        .exists());
    assert!(matches!(
        registry.remove("csv-stats", "1.2.3"),
        Err(RegistryError::NotFound { .. })
    ));
    assert!(matches!(
        registry.load(&record),
        Err(RegistryError::Tampered(_))
    ));
    assert_eq!(registry.resolve("csv-stats").unwrap(), versions[0]);
    // Now the changed tree may take the name@version.
    let readded = registry
        .add(&changed, &changed_manifest, None, None)
        .unwrap();
    assert_eq!(readded.digest, changed.digest());
    for v in versions {
        registry.remove(&v.name, &v.version).unwrap();
    }
    registry.remove("csv-stats", "1.2.3").unwrap();
    assert!(!registry.root().join("index/csv-stats").exists());
    assert!(std::fs::read_dir(registry.root().join("tmp"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn stored_bytes_are_the_hashed_bytes() {
    let state = state();
    let registry = Registry::open(state.path()).unwrap();
    let dir = wasm_dir("snap", "1.0.0");
    let (tree, manifest) = read_processor(dir.path()).unwrap();
    // The source changes after it was read: what is stored is what was hashed.
    dir.write("x.wasm", b"evil", 0o755);
    dir.write("extra", b"more", 0o644);
    let record = registry.add(&tree, &manifest, None, None).unwrap();
    let loaded = registry.load(&record).unwrap();
    assert_eq!(loaded.entry_bytes(), b"\0asm\x01\0\0\0");
    assert_eq!(
        std::fs::read(loaded.entry_path()).unwrap(),
        b"\0asm\x01\0\0\0"
    );
    assert!(loaded.tree.file("extra").is_none());

    // A manifest that is not the tree's is refused.
    let mut other = manifest.clone();
    other.name = "snap2".to_owned();
    assert!(matches!(
        registry.add(&tree, &other, None, None),
        Err(RegistryError::ManifestMismatch { .. })
    ));
    let bare = Tree::from_files([("x.wasm".to_owned(), false, Vec::new())]).unwrap();
    assert!(matches!(
        registry.add(&bare, &manifest, None, None),
        Err(RegistryError::ManifestMismatch { .. })
    ));
}

#[test]
fn tampering_is_detected_by_load() {
    let state = state();
    let registry = Registry::open(state.path()).unwrap();
    let dir = python_dir();
    let (tree, manifest) = read_processor(dir.path()).unwrap();
    let record = registry
        .add(&tree, &manifest, Some("k"), Some(b"envelope"))
        .unwrap();
    let object = registry.object_dir(&record.digest).unwrap();
    let main = object.join("main.py");

    // One changed byte.
    std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&object, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&main, b"print('hellO')\n").unwrap();
    std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o444)).unwrap();
    let err = registry.load(&record).unwrap_err();
    assert!(
        err.to_string().contains("should have digest") && err.to_string().contains("now hash to"),
        "{err}"
    );
    // Restored bytes, but an execute bit added.
    std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&main, b"print('hello')\n").unwrap();
    std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o555)).unwrap();
    assert!(matches!(
        registry.load(&record),
        Err(RegistryError::Tampered(_))
    ));
    std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o444)).unwrap();
    assert!(registry.load(&record).is_ok());
    // An added file, then a symlink.
    std::fs::write(object.join("implant.py"), b"").unwrap();
    assert!(matches!(
        registry.load(&record),
        Err(RegistryError::Tampered(_))
    ));
    std::fs::remove_file(object.join("implant.py")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", object.join("implant.py")).unwrap();
    let err = registry.load(&record).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    std::fs::remove_file(object.join("implant.py")).unwrap();
    assert!(registry.load(&record).is_ok());

    // The signature beside the object.
    let sig = registry
        .root()
        .join(format!("objects/sha256/{}.sig", record.digest_hex()));
    std::fs::set_permissions(&sig, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&sig, b"another").unwrap();
    let err = registry.load(&record).unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
    std::fs::write(&sig, b"envelope").unwrap();
    assert!(registry.load(&record).is_ok());

    // A damaged object is repaired by adding the tree again.
    std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&main, b"tampered").unwrap();
    assert!(registry.load(&record).is_err());
    registry.add(&tree, &manifest, None, None).unwrap();
    assert_eq!(
        registry.load(&record).unwrap().entry_bytes(),
        b"print('hello')\n"
    );

    // A record pointing elsewhere is caught.
    let other = add_dir(&registry, &wasm_dir("other", "1.0.0"));
    let mut forged = record.clone();
    forged.digest = other.digest.clone();
    forged.signature_sha256 = None;
    let err = registry.load(&forged).unwrap_err();
    assert!(err.to_string().contains("points at"), "{err}");
}

//! `warden key new|export|list` and the state directory: keys are private
//! (0600 in a 0700 directory), the exported key is standard PEM whose
//! sha256 of the DER is the key id (checked with OpenSSL), and a grant that
//! covers the state directory does not show it to a jailed program.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use common::TempDir;

#[test]
fn keys_are_made_private_exported_as_pem_and_listed() {
    let t = TempDir::new("keys");
    let state = t.root.join("state");
    let state_s = state.display().to_string();
    let out = t.raw(["--state", &state_s, "key", "new", "release"]).go();
    out.expect_code(0, "key new");
    let id = out.stdout.trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{}", out.ctx());
    assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
    let key_file = state.join("keys/release.key");
    assert_eq!(std::fs::metadata(&key_file).unwrap().mode() & 0o777, 0o600);
    // The private key is never printed.
    assert!(!out.stdout.contains("PRIVATE") && !out.stderr.contains("PRIVATE"));

    let out = t
        .raw(["--state", &state_s, "key", "export", "release"])
        .go();
    out.expect_code(0, "key export");
    assert!(
        out.stdout.starts_with("-----BEGIN PUBLIC KEY-----"),
        "{}",
        out.ctx()
    );
    // OpenSSL reads it, and the id is the sha256 of its DER.
    let mut der = Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "DER"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    use std::io::Write;
    der.stdin
        .take()
        .unwrap()
        .write_all(out.stdout.as_bytes())
        .unwrap();
    let der = der.wait_with_output().unwrap();
    assert!(der.status.success());
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&der.stdout))
    };
    assert_eq!(id, format!("sha256:{digest}"));

    // The environment names the same directory.
    let out = t.raw(["key", "list"]).env("WARDEN_STATE", &state_s).go();
    out.expect_code(0, "key list");
    assert_eq!(out.stdout, format!("release\t{id}\n"));

    // A second key of the same name, a bad name, a missing key: one line, exit 1.
    for args in [
        &["key", "new", "release"][..],
        &["key", "new", "../evil"],
        &["key", "export", "missing"],
    ] {
        let mut full = vec!["--state", &state_s];
        full.extend_from_slice(args);
        let out = t.raw(full).go();
        out.expect_code(1, &args.join(" "));
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.ctx());
        assert!(out.stderr.starts_with("warden: "), "{}", out.ctx());
    }
    assert!(!t.root.join("evil.key").exists());
}

#[test]
fn a_grant_covering_the_state_directory_does_not_show_it() {
    let t = TempDir::new("keys-mask");
    let state = t.root.join("state");
    let state_s = state.display().to_string();
    t.raw(["--state", &state_s, "key", "new", "k"])
        .go()
        .expect_code(0, "key new");
    let root = t.root.display().to_string();
    let out = t
        .raw([
            "--state",
            &state_s,
            "run",
            "--allow",
            &format!("fs:read:{root}"),
            "--",
            "cat",
            &format!("{state_s}/keys/k.key"),
        ])
        .go();
    assert_ne!(out.code, 0, "{}", out.ctx());
    assert!(!out.stdout.contains("PRIVATE KEY"), "{}", out.ctx());
}

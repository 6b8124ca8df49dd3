//! `warden sign`, `warden verify` and `warden trust`: a valid signature is
//! accepted and every failure is refused with exit 1 and one line naming
//! its cause: unknown key, revoked key, expired statement, wrong type,
//! modified file, malformed envelope, a signature made before the key's
//! not-before; two keys valid side by side for a rotation.

mod common;

use common::{Outcome, TempDir};

struct Signer {
    t: TempDir,
    state: String,
}

impl Signer {
    fn new(tag: &str) -> Signer {
        let t = TempDir::new(tag);
        let state = t.root.join("state").display().to_string();
        Signer { t, state }
    }

    fn warden(&self, args: &[&str]) -> Outcome {
        let mut full = vec!["--state", self.state.as_str()];
        full.extend_from_slice(args);
        self.t.raw(full).go()
    }

    /// A new key, exported to NAME.pem; returns its id.
    fn key(&self, name: &str) -> String {
        let out = self.warden(&["key", "new", name]);
        out.expect_code(0, "key new");
        let pem = self.warden(&["key", "export", name]);
        std::fs::write(self.t.root.join(format!("{name}.pem")), &pem.stdout).unwrap();
        out.stdout.trim().to_string()
    }

    fn pem(&self, name: &str) -> String {
        self.t
            .root
            .join(format!("{name}.pem"))
            .display()
            .to_string()
    }

    fn file(&self, name: &str, content: &str) -> String {
        self.t.write(name, content).display().to_string()
    }
}

fn refused(out: &Outcome, cause: &str) {
    out.expect_code(1, cause);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line\n{}", out.ctx());
    assert!(
        lines[0].starts_with(&format!("warden: {cause}")),
        "expected {cause:?}\n{}",
        out.ctx()
    );
}

#[test]
fn a_signature_verifies_and_each_failure_names_its_cause() {
    let s = Signer::new("sign");
    let id = s.key("release");
    let module = s.file("parser.wasm", "\0asm module bytes");
    let out = s.warden(&[
        "sign",
        "--key",
        "release",
        "--type",
        "module",
        "--name",
        "parser",
        "--version",
        "1.2.0",
        &module,
    ]);
    out.expect_code(0, "sign");
    // The envelope is standard DSSE with an in-toto Statement.
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{module}.sig")).unwrap()).unwrap();
    assert_eq!(env["payloadType"], "application/vnd.in-toto+json");
    assert_eq!(env["signatures"][0]["keyid"], id.as_str());

    refused(&s.warden(&["verify", &module]), "unknown key");
    s.warden(&["trust", "add", &s.pem("release")])
        .expect_code(0, "trust add");
    let ok = s.warden(&["verify", "--type", "module", &module]);
    ok.expect_code(0, "verify");
    assert!(
        ok.stdout.contains(&id) && ok.stdout.contains("parser 1.2.0"),
        "{}",
        ok.ctx()
    );

    refused(
        &s.warden(&["verify", "--type", "policy", &module]),
        "wrong type",
    );
    let copy = s.file("copy.wasm", "\0asm module bytes, changed");
    refused(
        &s.warden(&["verify", "--sig", &format!("{module}.sig"), &copy]),
        "digest mismatch",
    );
    let garbage = s.file("garbage.sig", "{\"payloadType\": 1}");
    refused(
        &s.warden(&["verify", "--sig", &garbage, &module]),
        "malformed envelope",
    );
    // Expired.
    let short = s.file("short.wasm", "short-lived");
    s.warden(&[
        "sign",
        "--key",
        "release",
        "--type",
        "module",
        "--expires",
        "1s",
        &short,
    ])
    .expect_code(0, "sign --expires");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    refused(&s.warden(&["verify", &short]), "expired statement");
    // Revoked: from now on.
    s.warden(&["trust", "revoke", &id, "--reason", "key leaked"])
        .expect_code(0, "revoke");
    let out = s.warden(&["verify", &module]);
    refused(&out, "revoked key");
    assert!(out.stderr.contains("key leaked"), "{}", out.ctx());
}

#[test]
fn rotation_keeps_two_keys_valid_and_not_before_holds() {
    let s = Signer::new("rotate");
    let old = s.key("old");
    let new = s.key("new");
    let a = s.file("a.wasm", "a");
    let b = s.file("b.wasm", "b");
    s.warden(&["sign", "--key", "old", "--type", "module", &a])
        .expect_code(0, "sign a");
    s.warden(&["sign", "--key", "new", "--type", "module", &b])
        .expect_code(0, "sign b");
    s.warden(&[
        "trust",
        "add",
        &s.pem("old"),
        "--not-after",
        "2099-01-01T00:00:00Z",
    ])
    .expect_code(0, "trust old");
    s.warden(&["trust", "add", &s.pem("new"), "--types", "module,processor"])
        .expect_code(0, "trust new");
    s.warden(&["verify", &a])
        .expect_code(0, "old key in the overlap");
    s.warden(&["verify", &b])
        .expect_code(0, "new key in the overlap");
    let list = s.warden(&["trust", "list"]);
    assert!(list.stdout.contains(&old) && list.stdout.contains(&new));
    // The new key may not sign policies.
    let p = s.file("p.yaml", "grants: []\n");
    s.warden(&["sign", "--key", "new", "--type", "policy", &p])
        .expect_code(0, "sign policy");
    refused(&s.warden(&["verify", &p]), "wrong type");
    // A key trusted only from a future time: a signature made now fails.
    let s2 = Signer::new("notbefore");
    s2.key("k");
    let f = s2.file("f.wasm", "f");
    s2.warden(&["sign", "--key", "k", "--type", "module", &f])
        .expect_code(0, "sign");
    s2.warden(&[
        "trust",
        "add",
        &s2.pem("k"),
        "--not-before",
        "2099-01-01T00:00:00Z",
    ])
    .expect_code(0, "trust");
    refused(&s2.warden(&["verify", &f]), "outside the key's validity");
    // Bad input to trust add: one line, exit 1.
    let bad = s2.file("bad.pem", "not a key");
    refused(
        &s2.warden(&["trust", "add", &bad]),
        "not an Ed25519 public key",
    );
    refused(
        &s2.warden(&["trust", "add", &s2.pem("k"), "--not-before", "yesterday"]),
        "--not-before",
    );
}

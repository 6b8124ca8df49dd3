//! Every `warden run` leaves a durable ledger entry, also a refused one;
//! `--no-audit` leaves none; a ledger that cannot be written refuses the
//! run; `warden audit verify` finds a changed entry and names it.

mod common;

use common::TempDir;

fn state(t: &TempDir) -> String {
    t.root.join("state").display().to_string()
}

fn entries(t: &TempDir) -> Vec<serde_json::Value> {
    let out = t.raw(["audit", "log"]).env("WARDEN_STATE", &state(t)).go();
    out.expect_code(0, "audit log");
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("entries are JSON"))
        .collect()
}

#[test]
fn runs_are_recorded_and_the_ledger_verifies() {
    let t = TempDir::new("audit");
    let s = state(&t);
    for i in 0..3u64 {
        let out = t
            .run(["--", "sh", "-c", &format!("exit {i}")])
            .env("WARDEN_STATE", &s)
            .go();
        out.expect_code(i as i32, "run");
        let audit = &out.report()["audit"];
        assert_eq!(audit["index"], i, "{}", out.ctx());
        assert_eq!(audit["leaf_hash"].as_str().unwrap().len(), 64);
    }
    // A run refused before it started is recorded too.
    let out = t
        .run(["--pids", "0", "--", "true"])
        .env("WARDEN_STATE", &s)
        .go();
    out.expect_warden_error("bad --pids");
    assert_eq!(out.report()["audit"]["index"], 3, "{}", out.ctx());
    // --no-audit: nothing.
    let out = t
        .run(["--no-audit", "--", "true"])
        .env("WARDEN_STATE", &s)
        .go();
    out.expect_ok("--no-audit");
    assert_eq!(out.report()["audit"], serde_json::Value::Null);
    let e = entries(&t);
    assert_eq!(e.len(), 4);
    assert_eq!(e[1]["event"]["exit_code"], 1);
    assert_eq!(e[3]["event"]["status"], "error");
    assert!(e[2]["event"]["principal"]
        .as_str()
        .unwrap()
        .starts_with("os:"));
    assert_eq!(e[2]["prev"].as_str().unwrap().len(), 64);
    let out = t.raw(["audit", "verify"]).env("WARDEN_STATE", &s).go();
    out.expect_code(0, "verify");
    assert!(out.stdout.starts_with("ok: 4 entries"), "{}", out.ctx());

    // Proofs: checked here with the ledger crate's verifier.
    let out = t.raw(["audit", "prove", "2"]).env("WARDEN_STATE", &s).go();
    out.expect_code(0, "prove");
    let p: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let b64 = |v: &serde_json::Value| -> [u8; 32] {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    let path: Vec<[u8; 32]> = p["audit_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(b64)
        .collect();
    let raw = t
        .raw(["audit", "log", "--from", "2", "--to", "3"])
        .env("WARDEN_STATE", &s)
        .go();
    let leaf = warden_ledger::merkle::leaf_hash(raw.stdout.trim_end_matches('\n').as_bytes());
    assert_eq!(leaf, b64(&p["leaf_hash"]), "the entry's bytes are its leaf");
    warden_ledger::merkle::verify_inclusion(2, 4, &leaf, &path, &b64(&p["root_hash"])).unwrap();
    let out = t
        .raw(["audit", "prove", "--consistency", "1"])
        .env("WARDEN_STATE", &s)
        .go();
    out.expect_code(0, "prove --consistency");
    let c: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let cpath: Vec<[u8; 32]> = c["consistency_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(b64)
        .collect();
    warden_ledger::merkle::verify_consistency(
        1,
        4,
        &b64(&c["old_root_hash"]),
        &b64(&c["root_hash"]),
        &cpath,
    )
    .unwrap();
    t.raw(["audit", "prove", "9"])
        .env("WARDEN_STATE", &s)
        .go()
        .expect_code(1, "no such entry");

    // A signed checkpoint, and the log's verifier key in the signed-note form.
    let out = t.raw(["audit", "checkpoint"]).env("WARDEN_STATE", &s).go();
    out.expect_code(0, "checkpoint");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[1], "4", "{}", out.ctx());
    assert!(
        lines[4].starts_with(&format!("\u{2014} {} ", lines[0])),
        "{}",
        out.ctx()
    );
    let vkey = t.raw(["audit", "key"]).env("WARDEN_STATE", &s).go();
    assert!(
        vkey.stdout.starts_with(&format!("{}+", lines[0])),
        "{}",
        vkey.ctx()
    );
    let pem = t
        .raw(["audit", "key", "--pem"])
        .env("WARDEN_STATE", &s)
        .go();
    assert!(pem.stdout.starts_with("-----BEGIN PUBLIC KEY-----"));
    let out = t.raw(["audit", "verify"]).env("WARDEN_STATE", &s).go();
    assert!(out.stdout.contains("1 checkpoints"), "{}", out.ctx());

    // Root on the host changes an entry with SQLite itself.
    let db = t.root.join("state/ledger/ledger.db");
    let py = format!(
        "import sqlite3; c=sqlite3.connect('{}'); c.execute(\"update entries set body=cast(replace(cast(body as text),'exit 1','exit 0') as blob) where idx=1\"); c.commit()",
        db.display()
    );
    let st = std::process::Command::new("python3")
        .args(["-c", &py])
        .status()
        .unwrap();
    assert!(st.success());
    let out = t.raw(["audit", "verify"]).env("WARDEN_STATE", &s).go();
    out.expect_code(1, "tampered");
    assert!(out.stderr.starts_with("warden: entry 1: "), "{}", out.ctx());
}

#[test]
fn a_ledger_that_cannot_be_written_refuses_the_run() {
    let t = TempDir::new("audit-ro");
    // Root's directory, which the ordinary user may not write.
    let ro = t.root.join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    t.open_to_everyone();
    let marker = t.root.join("ran");
    let out = t
        .raw([
            "run",
            "--allow",
            &format!("fs:write:{}", t.root.display()),
            "--",
            "touch",
            &marker.display().to_string(),
        ])
        .user(65534)
        .env("WARDEN_STATE", &ro.join("state").display().to_string())
        .go();
    out.expect_warden_error("read-only state");
    assert!(out.stderr.contains("audit ledger"), "{}", out.ctx());
    assert!(!marker.exists(), "the program must not have run");
}

/// The ledger is opened while the jail is being built (off the start
/// path); one that passes the cheap checks but cannot be opened must still
/// stop the run before its program starts.
#[test]
fn a_ledger_that_cannot_be_opened_stops_the_jail_before_the_program() {
    let t = TempDir::new("audit-bad-db");
    let s = state(&t);
    let ledger = std::path::Path::new(&s).join("ledger");
    std::fs::create_dir_all(&ledger).unwrap();
    std::fs::set_permissions(&s, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&ledger, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(ledger.join("ledger.db"), vec![0x5a; 8192]).unwrap();
    let marker = t.root.join("ran");
    let out = t
        .raw([
            "run",
            "--allow",
            &format!("fs:write:{}", t.root.display()),
            "--",
            "touch",
            &marker.display().to_string(),
        ])
        .env("WARDEN_STATE", &s)
        .go();
    out.expect_warden_error("an unreadable ledger database");
    assert!(
        out.stderr
            .contains("cannot record the run in the audit ledger, so it is not started"),
        "{}",
        out.ctx()
    );
    assert_eq!(
        out.stderr.matches("so it is not started").count(),
        1,
        "said once: {}",
        out.ctx()
    );
    assert!(!marker.exists(), "the program must not have run");
}

#[test]
fn external_events_are_appended_and_a_bad_line_keeps_what_came_before() {
    let t = TempDir::new("audit-append");
    let s = state(&t);
    let out = t
        .raw(["audit", "append"])
        .env("WARDEN_STATE", &s)
        .stdin("{\"job\":\"nightly\",\"ok\":true}\n\n{\"job\":\"backup\"}\n[1,2]\n{\"never\":1}\n")
        .go();
    out.expect_code(1, "a line that is not an object");
    assert_eq!(out.stdout, "0\n1\n", "{}", out.ctx());
    assert!(
        out.stderr
            .contains("line 4: expected a JSON object, found an array"),
        "{}",
        out.ctx()
    );
    let e = entries(&t);
    assert_eq!(e.len(), 2);
    assert_eq!(e[0]["kind"], "external");
    assert_eq!(e[0]["event"]["record"]["job"], "nightly");
    assert!(e[0]["event"]["principal"]
        .as_str()
        .unwrap()
        .starts_with("os:"));
    assert_eq!(e[1]["event"]["record"]["job"], "backup");
    // Not JSON at all, and an oversized line.
    let out = t
        .raw(["audit", "append"])
        .env("WARDEN_STATE", &s)
        .stdin("{\"a\":1}\n{oops\n")
        .go();
    out.expect_code(1, "not JSON");
    assert_eq!(out.stdout, "2\n");
    assert!(out.stderr.contains("line 2: not JSON"), "{}", out.ctx());
    let big = format!("{{\"x\":\"{}\"}}\n", "a".repeat(70_000));
    let out = t
        .raw(["audit", "append"])
        .env("WARDEN_STATE", &s)
        .stdin(&big)
        .go();
    out.expect_code(1, "oversized line");
    assert!(out.stderr.contains("line 1: longer than"), "{}", out.ctx());
    t.raw(["audit", "verify"])
        .env("WARDEN_STATE", &s)
        .go()
        .expect_code(0, "verify after appends");
    assert_eq!(entries(&t).len(), 3);
}

/// A checkpoint someone saved catches a history rewritten afterwards,
/// even by root with the log's own key, and a truncated tail.
#[test]
fn a_saved_checkpoint_catches_rewritten_history_and_truncation() {
    let t = TempDir::new("audit-saved");
    let a = state(&t);
    let append = |state: &str, lines: &str| {
        t.raw(["audit", "append"])
            .env("WARDEN_STATE", state)
            .stdin(lines)
            .go()
            .expect_code(0, "append");
    };
    append(&a, "{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");
    let out = t.raw(["audit", "checkpoint"]).env("WARDEN_STATE", &a).go();
    out.expect_code(0, "checkpoint");
    let saved = t.write("saved-3.note", &out.stdout);
    append(&a, "{\"n\":3}\n{\"n\":4}\n");
    let verify = |state: &str, saved: &std::path::Path| {
        t.raw([
            "audit",
            "verify",
            "--checkpoint",
            &saved.display().to_string(),
        ])
        .env("WARDEN_STATE", state)
        .go()
    };
    let out = verify(&a, &saved);
    out.expect_code(0, "consistent");
    assert!(
        out.stdout
            .contains("consistent with the saved checkpoint of 3 entries"),
        "{}",
        out.ctx()
    );
    let out = t.raw(["audit", "checkpoint"]).env("WARDEN_STATE", &a).go();
    let saved5 = t.write("saved-5.note", &out.stdout);

    // Another history under the same origin and the same log key: every
    // entry, the chain, the tree and its checkpoints are self-consistent.
    let b = t.root.join("state-b").display().to_string();
    append(&b, "{\"n\":0}\n");
    std::fs::copy(
        t.root.join("state/ledger/log.key"),
        t.root.join("state-b/ledger/log.key"),
    )
    .unwrap();
    append(
        &b,
        "{\"n\":\"rewritten\"}\n{\"n\":2}\n{\"n\":3}\n{\"n\":4}\n",
    );
    t.raw(["audit", "verify"])
        .env("WARDEN_STATE", &b)
        .go()
        .expect_code(0, "the rewritten ledger is self-consistent");
    let out = verify(&b, &saved);
    out.expect_code(1, "rewritten");
    assert!(
        out.stderr
            .starts_with("warden: entries 0..3: history rewritten since the saved checkpoint"),
        "{}",
        out.ctx()
    );
    // Truncated: B has 5 entries; a checkpoint of A's at 5 is fine, one
    // beyond B's size is not.
    let c = t.root.join("state-c").display().to_string();
    append(&c, "{\"n\":0}\n");
    std::fs::copy(
        t.root.join("state/ledger/log.key"),
        t.root.join("state-c/ledger/log.key"),
    )
    .unwrap();
    let out = verify(&c, &saved5);
    out.expect_code(1, "truncated");
    assert!(
        out.stderr
            .contains("entry 1: missing; the saved checkpoint records 5 entries"),
        "{}",
        out.ctx()
    );
    // A note signed by another log's key.
    let d = t.root.join("state-d").display().to_string();
    append(&d, "{\"n\":0}\n");
    let out = verify(&d, &saved);
    out.expect_code(1, "another key");
    assert!(
        out.stderr.contains("not signed by this log"),
        "{}",
        out.ctx()
    );
}

#[test]
fn trust_store_changes_are_ledger_entries() {
    let t = TempDir::new("audit-trust");
    let s = state(&t);
    t.raw(["key", "new", "release"])
        .env("WARDEN_STATE", &s)
        .go()
        .expect_code(0, "key new");
    let pem = t
        .raw(["key", "export", "release"])
        .env("WARDEN_STATE", &s)
        .go();
    let pem_path = t.write("release.pem", &pem.stdout);
    let out = t
        .raw([
            "trust",
            "add",
            &pem_path.display().to_string(),
            "--types",
            "processor",
        ])
        .env("WARDEN_STATE", &s)
        .go();
    out.expect_code(0, "trust add");
    let keyid = out.stdout.split_whitespace().nth(1).unwrap().to_string();
    t.raw(["trust", "revoke", &keyid, "--reason", "rotated"])
        .env("WARDEN_STATE", &s)
        .go()
        .expect_code(0, "trust revoke");
    let e = entries(&t);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0]["kind"], "trust");
    assert_eq!(e[0]["event"]["action"], "add");
    assert_eq!(e[0]["event"]["keyid"], keyid.as_str());
    assert_eq!(e[0]["event"]["types"][0], "processor");
    assert_eq!(e[1]["event"]["action"], "revoke");
    assert_eq!(e[1]["event"]["reason"], "rotated");
}

#[test]
fn no_audit_is_refused_when_the_policy_requires_auditing() {
    let t = TempDir::new("audit-required");
    let s = state(&t);
    let policy = t.write("p.yaml", "grants: []\naudit: required\n");
    let marker = t.root.join("ran");
    let out = t
        .run([
            "--no-audit",
            "--policy",
            &policy.display().to_string(),
            "--",
            "sh",
            "-c",
            &format!("echo > {}", marker.display()),
        ])
        .env("WARDEN_STATE", &s)
        .go();
    out.expect_code(126, "refused");
    assert_eq!(out.report()["status"], "refused", "{}", out.ctx());
    assert!(out.report()["refusal"]
        .as_str()
        .unwrap()
        .contains("audit: required"));
    assert!(!marker.exists());
    // The refusal itself is in the ledger.
    let e = entries(&t);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["event"]["status"], "refused");
    // Without --no-audit the same run goes ahead.
    let out = t
        .run(["--policy", &policy.display().to_string(), "--", "true"])
        .env("WARDEN_STATE", &s)
        .go();
    out.expect_ok("audited run");
    assert_eq!(out.report()["audit"]["index"], 1);
}

/// A state directory on a full filesystem (a small tmpfs): the run is
/// refused before it starts, with a message naming the cause.
#[test]
fn a_full_state_filesystem_refuses_the_run() {
    let t = TempDir::new("audit-full");
    let mnt = t.root.join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("mount(8)");
    assert!(
        st.success(),
        "mounting a tmpfs needs root (CI runs as root)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let s = mnt.join("state").display().to_string();
    // One run while there is room: the ledger exists.
    t.run(["--", "true"])
        .env("WARDEN_STATE", &s)
        .go()
        .expect_ok("run with room");
    // Fill it.
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", mnt.join("fill").display()))
        .stderr(std::process::Stdio::null())
        .status();
    let marker = t.root.join("ran");
    let out = t
        .run([
            "--allow",
            &format!("fs:write:{}", t.root.display()),
            "--",
            "touch",
            &marker.display().to_string(),
        ])
        .env("WARDEN_STATE", &s)
        .go();
    out.expect_warden_error("full state filesystem");
    assert!(out.stderr.contains("less than 1 MiB free"), "{}", out.ctx());
    assert!(!marker.exists(), "the program must not have run");
    // Room again: the ledger still verifies, with the one entry.
    std::fs::remove_file(mnt.join("fill")).unwrap();
    let out = t.raw(["audit", "verify"]).env("WARDEN_STATE", &s).go();
    out.expect_code(0, "verify");
    assert!(out.stdout.starts_with("ok: 1 entries"), "{}", out.ctx());
}

#[test]
fn checkpoints_are_signed_at_the_configured_cadence() {
    let t = TempDir::new("audit-cadence");
    let s = state(&t);
    std::fs::create_dir_all(t.root.join("state")).unwrap();
    t.write_root("state/warden.yaml", "ledger:\n  checkpoint_every: 2\n");
    for _ in 0..5 {
        t.raw(["audit", "append"])
            .env("WARDEN_STATE", &s)
            .stdin("{\"n\":1}\n")
            .go()
            .expect_code(0, "append");
    }
    let out = t.raw(["audit", "verify"]).env("WARDEN_STATE", &s).go();
    out.expect_code(0, "verify");
    assert!(out.stdout.contains(" 2 checkpoints"), "{}", out.ctx());
    // By age: an uncovered entry older than the interval (0s: any) gets one.
    t.write_root(
        "state/warden.yaml",
        "ledger:\n  checkpoint_every: 0\n  checkpoint_interval: 1ms\n",
    );
    t.raw(["audit", "append"])
        .env("WARDEN_STATE", &s)
        .stdin("{\"n\":1}\n")
        .go()
        .expect_code(0, "append");
    let out = t.raw(["audit", "verify"]).env("WARDEN_STATE", &s).go();
    assert!(out.stdout.contains(" 3 checkpoints"), "{}", out.ctx());
    // A bad configuration refuses the append, naming the file.
    t.write_root("state/warden.yaml", "ledger:\n  checkpoint_evry: 2\n");
    let out = t
        .raw(["audit", "append"])
        .env("WARDEN_STATE", &s)
        .stdin("{\"n\":1}\n")
        .go();
    out.expect_code(125, "bad config");
    assert!(out.stderr.contains("warden.yaml"), "{}", out.ctx());
    assert!(out.stderr.contains("checkpoint_evry"), "{}", out.ctx());
}

/// The entry (and the report) carry the SHA-256 of what went in and out.
#[test]
fn runs_record_the_digests_of_their_streams() {
    use sha2::Digest as _;
    let t = TempDir::new("audit-streams");
    let s = state(&t);
    let out = t
        .run(["--", "sh", "-c", "cat; echo oops >&2"])
        .env("WARDEN_STATE", &s)
        .stdin("hello\n")
        .go();
    out.expect_ok("cat");
    assert_eq!(out.stdout, "hello\n");
    let hex = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
    let streams = &out.report()["streams"];
    assert_eq!(streams["stdin"], hex(b"hello\n").as_str(), "{}", out.ctx());
    assert_eq!(streams["stdout"], hex(b"hello\n").as_str());
    assert_eq!(streams["stderr"], hex(b"oops\n").as_str());
    let e = entries(&t);
    assert_eq!(e[0]["event"]["streams"], *streams);
    // Output cut at the limit: the digest is of what the caller got.
    let out = t
        .run(["--output-limit", "4", "--", "sh", "-c", "echo 123456789"])
        .env("WARDEN_STATE", &s)
        .go();
    assert_eq!(out.stdout, "1234");
    assert_eq!(
        out.report()["streams"]["stdout"],
        hex(b"1234").as_str(),
        "{}",
        out.ctx()
    );
}

/// `audit export` writes a bundle that `audit verify --bundle` checks with
/// the verifier key alone (another state directory: no ledger at all); a
/// changed byte or another key fails.
#[test]
fn an_exported_bundle_verifies_offline() {
    let t = TempDir::new("audit-bundle");
    let s = state(&t);
    let out = t
        .raw(["audit", "append"])
        .env("WARDEN_STATE", &s)
        .stdin("{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n{\"n\":4}\n")
        .go();
    out.expect_code(0, "append");
    let bundle = t.root.join("b.json");
    let out = t
        .raw([
            "audit",
            "export",
            "--from",
            "1",
            "--to",
            "4",
            "-o",
            &bundle.display().to_string(),
        ])
        .env("WARDEN_STATE", &s)
        .go();
    out.expect_code(0, "export");
    let key = t.raw(["audit", "key"]).env("WARDEN_STATE", &s).go();
    let key = key.stdout.trim().to_string();
    let elsewhere = t.root.join("empty-state").display().to_string();
    let verify = |key: &str| {
        t.raw([
            "audit",
            "verify",
            "--bundle",
            &bundle.display().to_string(),
            "--key",
            key,
        ])
        .env("WARDEN_STATE", &elsewhere)
        .go()
    };
    let out = verify(&key);
    out.expect_code(0, "verify bundle");
    assert!(out.stdout.starts_with("ok: entries 1..4"), "{}", out.ctx());
    assert!(!t.root.join("empty-state/ledger").exists());
    // The key from a file works too.
    let key_file = t.write_root("log.vkey", &format!("{key}\n"));
    verify(&key_file.display().to_string()).expect_code(0, "key file");
    // Another log's key.
    let other = t.root.join("other").display().to_string();
    t.raw(["audit", "append"])
        .env("WARDEN_STATE", &other)
        .stdin("{}\n")
        .go()
        .expect_code(0, "other log");
    let other_key = t.raw(["audit", "key"]).env("WARDEN_STATE", &other).go();
    let out = verify(other_key.stdout.trim());
    out.expect_code(1, "another key");
    assert!(out.stderr.contains("checkpoint:"), "{}", out.ctx());
    // One entry's bytes changed (in its base64).
    let text = std::fs::read_to_string(&bundle).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entry = v["entries"][1]["entry"].as_str().unwrap().to_string();
    let mut bytes = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(&entry)
            .unwrap()
    };
    let at = bytes.iter().position(|&b| b == b'1').unwrap();
    bytes[at] = b'9';
    let forged = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    };
    std::fs::write(&bundle, text.replace(&entry, &forged)).unwrap();
    let out = verify(&key);
    out.expect_code(1, "changed entry");
    assert!(out.stderr.starts_with("warden: entry 2:"), "{}", out.ctx());
    // Not a bundle.
    std::fs::write(&bundle, "{\"format\":1}").unwrap();
    let out = verify(&key);
    out.expect_code(1, "malformed");
    assert!(out.stderr.contains("malformed bundle"), "{}", out.ctx());
}

/// A file on stdin is a bulk import (the streaming path): the same
/// entries, the same stop at a bad line with what came before kept.
#[test]
fn a_file_on_stdin_is_imported_in_bulk() {
    let t = TempDir::new("audit-bulk");
    let s = state(&t);
    let mut lines = String::new();
    for i in 0..2500 {
        lines.push_str(&format!("{{\"n\":{i}}}\n"));
    }
    lines.push_str("not json\n{\"n\":\"after\"}\n");
    let file = t.write_root("events.jsonl", &lines);
    let out = std::process::Command::new(common::warden_bin())
        .args(["audit", "append"])
        .env("WARDEN_STATE", &s)
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 2500);
    assert_eq!(stdout.lines().last(), Some("2499"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2501: not JSON"));
    let e = entries(&t);
    assert_eq!(e.len(), 2500);
    assert_eq!(e[2499]["event"]["record"]["n"], 2499);
    t.raw(["audit", "verify"])
        .env("WARDEN_STATE", &s)
        .go()
        .expect_code(0, "verify");
}

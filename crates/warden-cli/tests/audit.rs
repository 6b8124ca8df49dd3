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

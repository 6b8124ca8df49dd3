//! Trusted configuration: STATE/warden.yaml's settings apply, settings
//! variables it does not allow are ignored with a warning, and with
//! require_signed_config in the trust store an unsigned configuration or
//! policy is refused before any of it is used.

mod common;

use common::TempDir;

fn state(t: &TempDir) -> String {
    t.root.join("state").display().to_string()
}

#[test]
fn the_configuration_decides_and_governs_the_environment() {
    let t = TempDir::new("config");
    let s = state(&t);
    std::fs::create_dir_all(t.root.join("state")).unwrap();
    let policy = t.write_root("default-policy.yaml", "grants: []\naudit: required\n");
    t.write_root(
        "state/warden.yaml",
        &format!(
            "require_signed: true\npolicy: {}\nledger:\n  origin: example.org/warden/test\nenv_overrides:\n  WARDEN_CACHE_DIR: cache_dir\n",
            policy.display()
        ),
    );
    // A settings variable the configuration does not allow: ignored, said.
    let out = t
        .run(["--", "true"])
        .env("WARDEN_STATE", &s)
        .env("WARDEN_KV_DIR", "/tmp/elsewhere")
        .go();
    out.expect_ok("run");
    assert!(
        out.stderr.contains("WARDEN_KV_DIR is ignored"),
        "{}",
        out.ctx()
    );
    // The ledger's origin comes from the configuration.
    assert_eq!(out.report()["audit"]["origin"], "example.org/warden/test");
    // The policy in force for a processor, and require_signed, with no
    // --policy given: an unsigned processor is refused.
    let dir = t.root.join("p");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("processor.yaml"),
        "name: p\nversion: 1.0.0\nkind: script\nlanguage: sh\nentry: run.sh\n",
    )
    .unwrap();
    std::fs::write(dir.join("run.sh"), "echo hi\n").unwrap();
    let out = t
        .raw(["processor", "add", &dir.display().to_string()])
        .env("WARDEN_STATE", &s)
        .go();
    out.expect_code(126, "unsigned under warden.yaml's require_signed");
    assert!(out.stderr.contains("unsigned"), "{}", out.ctx());
    // An unknown key is refused with its name.
    t.write_root("state/warden.yaml", "requre_signed: true\n");
    let out = t.run(["--", "true"]).env("WARDEN_STATE", &s).go();
    out.expect_warden_error("unknown key");
    assert!(out.stderr.contains("requre_signed"), "{}", out.ctx());
}

#[test]
fn signed_configuration_is_required_when_the_trust_store_says_so() {
    let t = TempDir::new("config-signed");
    let s = state(&t);
    let w = |args: &[&str]| t.raw(args.iter().copied()).env("WARDEN_STATE", &s).go();
    w(&["key", "new", "ops"]).expect_code(0, "key");
    let pem = w(&["key", "export", "ops"]);
    let pem = t.write_root("ops.pem", &pem.stdout);
    w(&[
        "trust",
        "add",
        &pem.display().to_string(),
        "--types",
        "config,policy",
    ])
    .expect_code(0, "trust");
    let config = t.write_root("state/warden.yaml", "ledger:\n  checkpoint_every: 100\n");
    let policy = t.write_root("p.yaml", "grants: []\n");
    // Signed before the switch is turned on (afterwards nothing unsigned
    // is read, the configuration included).
    w(&[
        "sign",
        "--key",
        "ops",
        "--type",
        "config",
        &config.display().to_string(),
    ])
    .expect_code(0, "sign config");
    w(&["trust", "require-signed-config", "true"]).expect_code(0, "switch on");
    t.run(["--", "true"])
        .env("WARDEN_STATE", &s)
        .go()
        .expect_ok("signed configuration");
    // An unsigned policy is refused before it is parsed.
    let out = t
        .run(["--policy", &policy.display().to_string(), "--", "true"])
        .env("WARDEN_STATE", &s)
        .go();
    out.expect_warden_error("unsigned policy");
    assert!(
        out.stderr.contains("require_signed_config"),
        "{}",
        out.ctx()
    );
    // Signed as a policy: accepted. Signed as config: not a policy.
    w(&[
        "sign",
        "--key",
        "ops",
        "--type",
        "policy",
        &policy.display().to_string(),
    ])
    .expect_code(0, "sign policy");
    t.run(["--policy", &policy.display().to_string(), "--", "true"])
        .env("WARDEN_STATE", &s)
        .go()
        .expect_ok("signed policy");
    // The configuration changed after signing: refused, nothing runs.
    std::fs::write(&config, "ledger:\n  checkpoint_every: 1\n").unwrap();
    let out = t.run(["--", "true"]).env("WARDEN_STATE", &s).go();
    out.expect_warden_error("changed configuration");
    assert!(
        out.stderr.contains("configuration refused"),
        "{}",
        out.ctx()
    );
    assert!(out.stderr.contains("does not verify"), "{}", out.ctx());
}

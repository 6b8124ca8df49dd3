//! RBAC enforcement through the CLI: with STATE/rbac.yaml in force, every
//! command asks before it acts; a denial is exit 126 naming the deciding
//! rule and is a ledger entry with the principal. `warden authz check`,
//! `explain`, `test` and `export-cedar`.

mod common;

use common::TempDir;

fn state(t: &TempDir) -> String {
    t.root.join("state").display().to_string()
}

const RBAC: &str = r#"os_users: {root: admin}
roles:
  operator: {}
  admin: {inherits: [operator]}
bindings:
  - {principal: admin, tenant: "*", roles: [admin]}
  - {principal: alice, tenant: acme, roles: [operator]}
rules:
  - allow: processor.add
    role: admin
    cross_tenant: true
  - allow: secret.put
    role: admin
    cross_tenant: true
  - allow: trust.change
    role: admin
    cross_tenant: true
  - allow: audit.read
    role: admin
    cross_tenant: true
  - allow: audit.export
    role: admin
    cross_tenant: true
  - allow: tenant.admin
    role: admin
    cross_tenant: true
  - allow: invoke
    role: operator
    resources: ["parser*"]
    ceiling: [fs:read:/usr]
  - allow: secret.read
    role: operator
    resources: ["db-*"]
  - deny: secret.read
    role: operator
    resources: ["db-root"]
  - allow: processor.add
    role: operator
"#;

fn processor(t: &TempDir, name: &str, caps: &str) -> String {
    let dir = t.root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("processor.yaml"),
        format!("name: {name}\nversion: 1.0.0\nkind: script\nlanguage: sh\nentry: run.sh\ncapabilities: {caps}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("run.sh"), "echo ran\n").unwrap();
    dir.display().to_string()
}

#[test]
fn rbac_decides_what_each_principal_may_do() {
    let t = TempDir::new("authz");
    let s = state(&t);
    let w = |args: &[&str], key: &str| {
        t.raw(args.iter().copied())
            .env("WARDEN_STATE", &s)
            .env("WARDEN_API_KEY", key)
            .go()
    };
    // Set up before the RBAC file is in force (then nothing is enforced).
    w(&["tenant", "add", "acme"], "").expect_code(0, "tenant");
    let alice = w(&["principal", "add", "alice", "--tenant", "acme"], "");
    let alice = alice.stdout.trim().to_string();
    let rbac = t.write_root("state/rbac.yaml", RBAC);
    let out = w(&["authz", "check", &rbac.display().to_string()], "");
    out.expect_code(0, "check");

    // Alice: add and invoke parser-1 within the ceiling.
    w(
        &[
            "processor",
            "add",
            &processor(&t, "parser-1", "[fs:read:/usr/share]"),
        ],
        &alice,
    )
    .expect_code(0, "alice adds");
    let out = w(&["invoke", "parser-1"], &alice);
    out.expect_code(0, "within the ceiling");
    assert_eq!(out.stdout, "ran\n");
    // Beyond the ceiling, or another name: refused, naming the rule.
    w(
        &[
            "processor",
            "add",
            &processor(&t, "parser-2", "[fs:read:/etc]"),
        ],
        &alice,
    )
    .expect_code(0, "alice adds parser-2");
    let out = t
        .raw([
            "invoke",
            "parser-2",
            "--report",
            &t.report_path().display().to_string(),
        ])
        .env("WARDEN_STATE", &s)
        .env("WARDEN_API_KEY", &alice)
        .go();
    out.expect_code(126, "beyond the ceiling");
    assert_eq!(t.report_json()["status"], "refused");
    assert!(out.stderr.contains("RBAC refuses invoke"), "{}", out.ctx());
    w(&["processor", "add", &processor(&t, "other", "[]")], &alice).expect_code(0, "add other");
    let out = w(&["invoke", "other"], &alice);
    out.expect_code(126, "not a parser");
    assert!(
        out.stderr.contains("no rule allows") || out.stderr.contains("RBAC refuses"),
        "{}",
        out.ctx()
    );
    // Secrets: db-app allowed, db-root denied by the deny rule (deny wins).
    for name in ["db-app", "db-root"] {
        t.raw(["secret", "put", name, "--tenant", "acme"])
            .env("WARDEN_STATE", &s)
            .stdin("v4lue-of-a-secret")
            .go()
            .expect_code(0, "root puts (admin)");
    }
    let out = t
        .run(["--allow", "secret:db-app", "--", "true"])
        .env("WARDEN_STATE", &s)
        .env("WARDEN_API_KEY", &alice)
        .go();
    out.expect_ok("db-app");
    let out = t
        .run(["--allow", "secret:db-root", "--", "true"])
        .env("WARDEN_STATE", &s)
        .env("WARDEN_API_KEY", &alice)
        .go();
    out.expect_code(126, "db-root");
    assert!(
        out.stderr.contains("rules[8]"),
        "the deciding deny rule is named: {}",
        out.ctx()
    );
    // Alice may not change the trust store, put secrets or administer tenants.
    let pem = t.write_root("k.pem", "not a key");
    let out = w(&["trust", "add", &pem.display().to_string()], &alice);
    out.expect_code(126, "trust change");
    let out = t
        .raw(["secret", "put", "x"])
        .env("WARDEN_STATE", &s)
        .env("WARDEN_API_KEY", &alice)
        .stdin("v")
        .go();
    out.expect_code(126, "secret put");
    w(&["tenant", "add", "evil"], &alice).expect_code(126, "tenant admin");
    // Root, as admin through os_users, may.
    w(&["tenant", "add", "beta"], "").expect_code(0, "root adds a tenant");
    // Every denial is in the ledger, with its principal.
    let log = w(&["audit", "log"], "");
    log.expect_code(0, "root reads the ledger");
    let denials: Vec<serde_json::Value> = log
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "authz" && e["event"]["action"] == "deny")
        .collect();
    assert!(denials.len() >= 5, "{}", log.stdout);
    assert!(denials.iter().all(|d| d["event"]["principal"] == "alice"));
    // Alice may not read the ledger (no audit.read for operator).
    w(&["audit", "log"], &alice).expect_code(126, "audit read");

    // explain, test, export-cedar.
    let out = w(
        &[
            "authz",
            "explain",
            "--principal",
            "alice",
            "--tenant",
            "acme",
            "--action",
            "secret.read",
            "--resource",
            "db-root",
        ],
        "",
    );
    out.expect_code(1, "explain deny");
    assert!(out.stdout.starts_with("deny: alice"), "{}", out.ctx());
    assert!(
        out.stdout.contains("rbac.yaml:34:5: rules[8]"),
        "{}",
        out.ctx()
    );
    let cases = t.write_root(
        "cases.yaml",
        "- {principal: alice, tenant: acme, action: invoke, resource: parser-9, capabilities: [fs:read:/usr/lib], expect: allow}\n- {principal: alice, tenant: acme, action: secret.read, resource: db-root, expect: allow}\n",
    );
    let out = w(
        &[
            "authz",
            "test",
            &rbac.display().to_string(),
            &cases.display().to_string(),
        ],
        "",
    );
    out.expect_code(1, "one case fails");
    assert!(
        out.stdout.contains("2 cases, 1 passed, 1 failed"),
        "{}",
        out.ctx()
    );
    assert!(
        out.stdout
            .contains("cases.yaml:2:3: case 1 expected allow but got deny"),
        "{}",
        out.ctx()
    );
    let out = w(&["authz", "export-cedar"], "");
    out.expect_code(0, "export");
    assert!(
        out.stdout.contains("permit") && out.stdout.contains("forbid"),
        "{}",
        out.ctx()
    );

    // A bad RBAC file: check names the place; commands refuse to act.
    let bad = t.write_root(
        "bad.yaml",
        "roles:\n  op: {inherits: [nope]}\nrules:\n  - allow: fly\n    role: op\n",
    );
    let out = w(&["authz", "check", &bad.display().to_string()], "");
    out.expect_code(1, "bad check");
    assert!(out.stdout.contains("bad.yaml:2:"), "{}", out.ctx());
    assert!(out.stdout.contains("bad.yaml:4:"), "{}", out.ctx());
}

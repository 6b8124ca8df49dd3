//! Tenants and principals: an API key shown once and kept only as a hash,
//! acting as its principal (named in the ledger), refused once revoked or
//! when it names nobody, and bound to its tenant.

mod common;

use common::TempDir;

fn state(t: &TempDir) -> String {
    t.root.join("state").display().to_string()
}

#[test]
fn principals_act_with_their_keys_within_their_tenant() {
    let t = TempDir::new("identity");
    let s = state(&t);
    let w = |args: &[&str]| t.raw(args.iter().copied()).env("WARDEN_STATE", &s).go();
    w(&["tenant", "add", "acme"]).expect_code(0, "tenant add");
    w(&["tenant", "add", "acme"]).expect_code(1, "tenant exists");
    w(&["tenant", "add", "--", "-bad"]).expect_code(1, "bad name");
    w(&["tenant", "add", "a/b"]).expect_code(1, "bad name");
    let out = w(&[
        "principal",
        "add",
        "alice",
        "--tenant",
        "acme",
        "--role",
        "operator",
    ]);
    out.expect_code(0, "principal add");
    let key = out.stdout.trim().to_string();
    assert!(key.starts_with("wdn_"), "{}", out.ctx());
    assert!(out.stderr.contains("shown only now"), "{}", out.ctx());
    w(&["principal", "add", "bob", "--tenant", "nowhere"]).expect_code(1, "no tenant");
    // The key is nowhere in the state directory.
    let mut found = false;
    for entry in walk(&t.root.join("state")) {
        if std::fs::read(&entry)
            .map(|b| String::from_utf8_lossy(&b).contains(key.trim_start_matches("wdn_")))
            .unwrap_or(false)
        {
            found = true;
        }
    }
    assert!(!found, "the API key is stored in the state directory");
    let out = w(&["principal", "list"]);
    assert_eq!(out.stdout, "alice\tacme\toperator\tactive\n");

    // Acting as alice: the ledger names her and her tenant.
    let out = t
        .run(["--", "true"])
        .env("WARDEN_STATE", &s)
        .env("WARDEN_API_KEY", &key)
        .go();
    out.expect_ok("run as alice");
    let log = w(&["audit", "log"]);
    let last: serde_json::Value = serde_json::from_str(log.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"]["principal"], "alice");
    assert_eq!(last["event"]["tenant"], "acme");
    // Another tenant than hers: refused, and recorded.
    let out = t
        .run(["--tenant", "other", "--", "true"])
        .env("WARDEN_STATE", &s)
        .env("WARDEN_API_KEY", &key)
        .go();
    out.expect_code(126, "another tenant");
    assert!(
        out.stderr.contains("belongs to tenant acme"),
        "{}",
        out.ctx()
    );
    // A key that names nobody.
    let out = t
        .run(["--", "true"])
        .env("WARDEN_STATE", &s)
        .env("WARDEN_API_KEY", "wdn_forged")
        .go();
    out.expect_code(126, "unknown key");
    assert_eq!(out.report()["status"], "refused");
    assert!(
        out.stderr.contains("not the key of any principal"),
        "{}",
        out.ctx()
    );
    // Revoked.
    w(&["principal", "revoke", "alice"]).expect_code(0, "revoke");
    let out = t
        .run(["--", "true"])
        .env("WARDEN_STATE", &s)
        .env("WARDEN_API_KEY", &key)
        .go();
    out.expect_code(126, "revoked key");
    assert!(out.stderr.contains("revoked"), "{}", out.ctx());
    let log = w(&["audit", "log"]);
    let kinds: Vec<String> = log
        .stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{}:{}",
                v["kind"].as_str().unwrap(),
                v["event"]["action"]
                    .as_str()
                    .unwrap_or(v["event"]["status"].as_str().unwrap_or(""))
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "identity:tenant.add",
            "identity:principal.add",
            "run:exited",
            "run:refused",
            "run:refused",
            "identity:principal.revoke",
            "run:refused"
        ]
    );
    w(&["audit", "verify"]).expect_code(0, "verify");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// One tenant's processors and ledger entries are not visible to
/// another's principals.
#[test]
fn tenants_do_not_see_each_other() {
    let t = TempDir::new("identity-isolation");
    let s = state(&t);
    let w = |args: &[&str], key: &str| {
        t.raw(args.iter().copied())
            .env("WARDEN_STATE", &s)
            .env("WARDEN_API_KEY", key)
            .go()
    };
    w(&["tenant", "add", "acme"], "").expect_code(0, "acme");
    w(&["tenant", "add", "beta"], "").expect_code(0, "beta");
    let alice = w(&["principal", "add", "alice", "--tenant", "acme"], "");
    let alice = alice.stdout.trim().to_string();
    let bob = w(&["principal", "add", "bob", "--tenant", "beta"], "");
    let bob = bob.stdout.trim().to_string();
    let dir = t.root.join("secret-sauce");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("processor.yaml"),
        "name: sauce\nversion: 1.0.0\nkind: script\nlanguage: sh\nentry: run.sh\n",
    )
    .unwrap();
    std::fs::write(dir.join("run.sh"), "echo acme-only\n").unwrap();
    w(&["processor", "add", &dir.display().to_string()], &alice).expect_code(0, "alice adds");
    let out = w(&["invoke", "sauce"], &alice);
    out.expect_code(0, "alice invokes");
    assert_eq!(out.stdout, "acme-only\n");
    // Bob neither lists nor invokes it.
    let out = w(&["processor", "list"], &bob);
    assert_eq!(out.stdout, "", "{}", out.ctx());
    let out = w(&["invoke", "sauce"], &bob);
    out.expect_code(125, "bob cannot invoke it");
    assert!(out.stderr.contains("no processor sauce"), "{}", out.ctx());
    // The OS user's default tenant does not have it either.
    w(&["processor", "list"], "").expect_code(0, "list");
    assert_eq!(w(&["processor", "list"], "").stdout, "");
    // Bob's view of the ledger: his own entries only.
    let out = w(&["audit", "log"], &bob);
    out.expect_code(0, "bob's log");
    assert!(!out.stdout.is_empty(), "{}", out.ctx());
    for line in out.stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["event"]["tenant"], "beta", "{line}");
    }
    // (his own refused invoke names "sauce"; alice's entries are absent)
    assert!(!out.stdout.contains("\"alice\""), "{}", out.ctx());
    let out = w(&["audit", "log"], &alice);
    assert!(out.stdout.contains("\"action\":\"add\""), "{}", out.ctx());
    assert!(!out.stdout.contains("\"bob\""), "{}", out.ctx());
}

/// A WebAssembly guest (wasm32-wasip1) built by tests-guests/build.sh.
fn guest(name: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new("sh")
        .arg(root.join("tests-guests/build.sh"))
        .output()
        .expect("run tests-guests/build.sh");
    assert!(
        out.status.success(),
        "tests-guests/build.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = String::from_utf8(out.stdout).unwrap();
    let path = std::path::Path::new(dir.trim()).join(format!("wasm32-wasip1/release/{name}.wasm"));
    assert!(path.is_file(), "guest {} was not built", path.display());
    path.display().to_string()
}

/// With API keys, one tenant's key-value store and leases are out of
/// another tenant's principals' reach, and a principal cannot act in
/// another tenant by naming it.
#[test]
fn kv_stores_and_leases_are_per_tenant() {
    let t = TempDir::new("identity-kv-leases");
    let s = state(&t);
    let kv = t.root.join("kv");
    let w = |args: &[&str], key: &str| {
        t.raw(args.iter().copied())
            .env("WARDEN_STATE", &s)
            .env("WARDEN_KV_DIR", &kv.display().to_string())
            .env("WARDEN_API_KEY", key)
            .go()
    };
    w(&["tenant", "add", "acme"], "").expect_code(0, "acme");
    w(&["tenant", "add", "beta"], "").expect_code(0, "beta");
    let alice = w(&["principal", "add", "alice", "--tenant", "acme"], "")
        .stdout
        .trim()
        .to_string();
    let bob = w(&["principal", "add", "bob", "--tenant", "beta"], "")
        .stdout
        .trim()
        .to_string();
    let kv_guest = guest("hostkv");
    let out = w(
        &[
            "run",
            "--allow",
            "kv:write:orders",
            &kv_guest,
            "set orders k1 acme-value",
        ],
        &alice,
    );
    out.expect_code(0, "alice sets");
    assert_eq!(
        out.stdout,
        "set orders k1 acme-value: rc=0\n",
        "{}",
        out.ctx()
    );
    let out = w(
        &[
            "run",
            "--allow",
            "kv:read:orders",
            &kv_guest,
            "get orders k1",
        ],
        &alice,
    );
    assert_eq!(
        out.stdout,
        "get orders k1: rc=0 value=acme-value\n",
        "{}",
        out.ctx()
    );
    // Bob's store is his tenant's: the key is not there (NOT_FOUND = 2).
    let out = w(
        &[
            "run",
            "--allow",
            "kv:read:orders",
            &kv_guest,
            "get orders k1",
        ],
        &bob,
    );
    assert_eq!(out.stdout, "get orders k1: rc=2\n", "{}", out.ctx());
    // Nor can he name alice's tenant.
    let out = w(
        &[
            "run",
            "--tenant",
            "acme",
            "--allow",
            "kv:read:orders",
            &kv_guest,
            "get orders k1",
        ],
        &bob,
    );
    out.expect_code(126, "another tenant named");
    assert!(!out.stdout.contains("acme-value"), "{}", out.ctx());

    // Alice's lease: in her list, not in bob's, and bob cannot revoke it.
    let put = t
        .raw(["secret", "put", "token"])
        .env("WARDEN_STATE", &s)
        .env("WARDEN_API_KEY", &alice)
        .stdin("acme-token-value")
        .go();
    put.expect_code(0, "alice puts");
    let script = "cat /run/secrets/token >/dev/null; sleep 30";
    let running = t
        .run(["--allow", "secret:token", "--", "sh", "-c", script])
        .env("WARDEN_STATE", &s)
        .env("WARDEN_API_KEY", &alice)
        .spawn();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let lease = loop {
        let list = w(&["lease", "list"], &alice);
        if let Some(line) = list.stdout.lines().find(|l| l.ends_with("active")) {
            break line.split('\t').next().unwrap().to_string();
        }
        assert!(
            std::time::Instant::now() < until,
            "no active lease: {}",
            list.ctx()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let list = w(&["lease", "list"], &bob);
    assert!(!list.stdout.contains(&lease), "{}", list.ctx());
    let out = w(&["lease", "revoke", &lease], &bob);
    assert_ne!(out.code, 0, "bob revoked alice's lease: {}", out.ctx());
    assert!(
        out.stderr.contains(&format!("no lease {lease}")),
        "{}",
        out.ctx()
    );
    let list = w(&["lease", "list"], &alice);
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with(&lease) && l.ends_with("active")),
        "still active: {}",
        list.ctx()
    );
    // Alice ends her own run's lease (which stops it).
    w(&["lease", "revoke", &lease], &alice).expect_code(0, "alice revokes");
    let out = running.wait();
    out.expect_status("error", "the lease ended");
}

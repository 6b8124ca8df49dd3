//! Processors end to end: check, add (content-addressed, audited), invoke
//! a Python script, a native binary and a WebAssembly module, with and
//! without `require_signed`; refusals (exit 126, status `refused`, in the
//! ledger) for an unsigned or badly signed processor, a tampered registry
//! copy and a capability the policy does not allow.

mod common;

use std::path::{Path, PathBuf};

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

/// A processor directory under the test's root.
fn processor(t: &TempDir, name: &str, manifest: &str, files: &[(&str, &[u8], bool)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = t.root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("processor.yaml"), manifest).unwrap();
    for (path, bytes, exec) in files {
        let p = dir.join(path);
        std::fs::write(&p, bytes).unwrap();
        let mode = if *exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    dir
}

fn python_processor(t: &TempDir) -> PathBuf {
    processor(
        t,
        "upper",
        "name: upper\nversion: 1.2.0\nkind: script\nlanguage: python\nentry: main.py\ncapabilities: []\nlimits:\n  memory: 256MiB\n",
        &[(
            "main.py",
            b"import sys, os\nprint(sys.stdin.read().upper(), end='')\nprint(sys.argv[1:], os.getcwd())\n",
            false,
        )],
    )
}

fn warden(t: &TempDir, args: &[&str]) -> common::Outcome {
    t.raw(args.iter().copied())
        .env("WARDEN_STATE", &state(t))
        .go()
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn a_python_processor_is_checked_added_and_invoked() {
    let t = TempDir::new("proc-python");
    let dir = python_processor(&t);
    let out = warden(&t, &["processor", "check", &p(&dir)]);
    out.expect_code(0, "check");
    assert!(
        out.stdout.starts_with("ok: upper@1.2.0 (script)"),
        "{}",
        out.ctx()
    );
    let digest = out.stdout.split_whitespace().last().unwrap().to_string();
    assert!(digest.starts_with("sha256:"));
    let out = warden(&t, &["processor", "add", &p(&dir)]);
    out.expect_code(0, "add");
    assert!(out.stdout.contains(&digest), "{}", out.ctx());
    // The registry holds a copy: the source can change or go.
    std::fs::write(dir.join("main.py"), "print('changed')\n").unwrap();
    let input = t.write_root("in.txt", "abc\n");
    let out = t
        .raw([
            "invoke",
            "upper",
            "--input",
            &p(&input),
            "--report",
            &p(&t.report_path()),
            "--",
            "x",
            "y",
        ])
        .env("WARDEN_STATE", &state(&t))
        .go();
    out.expect_code(0, "invoke");
    assert_eq!(out.stdout, "ABC\n['x', 'y'] /tmp\n", "{}", out.ctx());
    let r = t.report_json();
    assert_eq!(r["status"], "exited");
    assert_eq!(r["processor"]["name"], "upper");
    assert_eq!(r["processor"]["version"], "1.2.0");
    assert_eq!(r["processor"]["digest"], digest.as_str());
    assert_eq!(r["processor"]["signer"], serde_json::Value::Null);
    {
        use sha2::Digest as _;
        assert_eq!(
            r["streams"]["stdin"],
            hex::encode(sha2::Sha256::digest(b"abc\n")).as_str()
        );
    }
    // No PATH notice for a processor's interpreter.
    assert!(!out.stderr.contains("your PATH"), "{}", out.ctx());
    let e = entries(&t);
    assert_eq!(e.len(), 2);
    assert_eq!(e[0]["kind"], "processor");
    assert_eq!(e[0]["event"]["action"], "add");
    assert_eq!(e[1]["kind"], "run");
    assert_eq!(e[1]["event"]["processor"]["digest"], digest.as_str());
    assert_eq!(r["audit"]["index"], 1);
    // By version and by digest; list and show.
    warden(&t, &["invoke", "upper@1.2.0"]).expect_code(0, "by version");
    warden(&t, &["invoke", &format!("upper@{digest}")]).expect_code(0, "by digest");
    let out = warden(&t, &["invoke", "upper@9.9.9"]);
    out.expect_code(125, "unknown version");
    assert!(
        out.stderr.contains("no processor upper@9.9.9"),
        "{}",
        out.ctx()
    );
    let out = warden(&t, &["processor", "list"]);
    assert!(
        out.stdout.starts_with("upper@1.2.0\tsha256:"),
        "{}",
        out.ctx()
    );
    let out = warden(&t, &["processor", "show", "upper"]);
    let shown: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(shown["digest"], digest.as_str());
    // Removed: gone from the registry, audited, and the ledger verifies.
    warden(&t, &["processor", "rm", "upper@1.2.0"]).expect_code(0, "rm");
    warden(&t, &["invoke", "upper"]).expect_code(125, "removed");
    let e = entries(&t);
    assert!(e.iter().any(|e| e["event"]["action"] == "rm"));
    warden(&t, &["audit", "verify"]).expect_code(0, "verify");
}

#[test]
fn native_and_wasm_processors_run_on_their_backends() {
    let t = TempDir::new("proc-kinds");
    let echo = std::fs::read("/bin/echo").unwrap();
    let native = processor(
        &t,
        "say",
        "name: say\nversion: 0.1.0\nkind: native\nentry: bin/say\n",
        &[],
    );
    std::fs::create_dir_all(native.join("bin")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(native.join("bin/say"), &echo).unwrap();
        std::fs::set_permissions(
            native.join("bin/say"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    warden(&t, &["processor", "add", &p(&native)]).expect_code(0, "add native");
    let out = warden(
        &t,
        &["invoke", "say", "--report", "-", "--", "native", "ok"],
    );
    out.expect_code(0, "invoke native");
    assert!(out.stdout.starts_with("native ok\n"), "{}", out.ctx());

    let hello = wat::parse_str(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hello from wasm\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    )
    .unwrap();
    let module = processor(
        &t,
        "greet",
        "name: greet\nversion: 2.0.0\nkind: wasm\nentry: greet.wasm\n",
        &[("greet.wasm", &hello, false)],
    );
    warden(&t, &["processor", "add", &p(&module)]).expect_code(0, "add wasm");
    let out = t
        .raw(["invoke", "greet", "--report", &p(&t.report_path())])
        .env("WARDEN_STATE", &state(&t))
        .env(
            "WARDEN_CACHE_DIR",
            &t.root.join("cache").display().to_string(),
        )
        .go();
    out.expect_code(0, "invoke wasm");
    assert_eq!(out.stdout, "hello from wasm\n", "{}", out.ctx());
    let r = t.report_json();
    assert_eq!(r["backend"], "wasm");
    assert_eq!(r["processor"]["name"], "greet");
    {
        use sha2::Digest as _;
        let want = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&hello)));
        assert_eq!(r["module_digest"], want.as_str(), "{r}");
        let e = entries(&t);
        assert_eq!(e.last().unwrap()["event"]["module_digest"], want.as_str());
    }
}

/// `require_signed: true`: unsigned is refused (at add and at invoke),
/// a signature from a trusted key passes, one from an untrusted or revoked
/// key is refused; a changed registry copy is refused; so is a capability
/// the policy does not grant.
#[test]
fn signatures_and_policy_decide_what_runs() {
    let t = TempDir::new("proc-signed");
    let dir = python_processor(&t);
    let strict = t.write_root(
        "strict.yaml",
        "grants:\n  - fs:read:/usr\nrequire_signed: true\n",
    );
    let out = warden(&t, &["processor", "add", &p(&dir), "--policy", &p(&strict)]);
    out.expect_code(126, "unsigned add under require_signed");
    assert!(out.stderr.contains("unsigned"), "{}", out.ctx());
    // Added without the policy, it is still refused at invoke under it.
    warden(&t, &["processor", "add", &p(&dir)]).expect_code(0, "add unsigned");
    let out = t
        .raw([
            "invoke",
            "upper",
            "--policy",
            &p(&strict),
            "--report",
            &p(&t.report_path()),
        ])
        .env("WARDEN_STATE", &state(&t))
        .go();
    out.expect_code(126, "unsigned invoke");
    let r = t.report_json();
    assert_eq!(r["status"], "refused");
    assert!(r["refusal"].as_str().unwrap().contains("unsigned"), "{r}");
    let e = entries(&t);
    assert_eq!(e.last().unwrap()["event"]["status"], "refused");

    // Signed by a key in the trust store.
    warden(&t, &["key", "new", "rel"]).expect_code(0, "key");
    let pem = warden(&t, &["key", "export", "rel"]);
    let pem_path = t.write_root("rel.pem", &pem.stdout);
    warden(&t, &["trust", "add", &p(&pem_path), "--types", "processor"]).expect_code(0, "trust");
    let out = warden(
        &t,
        &["sign", "--key", "rel", "--type", "processor", &p(&dir)],
    );
    out.expect_code(0, "sign dir");
    let sig = PathBuf::from(format!("{}.sig", dir.display()));
    assert!(sig.is_file(), "{}", out.ctx());
    warden(&t, &["verify", "--type", "processor", &p(&dir)]).expect_code(0, "verify dir");
    // Signed as a processor: not valid as a module.
    warden(&t, &["verify", "--type", "module", &p(&dir)]).expect_code(1, "wrong type");
    // Re-add as 1.2.0 with its signature: remove the unsigned one first.
    warden(&t, &["processor", "rm", "upper@1.2.0"]).expect_code(0, "rm");
    let out = warden(&t, &["processor", "add", &p(&dir), "--policy", &p(&strict)]);
    out.expect_code(0, "signed add");
    assert!(out.stdout.contains("signed by sha256:"), "{}", out.ctx());
    let out = t
        .raw([
            "invoke",
            "upper",
            "--policy",
            &p(&strict),
            "--report",
            &p(&t.report_path()),
        ])
        .env("WARDEN_STATE", &state(&t))
        .stdin("q")
        .go();
    out.expect_code(0, "signed invoke");
    let r = t.report_json();
    assert!(
        r["processor"]["signer"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{r}"
    );

    // A changed file after signing: the signature no longer covers it.
    std::fs::write(dir.join("main.py"), "print('evil')\n").unwrap();
    let out = warden(&t, &["verify", "--type", "processor", &p(&dir)]);
    out.expect_code(1, "modified dir");
    let out = warden(&t, &["processor", "add", &p(&dir), "--policy", &p(&strict)]);
    out.expect_code(126, "modified dir refused");
    assert!(out.stderr.contains("does not verify"), "{}", out.ctx());

    // The registry copy tampered with by someone with write access.
    let objects = t.root.join("state/registry/objects/sha256");
    let object = std::fs::read_dir(&objects)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&object, std::fs::Permissions::from_mode(0o755)).unwrap();
        let main = object.join("main.py");
        std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&main, "print('tampered')\n").unwrap();
    }
    let out = warden(&t, &["invoke", "upper", "--policy", &p(&strict)]);
    out.expect_code(126, "tampered copy");
    assert!(out.stderr.contains("no longer matches"), "{}", out.ctx());
    assert!(!out.stdout.contains("tampered"));

    // Revoked: its signatures fail from then on.
    let keyid = pem_keyid(&t);
    warden(&t, &["trust", "revoke", &keyid]).expect_code(0, "revoke");
    let d2 = processor(
        &t,
        "other",
        "name: other\nversion: 1.0.0\nkind: script\nlanguage: sh\nentry: run.sh\n",
        &[("run.sh", b"echo other\n", false)],
    );
    warden(
        &t,
        &["sign", "--key", "rel", "--type", "processor", &p(&d2)],
    )
    .expect_code(0, "sign");
    let out = warden(&t, &["processor", "add", &p(&d2), "--policy", &p(&strict)]);
    out.expect_code(126, "revoked key");
    assert!(out.stderr.contains("revoked"), "{}", out.ctx());

    // A capability the policy does not allow.
    let wants = processor(
        &t,
        "wants",
        "name: wants\nversion: 1.0.0\nkind: script\nlanguage: sh\nentry: run.sh\ncapabilities:\n  - fs:read:/etc\n",
        &[("run.sh", b"cat /etc/hostname\n", false)],
    );
    warden(&t, &["processor", "add", &p(&wants)]).expect_code(0, "add wants");
    let narrow = t.write_root("narrow.yaml", "grants:\n  - fs:read:/usr\n");
    let out = warden(&t, &["invoke", "wants", "--policy", &p(&narrow)]);
    out.expect_code(126, "capability outside the policy");
    assert!(
        out.stderr.contains("requests fs:read:/etc, which policy"),
        "{}",
        out.ctx()
    );
    // Within the policy it gets exactly what it asked for.
    let wide = t.write_root("wide.yaml", "grants:\n  - fs:read:/etc\n  - fs:read:/srv\n");
    let out = t
        .raw([
            "invoke",
            "wants",
            "--policy",
            &p(&wide),
            "--report",
            &p(&t.report_path()),
        ])
        .env("WARDEN_STATE", &state(&t))
        .go();
    out.expect_code(0, "capability inside the policy");
    assert_eq!(
        t.report_json()["capabilities"],
        serde_json::json!(["fs:read:/etc"])
    );
    warden(&t, &["audit", "verify"]).expect_code(0, "ledger verifies");
}

fn pem_keyid(t: &TempDir) -> String {
    let out = warden(t, &["key", "list"]);
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("rel\t"))
        .unwrap()
        .to_string()
}

#[test]
fn a_bad_manifest_is_reported_with_its_place() {
    let t = TempDir::new("proc-bad");
    let dir = processor(
        &t,
        "bad",
        "name: Bad Name\nversion: one\nkind: script\nentry: main.py\nfrobnicate: 1\n",
        &[("main.py", b"print(1)\n", false)],
    );
    let out = warden(&t, &["processor", "check", &p(&dir)]);
    out.expect_code(1, "bad manifest");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.len() >= 3, "{}", out.ctx());
    assert!(
        lines[0].contains("processor.yaml:1:7: error:"),
        "{}",
        out.ctx()
    );
    assert!(
        out.stdout.contains("processor.yaml:2:10: error:"),
        "{}",
        out.ctx()
    );
    assert!(out.stdout.contains("frobnicate"), "{}", out.ctx());
    warden(&t, &["processor", "add", &p(&dir)]).expect_code(1, "bad add");
}

/// `/output/POINTER` fields: the caller gets the output as printed, the
/// ledger only commitments of the fields and of the output's digest, and
/// `audit show --reveal` checks them.
#[test]
fn confidential_output_fields_are_committed_after_the_run() {
    let t = TempDir::new("proc-confidential-out");
    let dir = processor(
        &t,
        "issuer",
        "name: issuer\nversion: 1.0.0\nkind: script\nlanguage: sh\nentry: run.sh\nconfidential: [/output/token, /output/none]\n",
        &[(
            "run.sh",
            b"printf '{\"token\":\"tok-5e8f21c9\",\"ok\":true}\\n'\n",
            false,
        )],
    );
    warden(&t, &["processor", "add", &p(&dir)]).expect_code(0, "add");
    let out = t
        .raw(["invoke", "issuer", "--report", &p(&t.report_path())])
        .env("WARDEN_STATE", &state(&t))
        .go();
    out.expect_code(0, "invoke");
    assert_eq!(
        out.stdout,
        "{\"token\":\"tok-5e8f21c9\",\"ok\":true}\n",
        "{}",
        out.ctx()
    );
    let report = t.report_json();
    let stdout_digest = report["streams"]["stdout"].as_str().unwrap().to_string();
    let index = report["audit"]["index"].as_u64().unwrap();
    let log = warden(&t, &["audit", "log"]);
    assert!(!log.stdout.contains("tok-5e8f21c9"), "token in the clear");
    assert!(
        !log.stdout.contains(&stdout_digest),
        "output digest in the clear"
    );
    let e: serde_json::Value = serde_json::from_str(log.stdout.lines().last().unwrap()).unwrap();
    let commitments = &e["event"]["confidential"]["commitments"];
    assert!(
        commitments["/output/token"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{e}"
    );
    assert!(
        commitments.get("/output/none").is_none(),
        "absent pointer: {e}"
    );
    assert_eq!(
        e["event"]["streams"]["stdout"]["commitment"],
        commitments["streams.stdout"]
    );
    let out = warden(&t, &["audit", "show", &index.to_string(), "--reveal"]);
    out.expect_code(0, "reveal");
    let shown: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        shown["revealed"]["/output/token"]["value"], "tok-5e8f21c9",
        "{shown}"
    );
    assert_eq!(
        shown["revealed"]["streams.stdout"]["value"],
        stdout_digest.as_str()
    );
    warden(&t, &["audit", "verify"]).expect_code(0, "verify");
}

/// Fields a manifest marks confidential enter the ledger as salted
/// commitments; `audit show --reveal` shows and checks them, `audit shred`
/// deletes them for good, and the ledger and exported proofs stay valid.
#[test]
fn confidential_fields_are_committed_revealed_and_shredded() {
    let t = TempDir::new("proc-confidential");
    let dir = processor(
        &t,
        "card",
        "name: card\nversion: 1.0.0\nkind: script\nlanguage: sh\nentry: run.sh\nconfidential: [argv, /input/card/number]\n",
        &[("run.sh", b"cat > /dev/null; echo charged\n", false)],
    );
    warden(&t, &["processor", "add", &p(&dir)]).expect_code(0, "add");
    let input = t.write_root(
        "order.json",
        "{\"card\":{\"number\":\"4111-1111-1111-1111\"},\"amount\":5}",
    );
    let out = t
        .raw([
            "invoke",
            "card",
            "--input",
            &p(&input),
            "--report",
            &p(&t.report_path()),
            "--",
            "customer-7731",
        ])
        .env("WARDEN_STATE", &state(&t))
        .go();
    out.expect_code(0, "invoke");
    assert_eq!(out.stdout, "charged\n");
    let index = t.report_json()["audit"]["index"].as_u64().unwrap();
    let log = warden(&t, &["audit", "log"]);
    assert!(
        !log.stdout.contains("customer-7731"),
        "argv in the clear: {}",
        log.stdout
    );
    assert!(!log.stdout.contains("4111"), "card number in the clear");
    let e: serde_json::Value = serde_json::from_str(log.stdout.lines().last().unwrap()).unwrap();
    assert!(e["event"]["argv"]["commitment"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let commitments = &e["event"]["confidential"]["commitments"];
    assert!(commitments["/input/card/number"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    // The input's plain digest would let a guess of the card number be
    // tested offline: it is sealed too.
    let input_digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(std::fs::read(&input).unwrap()))
    };
    assert!(
        !log.stdout.contains(&input_digest),
        "input digest in the clear"
    );
    assert_eq!(
        e["event"]["streams"]["stdin"]["commitment"], commitments["streams.stdin"],
        "{e}"
    );
    assert_eq!(
        t.report_json()["streams"]["stdin"],
        input_digest,
        "the caller's report keeps it"
    );
    // Revealed, and checked against the commitments.
    let out = warden(&t, &["audit", "show", &index.to_string(), "--reveal"]);
    out.expect_code(0, "reveal");
    let shown: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(shown["revealed"]["argv"]["value"][2], "customer-7731");
    assert_eq!(
        shown["revealed"]["/input/card/number"]["value"],
        "4111-1111-1111-1111"
    );
    {
        use sha2::Digest as _;
        let salt = hex::decode(shown["revealed"]["argv"]["salt"].as_str().unwrap()).unwrap();
        let mut h = sha2::Sha256::new();
        h.update(&salt);
        h.update(br#"["invoke","card","customer-7731"]"#);
        assert_eq!(
            format!("sha256:{}", hex::encode(h.finalize())),
            e["event"]["argv"]["commitment"].as_str().unwrap(),
            "the commitment is SHA-256(salt || JCS(value))"
        );
    }
    // Shredded for good; the ledger and an exported bundle still verify.
    warden(
        &t,
        &["audit", "shred", &index.to_string(), "/input/card/number"],
    )
    .expect_code(0, "shred");
    let out = warden(&t, &["audit", "show", &index.to_string(), "--reveal"]);
    let shown: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(shown["revealed"]["/input/card/number"]["shredded"], true);
    assert_eq!(shown["revealed"]["argv"]["value"][2], "customer-7731");
    let mut hits = Vec::new();
    let mut todo = vec![t.root.join("state")];
    while let Some(d) = todo.pop() {
        for f in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = f.path();
            if path.is_dir() {
                todo.push(path);
            } else if String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default())
                .contains("4111")
            {
                hits.push(path);
            }
        }
    }
    assert!(hits.is_empty(), "plaintext left: {hits:?}");
    warden(&t, &["audit", "verify"]).expect_code(0, "verify after shredding");
    let bundle = t.root.join("b.json");
    warden(&t, &["audit", "export", "-o", &p(&bundle)]).expect_code(0, "export");
    let key = warden(&t, &["audit", "key"]).stdout.trim().to_string();
    warden(
        &t,
        &["audit", "verify", "--bundle", &p(&bundle), "--key", &key],
    )
    .expect_code(0, "bundle verifies after shredding");
    // A bad confidential field is a manifest error with its place.
    let bad = processor(
        &t,
        "bad-conf",
        "name: badconf\nversion: 1.0.0\nkind: script\nlanguage: sh\nentry: run.sh\nconfidential: [env, /input/a~2]\n",
        &[("run.sh", b"true\n", false)],
    );
    let out = warden(&t, &["processor", "check", &p(&bad)]);
    out.expect_code(1, "bad confidential");
    assert!(
        out.stdout.contains("processor.yaml:6:16: error:"),
        "{}",
        out.ctx()
    );
}

/// `--ceiling` and the limit flags of `warden invoke` only narrow: a
/// capability the processor requests outside the ceiling refuses it, and
/// a limit flag lowers the processor's own limit, never raises it.
#[test]
fn the_callers_ceiling_and_limits_only_narrow_what_a_processor_gets() {
    let t = TempDir::new("proc-ceiling");
    let dir = processor(
        &t,
        "ticker",
        "name: ticker\nversion: 1.0.0\nkind: script\nlanguage: sh\nentry: main.sh\ncapabilities: [clock:read]\nlimits:\n  memory: 256MiB\n",
        &[("main.sh", b"echo tick\n", false)],
    );
    warden(&t, &["processor", "add", &p(&dir)]).expect_code(0, "add");
    let report = p(&t.report_path());
    let out = warden(
        &t,
        &[
            "invoke",
            "ticker",
            "--ceiling",
            "net:http:example.com",
            "--report",
            &report,
        ],
    );
    out.expect_code(126, "outside the ceiling");
    let r = t.report_json();
    assert_eq!(r["status"], "refused");
    assert!(
        r["refusal"]
            .as_str()
            .is_some_and(|m| m.contains("clock:read") && m.contains("ceiling")),
        "{r}"
    );
    assert_eq!(entries(&t).last().unwrap()["event"]["status"], "refused");
    let out = warden(
        &t,
        &[
            "invoke",
            "ticker",
            "--ceiling",
            "clock:read",
            "--memory",
            "1GiB",
            "--wall-time",
            "3s",
            "--report",
            &report,
        ],
    );
    out.expect_code(0, "within the ceiling");
    assert_eq!(out.stdout, "tick\n", "{}", out.ctx());
    let r = t.report_json();
    assert_eq!(r["limits"]["memory_bytes"], 256u64 << 20, "{r}");
    assert_eq!(r["limits"]["wall_time_ms"], 3000, "{r}");
    let out = warden(
        &t,
        &[
            "invoke",
            "ticker",
            "--ceiling",
            "mem:limit:64MiB",
            "--ceiling",
            "clock:read",
            "--report",
            &report,
        ],
    );
    out.expect_code(0, "a limit capability in the ceiling");
    assert_eq!(t.report_json()["limits"]["memory_bytes"], 64u64 << 20);
    warden(&t, &["invoke", "ticker", "--ceiling", "bogus:x"]).expect_code(125, "bad ceiling");
}

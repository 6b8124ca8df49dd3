//! Filesystem and environment grants: what is granted works, nothing else is there.

use std::fs;

use crate::common::TempDir;

fn data_and_secret(tag: &str) -> TempDir {
    let t = TempDir::new(tag);
    t.write("data/x.txt", "granted-content\n");
    t.write("secret/s.txt", "secret-content\n");
    t
}

#[test]
fn granted_dir_is_readable() {
    let t = data_and_secret("g-read");
    let out = t
        .run(["--allow", "fs:read:./data", "--", "cat", "data/x.txt"])
        .go();
    out.expect_ok("cat of a granted file");
    assert_eq!(
        out.stdout,
        "granted-content\n",
        "granted file content\n{}",
        out.ctx()
    );
    let canonical = format!("fs:read:{}", t.path("data").display());
    assert!(
        out.capabilities().contains(&canonical),
        "capabilities do not list the canonical grant {canonical}\n{}",
        out.ctx()
    );
}

#[test]
fn ungranted_sibling_is_not_visible() {
    let t = data_and_secret("g-sibling");
    let out = t
        .run([
            "--allow",
            "fs:read:./data",
            "--",
            "sh",
            "-c",
            "ls -a .; cat secret/s.txt; cat ../work/secret/s.txt; ls secret",
        ])
        .go();
    assert_ne!(out.code, 125, "warden failed to run\n{}", out.ctx());
    out.expect_stdout_lacks("secret-content", "ungranted sibling directory");
    out.expect_stdout_lacks("s.txt", "ungranted sibling directory listing");
    out.expect_stdout_has("data", "the granted dir in the working directory");
}

#[test]
fn cwd_is_empty_without_grant() {
    let t = data_and_secret("g-emptycwd");
    t.write("top.txt", "top-secret\n");
    let out = t.run(["--", "sh", "-c", "pwd; ls -A; cat top.txt"]).go();
    assert_ne!(out.code, 125, "warden failed\n{}", out.ctx());
    assert!(
        out.stdout.starts_with(&format!("{}\n", t.work().display())),
        "the working directory is not the caller's cwd\n{}",
        out.ctx()
    );
    out.expect_stdout_lacks("top-secret", "ungranted cwd content");
    for name in ["data", "secret", "top.txt"] {
        assert!(
            !out.stdout.lines().any(|l| l == name),
            "ungranted {name} listed in the jail's cwd\n{}",
            out.ctx()
        );
    }
}

#[test]
fn read_grant_is_read_only() {
    let t = data_and_secret("g-ro");
    let out = t
        .run([
            "--allow",
            "fs:read:./data",
            "--",
            "python3",
            "-c",
            "import errno\ntry:\n    open('data/new.txt', 'w').write('x')\n    print('WROTE')\nexcept OSError as e:\n    print('denied', errno.errorcode[e.errno])\ntry:\n    open('data/x.txt', 'a').write('x')\n    print('APPENDED')\nexcept OSError as e:\n    print('denied', errno.errorcode[e.errno])",
        ])
        .go();
    out.expect_ok("write into a read grant");
    out.expect_stdout_lacks("WROTE", "fs:read dir is writable");
    out.expect_stdout_lacks("APPENDED", "fs:read file is writable");
    out.expect_stdout_has("denied EROFS", "fs:read dir must be a read-only mount");
    assert!(
        !t.path("data/new.txt").exists(),
        "a file appeared on the host in a read-only grant"
    );
    assert_eq!(
        fs::read_to_string(t.path("data/x.txt")).unwrap(),
        "granted-content\n"
    );
}

#[test]
fn write_grant_is_writable_and_visible_on_host() {
    let t = TempDir::new("g-write");
    t.mkdir("out");
    let out = t
        .run([
            "--allow",
            "fs:write:./out",
            "--",
            "sh",
            "-c",
            "echo produced > out/result.txt",
        ])
        .go();
    out.expect_ok("write into a write grant");
    let host = t.path("out/result.txt");
    assert_eq!(
        fs::read_to_string(&host).unwrap_or_else(|e| panic!(
            "{} missing on the host: {e}\n{}",
            host.display(),
            out.ctx()
        )),
        "produced\n"
    );
}

#[test]
fn write_grant_implies_read() {
    let t = TempDir::new("g-write-read");
    t.write("out/pre.txt", "pre-existing\n");
    let out = t
        .run(["--allow", "fs:write:./out", "--", "cat", "out/pre.txt"])
        .go();
    out.expect_ok("read in a write grant");
    assert_eq!(
        out.stdout,
        "pre-existing\n",
        "fs:write does not imply read\n{}",
        out.ctx()
    );
}

#[test]
fn absolute_path_grant_works() {
    let t = data_and_secret("g-abs");
    let data = t.path("data");
    let out = t
        .run([
            "--allow".to_string(),
            format!("fs:read:{}", data.display()),
            "--".into(),
            "cat".into(),
            format!("{}/x.txt", data.display()),
        ])
        .go();
    out.expect_ok("absolute grant");
    assert_eq!(
        out.stdout,
        "granted-content\n",
        "absolute grant\n{}",
        out.ctx()
    );
}

#[test]
fn single_file_grant_exposes_only_that_file() {
    let t = data_and_secret("g-file");
    t.write("data/other.txt", "other-content\n");
    let out = t
        .run([
            "--allow",
            "fs:read:./data/x.txt",
            "--",
            "sh",
            "-c",
            "cat data/x.txt; cat data/other.txt; ls data",
        ])
        .go();
    assert_ne!(out.code, 125, "warden failed\n{}", out.ctx());
    out.expect_stdout_has("granted-content", "granted file");
    out.expect_stdout_lacks("other-content", "a file next to a single-file grant");
    out.expect_stdout_lacks("other.txt", "a file next to a single-file grant (listing)");
}

#[test]
fn env_only_granted_variables_are_visible() {
    let t = TempDir::new("g-env");
    let out = t
        .run([
            "--allow",
            "env:WARDEN_IT_GRANTED",
            "--",
            "python3",
            "-c",
            "import os\nfor k in sorted(os.environ): print(k + '=' + os.environ[k])",
        ])
        .env("WARDEN_IT_GRANTED", "granted-value")
        .env("WARDEN_IT_SECRET", "secret-value")
        .go();
    out.expect_ok("env");
    out.expect_stdout_has("WARDEN_IT_GRANTED=granted-value", "granted variable");
    out.expect_stdout_lacks("secret-value", "ungranted variable");
    // Whatever the caller had (HOME, CARGO_*, RUST_*, ...) must not pass;
    // HOME and the locale are the jail's own, not the caller's values.
    let allowed = ["PATH", "WARDEN_IT_GRANTED", "LC_CTYPE"];
    let jail_own = ["HOME=/tmp", "LANG=C.UTF-8", "LC_ALL=C.UTF-8"];
    for line in out.stdout.lines() {
        let name = line.split('=').next().unwrap_or("");
        assert!(
            allowed.contains(&name) || jail_own.contains(&line) || std::env::var(name).is_err(),
            "the caller's variable {name} leaked into the jail\n{}",
            out.ctx()
        );
    }
    assert!(
        out.capabilities()
            .contains(&"env:WARDEN_IT_GRANTED".to_string()),
        "env grant not listed\n{}",
        out.ctx()
    );
}

#[test]
fn env_flag_with_value() {
    let t = TempDir::new("g-envflag");
    let out = t
        .run([
            "--env",
            "A=b",
            "--env",
            "WARDEN_IT_FROM_CALLER",
            "--",
            "sh",
            "-c",
            "echo \"A=$A C=$WARDEN_IT_FROM_CALLER\"",
        ])
        .env("WARDEN_IT_FROM_CALLER", "callervalue")
        .go();
    out.expect_ok("--env");
    assert_eq!(
        out.stdout,
        "A=b C=callervalue\n",
        "--env values\n{}",
        out.ctx()
    );
}

/// A granted PATH replaces the jail's default: one PATH in the
/// environment (python reads the first, sh the last), and the program is
/// looked up on it.
#[test]
fn env_path_replaces_the_default() {
    let t = TempDir::new("g-envpath");
    let out = t
        .run([
            "--env",
            "PATH=/bin",
            "--",
            "python3",
            "-c",
            "import os\nprint(os.environ['PATH'])\nprint(sum(1 for k in os.environ if k == 'PATH'))",
        ])
        .go();
    out.expect_ok("--env PATH");
    assert_eq!(out.stdout, "/bin\n1\n", "PATH\n{}", out.ctx());
    let out = t
        .run(["--env", "PATH=/nonexistent", "--", "python3", "-c", "pass"])
        .go();
    out.expect_code(127, "a program not on the granted PATH");
}

#[test]
fn grant_of_nonexistent_path_is_refused() {
    let t = TempDir::new("g-missing");
    let out = t
        .run(["--allow", "fs:read:./does-not-exist", "--", "true"])
        .go();
    out.expect_warden_error("grant of a missing path");
    assert!(
        out.stderr.contains("does-not-exist"),
        "message does not name the path\n{}",
        out.ctx()
    );
    assert_eq!(
        out.status(),
        "error",
        "report status for a setup error\n{}",
        out.ctx()
    );
}

#[test]
fn workdir_flag_sets_the_working_directory() {
    let t = data_and_secret("g-workdir");
    let out = t
        .run([
            "--allow",
            "fs:read:./data",
            "--workdir",
            "data",
            "--",
            "sh",
            "-c",
            "pwd; cat x.txt",
        ])
        .go();
    out.expect_ok("--workdir");
    assert_eq!(
        out.stdout,
        format!("{}\ngranted-content\n", t.path("data").display()),
        "--workdir\n{}",
        out.ctx()
    );
}

/// Warden's own state (the compile cache with the key that authenticates
/// machine code, the key-value stores) never shows through a grant that
/// covers it: a grant of its parent sees an empty, unreadable directory,
/// and a grant inside it is refused.
#[test]
fn wardens_own_state_is_hidden_inside_a_broader_grant() {
    let t = TempDir::new("g-state");
    t.write("var/cache/warden/wasm/key", "host-secret-key\n");
    t.write("var/cache/other.txt", "visible\n");
    t.write("var/lib/warden/kv/acme.redb", "tenant-data\n");
    let cache = t.path("var/cache/warden/wasm");
    let kv = t.path("var/lib/warden/kv");
    let out = t
        .run([
            "--allow",
            "fs:read:./var",
            "--",
            "sh",
            "-c",
            "cat var/cache/other.txt; cat var/cache/warden/wasm/key; cat var/lib/warden/kv/acme.redb; ls -a var/cache/warden/wasm",
        ])
        .env("WARDEN_CACHE_DIR", cache.to_str().unwrap())
        .env("WARDEN_KV_DIR", kv.to_str().unwrap())
        .go();
    out.expect_stdout_has("visible", "the rest of the grant is there");
    out.expect_stdout_lacks("host-secret-key", "the cache key stays hidden");
    out.expect_stdout_lacks("tenant-data", "the kv stores stay hidden");
    // A grant inside the state directory is refused before anything runs.
    let out = t
        .run(["--allow", "fs:read:./var/cache/warden/wasm", "--", "true"])
        .env("WARDEN_CACHE_DIR", cache.to_str().unwrap())
        .go();
    out.expect_warden_error("grant inside Warden's state");
    assert!(
        out.stderr.contains("inside Warden's own state directory"),
        "{}",
        out.ctx()
    );
}

//! Each grant and its absence: preopens, read-only preopens, escapes.
use crate::common::*;
use warden_core::Status;
use warden_policy::Capability;

/// A granted directory `data` holding `in.txt`, a secret file beside it,
/// and a symlink inside `data` that points at the secret.
struct Fixture {
    _tmp: TempDir,
    data: std::path::PathBuf,
    secret: std::path::PathBuf,
}

fn fixture(tag: &str) -> Fixture {
    let tmp = TempDir::new(tag);
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("in.txt"), "granted contents\n").unwrap();
    let secret = tmp.path().join("secret.txt");
    std::fs::write(&secret, "top secret\n").unwrap();
    std::os::unix::fs::symlink(&secret, data.join("link")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", data.join("rel-link")).unwrap();
    Fixture {
        _tmp: tmp,
        data,
        secret,
    }
}

fn p(path: &std::path::Path) -> String {
    path.display().to_string()
}

#[test]
fn a_read_grant_opens_its_directory_at_the_same_path() {
    let f = fixture("read");
    let mut i = inv(&rust("readfile"), &[&p(&f.data.join("in.txt"))]);
    i.capabilities = vec![read(&f.data)];
    let r = run(&i);
    r.expect_exited();
    assert_eq!(r.outcome.exit_code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, "granted contents\n");
}

#[test]
fn without_a_grant_nothing_is_readable() {
    let f = fixture("none");
    let r = run(&inv(&rust("readfile"), &[&p(&f.data.join("in.txt"))]));
    assert_eq!(r.outcome.status, Status::Exited);
    assert_eq!(r.outcome.exit_code, Some(2), "{}", r.stdout);
    assert_eq!(r.stdout, "");
    // Not even the module's own directory or the root.
    for path in ["/etc/hostname", ".", "/"] {
        let r = run(&inv(&rust("readfile"), &[path]));
        assert_eq!(r.outcome.exit_code, Some(2), "{path}: {}", r.stdout);
    }
}

#[test]
fn a_read_outside_the_preopen_fails() {
    let f = fixture("outside");
    for target in [
        p(&f.secret),
        format!("{}/../secret.txt", p(&f.data)),
        "/etc/hostname".to_string(),
    ] {
        let mut i = inv(&rust("readfile"), &[&target]);
        i.capabilities = vec![read(&f.data)];
        let r = run(&i);
        assert_eq!(r.outcome.status, Status::Exited, "{target}");
        assert_eq!(
            r.outcome.exit_code,
            Some(2),
            "{target}: read {:?}",
            r.stdout
        );
        assert!(!r.stdout.contains("secret"));
    }
}

#[test]
fn a_symlink_out_of_the_preopen_fails() {
    let f = fixture("symlink");
    for link in ["link", "rel-link"] {
        let mut i = inv(&rust("readfile"), &[&p(&f.data.join(link))]);
        i.capabilities = vec![read(&f.data)];
        let r = run(&i);
        assert_eq!(r.outcome.exit_code, Some(2), "{link}: read {:?}", r.stdout);
        assert!(!r.stdout.contains("secret"));
    }
}

#[test]
fn a_grant_through_a_symlink_is_refused() {
    let f = fixture("grantlink");
    let alias = f.data.parent().unwrap().join("alias");
    std::os::unix::fs::symlink(&f.data, &alias).unwrap();
    let mut i = inv(&rust("readfile"), &[&p(&alias.join("in.txt"))]);
    i.capabilities = vec![read(&alias)];
    let err = backend()
        .run_with_io(&i, &warden_wasm::RunIo::default())
        .unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
}

#[test]
fn a_read_only_preopen_refuses_writes() {
    let f = fixture("ro");
    let target = f.data.join("new.txt");
    let mut i = inv(&rust("writefile"), &[&p(&target), "written"]);
    i.capabilities = vec![read(&f.data)];
    let r = run(&i);
    assert_eq!(r.outcome.exit_code, Some(2), "{}", r.stderr);
    assert!(!target.exists());
    // Overwriting an existing file is refused too.
    let mut i = inv(&rust("writefile"), &[&p(&f.data.join("in.txt")), "x"]);
    i.capabilities = vec![read(&f.data)];
    assert_eq!(run(&i).outcome.exit_code, Some(2));
    assert_eq!(
        std::fs::read_to_string(f.data.join("in.txt")).unwrap(),
        "granted contents\n"
    );
}

#[test]
fn a_write_grant_allows_writes_inside_only() {
    let f = fixture("rw");
    let target = f.data.join("new.txt");
    let mut i = inv(&rust("writefile"), &[&p(&target), "written"]);
    i.capabilities = vec![write(&f.data)];
    let r = run(&i);
    assert_eq!(r.outcome.exit_code, Some(0), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "written");
    // file_size is enforced on preview-1 writes (tests/fs_limits.rs).
    assert_eq!(
        r.outcome.enforcement["file_size"], "wasm_write_check",
        "{:?}",
        r.outcome
    );

    // Outside the grant, and through the symlink: refused.
    let outside = f.data.parent().unwrap().join("escaped.txt");
    for t in [outside.clone(), f.data.join("link")] {
        let mut i = inv(&rust("writefile"), &[&p(&t), "pwned"]);
        i.capabilities = vec![write(&f.data)];
        assert_eq!(run(&i).outcome.exit_code, Some(2), "{}", t.display());
    }
    assert!(!outside.exists());
    assert_eq!(std::fs::read_to_string(&f.secret).unwrap(), "top secret\n");
}

#[test]
fn read_and_write_grants_on_one_directory_merge() {
    let f = fixture("merge");
    let target = f.data.join("both.txt");
    let mut i = inv(&rust("writefile"), &[&p(&target), "ok"]);
    i.capabilities = vec![read(&f.data), write(&f.data)];
    assert_eq!(run(&i).outcome.exit_code, Some(0));
}

#[test]
fn unsupported_capabilities_are_refused_by_name() {
    for cap in ["net:connect:example.com:443", "secret:db"] {
        let mut i = inv(&rust("hello"), &[]);
        i.capabilities = vec![cap.parse::<Capability>().unwrap()];
        let err = backend()
            .run_with_io(&i, &warden_wasm::RunIo::default())
            .unwrap_err();
        assert!(err.to_string().contains(cap), "{err}");
    }
}

#[test]
fn a_file_grant_other_than_the_module_is_refused() {
    let f = fixture("filegrant");
    let mut i = inv(&rust("hello"), &[]);
    i.capabilities = vec![read(&f.data.join("in.txt"))];
    let err = backend()
        .run_with_io(&i, &warden_wasm::RunIo::default())
        .unwrap_err();
    assert!(err.to_string().contains("directories only"), "{err}");
    // The module file itself (which the engine adds for the jail) is fine.
    let module = rust("hello");
    let mut i = inv(&module, &[]);
    i.capabilities = vec![read(&module)];
    assert_eq!(run(&i).outcome.status, Status::Exited);
    // Also when argv[0] names it relative to the working directory.
    let dir = module.parent().unwrap();
    let mut i = inv(std::path::Path::new("./sub/../hello.wasm"), &[]);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    i.workdir = dir.to_path_buf();
    i.capabilities = vec![read(&module)];
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert_eq!(r.stdout, "hello from rust\n");
}

/// A grant inside the run's working directory is reachable by its path
/// relative to it (as in the jail, whose working directory is the
/// caller's), and nothing beside it is: not `..`, not an ungranted sibling,
/// not the working directory itself.
#[test]
fn a_grant_inside_the_working_directory_is_reachable_by_its_relative_path() {
    let f = fixture("relative");
    let work = f.data.parent().unwrap().to_path_buf();
    std::fs::create_dir(work.join("other")).unwrap();
    std::fs::write(work.join("other/x.txt"), "not granted\n").unwrap();
    let read_rel = |path: &str| {
        let mut i = inv(&rust("readfile"), &[path]);
        i.workdir = work.clone();
        i.capabilities = vec![read(&f.data)];
        run(&i)
    };
    for path in ["data/in.txt", "./data/in.txt", &p(&f.data.join("in.txt"))] {
        let r = read_rel(path);
        r.expect_exited();
        assert_eq!(r.outcome.exit_code, Some(0), "{path}: {}", r.stderr);
        assert_eq!(r.stdout, "granted contents\n", "{path}");
    }
    for path in [
        "other/x.txt",
        "./other/x.txt",
        "secret.txt",
        "data/../secret.txt",
        "data/../other/x.txt",
        "../secret.txt",
        "data/link",
        "data/rel-link",
    ] {
        let r = read_rel(path);
        assert_eq!(
            r.outcome.exit_code,
            Some(2),
            "{path} was readable: {}",
            r.stdout
        );
        assert_eq!(r.stdout, "", "{path}");
    }
    assert_ne!(f.secret, work.join("data/in.txt"));
}

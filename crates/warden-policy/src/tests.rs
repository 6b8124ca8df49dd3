//! Tests of the public API.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

fn cap(s: &str) -> Capability {
    match s.parse() {
        Ok(c) => c,
        Err(e) => panic!("{s:?} should parse: {e}"),
    }
}

fn cap_err(s: &str) -> String {
    match s.parse::<Capability>() {
        Ok(c) => panic!("{s:?} should not parse, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn policy(source: &str, origin: &str) -> Policy {
    match parse_policy(source, origin) {
        Ok(p) => p,
        Err(e) => panic!("should parse: {e}"),
    }
}

/// Renders every diagnostic of `source` as `line:col: severity: message`.
/// `policy check`'s lines for `source` as file `p.yaml`.
fn rendered(source: &str) -> Vec<String> {
    check(source, "p.yaml")
        .iter()
        .map(|d| d.render("p.yaml"))
        .collect()
}

fn diagnostics(source: &str) -> Vec<String> {
    rendered(source)
        .into_iter()
        .map(|l| l.trim_start_matches("p.yaml:").to_owned())
        .collect()
}

// ---------------------------------------------------------------- capabilities

#[test]
fn every_capability_kind_parses_and_round_trips() {
    let cases: Vec<(&str, Capability, &str)> = vec![
        (
            "fs:read:/data",
            Capability::FsRead("/data".into()),
            "fs:read:/data",
        ),
        (
            "fs:read:./data",
            Capability::FsRead("data".into()),
            "fs:read:data",
        ),
        (
            "fs:write:/srv/out/",
            Capability::FsWrite("/srv/out".into()),
            "fs:write:/srv/out",
        ),
        (
            "fs:write:/a/./b/../c",
            Capability::FsWrite("/a/c".into()),
            "fs:write:/a/c",
        ),
        (
            "fs:read:/../..",
            Capability::FsRead("/".into()),
            "fs:read:/",
        ),
        (
            "fs:read:/with:colon",
            Capability::FsRead("/with:colon".into()),
            "fs:read:/with:colon",
        ),
        (
            "net:connect:*.Example.com:443",
            Capability::NetConnect {
                host: HostPattern::Suffix("example.com".into()),
                port: PortPattern::Port(443),
            },
            "net:connect:*.example.com:443",
        ),
        (
            "net:connect:*:*",
            Capability::NetConnect {
                host: HostPattern::Any,
                port: PortPattern::Any,
            },
            "net:connect:*:*",
        ),
        (
            "net:connect:[::1]:8080",
            Capability::NetConnect {
                host: HostPattern::Ip("::1".parse().unwrap()),
                port: PortPattern::Port(8080),
            },
            "net:connect:[::1]:8080",
        ),
        (
            "net:connect:10.0.0.1:65535",
            Capability::NetConnect {
                host: HostPattern::Ip("10.0.0.1".parse().unwrap()),
                port: PortPattern::Port(65535),
            },
            "net:connect:10.0.0.1:65535",
        ),
        (
            "net:connect:db.local.:5432",
            Capability::NetConnect {
                host: HostPattern::Name("db.local".into()),
                port: PortPattern::Port(5432),
            },
            "net:connect:db.local:5432",
        ),
        (
            "net:http:localhost",
            Capability::NetHttp(HostPattern::Name("localhost".into())),
            "net:http:localhost",
        ),
        (
            "net:http:*",
            Capability::NetHttp(HostPattern::Any),
            "net:http:*",
        ),
        (
            "net:http:[2001:db8::1]",
            Capability::NetHttp(HostPattern::Ip("2001:db8::1".parse().unwrap())),
            "net:http:[2001:db8::1]",
        ),
        ("env:LANG", Capability::Env("LANG".into()), "env:LANG"),
        ("clock:read", Capability::ClockRead, "clock:read"),
        ("random:read", Capability::RandomRead, "random:read"),
        ("log:write", Capability::LogWrite, "log:write"),
        (
            "kv:read:cache",
            Capability::KvRead("cache".into()),
            "kv:read:cache",
        ),
        ("kv:write:*", Capability::KvWrite("*".into()), "kv:write:*"),
        ("env:_x9", Capability::Env("_x9".into()), "env:_x9"),
        (
            "secret:db/password",
            Capability::Secret("db/password".into()),
            "secret:db/password",
        ),
        (
            "module:call:parser",
            Capability::ModuleCall("parser".into()),
            "module:call:parser",
        ),
        (
            "module:call:json-1.2",
            Capability::ModuleCall("json-1.2".into()),
            "module:call:json-1.2",
        ),
        (
            "mem:limit:64MiB",
            Capability::MemLimit(64 << 20),
            "mem:limit:64MiB",
        ),
        (
            "mem:limit:100MB",
            Capability::MemLimit(100_000_000),
            "mem:limit:100000000",
        ),
        (
            "mem:limit:1G",
            Capability::MemLimit(1 << 30),
            "mem:limit:1GiB",
        ),
        ("cpu:limit:50%", Capability::CpuLimit(50), "cpu:limit:50%"),
        ("cpu:limit:250", Capability::CpuLimit(250), "cpu:limit:250%"),
        (
            "time:limit:1.5s",
            Capability::TimeLimit(Duration::from_millis(1500)),
            "time:limit:1500ms",
        ),
        (
            "time:limit:2m",
            Capability::TimeLimit(Duration::from_secs(120)),
            "time:limit:2m",
        ),
        ("proc:limit:64", Capability::ProcLimit(64), "proc:limit:64"),
    ];
    for (input, want, display) in cases {
        let got = cap(input);
        assert_eq!(got, want, "{input}");
        assert_eq!(got.to_string(), display, "{input}");
        assert_eq!(cap(display), want, "{display} round-trips");
    }
}

#[test]
fn malformed_capabilities_are_refused_with_precise_messages() {
    let pinned = [
        ("fs:read", r#"malformed capability "fs:read": missing path"#),
        (
            "fs:read:",
            r#"malformed capability "fs:read:": missing path"#,
        ),
        ("", "empty capability"),
        (
            "fs:exec:/bin",
            r#"malformed capability "fs:exec:/bin": unknown fs access "exec": expected read or write"#,
        ),
        (
            "gpu:use",
            r#"unknown capability "gpu:use": expected fs:read, fs:write, net:connect, net:http, env, secret, module:call, clock:read, random:read, log:write, kv:read, kv:write, mem:limit, cpu:limit, time:limit or proc:limit"#,
        ),
        (
            "clock:write",
            r#"malformed capability "clock:write": expected exactly "clock:read""#,
        ),
        (
            "random",
            r#"malformed capability "random": expected exactly "random:read""#,
        ),
        (
            "log:write:x",
            r#"malformed capability "log:write:x": expected exactly "log:write""#,
        ),
        (
            "kv:delete:cache",
            r#"malformed capability "kv:delete:cache": unknown kv access "delete": expected read or write"#,
        ),
        (
            "kv:read:",
            r#"malformed capability "kv:read:": missing name"#,
        ),
        (
            "kv:write:a/b",
            r#"malformed capability "kv:write:a/b": invalid kv namespace name "a/b": expected ASCII letters, digits, '_', '-' and '.', not starting with '-' or '.', or *"#,
        ),
        (
            "net:connect:example.com",
            r#"malformed capability "net:connect:example.com": missing port: expected HOST:PORT, e.g. example.com:443 or *:443"#,
        ),
        (
            "net:connect:example.com:0",
            r#"malformed capability "net:connect:example.com:0": invalid port "0": expected a number from 1 to 65535 or *"#,
        ),
        (
            "net:connect:::1:80",
            r#"malformed capability "net:connect:::1:80": invalid host "::1": IPv6 addresses must be written in brackets, e.g. [::1]"#,
        ),
        (
            "env:1X",
            r#"malformed capability "env:1X": invalid environment variable name "1X": expected [A-Za-z_][A-Za-z0-9_]*"#,
        ),
        (
            "mem:limit:-1",
            r#"malformed capability "mem:limit:-1": invalid size "-1": expected a number followed by an optional unit (B, KB, KiB, MB, MiB, GB, GiB)"#,
        ),
        (
            "cpu:limit:0",
            r#"malformed capability "cpu:limit:0": invalid CPU share "0": must be between 1% and 102400% of one core"#,
        ),
    ];
    for (input, message) in pinned {
        assert_eq!(cap_err(input), message, "{input:?}");
    }
    let refused = [
        "fs",
        "fs:write:/a\0b",
        "net",
        "net:udp:x:1",
        "net:connect:",
        "net:connect::443",
        "net:connect:host:",
        "net:connect:host:65536",
        "net:connect:host:+80",
        "net:connect:host:-1",
        "net:connect:host:*x",
        "net:connect:*example.com:443",
        "net:connect:a.*.com:443",
        "net:connect:*.:443",
        "net:connect:a..b:443",
        "net:connect:-a.com:443",
        "net:connect:exämple.com:443",
        "net:connect:1.2.3:443",
        "net:connect:999.1.1.1:443",
        "net:connect:[::1]",
        "net:connect:[::1]x:80",
        "net:connect:[nope]:80",
        "net:connect:[::1:80",
        "net:http:",
        "net:http:host:8080",
        "env",
        "env:",
        "env:A-B",
        "env:A B",
        "secret:",
        "secret:-x",
        "secret:a b",
        "module:call:",
        "module:load:x",
        "module:call:a/b",
        "mem:limit",
        "mem:limit:",
        "mem:max:1",
        "mem:limit:1.5GiB",
        "mem:limit:99999999999999999999",
        "cpu:limit:abc",
        "cpu:limit:-5%",
        "time:limit:-1s",
        "time:limit:5",
        "time:limit:5y",
        "proc:limit:-1",
        "proc:limit:4294967296",
        " fs:read:/x",
        "FS:read:/x",
    ];
    for input in refused {
        let message = cap_err(input);
        assert!(!message.contains('\n'), "{message}");
    }
    let long = format!("fs:read:/{}", "a".repeat(MAX_CAPABILITY_LEN));
    assert!(cap_err(&long).starts_with("capability is too long"));
}

#[test]
fn capabilities_serialize_as_strings() {
    let c = cap("net:connect:*.example.com:443");
    let yaml = serde_saphyr::to_string(&c).unwrap();
    assert_eq!(yaml.trim(), "net:connect:*.example.com:443");
    let back: Capability = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(back, c);
    let list: Vec<Capability> = serde_saphyr::from_str("- env:LANG\n- fs:read:/x\n").unwrap();
    assert_eq!(list, vec![cap("env:LANG"), cap("fs:read:/x")]);
    let bad: Result<Vec<Capability>, _> = serde_saphyr::from_str("- fs:read\n");
    assert!(bad.unwrap_err().to_string().contains("missing path"));
}

#[test]
fn subsumption_table() {
    let table = [
        ("fs:write:/a", "fs:read:/a/b", true),
        ("fs:write:/a", "fs:write:/a/b", true),
        ("fs:write:/a", "fs:write:/a", true),
        ("fs:write:/a", "fs:read:/a", true),
        ("fs:read:/a", "fs:read:/a/b", true),
        ("fs:read:/a", "fs:write:/a/b", false),
        ("fs:read:/a", "fs:read:/ab", false),
        ("fs:write:/a", "fs:write:/ab", false),
        ("fs:read:/a/b", "fs:read:/a", false),
        ("fs:read:/", "fs:read:/anything/at/all", true),
        ("fs:read:data", "fs:read:data/x", true),
        ("fs:read:/data", "fs:read:data", false),
        (
            "net:connect:*.ex.com:443",
            "net:connect:api.ex.com:443",
            true,
        ),
        (
            "net:connect:*.ex.com:443",
            "net:connect:a.b.ex.com:443",
            true,
        ),
        ("net:connect:*.ex.com:443", "net:connect:ex.com:443", false),
        (
            "net:connect:*.ex.com:443",
            "net:connect:badex.com:443",
            false,
        ),
        (
            "net:connect:*.ex.com:443",
            "net:connect:api.ex.com:80",
            false,
        ),
        ("net:connect:*.ex.com:*", "net:connect:api.ex.com:80", true),
        ("net:connect:*.ex.com:*", "net:connect:*.api.ex.com:*", true),
        (
            "net:connect:*.api.ex.com:*",
            "net:connect:*.ex.com:*",
            false,
        ),
        (
            "net:connect:api.ex.com:443",
            "net:connect:api.ex.com:*",
            false,
        ),
        ("net:connect:*:*", "net:connect:[::1]:22", true),
        ("net:connect:*:443", "net:connect:10.0.0.1:443", true),
        (
            "net:connect:*.ex.com:443",
            "net:connect:10.0.0.1:443",
            false,
        ),
        ("net:connect:[::1]:22", "net:connect:[0:0::1]:22", true),
        ("net:http:*", "net:http:example.org", true),
        ("net:http:*.ex.com", "net:http:api.ex.com", true),
        ("net:http:*.ex.com", "net:http:ex.com", false),
        ("net:http:*", "net:connect:example.org:80", false),
        ("net:connect:*:*", "net:http:example.org", false),
        ("env:LANG", "env:LANG", true),
        ("env:LANG", "env:LC_ALL", false),
        ("secret:db", "secret:db", true),
        ("secret:db", "secret:db/x", false),
        ("module:call:parser", "module:call:parser", true),
        ("module:call:parser", "module:call:parser2", false),
        ("kv:write:cache", "kv:read:cache", true),
        ("kv:write:cache", "kv:write:cache", true),
        ("kv:read:cache", "kv:write:cache", false),
        ("kv:read:cache", "kv:read:cache2", false),
        ("kv:read:*", "kv:read:cache", true),
        ("kv:read:*", "kv:write:cache", false),
        ("kv:write:*", "kv:write:anything", true),
        ("clock:read", "clock:read", true),
        ("clock:read", "random:read", false),
        ("random:read", "random:read", true),
        ("log:write", "log:write", true),
        ("log:write", "kv:write:log", false),
        ("mem:limit:1GiB", "mem:limit:64MiB", true),
        ("mem:limit:64MiB", "mem:limit:1GiB", false),
        ("cpu:limit:50%", "cpu:limit:50", true),
        ("cpu:limit:50%", "cpu:limit:51", false),
        ("time:limit:1m", "time:limit:59s", true),
        ("time:limit:1m", "time:limit:61s", false),
        ("proc:limit:10", "proc:limit:10", true),
        ("proc:limit:10", "mem:limit:10", false),
        ("fs:write:/", "env:HOME", false),
    ];
    for (outer, inner, want) in table {
        assert_eq!(cap(outer).subsumes(&cap(inner)), want, "{outer} ⊇ {inner}");
    }
}

#[test]
fn subsumption_normalises_hand_built_paths() {
    let data = Capability::FsRead("/data".into());
    assert!(!data.subsumes(&Capability::FsRead("/data/../etc/passwd".into())));
    assert!(data.subsumes(&Capability::FsRead("/data/./x/".into())));
    assert!(Capability::FsRead("/data/x/..".into()).subsumes(&Capability::FsRead("/data/y".into())));
}

#[test]
fn limit_and_path_helpers() {
    assert!(cap("mem:limit:1M").is_limit());
    assert!(cap("time:limit:1s").is_limit());
    assert!(!cap("fs:read:/x").is_limit());
    assert_eq!(cap("fs:write:/x").path(), Some(Path::new("/x")));
    assert_eq!(cap("env:X").path(), None);
}

#[test]
fn with_base_makes_relative_paths_absolute() {
    let base = Path::new("/srv/app");
    assert_eq!(
        cap("fs:read:./data").with_base(base),
        cap("fs:read:/srv/app/data")
    );
    assert_eq!(
        cap("fs:write:../out").with_base(base),
        cap("fs:write:/srv/out")
    );
    assert_eq!(cap("fs:read:../../../..").with_base(base), cap("fs:read:/"));
    assert_eq!(cap("fs:read:/abs").with_base(base), cap("fs:read:/abs"));
    assert_eq!(cap("env:X").with_base(base), cap("env:X"));
    assert_eq!(normalize(Path::new("a/../../b")), PathBuf::from("../b"));
    assert_eq!(normalize(Path::new("./")), PathBuf::from("."));
}

// ---------------------------------------------------------------- policies

const EXAMPLE: &str = "\
# policy.yaml
extends: base.yaml          # optional
grants:
  - fs:read:./data
  - fs:write:/srv/out
  - env:LANG
  - net:connect:*.example.com:443
limits:
  memory: 256MiB
  cpu_time: 2s
  wall_time: 10s
  pids: 64
  cpu: 50%            # share of one core
  output: 1MiB
  file_size: 16MiB
  open_files: 128
  tmpfs: 64MiB
";

#[test]
fn parses_the_documented_example() {
    let p = policy(EXAMPLE, "policy.yaml");
    assert_eq!(p.extends.as_deref(), Some("base.yaml"));
    assert_eq!(p.origin, "policy.yaml");
    assert!(!p.inherit_grants);
    let grants: Vec<String> = p.grants.iter().map(|g| g.capability.to_string()).collect();
    assert_eq!(
        grants,
        [
            "fs:read:data",
            "fs:write:/srv/out",
            "env:LANG",
            "net:connect:*.example.com:443"
        ]
    );
    assert_eq!(p.grants[0].location, Some(Location { line: 4, column: 5 }));
    assert_eq!(p.grants[3].location, Some(Location { line: 7, column: 5 }));
    assert_eq!(
        p.limits,
        Limits {
            memory: Some(256 << 20),
            cpu_time: Some(Duration::from_secs(2)),
            wall_time: Some(Duration::from_secs(10)),
            pids: Some(64),
            cpu_percent: Some(50),
            output: Some(1 << 20),
            file_size: Some(16 << 20),
            open_files: Some(128),
            tmpfs: Some(64 << 20),
            ..Limits::default()
        }
    );
    assert!(check(EXAMPLE, "policy.yaml").is_empty());
    let based = p.with_base(Path::new("/etc/warden"));
    assert_eq!(based.grants[0].capability, cap("fs:read:/etc/warden/data"));
}

#[test]
fn limit_capabilities_fold_into_limits() {
    let p = policy(
        "grants:\n  - mem:limit:64MiB\n  - cpu:limit:25%\n  - time:limit:3s\n  - proc:limit:8\n  - env:A\nlimits:\n  memory: 64MiB\n",
        "p.yaml",
    );
    assert_eq!(p.grants.len(), 1);
    assert_eq!(p.limits.memory, Some(64 << 20));
    assert_eq!(p.limits.cpu_percent, Some(25));
    assert_eq!(p.limits.wall_time, Some(Duration::from_secs(3)));
    assert_eq!(p.limits.pids, Some(8));
}

#[test]
fn parse_errors_are_one_line_with_position() {
    let err =
        parse_policy("extends: base.yaml\ngrants:\n  - fs:read\n", "policy.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"policy.yaml:3:5: malformed capability "fs:read": missing path"#
    );
    let err = parse_policy(
        "grants:\n  - mem:limit:64MiB\n  - mem:limit:1GiB\n",
        "p.yaml",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "p.yaml:3:5: conflicting memory limit: mem:limit:1GiB contradicts mem:limit:64MiB at 2:5"
    );
    // Warnings alone do not fail parsing.
    assert!(parse_policy("grants: [fs:write:/]\n", "p.yaml").is_ok());
}

#[test]
fn empty_grants_and_missing_grants_differ() {
    let none = policy("limits:\n  memory: 1MiB\n", "c.yaml");
    assert!(none.inherit_grants && none.grants.is_empty());
    let empty = policy("grants: []\n", "c.yaml");
    assert!(!empty.inherit_grants && empty.grants.is_empty());
    let null = policy("grants:\nextends: ~\n", "c.yaml");
    assert!(!null.inherit_grants && null.grants.is_empty() && null.extends.is_none());
}

// ---------------------------------------------------------------- attenuation

const PARENT: &str = "\
grants:
  - fs:write:/srv
  - net:connect:*.example.com:*
  - env:LANG
limits:
  memory: 256MiB
  pids: 64
";

#[test]
fn attenuation_narrows() {
    let parent = policy(PARENT, "base.yaml");
    let child = policy(
        "extends: base.yaml\ngrants:\n  - fs:read:/srv/data\n  - net:connect:api.example.com:443\nlimits:\n  memory: 128MiB\n  cpu: 50\n",
        "child.yaml",
    );
    let eff = Policy::attenuate(&parent, &child).unwrap();
    assert_eq!(eff.extends, None);
    assert_eq!(eff.origin, "child.yaml");
    assert_eq!(eff.grants, child.grants);
    assert_eq!(eff.limits.memory, Some(128 << 20));
    assert_eq!(eff.limits.pids, Some(64), "unset child limit inherits");
    assert_eq!(
        eff.limits.cpu_percent,
        Some(50),
        "child may limit what the parent did not"
    );
}

#[test]
fn attenuation_without_grants_key_inherits_grants() {
    let parent = policy(PARENT, "base.yaml");
    let child = policy("extends: base.yaml\nlimits:\n  pids: 8\n", "child.yaml");
    let eff = Policy::attenuate(&parent, &child).unwrap();
    assert_eq!(eff.grants, parent.grants);
    assert_eq!(eff.limits.pids, Some(8));
    let empty = policy("grants: []\n", "child.yaml");
    assert!(Policy::attenuate(&parent, &empty)
        .unwrap()
        .grants
        .is_empty());
}

#[test]
fn attenuation_refuses_widening() {
    let parent = policy(PARENT, "base.yaml");
    let child = policy(
        "grants:\n  - env:LANG\n  - fs:write:/srv/../etc\n",
        "child.yaml",
    );
    let err = Policy::attenuate(&parent, &child).unwrap_err();
    assert_eq!(
        err.to_string(),
        "child.yaml:3:5: grant fs:write:/etc widens parent policy base.yaml: no grant there covers it"
    );
    let child = policy("grants:\n  - net:connect:example.com:443\n", "child.yaml");
    assert!(
        Policy::attenuate(&parent, &child).is_err(),
        "*.example.com does not cover example.com"
    );
    let child = policy("limits:\n  memory: 1GiB\n", "child.yaml");
    assert_eq!(
        Policy::attenuate(&parent, &child).unwrap_err().to_string(),
        "child.yaml:2:11: limit memory 1GiB widens parent policy base.yaml, whose limit is 256MiB"
    );
    let child = policy("grants: [mem:limit:1GiB]\n", "child.yaml");
    assert!(Policy::attenuate(&parent, &child).is_err());
}

// ---------------------------------------------------------------- requests

#[test]
fn allow_request_intersects() {
    let p = policy(PARENT, "base.yaml");
    let requested = [
        cap("fs:read:/srv/in"),
        cap("env:LANG"),
        cap("mem:limit:64MiB"),
        cap("env:LANG"),
    ];
    let limits = Limits {
        memory: Some(64 << 20),
        ..Limits::default()
    };
    assert_eq!(
        p.allow_request(&requested, &limits).unwrap(),
        vec![cap("fs:read:/srv/in"), cap("env:LANG")]
    );
    let err = p
        .allow_request(
            &[cap("env:LANG"), cap("env:HOME"), cap("secret:x")],
            &Limits::default(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "requested capability env:HOME is not granted by policy base.yaml"
    );
    let err = p
        .allow_request(&[cap("mem:limit:1GiB")], &Limits::default())
        .unwrap_err();
    assert!(matches!(err, PolicyError::NotGranted { .. }));
    let big = Limits {
        memory: Some(1 << 30),
        pids: Some(65),
        cpu_percent: Some(100),
        ..Limits::default()
    };
    assert_eq!(
        p.allow_request(&[], &big).unwrap_err().to_string(),
        "requested limits exceed policy base.yaml: memory 1GiB exceeds 256MiB, pids 65 exceeds 64"
    );
    // A limit the policy does not set is not bounded by it.
    assert!(p
        .allow_request(&[cap("cpu:limit:400%")], &Limits::default())
        .is_ok());
}

// ---------------------------------------------------------------- digest

#[test]
fn digest_is_stable_and_order_independent() {
    let a = policy(
        "grants:\n  - env:B\n  - env:A\n  - env:A\nlimits:\n  memory: 1GiB\n  pids: 4\n",
        "a.yaml",
    );
    let b = policy(
        "limits:\n  pids: 4\n  memory: 1024MiB\ngrants: [env:A, 'env:B']\nextends: x.yaml\n",
        "b.yaml",
    );
    assert_eq!(a.digest(), b.digest());
    assert!(a.digest().starts_with("sha256:"));
    assert_eq!(a.digest().len(), "sha256:".len() + 64);
    // Pinned: the canonical form must not drift between releases.
    assert_eq!(
        Policy::default().digest(),
        "sha256:e8c4bc89d6d12eacf234d3d0d9651343e582d319111562cb2b19f2f07eda1425"
    );
    let c = policy(
        "grants: [env:A]\nlimits:\n  pids: 4\n  memory: 1GiB\n",
        "c.yaml",
    );
    assert_ne!(a.digest(), c.digest());
    let d = policy(
        "grants: [env:A, env:B]\nlimits:\n  pids: 5\n  memory: 1GiB\n",
        "d.yaml",
    );
    assert_ne!(a.digest(), d.digest());
}

// ---------------------------------------------------------------- check

#[test]
fn check_reports_every_problem_with_its_position() {
    let source = "\
# policy.yaml
extends: base.yaml
grants:
  - fs:read
  - fs:write:/
  - fs:write:/data
  - fs:read:/data/x
  - env:LANG
  - env:LANG
  - fs:read:/x
  - fs:write:/x
  - net:connect:*:*
  - net:http:*
  - fs:write:/etc/nginx
  - fs:read: /y
  - [nested]
  - mem:limit:64MiB
limits:
  memroy: 1
  memory: 128MiB
  cpu_time: -1s
  pids: [1]
  wall_time: 10s
  wall_time: 11s
grant: []
";
    assert_eq!(
        diagnostics(source),
        vec![
            r#"4:5: error: malformed capability "fs:read": missing path"#,
            "5:5: warning: over-broad grant fs:write:/ gives write access to the whole filesystem",
            "6:5: warning: grant fs:write:/data is redundant: already covered by fs:write:/ at 5:5",
            "7:5: warning: grant fs:read:/data/x is redundant: already covered by fs:write:/data at 6:5",
            "9:5: warning: duplicate grant env:LANG (first at 8:5)",
            "10:5: warning: grant fs:read:/x is redundant: already covered by fs:write:/x at 11:5",
            "11:5: warning: grant fs:write:/x is redundant: already covered by fs:write:/ at 5:5",
            "12:5: warning: over-broad grant net:connect:*:* allows connections to any host on any port",
            "13:5: warning: over-broad grant net:http:* allows HTTP requests to any host",
            "14:5: warning: over-broad grant fs:write:/etc/nginx gives write access to system directory /etc",
            "14:5: warning: grant fs:write:/etc/nginx is redundant: already covered by fs:write:/ at 5:5",
            r#"15:5: error: a grant must be a capability string; found a mapping (did you mean "fs:read:/y"? remove the space after the colon)"#,
            "16:5: error: a grant must be a capability string; found a list",
            r#"19:3: error: unknown limit "memroy": did you mean "memory"?"#,
            "20:11: error: conflicting memory limit: memory: 128MiB contradicts mem:limit:64MiB at 17:5",
            r#"21:13: error: invalid cpu_time limit: invalid duration "-1s": expected a number followed by a unit (ns, us, ms, s, m, h, d), e.g. 250ms or 1.5s"#,
            "22:9: error: limit pids must be a single value; found a list",
            r#"24:3: error: duplicate key "wall_time" (first at 23:3)"#,
            r#"25:1: error: unknown top-level key "grant": did you mean "grants"?"#,
        ]
    );
}

/// `policy check` refuses the limits `warden run` would refuse, where they
/// are written (it used to say ok to `memory: 0`).
#[test]
fn limits_outside_the_bounds_are_errors_at_their_place() {
    let source = "limits:\n  memory: 0\n  wall_time: 500us\n  cpu_time: 400d\n  open_files: 2\n  pids: 3000000\ngrants:\n  - proc:limit:0\n";
    let lines = rendered(source);
    assert_eq!(
        lines,
        [
            "p.yaml:2:11: error: limit memory must be at least 1MiB (memory: 0)",
            "p.yaml:3:14: error: limit wall_time must be at least 1ms (wall_time: 500us)",
            "p.yaml:4:13: error: limit cpu_time may be at most 365 days (cpu_time: 400d)",
            "p.yaml:5:15: error: limit open_files must be at least 4 (open_files: 2)",
            "p.yaml:6:9: error: limit pids may be at most 2097152 (pids: 3000000)",
            "p.yaml:8:5: error: limit pids must be greater than zero (proc:limit:0)",
        ]
    );
    let limits = crate::Limits {
        wall_time: Some(std::time::Duration::from_micros(500)),
        ..Default::default()
    };
    assert_eq!(
        limits.check_bounds(),
        Err("wall-time must be at least 1ms".to_owned())
    );
}

/// Reading the host's processes, devices, homes or secrets is flagged too.
#[test]
fn sensitive_reads_are_over_broad() {
    let source = "grants:\n  - fs:read:/proc\n  - fs:read:/etc\n  - fs:read:/home/alice\n  - fs:read:/srv/data\n";
    let lines = rendered(source);
    assert_eq!(
        lines,
        [
            "p.yaml:2:5: warning: over-broad grant fs:read:/proc exposes the host's processes (it covers the jail's own /proc)",
            "p.yaml:3:5: warning: over-broad grant fs:read:/etc covers /etc/shadow: gives access to the host's password hashes",
            "p.yaml:4:5: warning: over-broad grant fs:read:/home/alice gives access to users' home directories",
        ]
    );
}

/// `- env:` is a YAML key without a value, not a capability: the hint
/// says so instead of suggesting `env:~`.
#[test]
fn a_capability_cut_at_its_colon_gets_a_plain_hint() {
    let lines = rendered("grants:\n  - env:\n");
    assert_eq!(
        lines,
        [
            r#"p.yaml:2:5: error: a grant must be a capability string; found a mapping ("env:" with nothing after it is a YAML key: write the whole capability, e.g. "env:NAME")"#
        ]
    );
}

#[test]
fn check_reports_broad_and_shadowed_host_interface_grants() {
    let source = "\
grants:
  - kv:write:*
  - kv:read:cache
  - kv:write:cache
  - clock:read
  - clock:read
  - log:write
";
    assert_eq!(
        diagnostics(source),
        vec![
            "2:5: warning: over-broad grant kv:write:* allows writing every key-value namespace of the tenant",
            "3:5: warning: grant kv:read:cache is redundant: already covered by kv:write:cache at 4:5",
            "4:5: warning: grant kv:write:cache is redundant: already covered by kv:write:* at 2:5",
            "6:5: warning: duplicate grant clock:read (first at 5:5)",
        ]
    );
}

#[test]
fn check_structural_errors() {
    let cases: &[(&str, &str)] = &[
        ("", "1:1: error: policy is empty: expected a mapping with grants and/or limits"),
        (
            "- fs:read:/x\n",
            "1:1: error: a policy must be a YAML mapping with keys extends, grants, limits, require_signed, audit, isolation; found a list",
        ),
        (
            "just text\n",
            "1:1: error: a policy must be a YAML mapping with keys extends, grants, limits, require_signed, audit, isolation; found a scalar",
        ),
        ("grants: fs:read:/x\n", "1:9: error: grants must be a list of capability strings; found a scalar"),
        ("limits: [1]\n", "1:9: error: limits must be a mapping of limit names to values; found a list"),
        ("limits:\n  memory:\n", "2:9: error: limit memory must be a single value; found null"),
        (
            "limits:\n  memory: -1\n",
            r#"2:11: error: invalid memory limit: invalid size "-1": expected a number followed by an optional unit (B, KB, KiB, MB, MiB, GB, GiB)"#,
        ),
        (
            "limits:\n  cpu: 0%\n",
            r#"2:8: error: invalid cpu limit: invalid CPU share "0%": must be between 1% and 102400% of one core"#,
        ),
        (
            "limits:\n  bogus: 1\n",
            r#"2:3: error: unknown limit "bogus": expected one of memory, cpu_time, wall_time, pids, cpu, output, file_size, open_files, tmpfs"#,
        ),
        ("extends: [a]\n", "1:10: error: extends must be the path of a parent policy; found a list"),
        ("? [a]\n: 1\n", "1:3: error: mapping keys must be strings; found a list"),
        ("grants: [a\n", "1:9: error: invalid YAML: unclosed bracket '['"),
        ("a: 1\n---\nb: 2\n", "2:1: error: a policy must be a single YAML document"),
    ];
    for (source, want) in cases {
        let got = diagnostics(source);
        assert_eq!(got.len(), 1, "{source:?}: {got:?}");
        assert!(
            got[0].starts_with(want),
            "{source:?}: got {:?}, want {want:?}",
            got[0]
        );
        assert!(parse_policy(source, "p.yaml").is_err());
    }
}

#[test]
fn check_refuses_hostile_input_quickly() {
    let started = Instant::now();
    let laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n";
    assert_eq!(
        diagnostics(laughs),
        vec!["1:7: error: YAML anchors and aliases are not allowed in a policy"]
    );
    let big = format!(
        "grants:\n{}",
        "  - env:A\n".repeat(MAX_SOURCE_BYTES / 10 + 1)
    );
    assert_eq!(
        diagnostics(&big),
        vec!["1:1: error: policy is too large (1048588 bytes; at most 1048576)"]
    );
    let many = format!("grants:\n{}", "  - env:A\n".repeat(MAX_GRANTS + 1));
    assert_eq!(
        diagnostics(&many),
        vec!["2:3: error: too many grants (4097; at most 4096)"]
    );
    let deep = format!("grants: {}{}", "[".repeat(50_000), "]".repeat(50_000));
    assert_eq!(
        diagnostics(&deep),
        vec!["1:73: error: invalid YAML: recursion limit exceeded"]
    );
    let nested = format!("grants: {}{}", "[".repeat(9), "]".repeat(9));
    assert_eq!(
        diagnostics(&nested),
        vec!["1:16: error: YAML nesting is deeper than a policy needs (at most 8 levels)"]
    );
    let deep_block = format!("grants:\n  {}x\n", "- ".repeat(200_000));
    assert_eq!(diagnostics(&deep_block).len(), 1);
    let wide = format!("grants: [{}]\n", "a,".repeat(MAX_NODES));
    assert_eq!(diagnostics(&wide).len(), 1);
    // The largest legal grant list, all distinct fs paths: shadowing is not quadratic.
    let legal: String = (1..MAX_GRANTS)
        .map(|i| format!("  - fs:read:/d/{i}/e\n"))
        .collect();
    let diags = check(&format!("grants:\n  - fs:write:/d\n{legal}"), "p.yaml");
    assert_eq!(diags.len(), MAX_GRANTS - 1, "one redundancy warning each");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn diagnostic_render_format() {
    let d = Diagnostic {
        severity: Severity::Warning,
        location: Location { line: 4, column: 5 },
        message: "over-broad grant fs:write:/ gives write access to the whole filesystem"
            .to_owned(),
    };
    assert_eq!(
        d.render("policy.yaml"),
        "policy.yaml:4:5: warning: over-broad grant fs:write:/ gives write access to the whole filesystem"
    );
}

// ---------------------------------------------------------------- fuzz body on stable

/// A tiny deterministic xorshift generator.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

#[test]
fn fuzz_one_survives_random_and_mutated_inputs() {
    let seeds: Vec<&[u8]> = vec![
        EXAMPLE.as_bytes(),
        PARENT.as_bytes(),
        b"grants: [net:connect:[::1]:80, 'net:http:*.a.b', time:limit:1.5s, cpu:limit:50%]\n",
        b"a: &x [1]\nb: *x\n",
        b"limits: {memory: 1K, pids: 3, cpu: 100%, wall_time: 1m}\n",
        b"fs:write:/a/../b\nmem:limit:64MiB\nnet:connect:*.x.y:*\n",
    ];
    let alphabet: &[u8] = b"abcdefghijklmnopqrstuvwxyz:/*.[]{}-_%0123456789 \n\t&!|>'\"#?,~";
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for round in 0..3000 {
        let input: Vec<u8> = if round % 3 == 0 {
            let len = rng.below(200);
            (0..len)
                .map(|_| {
                    if rng.below(10) == 0 {
                        u8::try_from(rng.below(256)).unwrap_or(0)
                    } else {
                        alphabet[rng.below(alphabet.len())]
                    }
                })
                .collect()
        } else {
            let mut input = seeds[rng.below(seeds.len())].to_vec();
            for _ in 0..=rng.below(8) {
                let at = rng.below(input.len() + 1);
                match rng.below(4) {
                    0 if at < input.len() => {
                        input.remove(at);
                    }
                    1 => input.insert(at, alphabet[rng.below(alphabet.len())]),
                    2 if at < input.len() => input[at] = alphabet[rng.below(alphabet.len())],
                    _ => {
                        let from = rng.below(input.len());
                        let to = (from + rng.below(16)).min(input.len());
                        let chunk = input[from..to].to_vec();
                        input.splice(at..at, chunk);
                    }
                }
            }
            input
        };
        fuzz_one(&input);
    }
}

#[test]
fn require_signed_and_audit_required_parse_attenuate_and_enter_the_digest() {
    let plain = policy("grants: []\n", "p.yaml");
    assert!(!plain.require_signed && !plain.audit_required);
    let strict = policy(
        "grants: []\nrequire_signed: true\naudit: required\n",
        "s.yaml",
    );
    assert!(strict.require_signed && strict.audit_required);
    assert_ne!(plain.digest(), strict.digest());
    // A child cannot drop its parent's requirements.
    let child = policy("require_signed: false\naudit: optional\n", "c.yaml");
    let narrowed = Policy::attenuate(&strict, &child).unwrap();
    assert!(narrowed.require_signed && narrowed.audit_required);
    for (source, want) in [
        (
            "require_signed: yes\n",
            "1:17: require_signed must be true or false",
        ),
        (
            "audit: sometimes\n",
            "1:8: audit must be required or optional; found \"sometimes\"",
        ),
        ("audit:\n", "audit must be required or optional; found null"),
    ] {
        let err = parse_policy(source, "x.yaml").unwrap_err().to_string();
        assert!(err.contains(want), "{source:?}: {err}");
    }
}

#[test]
fn secret_grants_as_files_or_also_as_environment() {
    let file: Capability = "secret:db-password".parse().unwrap();
    let env: Capability = "secret:db-password:env".parse().unwrap();
    assert_eq!(env.to_string(), "secret:db-password:env");
    assert_eq!(file.to_string(), "secret:db-password");
    assert!(env.subsumes(&file));
    assert!(!file.subsumes(&env));
    assert!("secret::env".parse::<Capability>().is_err());
    assert!("secret:a:b".parse::<Capability>().is_err());
}

#[test]
fn net_limits_parse_display_and_attenuate() {
    for (text, shown) in [
        ("net:limit:bytes:10MiB", "net:limit:bytes:10MiB"),
        ("net:limit:connections:3", "net:limit:connections:3"),
        ("net:limit:idle:30s", "net:limit:idle:30s"),
    ] {
        let c = cap(text);
        assert!(c.is_limit(), "{text}");
        assert_eq!(c.to_string(), shown);
    }
    assert!(cap("net:limit:bytes:10MiB").subsumes(&cap("net:limit:bytes:1MiB")));
    assert!(!cap("net:limit:bytes:1MiB").subsumes(&cap("net:limit:bytes:10MiB")));
    assert!(!cap("net:limit:idle:1s").subsumes(&cap("net:limit:bytes:1")));
    for bad in [
        "net:limit:packets:3",
        "net:limit:bytes:",
        "net:limit:idle:soon",
    ] {
        assert!(bad.parse::<Capability>().is_err(), "{bad}");
    }
    let err = "net:limit:packets:3"
        .parse::<Capability>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("net:limit:bytes:SIZE"), "{err}");
}

#[test]
fn udp_connect_grants_parse_and_cover_only_udp() {
    let udp = cap("net:connect:udp:ntp.example:123");
    assert_eq!(udp.to_string(), "net:connect:udp:ntp.example:123");
    assert!(cap("net:connect:udp:*:*").subsumes(&udp));
    assert!(!cap("net:connect:*:*").subsumes(&udp));
    assert!(!udp.subsumes(&cap("net:connect:ntp.example:123")));
    assert!("net:connect:udp:ntp.example".parse::<Capability>().is_err());
}

#[test]
fn isolation_parses_narrows_only_upward_and_enters_the_digest() {
    let plain = policy("grants: []\n", "p.yaml");
    assert_eq!(plain.isolation, None);
    let jail = policy("grants: []\nisolation: jail\n", "j.yaml");
    let strong = policy("grants: []\nisolation: strong\n", "s.yaml");
    let wasm = policy("grants: []\nisolation: wasm\n", "w.yaml");
    assert_eq!(strong.isolation, Some(crate::Isolation::Strong));
    assert_ne!(plain.digest(), strong.digest());
    assert_ne!(strong.digest(), wasm.digest());
    // A child may ask for more than its parent, never less.
    let up = Policy::attenuate(&jail, &strong).unwrap();
    assert_eq!(up.isolation, Some(crate::Isolation::Strong));
    let kept = Policy::attenuate(&strong, &plain).unwrap();
    assert_eq!(kept.isolation, Some(crate::Isolation::Strong));
    for (parent, child) in [(&strong, &jail), (&strong, &wasm), (&wasm, &strong)] {
        let err = Policy::attenuate(parent, child).unwrap_err().to_string();
        assert!(err.contains("conflicts with parent policy"), "{err}");
    }
    for (source, want) in [
        (
            "isolation: gvisor\n",
            "1:12: isolation must be jail, strong or wasm; found \"gvisor\"",
        ),
        (
            "isolation:\n",
            "isolation must be jail, strong or wasm; found null",
        ),
    ] {
        let err = parse_policy(source, "x.yaml").unwrap_err().to_string();
        assert!(err.contains(want), "{source:?}: {err}");
    }
}

#[test]
fn net_https_parses_and_net_http_covers_it() {
    let https: Capability = "net:https:api.example.com".parse().unwrap();
    assert_eq!(https.to_string(), "net:https:api.example.com");
    let http: Capability = "net:http:api.example.com".parse().unwrap();
    let any_https: Capability = "net:https:*".parse().unwrap();
    assert!(http.subsumes(&https), "net:http covers https too");
    assert!(!https.subsumes(&http), "net:https is TLS only");
    assert!(any_https.subsumes(&https));
    assert!(!any_https.subsumes(&http));
    assert!("net:https:".parse::<Capability>().is_err());
}

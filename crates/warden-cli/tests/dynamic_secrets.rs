//! A dynamic PostgreSQL secret end to end, against a real server: the
//! jailed program gets a credential of its own (a login role made for its
//! lease), uses it over the granted Unix socket, never shows it (redacted),
//! and the role is gone once the run ends.

// The dynamic-secrets crate's own test cluster (initdb + pg_ctl on a
// private socket); this test uses only part of it.
#[allow(dead_code)]
#[path = "../../warden-dynsecrets/tests/cluster/mod.rs"]
mod cluster;
mod common;

use common::TempDir;

#[test]
fn each_run_gets_its_own_database_role_dropped_when_it_ends() {
    let pg = cluster::Cluster::start();
    let mut admin = pg.admin();
    admin
        .batch_execute(
            "CREATE ROLE app_read NOLOGIN; CREATE TABLE items (x int); INSERT INTO items VALUES (1), (2), (3); GRANT SELECT ON items TO app_read;",
        )
        .unwrap();
    let t = TempDir::new("dynsecret");
    let s = t.root.join("state").display().to_string();
    let definition = format!(
        "name: app\nconnection:\n  host: {}\n  port: {}\n  user: postgres\n  dbname: postgres\ngrant_roles: [app_read]\n",
        pg.socket_dir().display(),
        pg.port()
    );
    let out = t
        .raw(["secret", "put", "pg", "--dynamic", "postgres"])
        .env("WARDEN_STATE", &s)
        .stdin(&definition)
        .go();
    out.expect_code(0, "put the definition");
    let script = "psql \"$(cat /run/secrets/pg)\" -tAc 'select current_user, count(*) from items'; echo credential: $(cat /run/secrets/pg)";
    let out = t
        .run([
            "--allow",
            "secret:pg",
            "--allow",
            &format!("fs:write:{}", pg.socket_dir().display()),
            "--",
            "sh",
            "-c",
            script,
        ])
        .env("WARDEN_STATE", &s)
        .go();
    out.expect_ok("a run with a dynamic secret");
    let first = out.stdout.lines().next().unwrap_or_default().to_string();
    assert!(
        first.starts_with("warden_") && first.ends_with("|3"),
        "{}",
        out.ctx()
    );
    assert!(
        out.stdout.contains("credential: [REDACTED:pg]"),
        "{}",
        out.ctx()
    );
    let lease = out.report()["leases"][0]["lease"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        first.contains(&lease),
        "the role is named after the lease: {first} {lease}"
    );
    // The run is over: its role is gone.
    let left: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'warden\\_%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the lease's role outlived the run");
    // The definition (with its admin connection) is stored encrypted: no
    // file of the state directory holds it in the clear.
    let needle = "grant_roles: [app_read]";
    let mut todo = vec![t.root.join("state")];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                assert!(
                    !String::from_utf8_lossy(&b).contains(needle),
                    "{} holds the definition in the clear",
                    p.display()
                );
            }
        }
    }
}

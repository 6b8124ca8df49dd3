//! The PostgreSQL engine against a real server: a private cluster per test
//! (see cluster/mod.rs), leased roles checked by logging in with SCRAM.

mod cluster;

use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cluster::Cluster;
use postgres::error::SqlState;
use warden_dynsecrets::{CredentialFormat, Error, PostgresEngine, Revocation, MAX_EXPIRES_AT};

const LEASE_A: &str = "0123456789abcdef0123456789abcdef";
const LEASE_B: &str = "fedcba9876543210fedcba9876543210";
const LEASE_C: &str = "00000000000000000000000000000001";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn in_an_hour() -> u64 {
    now() + 3600
}

fn role_exists(admin: &mut postgres::Client, role: &str) -> bool {
    admin
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .unwrap()
        .is_some()
}

/// The server ended the session: its next query meets the termination
/// notice (57P01) or a closed connection.
fn assert_session_ended(session: &mut postgres::Client) {
    let error = session
        .simple_query("SELECT 1")
        .expect_err("the session must have been ended");
    assert!(
        error.is_closed() || sql_state(&error) == Some(SqlState::ADMIN_SHUTDOWN),
        "not a terminated session: {error:?}"
    );
}

fn sql_state(error: &postgres::Error) -> Option<SqlState> {
    error.code().cloned()
}

#[test]
fn the_issued_credential_logs_in_and_a_wrong_password_does_not() {
    let cluster = Cluster::start();
    let definition = cluster.definition(&[], None);
    let expires_at = in_an_hour();
    let credential = PostgresEngine::new()
        .issue(&definition, LEASE_A, expires_at)
        .unwrap();
    assert_eq!(credential.user(), format!("warden_{LEASE_A}"));
    assert_eq!(credential.password().len(), 43);
    assert_eq!(credential.dbname(), "postgres");
    assert_eq!(credential.expires_at(), expires_at);

    let mut session = cluster
        .connect(credential.user(), Some(credential.password()), "postgres")
        .expect("the issued credential logs in");
    let who: String = session
        .query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(who, credential.user());

    let wrong = cluster.connect(credential.user(), Some("not-the-password"), "postgres");
    let error = wrong.err().expect("a wrong password must be refused");
    assert_eq!(
        sql_state(&error),
        Some(SqlState::INVALID_PASSWORD),
        "{error}"
    );
    let none = cluster.connect(credential.user(), None, "postgres");
    assert!(none.is_err(), "no password must be refused");

    // VALID UNTIL is the lease's end, to the second, whatever the server's zone.
    let mut admin = cluster.admin();
    let row = admin
        .query_one(
            "SELECT extract(epoch FROM rolvaliduntil)::float8, rolcanlogin, rolsuper, \
             rolcreaterole, rolcreatedb, rolinherit FROM pg_roles WHERE rolname = $1",
            &[&credential.user()],
        )
        .unwrap();
    assert_eq!(row.get::<_, f64>(0), expires_at as f64);
    assert!(row.get::<_, bool>(1));
    assert!(!row.get::<_, bool>(2) && !row.get::<_, bool>(3) && !row.get::<_, bool>(4));
    assert!(row.get::<_, bool>(5));
    let stored: String = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&credential.user()],
        )
        .unwrap()
        .get(0);
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");

    // Every statement is logged by this cluster: the password is in none.
    let log = cluster.server_log();
    assert!(log.contains("CREATE ROLE"), "statement logging is on");
    assert!(
        !log.contains(credential.password()),
        "the password reached the server log"
    );
}

#[test]
fn the_rendered_values_work_as_connection_strings() {
    let cluster = Cluster::start();
    let mut definition = cluster.definition(&[], None);
    let credential = PostgresEngine::new()
        .issue(&definition, LEASE_A, in_an_hour())
        .unwrap();
    let uri = credential.render();
    assert!(
        uri.starts_with("postgresql://"),
        "URI is the default format"
    );

    // libpq itself, through psql, reads the URI.
    let output = Command::new(cluster.bin().join("psql"))
        .args(["-X", "-w", "-A", "-t", "-c", "SELECT current_user"])
        .arg(uri.as_str())
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "psql with the URI: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        credential.user()
    );

    // So does the Rust client.
    let mut client = postgres::Config::from_str(&uri)
        .unwrap()
        .connect(postgres::NoTls)
        .expect("the Rust client logs in with the URI");
    client.simple_query("SELECT 1").unwrap();

    definition.format = CredentialFormat::Json;
    let credential = PostgresEngine::new()
        .issue(&definition, LEASE_B, in_an_hour())
        .unwrap();
    let value: serde_json::Value = serde_json::from_str(&credential.render()).unwrap();
    let field = |name: &str| value[name].as_str().unwrap().to_owned();
    assert_eq!(field("host"), cluster.socket_dir().display().to_string());
    assert_eq!(value["port"].as_u64(), Some(u64::from(cluster.port())));
    cluster
        .connect(&field("user"), Some(&field("password")), &field("dbname"))
        .expect("the JSON credential logs in");
}

#[test]
fn granted_roles_privileges_apply_and_nothing_more() {
    let cluster = Cluster::start();
    let mut admin = cluster.admin();
    admin
        .batch_execute(
            "CREATE TABLE visible (note text); INSERT INTO visible VALUES ('granted');
             CREATE TABLE hidden (note text); INSERT INTO hidden VALUES ('not granted');
             CREATE ROLE reader NOLOGIN; GRANT SELECT ON visible TO reader;",
        )
        .unwrap();
    let definition = cluster.definition(&["reader"], None);
    let credential = PostgresEngine::new()
        .issue(&definition, LEASE_A, in_an_hour())
        .unwrap();
    let mut session = cluster
        .connect(credential.user(), Some(credential.password()), "postgres")
        .unwrap();
    let note: String = session
        .query_one("SELECT note FROM visible", &[])
        .unwrap()
        .get(0);
    assert_eq!(note, "granted");
    for forbidden in [
        "SELECT note FROM hidden",
        "INSERT INTO visible VALUES ('x')",
    ] {
        let error = session.batch_execute(forbidden).unwrap_err();
        assert_eq!(
            sql_state(&error),
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "{forbidden}: {error}"
        );
    }
}

#[test]
fn login_fails_once_valid_until_has_passed() {
    let cluster = Cluster::start();
    let definition = cluster.definition(&[], None);
    let engine = PostgresEngine::new();

    let too_late = engine.issue(&definition, LEASE_B, MAX_EXPIRES_AT + 1);
    assert!(matches!(too_late, Err(Error::ExpiryOutOfRange { .. })));
    let expired = engine.issue(&definition, LEASE_B, now() - 1);
    assert!(matches!(expired, Err(Error::LeaseAlreadyExpired { .. })));
    assert!(!role_exists(
        &mut cluster.admin(),
        &format!("warden_{LEASE_B}")
    ));

    let expires_at = now() + 3;
    let credential = engine.issue(&definition, LEASE_A, expires_at).unwrap();
    cluster
        .connect(credential.user(), Some(credential.password()), "postgres")
        .expect("logs in before VALID UNTIL");
    while now() <= expires_at {
        std::thread::sleep(Duration::from_millis(200));
    }
    let error = cluster
        .connect(credential.user(), Some(credential.password()), "postgres")
        .err()
        .expect("login must fail after VALID UNTIL");
    assert_eq!(
        sql_state(&error),
        Some(SqlState::INVALID_PASSWORD),
        "{error}"
    );
}

#[test]
fn revoke_ends_sessions_forbids_login_and_drops_the_role() {
    let cluster = Cluster::start();
    let mut admin = cluster.admin();
    admin.batch_execute("CREATE DATABASE app").unwrap();
    let mut app_admin = cluster.connect("postgres", None, "app").unwrap();
    app_admin
        .batch_execute(
            "CREATE ROLE maker NOLOGIN; GRANT CREATE ON SCHEMA public TO maker;
             CREATE TABLE shared (v int); GRANT SELECT ON shared TO maker;",
        )
        .unwrap();
    // The credential is for `app` while the admin works in `postgres`: what
    // the role owns in `app` must be handled there.
    let definition = cluster.definition(&["maker"], Some("app"));
    let engine = PostgresEngine::new();
    let credential = engine.issue(&definition, LEASE_A, in_an_hour()).unwrap();
    assert_eq!(credential.dbname(), "app");
    let mut session = cluster
        .connect(credential.user(), Some(credential.password()), "app")
        .unwrap();
    session
        .batch_execute("CREATE TABLE made_by_lease (v int); INSERT INTO made_by_lease VALUES (7)")
        .unwrap();
    // The role now owns a table and holds a direct privilege.
    app_admin
        .batch_execute(&format!(
            "GRANT SELECT ON shared TO {}",
            warden_dynsecrets::sql::quote_identifier(credential.user())
        ))
        .unwrap();

    let revocation = engine.revoke(&definition, LEASE_A).unwrap();
    assert_eq!(
        revocation,
        Revocation {
            role: credential.user().to_owned(),
            existed: true,
            sessions_terminated: 1,
        }
    );
    assert_session_ended(&mut session);
    assert!(!role_exists(&mut admin, credential.user()));
    let error = cluster
        .connect(credential.user(), Some(credential.password()), "app")
        .err()
        .expect("login must fail after revoke");
    assert_eq!(
        sql_state(&error),
        Some(SqlState::INVALID_PASSWORD),
        "{error}"
    );
    // What the lease made was kept, now owned by the admin.
    let owner: String = app_admin
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = 'made_by_lease'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, "postgres");

    // Revoking again, or a lease never issued, succeeds and does nothing.
    let again = engine.revoke(&definition, LEASE_A).unwrap();
    assert!(!again.existed);
    assert!(!engine.revoke(&definition, LEASE_B).unwrap().existed);
}

#[test]
fn reap_drops_roles_of_dead_or_expired_leases_and_keeps_the_rest() {
    let cluster = Cluster::start();
    let mut admin = cluster.admin();
    // Roles that are not leases, though some share the prefix.
    admin
        .batch_execute(&format!(
            "CREATE ROLE warden_app; CREATE ROLE \"warden_{}\"; CREATE ROLE other_{LEASE_B};",
            LEASE_B.to_uppercase()
        ))
        .unwrap();
    let definition = cluster.definition(&[], None);
    let engine = PostgresEngine::new();
    let expires_at = in_an_hour();
    let a = engine.issue(&definition, LEASE_A, expires_at).unwrap();
    let b = engine.issue(&definition, LEASE_B, expires_at).unwrap();
    engine.issue(&definition, LEASE_C, expires_at).unwrap();
    let mut session_b = cluster
        .connect(b.user(), Some(b.password()), "postgres")
        .unwrap();

    let report = engine.reap(&definition, [LEASE_A], now()).unwrap();
    assert_eq!(
        report.dropped,
        [format!("warden_{LEASE_C}"), format!("warden_{LEASE_B}")]
    );
    assert_eq!(report.kept, [format!("warden_{LEASE_A}")]);
    assert!(report.failed.is_empty(), "{report:?}");
    assert_session_ended(&mut session_b);
    for survivor in [
        "warden_app".to_owned(),
        format!("warden_{}", LEASE_B.to_uppercase()),
        format!("other_{LEASE_B}"),
        a.user().to_owned(),
    ] {
        assert!(
            role_exists(&mut admin, &survivor),
            "{survivor} must survive"
        );
    }
    cluster
        .connect(a.user(), Some(a.password()), "postgres")
        .expect("a live lease still logs in");

    // Reaping twice changes nothing more.
    let again = engine.reap(&definition, [LEASE_A], now()).unwrap();
    assert!(again.dropped.is_empty());

    // A lease still listed live but past its end is dropped too.
    let later = engine.reap(&definition, [LEASE_A], expires_at).unwrap();
    assert_eq!(later.dropped, [a.user()]);
    assert!(!role_exists(&mut admin, a.user()));
}

#[test]
fn grant_role_names_are_quoted_not_executed() {
    let cluster = Cluster::start();
    let mut admin = cluster.admin();
    let hostile = [
        "evil\"; CREATE ROLE pwned SUPERUSER; --",
        "semi;colon",
        "it's",
        "Upper Case",
        "back\\slash",
    ];
    // Created through the server's own quoting (format %I), not ours.
    for name in hostile {
        let statement: String = admin
            .query_one(
                "SELECT format('CREATE ROLE %I NOLOGIN', $1::text)",
                &[&name],
            )
            .unwrap()
            .get(0);
        admin.batch_execute(&statement).unwrap();
    }
    let definition = cluster.definition(&hostile, None);
    let credential = PostgresEngine::new()
        .issue(&definition, LEASE_A, in_an_hour())
        .unwrap();
    assert!(
        !role_exists(&mut admin, "pwned"),
        "the role name was executed as SQL"
    );
    for name in hostile {
        let member: bool = admin
            .query_one(
                "SELECT pg_has_role($1::text::name, $2::text::name, 'MEMBER')",
                &[&credential.user(), &name],
            )
            .unwrap()
            .get(0);
        assert!(member, "{name:?} was not granted");
    }
    let comment: String = admin
        .query_one(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
            &[&credential.user()],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        comment,
        format!("Warden dynamic secret test-db, lease {LEASE_A}")
    );

    // Names PostgreSQL could not hold unchanged are refused before any SQL.
    let mut refused = cluster.definition(&[], None);
    refused.grant_roles = vec!["nul\0byte".into()];
    assert!(matches!(
        PostgresEngine::new().issue(&refused, LEASE_B, in_an_hour()),
        Err(Error::Definition(_))
    ));
    refused.grant_roles = vec!["x".repeat(64)];
    assert!(matches!(
        PostgresEngine::new().issue(&refused, LEASE_B, in_an_hour()),
        Err(Error::Definition(_))
    ));
}

#[test]
fn a_failed_issue_leaves_no_role_behind() {
    let cluster = Cluster::start();
    let mut admin = cluster.admin();
    admin
        .batch_execute(
            "CREATE ROLE reader NOLOGIN;
             CREATE ROLE boss NOLOGIN CREATEROLE;
             CREATE ROLE under_boss NOLOGIN; GRANT boss TO under_boss;",
        )
        .unwrap();
    let engine = PostgresEngine::new();
    let role = format!("warden_{LEASE_A}");

    let missing = engine.issue(
        &cluster.definition(&["reader", "no_such_role"], None),
        LEASE_A,
        in_an_hour(),
    );
    assert!(
        matches!(&missing, Err(Error::GrantRoleMissing { grant_role }) if grant_role == "no_such_role"),
        "{missing:?}"
    );
    assert!(!role_exists(&mut admin, &role));

    for (grant_role, attribute) in [
        ("postgres", "SUPERUSER"),
        ("boss", "CREATEROLE"),
        ("under_boss", "CREATEROLE"),
    ] {
        let result = engine.issue(
            &cluster.definition(&[grant_role], None),
            LEASE_A,
            in_an_hour(),
        );
        match result {
            Err(Error::GrantRoleTooPowerful {
                grant_role: g,
                attribute: a,
            }) => {
                assert_eq!((g.as_str(), a.as_str()), (grant_role, attribute));
            }
            other => panic!("granting {grant_role} must be refused, got {other:?}"),
        }
        assert!(!role_exists(&mut admin, &role));
    }

    let definition = cluster.definition(&["reader"], None);
    engine.issue(&definition, LEASE_A, in_an_hour()).unwrap();
    let twice = engine.issue(&definition, LEASE_A, in_an_hour());
    assert!(
        matches!(twice, Err(Error::AlreadyIssued { .. })),
        "{twice:?}"
    );
    assert!(matches!(
        engine.issue(&definition, "not-a-lease-id", in_an_hour()),
        Err(Error::InvalidLeaseId { .. })
    ));
}

#[test]
fn errors_never_show_the_admin_password() {
    let cluster = Cluster::start();
    let mut admin = cluster.admin();
    admin
        .batch_execute("CREATE ROLE warden_admin LOGIN CREATEROLE PASSWORD 'right-admin-password'")
        .unwrap();
    let mut definition = cluster.definition(&[], None);
    definition.connection.user = "warden_admin".into();
    definition.connection.password = Some(zeroize::Zeroizing::new("wrong-admin-password".into()));
    let error = PostgresEngine::new()
        .issue(&definition, LEASE_A, in_an_hour())
        .unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    let mut shown = format!("{error} {error:?} {definition:?}");
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        shown.push_str(&format!(" {inner} {inner:?}"));
        source = inner.source();
    }
    assert!(!shown.contains("wrong-admin-password"), "{shown}");
}

#[test]
fn a_role_holding_rights_in_a_third_database_fails_loudly_and_stays_locked() {
    let cluster = Cluster::start();
    let mut admin = cluster.admin();
    admin.batch_execute("CREATE DATABASE third").unwrap();
    let definition = cluster.definition(&[], None);
    let engine = PostgresEngine::new();
    let stuck = engine.issue(&definition, LEASE_A, in_an_hour()).unwrap();
    engine.issue(&definition, LEASE_B, in_an_hour()).unwrap();
    // A privilege in a database the engine does not visit blocks DROP ROLE.
    cluster
        .connect("postgres", None, "third")
        .unwrap()
        .batch_execute(&format!(
            "GRANT CREATE ON SCHEMA public TO {}",
            warden_dynsecrets::sql::quote_identifier(stuck.user())
        ))
        .unwrap();

    let error = engine.revoke(&definition, LEASE_A).unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Sql {
                step: "drop the role",
                ..
            }
        ),
        "{error:?}"
    );
    let can_login: bool = admin
        .query_one(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
            &[&stuck.user()],
        )
        .unwrap()
        .get(0);
    assert!(
        !can_login,
        "a role that could not be dropped must not log in"
    );

    // Reaping reports it and still drops the other orphan.
    let report = engine
        .reap(&definition, Vec::<String>::new(), now())
        .unwrap();
    assert_eq!(report.dropped, [format!("warden_{LEASE_B}")]);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].role, stuck.user());
}

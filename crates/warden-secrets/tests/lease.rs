//! Leases: grant, expiry, revocation, renewal, persistence, crash reaping.

use std::process::Command;
use std::time::Duration;

use warden_secrets::lease::{default_ttl, RevokeReason};
use warden_secrets::{unix_now, Holder, LeaseError, LeaseStore, MasterKey, SecretStore};

const NOW: u64 = 1_800_000_000;

fn setup() -> (tempfile::TempDir, SecretStore, LeaseStore) {
    let state = tempfile::tempdir().unwrap();
    let store = SecretStore::open(state.path(), &MasterKey::from_bytes(&[3; 32])).unwrap();
    store.put("acme", "token", b"value-one").unwrap();
    store.put("acme", "token", b"value-two").unwrap();
    let leases = LeaseStore::open(state.path()).unwrap();
    (state, store, leases)
}

fn me() -> Holder {
    Holder::current().unwrap()
}

#[test]
fn a_lease_reads_its_version_until_it_expires() {
    let (_state, store, leases) = setup();
    let lease = leases
        .grant("acme", "token", 1, Duration::from_secs(60), me(), NOW)
        .unwrap();
    assert_eq!(lease.id.len(), 32);
    assert!(lease.id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(lease.expires, NOW + 60);
    assert_eq!(&*leases.read(&store, &lease.id, NOW).unwrap(), b"value-one");
    assert_eq!(
        &*leases.read(&store, &lease.id, NOW + 59).unwrap(),
        b"value-one"
    );
    assert!(matches!(
        leases.read(&store, &lease.id, NOW + 60),
        Err(LeaseError::Expired(_))
    ));
    assert!(matches!(
        leases.check(&lease.id, NOW + 61),
        Err(LeaseError::Expired(_))
    ));
    // An expired lease cannot be brought back.
    assert!(matches!(
        leases.renew(&lease.id, Duration::from_secs(60), NOW + 61),
        Err(LeaseError::Expired(_))
    ));
}

#[test]
fn renew_extends_and_revoke_ends() {
    let (_state, store, leases) = setup();
    let lease = leases
        .grant("acme", "token", 2, Duration::from_millis(1500), me(), NOW)
        .unwrap();
    assert_eq!(lease.expires, NOW + 2, "a TTL rounds up to whole seconds");
    let renewed = leases
        .renew(&lease.id, Duration::from_secs(100), NOW + 1)
        .unwrap();
    assert_eq!(renewed.expires, NOW + 101);
    assert_eq!(
        &*leases.read(&store, &lease.id, NOW + 50).unwrap(),
        b"value-two"
    );

    let revoked = leases.revoke(&lease.id, NOW + 60).unwrap();
    assert_eq!(revoked.revoked_at, Some(NOW + 60));
    assert_eq!(revoked.revoked_reason, Some(RevokeReason::Revoked));
    assert!(matches!(
        leases.read(&store, &lease.id, NOW + 61),
        Err(LeaseError::Revoked(_))
    ));
    assert!(matches!(
        leases.renew(&lease.id, Duration::from_secs(100), NOW + 61),
        Err(LeaseError::Revoked(_))
    ));
    // Revoking again keeps the first time.
    assert_eq!(
        leases.revoke(&lease.id, NOW + 99).unwrap().revoked_at,
        Some(NOW + 60)
    );
}

#[test]
fn unknown_and_malformed_ids_are_unknown() {
    let (_state, store, leases) = setup();
    for id in [
        "",
        "../../secrets/acme/token/1",
        "0123456789abcdef0123456789abcdef",
        "ZZ",
    ] {
        assert!(
            matches!(leases.check(id, NOW), Err(LeaseError::Unknown(_))),
            "{id}"
        );
        assert!(
            matches!(leases.read(&store, id, NOW), Err(LeaseError::Unknown(_))),
            "{id}"
        );
        assert!(
            matches!(leases.revoke(id, NOW), Err(LeaseError::Unknown(_))),
            "{id}"
        );
    }
}

#[test]
fn a_removed_secret_cannot_be_read_through_its_lease() {
    let (_state, store, leases) = setup();
    let lease = leases
        .grant("acme", "token", 1, Duration::from_secs(60), me(), NOW)
        .unwrap();
    store.remove("acme", "token").unwrap();
    store.put("acme", "token", b"new-value").unwrap();
    assert!(matches!(
        leases.read(&store, &lease.id, NOW),
        Err(LeaseError::Store(_))
    ));
}

#[test]
fn leases_persist_and_list_by_tenant() {
    let (state, _store, leases) = setup();
    let a = leases
        .grant("acme", "token", 1, Duration::from_secs(60), me(), NOW)
        .unwrap();
    let b = leases
        .grant("globex", "key", 4, Duration::from_secs(60), me(), NOW + 1)
        .unwrap();
    drop(leases);
    let reopened = LeaseStore::open(state.path()).unwrap();
    assert_eq!(reopened.list(None).unwrap(), vec![a.clone(), b.clone()]);
    assert_eq!(reopened.list(Some("acme")).unwrap(), vec![a.clone()]);
    assert_eq!(reopened.get(&b.id).unwrap(), b);
    let json = std::fs::read_to_string(state.path().join(format!("leases/{}.json", a.id))).unwrap();
    assert!(json.contains("\"secret\": \"token\""), "{json}");
    assert!(!json.contains("value-one"), "{json}");
    assert!(matches!(
        reopened.grant("../x", "token", 1, Duration::from_secs(1), me(), NOW),
        Err(LeaseError::InvalidTenant(_))
    ));
}

#[test]
fn reap_revokes_the_expired_and_those_whose_holder_died() {
    let (_state, store, leases) = setup();
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let holder = Holder::of_pid(child.id()).unwrap();
    assert!(holder.is_alive());
    let now = unix_now();
    let crashed = leases
        .grant("acme", "token", 1, Duration::from_secs(600), holder, now)
        .unwrap();
    let alive = leases
        .grant("acme", "token", 1, Duration::from_secs(600), me(), now)
        .unwrap();
    let expired = leases
        .grant("acme", "token", 1, Duration::from_secs(5), me(), now)
        .unwrap();
    // Our own pid with another start time: a recycled pid, not the holder.
    let recycled = Holder {
        start_time: me().start_time + 1,
        ..me()
    };
    assert!(!recycled.is_alive());
    let impostor = leases
        .grant("acme", "token", 1, Duration::from_secs(600), recycled, now)
        .unwrap();

    assert!(leases
        .reap(now)
        .unwrap()
        .iter()
        .all(|l| l.id == impostor.id));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!holder.is_alive());

    let mut reaped = leases.reap(now + 10).unwrap();
    reaped.sort_by_key(|l| l.id.clone());
    let mut want = vec![
        (crashed.id.clone(), RevokeReason::HolderGone),
        (expired.id.clone(), RevokeReason::Expired),
    ];
    want.sort();
    let got: Vec<_> = reaped
        .iter()
        .map(|l| (l.id.clone(), l.revoked_reason.unwrap()))
        .collect();
    assert_eq!(got, want);
    assert!(matches!(
        leases.read(&store, &crashed.id, now + 11),
        Err(LeaseError::Revoked(_))
    ));
    assert!(matches!(
        leases.check(&impostor.id, now + 11),
        Err(LeaseError::Revoked(_))
    ));
    assert!(leases.check(&alive.id, now + 11).is_ok());
    assert!(
        leases.reap(now + 10).unwrap().is_empty(),
        "reaping twice changes nothing"
    );

    // Old revoked leases can be purged; the live one stays.
    assert_eq!(leases.purge(now + 11).unwrap(), 3);
    assert_eq!(
        leases.list(None).unwrap(),
        vec![leases.get(&alive.id).unwrap()]
    );
}

#[test]
fn zombie_holders_count_as_gone() {
    let child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    // Not waited for: the child stays a zombie until the parent reaps it.
    let mut holder = None;
    for _ in 0..200 {
        if let Ok(h) = Holder::of_pid(pid) {
            if !h.is_alive() {
                holder = Some(h);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(holder.is_some(), "the exited child was never seen as gone");
    let mut child = child;
    child.wait().unwrap();
}

#[test]
fn default_ttl_adds_a_margin() {
    assert_eq!(
        default_ttl(Duration::from_secs(10)),
        Duration::from_secs(40)
    );
}

//! The encrypted store and the master key.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use warden_secrets::{MasterKey, SecretError, SecretStore};

const VALUE: &[u8] = b"hunter2-correct-horse-battery-staple";

fn store(state: &Path, key_byte: u8) -> SecretStore {
    SecretStore::open(state, &MasterKey::from_bytes(&[key_byte; 32])).unwrap()
}

fn all_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn put_get_list_remove_round_trip() {
    let state = tempfile::tempdir().unwrap();
    let s = store(state.path(), 7);
    assert_eq!(s.put("acme", "db.password", VALUE).unwrap(), 1);
    assert_eq!(s.put("acme", "db.password", b"second").unwrap(), 2);
    assert_eq!(s.put("acme", "API_KEY", b"k").unwrap(), 1);
    assert_eq!(&*s.get("acme", "db.password", Some(1)).unwrap(), VALUE);
    assert_eq!(&*s.get("acme", "db.password", None).unwrap(), b"second");
    assert_eq!(s.resolve_version("acme", "db.password", None).unwrap(), 2);

    let list = s.list("acme").unwrap();
    let names: Vec<_> = list
        .iter()
        .map(|i| (i.name.as_str(), i.versions.clone(), i.latest))
        .collect();
    assert_eq!(
        names,
        [("API_KEY", vec![1], 1), ("db.password", vec![1, 2], 2)]
    );
    assert!(s.list("other").unwrap().is_empty());

    s.remove("acme", "db.password").unwrap();
    assert!(matches!(
        s.get("acme", "db.password", Some(1)),
        Err(SecretError::NotFound { .. })
    ));
    assert!(matches!(
        s.remove("acme", "db.password"),
        Err(SecretError::NotFound { .. })
    ));
    assert_eq!(s.list("acme").unwrap().len(), 1);
    // Versions are never reused: a lease on version 1 or 2 cannot read this.
    assert_eq!(s.put("acme", "db.password", b"third").unwrap(), 3);
}

#[test]
fn directories_and_files_are_private() {
    let state = tempfile::tempdir().unwrap();
    let s = store(state.path(), 7);
    s.put("acme", "token", VALUE).unwrap();
    for dir in ["secrets", "secrets/acme", "secrets/acme/token"] {
        let mode = fs::metadata(state.path().join(dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{dir}");
    }
    let file = state.path().join("secrets/acme/token/1.bin");
    assert_eq!(
        fs::metadata(file).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn plaintext_never_reaches_the_disk() {
    let state = tempfile::tempdir().unwrap();
    let master = MasterKey::load_or_create(state.path(), None).unwrap();
    let s = SecretStore::open(state.path(), &master).unwrap();
    s.put("acme", "token", VALUE).unwrap();
    s.put("acme", "token", VALUE).unwrap();
    s.remove("acme", "token").unwrap();
    s.put("acme", "token", VALUE).unwrap();
    let mut files = Vec::new();
    all_files(state.path(), &mut files);
    assert!(files.len() >= 3, "{files:?}");
    let hex = hex::encode(VALUE);
    for file in files {
        let bytes = fs::read(&file).unwrap();
        assert!(!contains(&bytes, VALUE), "{}", file.display());
        assert!(!contains(&bytes, hex.as_bytes()), "{}", file.display());
        assert!(!contains(&bytes, &VALUE[..12]), "{}", file.display());
    }
}

#[test]
fn a_moved_ciphertext_does_not_decrypt() {
    let state = tempfile::tempdir().unwrap();
    let s = store(state.path(), 7);
    s.put("acme", "token", VALUE).unwrap();
    s.put("acme", "other", b"placeholder").unwrap();
    s.put("globex", "token", b"placeholder").unwrap();
    let root = state.path().join("secrets");
    let original = root.join("acme/token/1.bin");
    for target in ["acme/other/1.bin", "globex/token/1.bin", "acme/token/2.bin"] {
        fs::copy(&original, root.join(target)).unwrap();
    }
    for (tenant, name, version) in [
        ("acme", "other", 1),
        ("globex", "token", 1),
        ("acme", "token", 2),
    ] {
        let err = s.get(tenant, name, Some(version)).unwrap_err();
        assert!(matches!(err, SecretError::Decrypt { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("moved from another"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
    assert_eq!(&*s.get("acme", "token", Some(1)).unwrap(), VALUE);
}

#[test]
fn any_flipped_byte_fails() {
    let state = tempfile::tempdir().unwrap();
    let s = store(state.path(), 7);
    s.put("acme", "token", VALUE).unwrap();
    let path = state.path().join("secrets/acme/token/1.bin");
    let good = fs::read(&path).unwrap();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        fs::write(&path, &bad).unwrap();
        let err = s.get("acme", "token", Some(1)).unwrap_err();
        assert!(
            matches!(
                err,
                SecretError::Decrypt { .. } | SecretError::Corrupt { .. }
            ),
            "byte {i}: {err}"
        );
    }
    fs::write(&path, &good[..good.len() - 1]).unwrap();
    assert!(s.get("acme", "token", Some(1)).is_err());
    fs::write(&path, &good).unwrap();
    assert_eq!(&*s.get("acme", "token", Some(1)).unwrap(), VALUE);
}

#[test]
fn the_wrong_master_key_fails() {
    let state = tempfile::tempdir().unwrap();
    store(state.path(), 7).put("acme", "token", VALUE).unwrap();
    let err = store(state.path(), 8)
        .get("acme", "token", None)
        .unwrap_err();
    assert!(matches!(err, SecretError::Decrypt { .. }), "{err}");
}

#[test]
fn names_tenants_and_sizes_are_checked() {
    let state = tempfile::tempdir().unwrap();
    let s = store(state.path(), 7);
    for name in [
        "",
        ".hidden",
        "../x",
        "a/b",
        "-x",
        "white space",
        &"n".repeat(129),
    ] {
        assert!(
            matches!(s.put("acme", name, VALUE), Err(SecretError::InvalidName(_))),
            "{name:?}"
        );
    }
    assert!(s.put("acme", &"n".repeat(128), VALUE).is_ok());
    for tenant in ["", "../t", "a/b", ".t"] {
        assert!(
            matches!(
                s.put(tenant, "x", VALUE),
                Err(SecretError::InvalidTenant(_))
            ),
            "{tenant:?}"
        );
    }
    let big = vec![b'x'; warden_secrets::MAX_SECRET_LEN + 1];
    assert!(matches!(
        s.put("acme", "big", &big),
        Err(SecretError::TooLarge { .. })
    ));
    assert!(s.put("acme", "big", &big[1..]).is_ok());
    assert!(matches!(
        s.put("acme", "empty", b""),
        Err(SecretError::Empty)
    ));
}

#[test]
fn read_value_is_bounded() {
    let value = warden_secrets::read_value(&b"abc"[..], 3).unwrap();
    assert_eq!(&*value, b"abc");
    assert!(matches!(
        warden_secrets::read_value(&b"abcd"[..], 3),
        Err(SecretError::TooLarge { .. })
    ));
    assert!(matches!(
        warden_secrets::read_value(&b""[..], 3),
        Err(SecretError::Empty)
    ));
}

#[test]
fn racing_puts_get_distinct_versions() {
    let state = tempfile::tempdir().unwrap();
    let s = store(state.path(), 7);
    let mut versions: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    s.put("acme", "token", format!("value {i}").as_bytes())
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    versions.sort_unstable();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
}

#[test]
fn master_key_is_created_once_0600_and_reused() {
    let state = tempfile::tempdir().unwrap();
    let keys: Vec<MasterKey> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| MasterKey::load_or_create(state.path(), None).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let path = state.path().join("master.key");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim_end().len(), 64);
    // Every racer ended up with the same key: each decrypts the others'.
    SecretStore::open(state.path(), &keys[0])
        .unwrap()
        .put("t", "s", VALUE)
        .unwrap();
    for key in &keys {
        let s = SecretStore::open(state.path(), key).unwrap();
        assert_eq!(&*s.get("t", "s", None).unwrap(), VALUE);
    }
    let again = MasterKey::load_or_create(state.path(), None).unwrap();
    let s = SecretStore::open(state.path(), &again).unwrap();
    assert_eq!(&*s.get("t", "s", None).unwrap(), VALUE);
    assert_eq!(format!("{again:?}"), "MasterKey([secret])");
    // No temporary files are left behind.
    let names: Vec<_> = fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn master_key_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.key");
    assert!(matches!(
        MasterKey::load_or_create(dir.path(), Some(&missing)),
        Err(SecretError::MasterKeyMissing(_))
    ));
    assert!(!missing.exists(), "an explicit key file is never created");

    let raw = dir.path().join("raw.key");
    fs::write(&raw, [9u8; 32]).unwrap();
    let key = MasterKey::load_or_create(dir.path(), Some(&raw)).unwrap();
    store(dir.path(), 9).put("t", "s", VALUE).unwrap();
    let s = SecretStore::open(dir.path(), &key).unwrap();
    assert_eq!(&*s.get("t", "s", None).unwrap(), VALUE, "raw 32 bytes");

    let hex_file = dir.path().join("hex.key");
    fs::write(&hex_file, format!("{}\n", "09".repeat(32))).unwrap();
    let key = MasterKey::load_or_create(dir.path(), Some(&hex_file)).unwrap();
    let s = SecretStore::open(dir.path(), &key).unwrap();
    assert_eq!(&*s.get("t", "s", None).unwrap(), VALUE, "hex");

    let bad = dir.path().join("bad.key");
    fs::write(&bad, "not a key").unwrap();
    assert!(matches!(
        MasterKey::load_or_create(dir.path(), Some(&bad)),
        Err(SecretError::MasterKeyInvalid { .. })
    ));

    let state = tempfile::tempdir().unwrap();
    MasterKey::load_or_create(state.path(), None).unwrap();
    let default = state.path().join("master.key");
    fs::set_permissions(&default, fs::Permissions::from_mode(0o644)).unwrap();
    let err = MasterKey::load_or_create(state.path(), None).unwrap_err();
    assert!(matches!(err, SecretError::MasterKeyInvalid { .. }), "{err}");
}

#[test]
fn debug_output_shows_no_values() {
    let state = tempfile::tempdir().unwrap();
    let s = store(state.path(), 7);
    let shown = format!("{s:?} {:?}", MasterKey::from_bytes(&[0x41; 32]));
    assert!(
        !shown.contains("AAAA") && !shown.contains("4141"),
        "{shown}"
    );
}

//! Keys, signatures, the trust store and the audit ledger: `warden key`,
//! `sign`, `verify`, `trust` and `audit`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::app::{invocation_id, say, state_dir, EXIT_FAILED};
use crate::cli::{AuditCommand, KeyCommand, TrustCommand};
/// `warden key new|export|list`.
pub(crate) fn key(command: KeyCommand) -> ExitCode {
    let result = (|| -> anyhow::Result<()> {
        let store = warden_trust::keystore::KeyStore::open(&state_dir()?)?;
        let mut out = std::io::stdout().lock();
        match command {
            KeyCommand::New { name } => writeln!(out, "{}", store.create(&name)?)?,
            KeyCommand::Export { name } => write!(out, "{}", store.public_pem(&name)?)?,
            KeyCommand::List => {
                for (name, id) in store.list()? {
                    writeln!(out, "{name}\t{id}")?;
                }
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(e);
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Exit 0, or one line naming the cause and exit 1.
pub(crate) fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(format!("{e:#}"));
            // An RBAC denial is a refusal, as a refused run is.
            if e.downcast_ref::<warden_engine::authz::Denied>().is_some() {
                ExitCode::from(crate::app::EXIT_REFUSED)
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
    }
}

/// Signed files are read whole, up to this size: the bytes hashed are the
/// bytes in memory, never a path opened twice.
const MAX_SIGNED_FILE: u64 = 1 << 30;

pub(crate) fn read_artifact(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        anyhow::bail!("{}: not a regular file", path.display());
    }
    let mut bytes = Vec::new();
    file.take(MAX_SIGNED_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SIGNED_FILE {
        anyhow::bail!("{}: larger than {MAX_SIGNED_FILE} bytes", path.display());
    }
    Ok(bytes)
}

pub(crate) fn artifact_type(text: &str) -> anyhow::Result<warden_trust::ArtifactType> {
    warden_trust::ArtifactType::parse(text).ok_or_else(|| {
        anyhow::anyhow!("--type {text:?}: expected module, processor, policy or config")
    })
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// What a signature covers: a file's bytes, or a processor directory's
/// canonical tree digest (docs/processors.md).
enum Signed {
    File(Vec<u8>),
    Processor { id: String, digest_hex: String },
}

fn signed_digest(path: &Path, ty: warden_trust::ArtifactType) -> anyhow::Result<Signed> {
    if !path.is_dir() {
        return Ok(Signed::File(read_artifact(path)?));
    }
    if ty != warden_trust::ArtifactType::Processor {
        anyhow::bail!(
            "{}: a directory is signed as a processor (--type processor), not as {}",
            path.display(),
            ty.as_str()
        );
    }
    let (tree, manifest) = warden_processor::read_processor(path)
        .map_err(|d| anyhow::anyhow!(warden_processor::render_all(&d)))?;
    Ok(Signed::Processor {
        id: manifest.id(),
        digest_hex: tree.digest_hex().to_string(),
    })
}

/// `warden sign`: FILE.sig next to FILE (DIR.sig beside a processor
/// directory), written by rename.
pub(crate) fn sign(
    key: &str,
    ty: &str,
    name: Option<String>,
    version: Option<String>,
    expires: Option<std::time::Duration>,
    file: &Path,
) -> anyhow::Result<()> {
    let ty = artifact_type(ty)?;
    let pair = warden_trust::keystore::KeyStore::open(&state_dir()?)?.load(key)?;
    let signed_at = now_secs();
    let (subject, digest, sig) = match signed_digest(file, ty)? {
        Signed::File(bytes) => {
            let mut sig = file.as_os_str().to_owned();
            sig.push(".sig");
            (
                file.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                sha256_hex(&bytes),
                std::path::PathBuf::from(sig),
            )
        }
        Signed::Processor { id, digest_hex } => {
            (id, digest_hex, crate::processor::dir_signature_path(file))
        }
    };
    let statement = warden_trust::Statement::new(
        &subject,
        &digest,
        warden_trust::Predicate {
            artifact_type: ty,
            name,
            version,
            signed_at,
            expires_at: expires.map(|d| signed_at.saturating_add(d.as_secs())),
        },
    );
    let env = warden_trust::Envelope::sign(
        &pair,
        warden_trust::IN_TOTO_PAYLOAD_TYPE,
        &statement.to_json(),
    );
    let mut tmp = sig.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", invocation_id()));
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{}\n", env.to_json()))
        .and_then(|()| std::fs::rename(&tmp, &sig))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow::anyhow!("{}: {e}", sig.display())
        })?;
    println!(
        "{} signed by {} as {}",
        sig.display(),
        pair.id(),
        ty.as_str()
    );
    Ok(())
}

/// `warden verify`.
pub(crate) fn verify(ty: Option<&str>, sig: Option<&Path>, file: &Path) -> anyhow::Result<()> {
    let want = ty.map(artifact_type).transpose()?;
    let sig_path = match sig {
        Some(s) => s.to_path_buf(),
        None if file.is_dir() => crate::processor::dir_signature_path(file),
        None => {
            let mut s = file.as_os_str().to_owned();
            s.push(".sig");
            s.into()
        }
    };
    let envelope = {
        use std::io::Read;
        let f = std::fs::File::open(&sig_path)
            .map_err(|e| anyhow::anyhow!("malformed envelope: {}: {e}", sig_path.display()))?;
        let mut bytes = Vec::new();
        f.take(warden_trust::dsse::MAX_ENVELOPE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)?;
        bytes
    };
    let digest = match signed_digest(file, want.unwrap_or(warden_trust::ArtifactType::Processor))? {
        Signed::File(bytes) => sha256_hex(&bytes),
        Signed::Processor { digest_hex, .. } => digest_hex,
    };
    let store = crate::app::trust_store()?;
    let v = store.verify(&envelope, &digest, want, now_secs())?;
    let p = &v.statement.predicate;
    let mut what = p.artifact_type.as_str().to_string();
    if let Some(n) = &p.name {
        what.push_str(&format!(" {n}"));
    }
    if let Some(ver) = &p.version {
        what.push_str(&format!(" {ver}"));
    }
    println!(
        "ok: {} is {what}, signed by {} at {}",
        file.display(),
        v.keyid,
        warden_trust::truststore::rfc3339(p.signed_at)
    );
    Ok(())
}

/// Longest line `warden audit append` takes.
const MAX_EXTERNAL_EVENT: usize = 64 << 10;

/// Lines committed together at most (one transaction, one fsync).
const APPEND_BATCH: usize = 1000;

/// `warden audit append`: JSON objects on stdin, one per line, each an
/// `external` entry; the index of each is printed once it is durable. A
/// bad line stops the command (exit 1) after everything before it is
/// committed and printed. Lines are committed as they are available: a
/// batch ends when the input has nothing more buffered, so a slow producer
/// gets its acknowledgements at once and a fast one shares fsyncs.
fn audit_append() -> anyhow::Result<()> {
    use std::io::{BufRead, Read};
    let mut audit = warden_engine::audit::Audit::open(&state_dir()?)?;
    let actor = crate::app::acting().map_err(|e| anyhow::anyhow!(e))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, std::io::stdin().lock());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // A file on stdin is a bulk import: parsed on this thread while the
    // ledger writes the previous transaction on another.
    let from_file = rustix::fs::fstat(std::io::stdin()).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
    });
    if from_file {
        let mut bad: Option<anyhow::Error> = None;
        let mut number = 0u64;
        let mut line = Vec::new();
        let events = std::iter::from_fn(|| loop {
            if bad.is_some() {
                return None;
            }
            line.clear();
            match (&mut reader)
                .take(MAX_EXTERNAL_EVENT as u64 + 1)
                .read_until(b'\n', &mut line)
            {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    bad = Some(e.into());
                    return None;
                }
            }
            number += 1;
            match parse_external(&line, number) {
                Ok(Some(record)) => {
                    return Some(serde_json::json!({
                        "principal": actor.principal,
                        "tenant": actor.tenant,
                        "record": record,
                    }))
                }
                Ok(None) => continue,
                Err(e) => {
                    bad = Some(e);
                    return None;
                }
            }
        });
        let mut written: std::io::Result<()> = Ok(());
        audit.record_stream("external", events, |index| {
            if written.is_ok() {
                written = writeln!(out, "{index}");
            }
        })?;
        out.flush()?;
        written?;
        return match bad {
            Some(e) => Err(e),
            None => Ok(()),
        };
    }
    let mut batch: Vec<serde_json::Value> = Vec::new();
    let mut flush = |batch: &mut Vec<serde_json::Value>,
                     out: &mut std::io::BufWriter<std::io::StdoutLock<'_>>|
     -> anyhow::Result<()> {
        for r in audit.record_many("external", std::mem::take(batch))? {
            writeln!(out, "{}", r.index)?;
        }
        out.flush()?;
        Ok(())
    };
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_EXTERNAL_EVENT as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        number += 1;
        let bad = match parse_external(&line, number) {
            Ok(Some(record)) => {
                batch.push(serde_json::json!({
                    "principal": actor.principal,
                    "tenant": actor.tenant,
                    "record": record,
                }));
                None
            }
            Ok(None) => None,
            Err(e) => Some(e),
        };
        if let Some(e) = bad {
            flush(&mut batch, &mut out)?;
            return Err(e);
        }
        if batch.len() >= APPEND_BATCH || reader.buffer().is_empty() {
            flush(&mut batch, &mut out)?;
        }
    }
    flush(&mut batch, &mut out)
}

/// One line of `audit append`: `None` for a blank line.
fn parse_external(line: &[u8], number: u64) -> anyhow::Result<Option<serde_json::Value>> {
    if line.len() > MAX_EXTERNAL_EVENT && !line.ends_with(b"\n") {
        anyhow::bail!("line {number}: longer than {MAX_EXTERNAL_EVENT} bytes; nothing from it on was recorded");
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<serde_json::Value>(line) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(Some(v)),
        Ok(other) => anyhow::bail!(
            "line {number}: expected a JSON object, found {}; nothing from it on was recorded",
            match other {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Bool(_) => "a boolean",
                _ => "null",
            }
        ),
        Err(e) => anyhow::bail!("line {number}: not JSON ({e}); nothing from it on was recorded"),
    }
}

/// `warden audit verify --checkpoint SAVED`: the saved note must be signed
/// by this log, and the ledger's tree of its size must have its root —
/// checked as RFC 9162 consistency from SAVED to the ledger now.
fn verify_saved_checkpoint(
    ledger: &warden_ledger::store::Ledger,
    verifier: &warden_ledger::note::Verifier,
    saved: &Path,
    size: u64,
) -> anyhow::Result<u64> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(saved)
        .and_then(|f| f.take(64 << 10).read_to_string(&mut text))
        .map_err(|e| anyhow::anyhow!("saved checkpoint {}: {e}", saved.display()))?;
    let body = warden_ledger::note::open(&text, verifier).map_err(|e| {
        anyhow::anyhow!(
            "saved checkpoint {}: not signed by this log ({e})",
            saved.display()
        )
    })?;
    let cp = warden_ledger::note::Checkpoint::parse(body)
        .map_err(|e| anyhow::anyhow!("saved checkpoint {}: {e}", saved.display()))?;
    if cp.size > size {
        anyhow::bail!(
            "entry {size}: missing; the saved checkpoint records {} entries (the tail was truncated since it was saved)",
            cp.size
        );
    }
    let root = ledger.root(size)?;
    let proof = ledger.consistency_proof(cp.size, size)?;
    let consistent =
        warden_ledger::merkle::verify_consistency(cp.size, size, &cp.root, &root, &proof).is_ok();
    if !consistent || ledger.root(cp.size)? != cp.root {
        anyhow::bail!(
            "entries 0..{}: history rewritten since the saved checkpoint (the ledger's tree of {} entries has another root; no consistency proof to it)",
            cp.size,
            cp.size
        );
    }
    Ok(cp.size)
}

/// `warden audit …`.
pub(crate) fn audit(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Append => return audit_append(),
        AuditCommand::Verify {
            bundle: Some(bundle),
            key,
            ..
        } => return verify_bundle(&bundle, key.as_deref()),
        _ => {}
    }
    let dir = state_dir()?.join("ledger");
    if !dir.join("ledger.db").is_file() {
        anyhow::bail!("no audit ledger at {}", dir.display());
    }
    // Reading the ledger (beyond one's own tenant's entries) and exporting
    // it are RBAC actions.
    let needs = match &command {
        AuditCommand::Export { .. } => Some(warden_authz::Action::AuditExport),
        AuditCommand::Log { .. } | AuditCommand::Prove { .. } => {
            Some(warden_authz::Action::AuditRead)
        }
        AuditCommand::Show { reveal: false, .. } => Some(warden_authz::Action::AuditRead),
        AuditCommand::Show { reveal: true, .. } | AuditCommand::Shred { .. } => {
            Some(warden_authz::Action::AuditReveal)
        }
        _ => None,
    };
    if let Some(action) = needs {
        let actor = crate::app::acting().map_err(|e| anyhow::anyhow!(e))?;
        let gate = crate::app::gate()?;
        if gate.enforcing() {
            let mut audit = warden_engine::audit::Audit::open(&state_dir()?)?;
            crate::app::authorize(
                &actor,
                &actor.tenant,
                action,
                &actor.tenant,
                Some(&mut audit),
            )?;
        }
    }
    let mut ledger = warden_ledger::store::Ledger::open(&dir)?;
    let origin = ledger.origin("warden.local/unnamed")?;
    let key = warden_engine::audit::log_key(&dir)?;
    let verifier = warden_engine::audit::verifier(&origin, &key)?;
    match command {
        AuditCommand::Append => {}
        AuditCommand::Show { index, reveal } => audit_show(&ledger, index, reveal)?,
        AuditCommand::Shred { index, field } => audit_shred(&ledger, index, &field)?,
        AuditCommand::Export { from, to, output } => {
            export_bundle(&mut ledger, &origin, &key, from, to, &output)?
        }
        AuditCommand::Verify { checkpoint, .. } => match ledger.verify()? {
            Ok(size) => match ledger.verify_checkpoints(&verifier, size)? {
                Ok(checkpoints) => {
                    let saved = match checkpoint {
                        Some(saved) => format!(
                            ", consistent with the saved checkpoint of {} entries",
                            verify_saved_checkpoint(&ledger, &verifier, &saved, size)?
                        ),
                        None => String::new(),
                    };
                    println!(
                        "ok: {size} entries, root {}, {checkpoints} checkpoints{saved}",
                        base64_std(&ledger.root(size)?)
                    )
                }
                Err(tamper) => anyhow::bail!("{tamper}"),
            },
            Err(tamper) => anyhow::bail!("{tamper}"),
        },
        AuditCommand::Checkpoint => print!("{}", ledger.checkpoint(&origin, &key)?),
        AuditCommand::Key { pem } => {
            if pem {
                print!("{}", warden_trust::keys::public_pem(&key.verifying_key())?);
            } else {
                println!("{}", verifier.encode());
            }
        }
        AuditCommand::Prove {
            index,
            size,
            consistency,
        } => {
            let total = ledger.size()?;
            let size = size.unwrap_or(total);
            if size > total {
                anyhow::bail!("--size {size}: the ledger has {total} entries");
            }
            let hashes = |p: Vec<[u8; 32]>| p.iter().map(|h| base64_std(h)).collect::<Vec<_>>();
            let json = match (index, consistency) {
                (Some(index), None) => {
                    let leaf = warden_ledger::merkle::leaf_hash(
                        &ledger
                            .entry(index)?
                            .ok_or_else(|| anyhow::anyhow!("no entry {index}"))?,
                    );
                    serde_json::json!({
                        "index": index,
                        "tree_size": size,
                        "leaf_hash": base64_std(&leaf),
                        "root_hash": base64_std(&ledger.root(size)?),
                        "audit_path": hashes(ledger.inclusion_proof(index, size)?),
                    })
                }
                (None, Some(old)) => serde_json::json!({
                    "old_size": old,
                    "tree_size": size,
                    "old_root_hash": base64_std(&ledger.root(old.min(size))?),
                    "root_hash": base64_std(&ledger.root(size)?),
                    "consistency_path": hashes(ledger.consistency_proof(old, size)?),
                }),
                _ => anyhow::bail!("give an entry INDEX or --consistency OLD (not both)"),
            };
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        AuditCommand::Log { from, to } => {
            // A tenant's principal sees its tenant's entries only.
            let only = crate::app::acting()
                .map_err(|e| anyhow::anyhow!(e))
                .map(|a| (!a.os_user).then_some(a.tenant))?;
            let mut out = std::io::stdout().lock();
            ledger.entries(from, to.unwrap_or(u64::MAX), |_, body| {
                if let Some(tenant) = &only {
                    if entry_tenant(body).as_deref() != Some(tenant.as_str()) {
                        return Ok(());
                    }
                }
                out.write_all(body)?;
                out.write_all(b"\n")
            })?;
        }
    }
    Ok(())
}

pub(crate) fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `warden trust add|revoke|list`.
pub(crate) fn trust(command: TrustCommand) -> anyhow::Result<()> {
    use warden_trust::truststore::{parse_time, rfc3339};
    let state = state_dir()?;
    let mut store = crate::app::trust_store()?;
    // Every change is a ledger entry: the ledger is opened (and found
    // writable) before the change is made.
    let mut audit = match command {
        TrustCommand::List => None,
        _ => Some(warden_engine::audit::Audit::open(&state)?),
    };
    if let Some(a) = audit.as_mut() {
        let actor = crate::app::acting().map_err(|e| anyhow::anyhow!(e))?;
        crate::app::authorize(
            &actor,
            &actor.tenant,
            warden_authz::Action::TrustChange,
            &actor.tenant,
            Some(a),
        )?;
    }
    let mut record = |event: serde_json::Value| -> anyhow::Result<u64> {
        let Some(audit) = audit.as_mut() else {
            return Ok(0);
        };
        let mut event = event;
        let actor = crate::app::acting().map_err(|e| anyhow::anyhow!(e))?;
        event["principal"] = actor.principal.into();
        event["tenant"] = actor.tenant.into();
        let r = audit.record("trust", event).map_err(|e| {
            anyhow::anyhow!(
                "the trust store was changed but the ledger entry could not be written: {e}"
            )
        })?;
        Ok(r.index)
    };
    match command {
        TrustCommand::Add {
            pem,
            types,
            not_before,
            not_after,
        } => {
            let text = std::fs::read_to_string(&pem)
                .map_err(|e| anyhow::anyhow!("{}: {e}", pem.display()))?;
            let types = types
                .iter()
                .map(|t| artifact_type(t))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let time = |t: Option<String>, flag: &str| {
                t.map(|t| parse_time(&t).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
                    .transpose()
            };
            let entry = store.add(
                &text,
                types,
                time(not_before, "--not-before")?,
                time(not_after, "--not-after")?,
            )?;
            let index = record(serde_json::json!({
                "action": "add",
                "keyid": entry.keyid,
                "types": entry.types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                "not_before": entry.not_before,
                "not_after": entry.not_after,
            }))?;
            println!("trusted {} (audit entry {index})", entry.keyid);
        }
        TrustCommand::Revoke { keyid, reason } => {
            let entry = store.revoke(&keyid, now_secs(), reason)?;
            let index = record(serde_json::json!({
                "action": "revoke",
                "keyid": entry.keyid,
                "revoked_at": entry.revoked_at,
                "reason": entry.revoked_reason,
            }))?;
            println!(
                "revoked {} at {} (audit entry {index})",
                entry.keyid,
                rfc3339(entry.revoked_at.unwrap_or_default())
            );
        }
        TrustCommand::RequireSignedConfig { on } => {
            store.set_require_signed_config(on)?;
            let index = record(serde_json::json!({
                "action": "require_signed_config",
                "value": on,
            }))?;
            println!("require_signed_config: {on} (audit entry {index})");
        }
        TrustCommand::List => {
            for k in &store.file.keys {
                let types = if k.types.is_empty() {
                    "all".to_string()
                } else {
                    k.types
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let window = |t: Option<u64>| t.map_or("-".to_string(), rfc3339);
                let status = match k.revoked_at {
                    Some(at) => format!("revoked {}", rfc3339(at)),
                    None => "valid".to_string(),
                };
                println!(
                    "{}\t{types}\t{}..{}\t{status}",
                    k.keyid,
                    window(k.not_before),
                    window(k.not_after)
                );
            }
        }
    }
    Ok(())
}

/// `warden audit export`: entries `from..to` with their inclusion proofs
/// against a checkpoint signed now, written to `output` by rename.
fn export_bundle(
    ledger: &mut warden_ledger::store::Ledger,
    origin: &str,
    key: &ed25519_dalek::SigningKey,
    from: u64,
    to: Option<u64>,
    output: &Path,
) -> anyhow::Result<()> {
    let size = ledger.size()?;
    let to = to.unwrap_or(size);
    if to > size {
        anyhow::bail!("--to {to}: the ledger has {size} entries");
    }
    let note = ledger.checkpoint(origin, key)?;
    let mut tmp = output.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", invocation_id()));
    let tmp = std::path::PathBuf::from(tmp);
    let written = (|| -> anyhow::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        let mut out = std::io::BufWriter::new(file);
        warden_ledger::bundle::write(ledger, from, to, &note, &mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, output)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!("{}: {e:#}", output.display());
    }
    println!(
        "exported entries {from}..{to} to {} (checkpoint of {size} entries)",
        output.display()
    );
    Ok(())
}

/// `warden audit verify --bundle B --key K`: offline, with the verifier
/// key alone (given as text, or as a file holding it).
fn verify_bundle(bundle: &Path, key: Option<&str>) -> anyhow::Result<()> {
    use std::io::Read;
    let key = key.ok_or_else(|| {
        anyhow::anyhow!("--bundle needs --key VERIFIERKEY (as `warden audit key` prints it)")
    })?;
    let text = if Path::new(key).is_file() {
        let mut t = String::new();
        std::fs::File::open(key)
            .and_then(|f| f.take(4096).read_to_string(&mut t))
            .map_err(|e| anyhow::anyhow!("--key {key}: {e}"))?;
        t
    } else {
        key.to_string()
    };
    let verifier = warden_ledger::note::Verifier::parse(text.trim())
        .map_err(|e| anyhow::anyhow!("--key: not a verifier key: {e}"))?;
    let mut bytes = Vec::new();
    std::fs::File::open(bundle)
        .and_then(|f| {
            f.take(warden_ledger::bundle::MAX_BUNDLE_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(|e| anyhow::anyhow!("{}: {e}", bundle.display()))?;
    let summary = warden_ledger::bundle::verify(&bytes, &verifier)?;
    println!("ok: {summary}");
    Ok(())
}

/// The tenant an entry belongs to (its event's `tenant`), if it names one.
fn entry_tenant(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("event")?.get("tenant")?.as_str().map(str::to_string)
}

/// The seal id and commitments an entry names, if it has confidential
/// fields.
fn entry_seal(body: &[u8]) -> Option<(String, serde_json::Map<String, serde_json::Value>)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let c = v.get("event")?.get("confidential")?;
    Some((
        c.get("seal")?.as_str()?.to_string(),
        c.get("commitments")?.as_object()?.clone(),
    ))
}

/// `warden audit show INDEX [--reveal]`.
fn audit_show(
    ledger: &warden_ledger::store::Ledger,
    index: u64,
    reveal: bool,
) -> anyhow::Result<()> {
    let body = ledger
        .entry(index)?
        .ok_or_else(|| anyhow::anyhow!("no entry {index}"))?;
    let mut entry: serde_json::Value = serde_json::from_slice(&body)?;
    // A principal of another tenant does not see it at all.
    let actor = crate::app::acting().map_err(|e| anyhow::anyhow!(e))?;
    if !actor.os_user && entry_tenant(&body).as_deref() != Some(actor.tenant.as_str()) {
        anyhow::bail!("no entry {index}");
    }
    if reveal {
        let (seal, commitments) = entry_seal(&body)
            .ok_or_else(|| anyhow::anyhow!("entry {index} has no confidential fields"))?;
        let open = warden_engine::seal::reveal(&state_dir()?, &seal)?;
        let mut revealed = serde_json::Map::new();
        for (field, committed) in &commitments {
            let shown = match open.get(field) {
                None => serde_json::json!({"shredded": true}),
                Some((salt, value)) => {
                    let recomputed = warden_engine::seal::commitment(salt, value)?;
                    if Some(recomputed.as_str()) != committed.as_str() {
                        anyhow::bail!(
                            "entry {index}: the sealed value of {field} does not match its commitment"
                        );
                    }
                    serde_json::json!({"value": value, "salt": hex::encode(salt)})
                }
            };
            revealed.insert(field.clone(), shown);
        }
        entry["revealed"] = serde_json::Value::Object(revealed);
    }
    println!("{}", serde_json::to_string_pretty(&entry)?);
    Ok(())
}

/// `warden audit shred INDEX FIELD` (itself a ledger entry).
fn audit_shred(
    ledger: &warden_ledger::store::Ledger,
    index: u64,
    field: &str,
) -> anyhow::Result<()> {
    let body = ledger
        .entry(index)?
        .ok_or_else(|| anyhow::anyhow!("no entry {index}"))?;
    let actor = crate::app::acting().map_err(|e| anyhow::anyhow!(e))?;
    if !actor.os_user && entry_tenant(&body).as_deref() != Some(actor.tenant.as_str()) {
        anyhow::bail!("no entry {index}");
    }
    let (seal, commitments) = entry_seal(&body)
        .ok_or_else(|| anyhow::anyhow!("entry {index} has no confidential fields"))?;
    if !commitments.contains_key(field) {
        anyhow::bail!("entry {index} has no confidential field {field:?}");
    }
    let state = state_dir()?;
    let mut audit = warden_engine::audit::Audit::open(&state)?;
    let was = warden_engine::seal::shred(&state, &seal, field)?;
    let r = audit.record(
        "audit",
        serde_json::json!({
            "action": "shred",
            "principal": actor.principal,
            "tenant": actor.tenant,
            "entry": index,
            "field": field,
            "was_present": was,
        }),
    )?;
    println!(
        "shredded {field} of entry {index}{} (audit entry {})",
        if was { "" } else { " (already gone)" },
        r.index
    );
    Ok(())
}

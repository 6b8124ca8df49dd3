//! `log`: levelled records kept in the run's report (`log:write`),
//! capped and redacted.

use std::sync::Arc;

use warden_core::{LeasedSecret, LogLevel, LogRecord};
use warden_policy::Capability;
use warden_secrets::Redactor;

use super::{HostError, HostState};

/// Records kept per run; later ones are dropped (and counted).
pub const MAX_RECORDS: usize = 256;
/// Bytes of messages kept per run.
pub const MAX_TOTAL_BYTES: usize = 64 << 10;
/// Bytes of one message; the rest is cut.
pub const MAX_MESSAGE_BYTES: usize = 4 << 10;
/// What replaces each redacted string of the redaction list (a leased
/// secret's forms become `[REDACTED:NAME]`).
pub const REDACTED: &str = "[REDACTED]";
/// Marks a message that was cut.
const CUT: &str = "…";

/// The level of a preview-1 `log` call: 0 trace … 4 error.
pub fn level_of(n: i32) -> Option<LogLevel> {
    Some(match n {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        2 => LogLevel::Info,
        3 => LogLevel::Warn,
        4 => LogLevel::Error,
        _ => return None,
    })
}

/// A run's log: records in order, within the caps.
#[derive(Debug, Default)]
pub(crate) struct LogBuffer {
    pub records: Vec<LogRecord>,
    bytes: usize,
    /// Records dropped or messages cut at a cap.
    pub truncated: bool,
    /// Records dropped at a cap.
    pub dropped: u64,
    /// Literal strings replaced by [`REDACTED`].
    redact: Vec<String>,
    /// Length of the longest of them.
    longest_secret: usize,
    /// The run's leased secrets, every form of each (the same redactor as
    /// its stdout and stderr): applied before the literal strings.
    secrets: Option<Arc<Redactor>>,
}

impl LogBuffer {
    /// `redact`: literal strings to replace; `secrets`: the redactor of the
    /// run's `leased` secrets, if it has any. A literal string that is a
    /// leased value is left to the redactor, which names its secret.
    pub fn new(redact: &[String], leased: &[LeasedSecret], secrets: Option<Arc<Redactor>>) -> Self {
        let leased_value = |s: &String| {
            secrets.is_some() && leased.iter().any(|l| l.value.expose() == s.as_bytes())
        };
        let redact: Vec<String> = redact
            .iter()
            .filter(|s| !s.is_empty() && !leased_value(s))
            .cloned()
            .collect();
        LogBuffer {
            longest_secret: redact.iter().map(String::len).max().unwrap_or(0),
            redact,
            secrets: secrets.filter(|r| !r.is_empty()),
            ..LogBuffer::default()
        }
    }

    /// How many bytes of a raw message the host needs to read: enough to
    /// redact a secret (or any form of one) that straddles the cut.
    pub fn read_limit(&self) -> usize {
        let longest_form = self.secrets.as_ref().map_or(0, |r| r.longest_pattern());
        MAX_MESSAGE_BYTES + self.longest_secret.max(longest_form)
    }

    /// Replaces every form of every leased secret, then every literal
    /// string, in `text`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = match &self.secrets {
            Some(r) => r.redact_str(text),
            None => text.to_string(),
        };
        for secret in &self.redact {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }

    /// `raw` with every byte of every occurrence of a redacted string
    /// (overlapping ones too) replaced, a run of such bytes by one
    /// [`REDACTED`]. `more` says the guest's message goes on past `raw`:
    /// then the last `longest_secret - 1` bytes could begin a secret that
    /// `raw` does not hold whole, and are dropped (unless redacted).
    fn redact_bytes(&self, raw: &[u8], more: bool) -> Vec<u8> {
        let named;
        let raw = match &self.secrets {
            Some(r) => {
                // As a stream: with `more`, what it holds back (the bytes
                // that could begin a form the cut hides) is dropped.
                let mut stream = r.stream();
                let mut out = Vec::with_capacity(raw.len());
                stream.push(raw, &mut out);
                if !more {
                    stream.finish(&mut out);
                }
                named = out;
                named.as_slice()
            }
            None => raw,
        };
        if self.redact.is_empty() {
            return raw.to_vec();
        }
        let mut covered = vec![false; raw.len()];
        // A secret is UTF-8, so each occurrence lies within one valid
        // chunk of `raw` (it starts with a byte no invalid sequence
        // swallows): search the valid chunks as `str`s (linear time).
        let mut offset = 0;
        for chunk in raw.utf8_chunks() {
            let text = chunk.valid();
            for secret in &self.redact {
                let mut from = 0;
                while let Some(found) = text.get(from..).and_then(|t| t.find(secret.as_str())) {
                    let at = from + found;
                    covered[offset + at..offset + at + secret.len()].fill(true);
                    // The next occurrence may overlap this one.
                    from = at + text[at..].chars().next().map_or(1, char::len_utf8);
                }
            }
            offset += text.len() + chunk.invalid().len();
        }
        let keep = if more {
            raw.len()
                .saturating_sub(self.longest_secret.saturating_sub(1))
        } else {
            raw.len()
        };
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            if covered[i] {
                out.extend_from_slice(REDACTED.as_bytes());
                while i < raw.len() && covered[i] {
                    i += 1;
                }
            } else if i >= keep {
                break;
            } else {
                out.push(raw[i]);
                i += 1;
            }
        }
        out
    }

    /// Appends a record: redacted, lossy UTF-8, cut at
    /// [`MAX_MESSAGE_BYTES`]. `more` says the guest's message was longer
    /// than `raw` (the host read only a prefix, [`read_limit`] bytes).
    /// Past the run's caps the record is dropped and counted.
    ///
    /// [`read_limit`]: LogBuffer::read_limit
    pub fn push(&mut self, level: LogLevel, raw: &[u8], more: bool) {
        if self.records.len() >= MAX_RECORDS || self.bytes >= MAX_TOTAL_BYTES {
            self.truncated = true;
            self.dropped += 1;
            return;
        }
        let redacted = self.redact_bytes(raw, more);
        // Once more on the text: nothing lossy decoding made can spell a
        // secret either.
        let mut message = self.redact(&String::from_utf8_lossy(&redacted));
        let room = MAX_MESSAGE_BYTES.min(MAX_TOTAL_BYTES - self.bytes);
        if message.len() > room || more {
            let mut end = room.min(message.len());
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str(CUT);
            self.truncated = true;
        }
        self.bytes += message.len();
        self.records.push(LogRecord { level, message });
    }
}

/// `log.write`: checks `log:write`, then appends the record.
pub(crate) fn write(
    state: &mut HostState,
    function: &'static str,
    level: LogLevel,
    raw: &[u8],
    more: bool,
) -> Result<(), HostError> {
    state.require(function, Capability::LogWrite)?;
    state.log.push(level, raw, more);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_redacted_and_cut() {
        let mut log = LogBuffer::new(&["hunter2".to_string(), String::new()], &[], None);
        log.push(LogLevel::Info, b"password is hunter2, again hunter2", false);
        assert_eq!(
            log.records[0].message,
            "password is [REDACTED], again [REDACTED]"
        );
        let long = vec![b'a'; MAX_MESSAGE_BYTES + 100];
        log.push(LogLevel::Warn, &long, false);
        assert_eq!(log.records[1].message.len(), MAX_MESSAGE_BYTES + CUT.len());
        assert!(log.truncated);
    }

    #[test]
    fn a_secret_across_the_cut_is_still_redacted() {
        let secret = "s3cr3t-value";
        let mut log = LogBuffer::new(&[secret.to_string()], &[], None);
        let mut msg = vec![b'x'; MAX_MESSAGE_BYTES - 4];
        msg.extend_from_slice(secret.as_bytes());
        let n = log.read_limit().min(msg.len());
        log.push(LogLevel::Info, &msg[..n], false);
        assert!(!log.records[0].message.contains("s3cr"), "a prefix leaked");
    }

    /// What a guest's `log` call keeps of `msg`: the host reads at most
    /// `read_limit` bytes.
    fn logged(log: &mut LogBuffer, msg: &[u8]) -> String {
        let n = log.read_limit().min(msg.len());
        log.push(LogLevel::Info, &msg[..n], msg.len() > n);
        log.records.last().unwrap().message.clone()
    }

    #[test]
    fn no_prefix_of_a_secret_survives_at_the_read_limit() {
        // Redacting long secrets shortens the text: the part kept can then
        // reach the end of what the host read, where a secret is cut.
        let secret = format!("sk_live_{}", "0123456789".repeat(5) + "012345");
        assert_eq!(secret.len(), 64);
        for lead in [0, 1, 2, 10] {
            for start in [4096 - 63, 4096 - 10, 4095, 4096, 4160 - 63, 4150, 4159] {
                let mut log = LogBuffer::new(std::slice::from_ref(&secret), &[], None);
                let mut msg = secret.repeat(lead).into_bytes();
                if msg.len() > start {
                    continue;
                }
                msg.resize(start, b'x');
                msg.extend_from_slice(secret.as_bytes());
                msg.extend_from_slice(&[b'y'; 100]);
                let kept = logged(&mut log, &msg);
                assert!(
                    !kept.contains("sk_live"),
                    "lead {lead}, start {start}: {}",
                    &kept[kept.len().saturating_sub(80)..]
                );
                assert!(kept.len() <= MAX_MESSAGE_BYTES + CUT.len());
            }
        }
    }

    #[test]
    fn overlapping_bordered_and_non_utf8_secrets_are_redacted() {
        let mut log = LogBuffer::new(&["abab".to_string(), "b\u{e9}c".to_string()], &[], None);
        log.push(LogLevel::Info, b"xababab-ababy", false);
        assert_eq!(log.records[0].message, "x[REDACTED]-[REDACTED]y");
        // A secret next to invalid UTF-8 is still found.
        log.push(LogLevel::Info, b"\xff\xe2b\xc3\xa9c\xff", false);
        assert_eq!(log.records[1].message, "\u{fffd}\u{fffd}[REDACTED]\u{fffd}");
        // A secret whose head is also its tail, whole at the very end of
        // a cut read, is redacted whole (not cut back to its head).
        let secret = format!("ab{}ab", "c".repeat(60));
        let mut log = LogBuffer::new(std::slice::from_ref(&secret), &[], None);
        let mut msg = secret.repeat(2).into_bytes();
        msg.resize(log.read_limit() - secret.len(), b'x');
        msg.extend_from_slice(secret.as_bytes());
        msg.extend_from_slice(b"zzz");
        let kept = logged(&mut log, &msg);
        assert!(!kept.contains("ab"), "{}", &kept[kept.len() - 20..]);
        assert!(
            kept.ends_with("[REDACTED]…"),
            "{}",
            &kept[kept.len() - 20..]
        );
    }

    fn leased(name: &str, value: &str) -> (Vec<LeasedSecret>, Option<Arc<Redactor>>) {
        let secret = LeasedSecret {
            name: name.into(),
            version: 1,
            lease_id: "0".repeat(32),
            env: false,
            value: warden_core::SecretValue::new(zeroize::Zeroizing::new(value.into())),
        };
        let redactor = Redactor::new(&[(name, value.as_bytes())]);
        (vec![secret], Some(Arc::new(redactor)))
    }

    #[test]
    fn leased_secrets_are_redacted_in_every_form_by_name() {
        let value = "tok-3f9a1c77e2b04d6d";
        let (leased, redactor) = leased("api", value);
        // The engine also lists the value as a literal string: the
        // redactor takes it, naming the secret; other strings stay literal.
        let mut log = LogBuffer::new(&[value.into(), "plain".into()], &leased, redactor);
        log.push(
            LogLevel::Info,
            b"v=tok-3f9a1c77e2b04d6d b64=dG9rLTNmOWExYzc3ZTJiMDRkNmQ= plain",
            false,
        );
        assert_eq!(
            log.records[0].message,
            "v=[REDACTED:api] b64=[REDACTED:api] [REDACTED]"
        );
        // A form across the cut of what the host reads leaves no prefix.
        let form = "dG9rLTNmOWExYzc3ZTJiMDRkNmQ=";
        for start in [
            MAX_MESSAGE_BYTES - 10,
            MAX_MESSAGE_BYTES,
            log.read_limit() - 5,
        ] {
            let mut msg = vec![b'x'; start];
            msg.extend_from_slice(form.as_bytes());
            msg.extend_from_slice(&[b'y'; 100]);
            let kept = logged(&mut log, &msg);
            assert!(
                !kept.contains("dG9rLTNm"),
                "start {start}: {}",
                &kept[kept.len() - 40..]
            );
        }
    }

    #[test]
    fn records_are_capped() {
        let mut log = LogBuffer::new(&[], &[], None);
        for _ in 0..MAX_RECORDS + 10 {
            log.push(LogLevel::Debug, b"x", false);
        }
        assert_eq!(log.records.len(), MAX_RECORDS);
        assert_eq!(log.dropped, 10);
        assert!(log.truncated);
        let mut log = LogBuffer::new(&[], &[], None);
        let big = vec![b'b'; MAX_MESSAGE_BYTES];
        for _ in 0..40 {
            log.push(LogLevel::Debug, &big, false);
        }
        let total: usize = log.records.iter().map(|r| r.message.len()).sum();
        assert!(total <= MAX_TOTAL_BYTES + CUT.len(), "{total}");
        assert!(log.dropped > 0);
    }

    #[test]
    fn levels() {
        assert_eq!(level_of(0), Some(LogLevel::Trace));
        assert_eq!(level_of(4), Some(LogLevel::Error));
        assert_eq!(level_of(5), None);
        assert_eq!(level_of(-1), None);
    }
}
